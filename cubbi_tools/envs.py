"""The session environment and its precedence:
`-e KEY=VALUE` > `--env-file FILE` > the config's services > defaults."""

import os
import re

from .errors import CubbiError, UsageError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def valid_key(key):
    """Whether KEY may name a session variable (-e, --env-file, and the
    service's check of a client's env): a shell variable name."""
    return isinstance(key, str) and bool(_KEY.match(key))


def parse_assignments(items):
    env = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"-e {key!r}: expected KEY=VALUE")
        if not valid_key(key):
            raise UsageError(f"-e {key}=...: {key!r} is not a valid variable name")
        env[key] = value
    return env


def read_env_file(path):
    """{KEY: value} of a dotenv file; a line that is not KEY=VALUE (or a
    comment) is a UsageError naming the file and the line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise UsageError(f"--env-file {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--env-file {path}: is a directory, give a file") from None
    except UnicodeDecodeError:
        raise UsageError(f"--env-file {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise CubbiError(f"--env-file {path}: {exc.strerror}") from None
    import io

    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.string.strip()
        if binding.error or binding.key is not None and not _KEY.match(binding.key):
            raise UsageError(f"--env-file {path} line {binding.original.line}: expected "
                             f"KEY=VALUE with KEY a variable name, got {line[:40]!r}")
    from dotenv import dotenv_values

    values = dotenv_values(stream=io.StringIO(text))
    return {key: "" if value is None else value for key, value in values.items()}


def session_env(cli_items=(), env_files=(), config_env=None, defaults=None):
    """The one place precedence is decided.  config_env is a dict, or a
    function of the variable names already set by -e/--env-file (so their
    ${VAR} and secret references in the config are never resolved)."""
    stronger = {}
    for path in env_files or []:
        stronger.update(read_env_file(os.path.expanduser(path)))
    stronger.update(parse_assignments(cli_items))
    if callable(config_env):
        config_env = config_env(frozenset(stronger))
    env = dict(defaults or {})
    env.update(config_env or {})
    env.update(stronger)
    return env

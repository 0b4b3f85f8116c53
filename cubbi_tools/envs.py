"""The session environment and its precedence:
`-e KEY=VALUE` > `--env-file FILE` > the config's services > defaults."""

import os
import re

from .errors import CubbiError, UsageError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Variables a shell, the login profile or the dynamic loader act on, and the
# ones the session itself sets: a service refuses them from a client (they
# would steer more than the client's own programs), cubbi-create takes them
# from its own user, who owns the engine anyway (cubbi-create(1)).
SHELL_KEYS = frozenset({
    "PATH", "ENV", "BASH_ENV", "IFS", "CDPATH", "SHELLOPTS", "BASHOPTS", "PS4",
    "PROMPT_COMMAND", "GLOBIGNORE", "HOME", "USER", "LOGNAME", "SHELL",
    "GCONV_PATH", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS",
    "NLSPATH", "LOCPATH", "MALLOC_CHECK_", "MALLOC_PERTURB_"})
SHELL_PREFIXES = ("LD_",)
CUBBI_PREFIX = "CUBBI_"  # cubbi's own: the session's id, uid, gid, image, project


def reserved_key(key, service=False):
    """Why KEY may not be set in a session, or None.  CUBBI_* are cubbi's
    own everywhere; with service=True (a client's request to a service) the
    variables of SHELL_KEYS and LD_* too."""
    if key.startswith(CUBBI_PREFIX):
        return "CUBBI_* variables are set by cubbi itself"
    if service and (key in SHELL_KEYS or key.startswith(SHELL_PREFIXES)):
        return ("the service does not take variables that a shell or the dynamic loader "
                "acts on (PATH, LD_*, BASH_ENV, ENV, ...)")
    return None


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
        why = reserved_key(key)
        if why:
            raise UsageError(f"-e {key}=...: {why}")
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
        why = binding.key is not None and reserved_key(binding.key)
        if why:
            raise UsageError(f"--env-file {path} line {binding.original.line}: "
                             f"{binding.key}: {why}")
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

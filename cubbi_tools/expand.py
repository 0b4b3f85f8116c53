"""Values that refer to something else, resolved at use:

  secret:NAME    in a secret key's value: the secret NAME in the secret store
  ${VAR}         the environment variable VAR ($${VAR} is a literal ${VAR})

`env` is the one ${VAR} expansion: the user config (config.resolve) and the
service config (service.load_config) both use it.
"""

import os
import re

from .errors import CubbiError

SECRET_REF = "secret:"
SECRET_WORDS = ("key", "token", "secret", "password")
NOT_SECRET = ("ssh.public_key",)  # public by nature: kept in config.yaml, shown
ENVREF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_secret(key):
    """A key whose last part holds key, token, secret or password (but
    ssh.public_key)."""
    if key in NOT_SECRET:
        return False
    last = key.rsplit(".", 1)[-1].lower()
    return any(word in last for word in SECRET_WORDS)


def has_env_ref(text):
    return isinstance(text, str) and any(not m.group(1) for m in ENVREF.finditer(text))


def env(text, missing, environ=None):
    """TEXT with each ${VAR} replaced from ENVIRON (default os.environ) and
    each $${VAR} made a literal ${VAR}; an unset VAR raises
    CubbiError(missing(VAR))."""
    environ = os.environ if environ is None else environ

    def sub(m):
        if m.group(1):
            return "${" + m.group(2) + "}"
        var = m.group(2)
        if var not in environ:
            raise CubbiError(missing(var))
        return environ[var]

    return ENVREF.sub(sub, text)


def secret_ref(key, raw):
    """The secret name RAW refers to, or None.  Only a secret key's value is
    a reference (cubbi writes secret:KEY there); elsewhere `secret:...` is
    a plain string."""
    if isinstance(raw, str) and raw.startswith(SECRET_REF) and is_secret(key):
        return raw[len(SECRET_REF):]
    return None


def resolve(key, raw):
    """RAW with its references resolved: `secret:NAME` (for a secret key)
    from the secret store, `${VAR}` from the environment.  Unresolvable:
    CubbiError (exit 1) naming the key."""
    if not isinstance(raw, str):
        return raw
    name = secret_ref(key, raw)
    if name is not None:
        from . import secrets

        found = secrets.get(name)
        if found is None:
            raise CubbiError(f"{key}: the secret {name!r} is not in {secrets.where()}; "
                             f"store it again with: cubbi-config set {key} -")
        return found
    return env(raw, lambda var: f"{key}: ${{{var}}} is not set in the environment; export "
                                f"{var}=... or remove the setting with: cubbi-config unset {key}")

"""The secret store: API keys, git tokens, OAuth tokens.

    put(name, value)   store a secret
    get(name)          its value, or None
    delete(name)       forget it (no error when absent)
    where()            where secrets go, for people: "the keyring
                       (SecretService)" or the path of secrets.yaml

Names are plain strings such as `services.openai.api_key` or
`project:github.com/hello/private:token`.  The store is the system keyring
(Python keyring, service "cubbi") when a usable backend exists: not keyring's
fail or null backends, nor a chainer with nothing in it.  Otherwise a YAML
mapping name -> value in secrets.yaml in the config directory, mode 0600,
written atomically under a lock.  CUBBI_SECRETS=file forces the file,
CUBBI_SECRETS=keyring requires the keyring, auto (the default) chooses.
keyring is imported only when a secret is used (~76 ms).
"""

import os

from . import files
from .errors import CubbiError, UsageError

SERVICE = "cubbi"
FILE = "secrets.yaml"
MODES = ("auto", "keyring", "file")


def token_secret(remote):
    """The secret-store name of the token of remote endpoint REMOTE."""
    return f"remote:{remote}:token"


def file_path():
    return os.path.join(files.config_dir(), FILE)


class FileStore:
    kind = "file"

    def describe(self):
        return file_path()

    def get(self, name):
        value = files.load(file_path(), fresh=True).get(name)
        return None if value is None else str(value)

    def put(self, name, value):
        with files.edit(file_path()) as data:
            data[name] = value

    def names(self):
        """Every name in secrets.yaml (the file is this config dir's own)."""
        return [str(n) for n in files.load(file_path(), fresh=True)]

    def delete(self, name):
        if name not in files.load(file_path(), fresh=True):
            return False
        with files.edit(file_path()) as data:
            return data.pop(name, None) is not None


class KeyringStore:
    kind = "keyring"

    def __init__(self, backend):
        self.backend = backend

    def describe(self):
        kr = self.backend
        inner = getattr(kr, "backends", None)
        if inner:
            kr = inner[0]
        return f"the keyring ({type(kr).__module__.rsplit('.', 1)[-1]})"

    def _call(self, what, *args):
        from keyring.errors import KeyringError, PasswordDeleteError

        try:
            return what(SERVICE, *args)
        except PasswordDeleteError:
            return False
        except KeyringError as exc:
            raise CubbiError(f"{self.describe()} refused the request ({type(exc).__name__}: "
                             f"{exc}); unlock it, or set CUBBI_SECRETS=file") from None

    def get(self, name):
        return self._call(self.backend.get_password, name)

    def put(self, name, value):
        self._call(self.backend.set_password, name, value)

    def delete(self, name):
        return self._call(self.backend.delete_password, name) is not False


def usable_keyring():
    """keyring's chosen backend when it can store anything, else None."""
    try:
        import keyring
        from keyring.backends import chainer
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return None
    if type(backend).__module__.rsplit(".", 1)[-1] in ("fail", "null"):
        return None
    return backend


_store = {}


def store():
    """The store in use, chosen once per process (CUBBI_SECRETS)."""
    mode = (os.environ.get("CUBBI_SECRETS") or "auto").strip().lower()
    if mode not in MODES:
        raise UsageError(f"CUBBI_SECRETS={mode!r}: expected one of {', '.join(MODES)}")
    if mode not in _store:
        if mode == "file":
            _store[mode] = FileStore()
        else:
            backend = usable_keyring()
            if backend is None and mode == "keyring":
                raise CubbiError("CUBBI_SECRETS=keyring, but no usable keyring backend (no "
                                 "Secret Service on D-Bus?); start one or set CUBBI_SECRETS=file")
            _store[mode] = KeyringStore(backend) if backend else FileStore()
    return _store[mode]


def _check_name(name):
    if not isinstance(name, str) or not name or "\n" in name:
        raise UsageError(f"invalid secret name {name!r}")


def put(name, value):
    _check_name(name)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{name}: a secret must be a non-empty string")
    s = store()
    s.put(name, value)
    if s.kind == "keyring" and os.path.exists(file_path()):
        FileStore().delete(name)  # an older plain copy must not linger


def get(name):
    """The secret, from the store in use, else from the file (where it went
    while no keyring was usable); None when absent."""
    _check_name(name)
    s = store()
    value = s.get(name)
    if value is None and s.kind == "keyring" and os.path.exists(file_path()):
        value = FileStore().get(name)
    return value


def delete(name):
    """Forget NAME everywhere; True when something was removed."""
    _check_name(name)
    s = store()
    removed = s.delete(name)
    if s.kind == "keyring" and os.path.exists(file_path()):
        removed = FileStore().delete(name) or removed
    return removed


def file_names():
    """The names stored in secrets.yaml: the file store's, and what went
    there while no keyring was usable.  The keyring is shared by every
    config dir and cannot be listed, so its names are never guessed here."""
    if not os.path.exists(file_path()):
        return []
    return FileStore().names()


def where():
    return store().describe()


def kind():
    """'keyring' or 'file'."""
    return store().kind

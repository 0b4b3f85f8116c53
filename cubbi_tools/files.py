"""The user's files: where they live, and YAML files read and written safely.

config.yaml, secrets.yaml and projects.yaml all go through here: read
lazily (yaml costs ~24 ms to import and is imported only when a file
exists), with a file others can read repaired to 0600 (said on stderr), and
written atomically (temp file in the same directory, fsync, rename) with
mode 0600, under an exclusive lock for read-modify-write (`edit`).  A YAML
error names file:line:column (`yaml_error`, also used for image
definitions and the service config).  Reads no settings.
"""

import os

from .errors import CubbiError


def config_dir():
    """$CUBBI_CONFIG_DIR, else $XDG_CONFIG_HOME/cubbi, else ~/.config/cubbi."""
    env = os.environ.get("CUBBI_CONFIG_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cubbi")


cache = {}  # path -> parsed data; emptied by every save


def yaml_where(exc):
    """(":line:column" or "", the problem) of a yaml.YAMLError."""
    mark = getattr(exc, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
    return where, getattr(exc, "problem", None) or str(exc).splitlines()[0]


def yaml_error(path, exc, advice="fix or remove the file"):
    """The one line for a yaml.YAMLError of PATH: file:line:column, the problem."""
    where, problem = yaml_where(exc)
    return f"{path}{where}: invalid YAML: {problem}" + (f"; {advice}" if advice else "")


def parse_yaml(text, path, advice="fix or remove the file"):
    """TEXT parsed as YAML; CubbiError naming PATH:line:column when it is not."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CubbiError(yaml_error(path, exc, advice)) from None


def load(path, fresh=False, advice="fix or remove the file"):
    """The parsed YAML mapping in PATH ({} when the file does not exist);
    ADVICE ends the message of a malformed file."""
    if path in cache and not fresh:
        return cache[path]
    try:
        with open(path, encoding="utf-8") as fh:
            check_mode(path, fh.fileno())
            text = fh.read()
    except FileNotFoundError:
        data = {}
    except IsADirectoryError:
        raise CubbiError(f"{path} is a directory, not a config file; move it away") from None
    except UnicodeDecodeError:
        raise CubbiError(f"{path}: not UTF-8 text; {advice}") from None
    except OSError as exc:
        raise CubbiError(f"cannot read {path}: {exc.strerror}") from None
    else:
        data = parse_yaml(text, path, advice) or {}
        if not isinstance(data, dict):
            raise CubbiError(f"{path}: the top level must be a mapping of sections; {advice}")
    cache[path] = data
    return data


_repaired = set()  # paths said to be repaired: once per process, however often read


def check_mode(path, fd):
    """Repair a file others can read or write (chmod 0600, said on stderr
    once); refuse it when it cannot be repaired."""
    st = os.fstat(fd)
    if not st.st_mode & 0o077 or not os.path.isfile(path):
        return
    old = st.st_mode & 0o777
    try:
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise CubbiError(f"{path} is open to other users (mode {old:04o}) and cannot be "
                         f"repaired ({exc.strerror}); run: chmod 600 {path}") from None
    if path in _repaired:
        return
    _repaired.add(path)
    import sys

    sys.stderr.write(f"cubbi: {path} was open to other users (mode {old:04o}); "
                     "repaired to 0600\n")


def atomic_write(path, data, mode=0o600):
    """Replace PATH with DATA (bytes) so that a reader sees the old file or
    the new one, never a part: a temp file in the same directory, fsync,
    rename, fsync of the directory.  On failure the old file is untouched."""
    import tempfile

    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise CubbiError(f"cannot write {path}: {exc.strerror}; nothing was changed") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CubbiError(f"cannot write {path}: {exc.strerror or exc}; "
                             "the file is unchanged") from None
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save(data, path, header="# written by cubbi (mode 0600)\n"):
    """Write DATA as YAML to PATH: atomically, mode 0600.  A symlinked file
    (dotfiles) is written through to its target."""
    import yaml

    path = os.path.realpath(path)
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)
    atomic_write(path, (header + (text if data else "")).encode())
    cache.clear()


class edit:
    """`with files.edit(path) as data:` the file under an exclusive lock,
    read fresh, saved when the block succeeds; untouched when it raises."""

    def __init__(self, path, header=None, advice="fix or remove the file"):
        self.path = path
        self.header = header
        self.advice = advice

    def __enter__(self):
        import fcntl

        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self.lock = open(os.path.join(directory, f".{os.path.basename(self.path)}.lock"), "a")
        except OSError as exc:
            raise CubbiError(f"cannot write in {directory}: {exc.strerror}") from None
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.data = self.read()
        return self.data

    def read(self):
        return load(self.path, fresh=True, advice=self.advice)

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                if self.header is None:
                    save(self.data, self.path)
                else:
                    save(self.data, self.path, self.header)
        finally:
            self.lock.close()
        return False


def tar_bytes(files):
    """A tar archive of {path: (bytes, mode, uid, gid)}."""
    import io
    import tarfile  # only create needs these (~5 ms): not on cubbi-ls's path
    import time

    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = set()
        for path in files:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = now
            tar.addfile(info)
        for path, (data, mode, uid, gid) in files.items():
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = mode
            info.uid, info.gid = uid, gid
            info.mtime = now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

"""Per-project persistent tool state on the host.

~/.cubbi/projects/<hash>/config (CUBBI_HOME moves ~/.cubbi) is mounted at
/cubbi-config in every session of the same project; the image's
persistent_configs are symlinked into it by the init.  <hash> is the first
16 hex digits of the SHA-256 of the project's id (its normalised repository
URL, host/owner/repo) for --project, or of the absolute local path for a
mounted directory.  A session with neither keeps no state.  Beside config/,
a file `source` says which project or directory the folder belongs to.
"""

import hashlib
import os


def home():
    return os.environ.get("CUBBI_HOME") or os.path.join(os.path.expanduser("~"), ".cubbi")


def project_key(project=None, mount=None):
    """What the state is keyed on: 'project host/owner/repo' or 'path /abs'."""
    if project:
        from . import projects

        return f"project {projects.normalise(project)[0]}"
    if mount:
        return f"path {os.path.realpath(os.path.abspath(mount))}"
    return None


def state_dir(project=None, mount=None, uid=None, gid=None, create=True):
    """The host folder mounted at /cubbi-config for this project or mount
    (created, owned by uid/gid), or None when there is neither."""
    key = project_key(project, mount)
    if key is None:
        return None
    digest = hashlib.sha256(key.split(" ", 1)[1].encode()).hexdigest()[:16]
    top = os.path.join(home(), "projects", digest)
    path = os.path.join(top, "config")
    if create:
        from .errors import CubbiError

        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            marker = os.path.join(top, "source")
            if not os.path.exists(marker):
                with open(marker, "w") as fh:
                    fh.write(key + "\n")
        except OSError as exc:
            raise CubbiError(f"cannot create the project's state folder {path}: "
                             f"{exc.strerror}; set CUBBI_HOME to a writable folder") from None
        uid = os.getuid() if uid is None else uid
        gid = os.getgid() if gid is None else gid
        if os.geteuid() == 0:  # the session user owns what it writes there
            for p in (top, path):
                st = os.stat(p)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.chown(p, uid, gid)
    return path

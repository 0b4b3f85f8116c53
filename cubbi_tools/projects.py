"""Projects: git repositories a session clones into /app, with their
credentials.

One project has one id, whatever form of its URL the user types:
`github.com/hello/private`, `git@github.com:hello/private.git`,
`https://github.com/hello/private` and `ssh://git@github.com/hello/private`
are all `github.com/hello/private` (host[:port]/path, no `.git`, no default
port).  Metadata (id, clone URL, kind of credential) lives in
`projects.yaml` in the config directory (mode 0600, written atomically);
the credential itself only in the secret store (cubbi_tools.secrets), under
`project:<id>:ssh_key` or `project:<id>:token`.

URLs are validated against a strict character set before they go anywhere
near a shell: a URL holding `;`, `$(...)`, quotes, spaces or a password is
refused here, and the clone hook quotes every expansion besides.
"""

import os
import re

from .errors import CubbiError, NotFound, UsageError

FILE = "projects.yaml"
AUTH_KINDS = ("ssh_key", "token", "none")
DEFAULT_PORTS = {"ssh": 22, "https": 443, "http": 80, "git": 9418}
SCHEMES = {"ssh": "ssh", "git+ssh": "ssh", "ssh+git": "ssh", "https": "https",
           "http": "http", "git": "git"}

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?"
_USER = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_SEG = re.compile(r"[A-Za-z0-9_~+][A-Za-z0-9._~+-]{0,200}")
_URL = re.compile(rf"(?P<scheme>[a-z+]+)://(?:(?P<user>{_USER})(?P<pw>:[^@/]*)?@)?"
                  rf"(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?(?P<path>/.*)")
_SCP = re.compile(rf"(?:(?P<user>{_USER})@)?(?P<host>{_HOST}):(?P<path>[^/].*)")
_BARE = re.compile(rf"(?P<host>{_HOST})(?P<path>/.*)")
_ID_PORT = re.compile(rf"(?P<host>{_HOST}):(?P<port>[0-9]{{1,5}})(?P<path>/.*)")


class Remote:
    """A parsed repository URL: scheme (ssh|https|http|git|None for the bare
    host/path form), user, host, port (None = the default), path (no .git,
    no leading slash), scp (True for user@host:path), suffix (".git" when
    the URL had it: the clone URL keeps the path as it was typed)."""

    def __init__(self, scheme, user, host, port, path, suffix="", scp=False):
        self.scheme, self.user, self.host, self.port = scheme, user, host, port
        self.path, self.scp, self.suffix = path, scp, suffix

    @property
    def hostport(self):
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def id(self):
        return f"{self.hostport}/{self.path}"

    def url(self, scheme=None):
        """The clone URL for a transport (default: the one given; https for
        the bare form)."""
        scheme = scheme or self.scheme or "https"
        same = scheme == (self.scheme or "https")
        path = self.path + (self.suffix if same or scheme != "ssh" else ".git")
        if scheme == "ssh":
            user = self.user or "git"
            if self.port or not self.scp and self.scheme == "ssh":
                return f"ssh://{user}@{self.hostport}/{path}"
            return f"{user}@{self.host}:{path}"
        user = f"{self.user}@" if self.user and same else ""
        return f"{scheme}://{user}{self.hostport}/{path}"

    def __repr__(self):
        return f"Remote({self.url()!r})"


def parse(url):
    """A Remote from any accepted URL form; UsageError when it is not one."""
    text = str(url or "").strip()
    if not text:
        raise UsageError("empty repository URL")
    bad = _bad_char(text)
    if bad:
        raise UsageError(f"invalid repository URL {text!r}: character {bad!r} is not allowed")
    m = _URL.fullmatch(text)
    if m:
        scheme = SCHEMES.get(m["scheme"])
        if not scheme:
            raise UsageError(f"invalid repository URL {text!r}: unsupported scheme "
                             f"{m['scheme']!r} (use ssh://, https://, http://, git:// or user@host:path)")
        if m["pw"] is not None:
            raise UsageError("a repository URL must not hold a password or token; store it with "
                             "cubbi-project add URL --token - (read from stdin)")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"invalid repository URL {text!r}: port {port} out of range")
        if port == DEFAULT_PORTS[scheme]:
            port = None
        return Remote(scheme, m["user"], m["host"].lower(), port, *_path(text, m["path"]))
    if "://" in text:
        raise UsageError(f"invalid repository URL {text!r}: expected scheme://[user@]host[:port]/path")
    m = _ID_PORT.fullmatch(text)
    if m:  # host:port/path, an id as cubbi prints it (git would read an scp path "port/path")
        port = int(m["port"])
        if not 0 < port < 65536:
            raise UsageError(f"invalid repository URL {text!r}: port {port} out of range")
        return Remote(None, None, m["host"].lower(), port, *_path(text, m["path"]))
    m = _SCP.fullmatch(text)
    if m:
        return Remote("ssh", m["user"], m["host"].lower(), None, *_path(text, m["path"]), scp=True)
    m = _BARE.fullmatch(text)
    if m:
        return Remote(None, None, m["host"].lower(), None, *_path(text, m["path"]))
    raise UsageError(f"invalid repository URL {text!r}: use host/owner/repo, "
                     "user@host:owner/repo.git, https://host/owner/repo or ssh://user@host[:port]/path")


def _bad_char(text):
    for c in text:
        if not (c.isascii() and (c.isalnum() or c in "@:/._~+-")):
            return c
    return None


def _path(text, path):
    """(path without .git, ".git" or "")"""
    path, suffix = path.strip("/"), ""
    if path.endswith(".git"):
        path, suffix = path[:-4].rstrip("/"), ".git"
    segs = path.split("/") if path else []
    if not segs or any(not _SEG.fullmatch(s) or s in (".", "..") for s in segs):
        raise UsageError(f"invalid repository URL {text!r}: the repository path must be "
                         "segments of letters, digits and ._~+- (no '..', not starting with '-')")
    return "/".join(segs), suffix


def normalise(url):
    """(id, clone_url, host) for any accepted URL form.  The id is what the
    project is known by (and what its persistent state is keyed on); host is
    host[:port] as in the id."""
    r = parse(url)
    return r.id, r.url(), r.hostport


# -- the metadata file -----------------------------------------------------
def path():
    from . import files

    return os.path.join(files.config_dir(), FILE)


def _read():
    """{id: {url, auth, added}} from the projects file ({} when absent)."""
    from . import files

    return _projects_of(files.load(path(), fresh=True))


def _projects_of(data):
    projects = data.setdefault("projects", {}) if isinstance(data, dict) else None
    if projects is None:
        data["projects"] = projects = {}
    if not isinstance(projects, dict):
        raise CubbiError(f"{path()}: 'projects' must be a mapping of id to project")
    return projects


# -- the secret store --------------------------------------------------------
def secret_name(pid, kind):
    return f"project:{pid}:{kind}"


def _store():
    from . import secrets

    return secrets


# -- credentials given on the command line -----------------------------------
def read_ssh_key(filename):
    """The private key in filename, checked: a private key, not a public one,
    not protected by a passphrase (a session cannot type it)."""
    p = os.path.expanduser(filename)
    try:
        with open(p, encoding="ascii", errors="replace") as fh:
            key = fh.read(1 << 20)
    except FileNotFoundError:
        raise NotFound(f"--ssh-key {filename}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--ssh-key {filename}: is a directory, give the private key file") from None
    except OSError as exc:
        raise CubbiError(f"--ssh-key {filename}: cannot read it ({exc.strerror})") from None
    if key.startswith(("ssh-", "ecdsa-", "sk-")):
        raise UsageError(f"--ssh-key {filename}: this is a public key; give the private key "
                         "(the file without .pub)")
    m = re.search(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----(.*?)-----END \1PRIVATE KEY-----", key, re.S)
    if not m:
        raise UsageError(f"--ssh-key {filename}: not a private key (no BEGIN ... PRIVATE KEY line)")
    body = m.group(2)
    if "ENCRYPTED" in body or "Proc-Type: 4,ENCRYPTED" in key or _openssh_encrypted(body):
        raise UsageError(f"--ssh-key {filename}: the key is protected by a passphrase, which a "
                         "session cannot type; use a deploy key without one")
    return m.group(0).strip() + "\n"


def _openssh_encrypted(body):
    import base64
    import binascii
    import struct

    try:
        raw = base64.b64decode("".join(body.split()), validate=False)
    except (binascii.Error, ValueError):
        return False
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic) or len(raw) < len(magic) + 4:
        return False
    (n,) = struct.unpack(">I", raw[len(magic):len(magic) + 4])
    cipher = raw[len(magic) + 4:len(magic) + 4 + n]
    return cipher != b"none"


def check_token(token, where="--token"):
    token = (token or "").strip()
    if not token:
        raise UsageError(f"{where}: the token is empty")
    if any(not c.isprintable() or c.isspace() for c in token):
        raise UsageError(f"{where}: the token must be one line without spaces")
    return token


# -- the library interface ---------------------------------------------------
CREDENTIAL_TEXT = {"ssh_key": "an SSH private key", "token": "an access token", "none": None}


def record(pid, meta, detail=False):
    """The public record of a project (never the credential)."""
    r = parse(meta.get("url") or pid)
    rec = {"id": pid, "url": meta.get("url"), "host": r.hostport,
           "auth": meta.get("auth") or "none", "added": meta.get("added")}
    if detail:
        rec["credential"] = CREDENTIAL_TEXT[rec["auth"]]
        rec["credential_store"] = _store().where() if rec["auth"] != "none" else None
    return rec


def exists_error(pid):
    """The refusal of adding project pid again without --force."""
    return CubbiError(f"project {pid} exists; use --force to replace it (its stored "
                      f"credential goes) or cubbi-project remove {pid}")


def clone_url(url, auth):
    """(project id, clone URL) of URL for a credential of kind AUTH: an SSH
    key clones over ssh (git@host:path.git), a token over https.  Used by
    cubbi-project add and by the service, so a project stored either way
    clones the same."""
    r = parse(url)
    if auth == "ssh_key":
        if r.scheme not in (None, "ssh"):
            if r.port:
                raise UsageError(f"--ssh-key needs an SSH URL (user@host:path or ssh://host:port/path), "
                                 f"not {url}")
            r = Remote("ssh", None, r.host, None, r.path, scp=True, suffix=".git")
        return r.id, r.url("ssh")
    if auth == "token" and r.scheme in ("ssh", "git"):
        if r.port:
            raise UsageError(f"--token needs an https:// URL, not {url}")
        r = Remote("https", None, r.host, None, r.path, suffix=r.suffix)
    return r.id, r.url()


def add(url, ssh_key=None, token=None, force=False):
    """Store a project and its credential; return (record, replaced).  A
    project already stored is refused unless force: replacing it drops its
    credential, which nothing else keeps."""
    import datetime

    if ssh_key and token:
        raise UsageError("give one credential: --ssh-key or --token")
    auth = "ssh_key" if ssh_key else "token" if token else "none"
    pid, clone = clone_url(url, auth)
    store = _store()
    from . import files

    meta = {"url": clone, "auth": auth, "added": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ")}
    # all under the projects file's lock (the secret file store locks its own
    # file): two adds of one id cannot interleave, and a refused add touches
    # no secret.  A new secret is undone when the metadata cannot be written.
    stored = False
    try:
        with files.edit(path()) as data:
            projects = _projects_of(data)
            replaced = pid in projects
            if replaced and not force:
                raise exists_error(pid)
            for kind in ("ssh_key", "token"):
                if kind != auth:
                    store.delete(secret_name(pid, kind))
            if auth != "none":
                store.put(secret_name(pid, auth), ssh_key or token)
                stored = True
            projects[pid] = meta
    except BaseException:
        if stored:
            store.delete(secret_name(pid, auth))
        raise
    return record(pid, meta), replaced


def all_projects():
    return [record(pid, meta) for pid, meta in sorted(_read().items())]


def find(url_or_id):
    """(id, metadata) of the stored project a URL or id names, or (id, None)."""
    pid = parse(url_or_id).id
    return pid, _read().get(pid)


def get(url_or_id, detail=False):
    pid, meta = find(url_or_id)
    if meta is None:
        raise NotFound(f"no project {pid!r}; see cubbi-project list")
    return record(pid, meta, detail=detail)


def remove(url_or_id):
    pid = parse(url_or_id).id
    store = _store()
    from . import files

    if pid not in _read():
        raise NotFound(f"no project {pid!r}; see cubbi-project list")
    with files.edit(path()) as data:  # (the secrets under the lock, as add does)
        meta = _projects_of(data).pop(pid, None)
        if meta is None:  # removed meanwhile by another run
            raise NotFound(f"no project {pid!r}; see cubbi-project list")
        for kind in ("ssh_key", "token"):
            store.delete(secret_name(pid, kind))
    return record(pid, meta)


# -- into a session ----------------------------------------------------------
PROJECT_DIR = "/cubbi/project"


def session_setup(url, found=None):
    """What a session for this project needs: (clone URL, id, env, files).

    files are {container path: (text, mode)}, owned by the session user; the
    credential is one of them (0600), never an environment variable.  A URL
    with no stored project is cloned anonymously.  found=(meta, credential)
    comes from another store than the local one (the service's database)."""
    import shlex

    r = parse(url)
    pid, meta = r.id, (found[0] if found else _read().get(r.id))
    files = {}
    auth = "none"
    if meta is not None:
        auth = meta.get("auth") or "none"
        r = parse(meta.get("url") or url)
        if auth in ("ssh_key", "token"):
            value = found[1] if found else _store().get(secret_name(pid, auth))
            if not value:
                raise CubbiError(f"the {auth.replace('_', ' ')} of project {pid} is missing from "
                                 f"the secret store ({_store().where()}); add it again with "
                                 f"cubbi-project add --force {pid} --{auth.replace('_', '-')} ...")
            if auth == "ssh_key" and not value.endswith("\n"):
                value += "\n"
            files[f"{PROJECT_DIR}/{auth}"] = (value, 0o600)
    clone = r.url()
    scheme = r.scheme or "https"
    port = r.port or DEFAULT_PORTS[scheme]
    conf = {"CUBBI_PROJECT_URL": clone, "CUBBI_PROJECT_ID": pid, "CUBBI_PROJECT_SCHEME": scheme,
            "CUBBI_PROJECT_HOST": r.host, "CUBBI_PROJECT_PORT": str(port),
            "CUBBI_PROJECT_HOSTPORT": r.hostport,
            "CUBBI_PROJECT_AUTH": auth}
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in conf.items())
    files[f"{PROJECT_DIR}/project.env"] = (text, 0o644)
    env = {"CUBBI_PROJECT_URL": clone, "CUBBI_PROJECT_TYPE": "git"}
    return clone, pid, env, files

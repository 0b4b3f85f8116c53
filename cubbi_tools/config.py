"""The user configuration file: ~/.config/cubbi/config.yaml.

The directory can be moved with CUBBI_CONFIG_DIR.  The file is read lazily
(yaml costs ~24 ms to import; `peek` imports nothing when there is no file)
and written atomically (temp file in the same directory, fsync, rename) with
mode 0600.  The known keys, their types and defaults are in SCHEMA; the file
format is documented in FORMAT_DOC (man page cubbi-config(5)).

Values may be references, resolved at use:
  secret:NAME    the secret NAME in the secret store (see secrets.py)
  ${VAR}         the environment variable VAR ($${VAR} is a literal ${VAR})
"""

import os
import re

from .errors import CubbiError, NotFound, UsageError

FILE = "config.yaml"
MASK = "********"
SECRET_REF = "secret:"
SECTIONS = ("defaults", "services", "docker", "remote", "ui", "images")

# key -> (type, default).  '*' is one name segment (a service, an endpoint).
SCHEMA = {
    "defaults.image": ("string", "goose"),
    "defaults.connect": ("bool", True),
    "defaults.mount_local": ("bool", True),
    "defaults.networks": ("networks", []),
    "defaults.cpus": ("cpus", None),
    "defaults.memory": ("memory", None),
    "defaults.pids_limit": ("count", None),
    "defaults.hardened": ("bool", False),
    "services.*.*": ("string", None),
    "docker.network": ("network", "cubbi-network"),
    "docker.socket": ("socket", None),
    "remote.default": ("endpoint", None),
    "remote.endpoints.*.url": ("url", None),
    "remote.endpoints.*.auth_method": ("string", None),
    "ui.colors": ("bool", True),
    "ui.verbose": ("bool", False),
    "images.ca_cert": ("files", None),
    "images.base": ("string", None),
    "images.mirror": ("url", None),
}

# The spec's services have known fields, so a typo there is caught; any
# other service (a provider the user adds) takes any field.
SERVICE_FIELDS = {
    "langfuse": ("url", "public_key", "secret_key"),
    "openai": ("api_key", "base_url", "org_id", "project_id"),
    "anthropic": ("api_key", "base_url", "auth_token"),
    "openrouter": ("api_key", "base_url"),
}
# services.<name>.<field> -> <NAME>_<FIELD>, except these (the spec's names)
SPECIAL_ENV = {
    ("langfuse", "public_key"): "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    ("langfuse", "secret_key"): "LANGFUSE_INIT_PROJECT_SECRET_KEY",
}
SECRET_WORDS = ("key", "token", "secret", "password")

_SERVICE = re.compile(r"[a-z][a-z0-9_-]*\Z")
_FIELD = re.compile(r"[a-z][a-z0-9_]*\Z")
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_MEMORY = re.compile(r"\d+(\.\d+)?[bkmgt]?b?\Z", re.I)
_ENVREF = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)\}")


def config_dir():
    env = os.environ.get("CUBBI_CONFIG_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "cubbi")


def config_path():
    return os.path.join(config_dir(), FILE)


_cache = {}


# -- reading -------------------------------------------------------------------
def load(path=None, fresh=False):
    """The parsed YAML file as a dict ({} when the file does not exist)."""
    path = path or config_path()
    if path in _cache and not fresh:
        return _cache[path]
    try:
        with open(path, encoding="utf-8") as fh:
            _check_mode(path, fh.fileno())
            text = fh.read()
    except FileNotFoundError:
        data = {}
    except IsADirectoryError:
        raise CubbiError(f"{path} is a directory, not a config file; move it away") from None
    except UnicodeDecodeError:
        raise CubbiError(f"{path}: not UTF-8 text; fix or remove the file") from None
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


def _check_mode(path, fd):
    """Repair a file others can read or write (chmod 0600, said on stderr);
    refuse it when it cannot be repaired."""
    st = os.fstat(fd)
    if not st.st_mode & 0o077 or not os.path.isfile(path):
        return
    old = st.st_mode & 0o777
    try:
        os.fchmod(fd, 0o600)
    except OSError as exc:
        raise CubbiError(f"{path} is open to other users (mode {old:04o}) and cannot be "
                         f"repaired ({exc.strerror}); run: chmod 600 {path}") from None
    import sys

    sys.stderr.write(f"cubbi: {path} was open to other users (mode {old:04o}); "
                     "repaired to 0600\n")


def lookup(data, key, default=None):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def peek(key, default=None):
    """A value from the config, without importing yaml when there is no file.
    Known keys come back typed (a wrong type is an error naming the key) with
    ${VAR} references resolved."""
    path = config_path()
    if path not in _cache and not os.path.exists(path):
        return default
    data = load(path)
    if lookup(data, key) is None:
        return default
    return value(data, key)


def value(data, key):
    """The typed, resolved value of KEY in DATA, or its default."""
    raw = lookup(data, key)
    if raw is None:
        return default_of(key)
    return coerce(key, resolve(key, raw), source=config_path())


def defaults(data=None):
    """Every defaults.* key, typed, with the built-in defaults filled in."""
    data = load() if data is None else data
    return {k.split(".", 1)[1]: value(data, k) for k in SCHEMA if k.startswith("defaults.")}


# -- keys ----------------------------------------------------------------------
def canonical(key):
    """The full dotted key: the spec's shorthand `openai.api_key` is
    `services.openai.api_key`."""
    key = (key or "").strip()
    if not key or any(not p for p in key.split(".")):
        raise UsageError(f"invalid key {key!r}: use dotted names such as defaults.image")
    if key.split(".", 1)[0] not in SECTIONS and "." in key:
        key = "services." + key
    return key


def schema_entry(key):
    """(pattern, type, default) for a full key, or None when unknown."""
    parts = key.split(".")
    for pattern, (kind, default) in SCHEMA.items():
        pp = pattern.split(".")
        if len(pp) == len(parts) and all(a == "*" or a == b for a, b in zip(pp, parts)):
            return pattern, kind, default
    return None


def default_of(key):
    entry = schema_entry(key)
    default = entry[2] if entry else None
    return list(default) if isinstance(default, list) else default


def is_secret(key):
    last = key.rsplit(".", 1)[-1].lower()
    return any(word in last for word in SECRET_WORDS)


def known_keys(data=None):
    """Every concrete known key, plus those the file's own services and
    endpoints make: candidates for `did you mean`."""
    keys = [k for k in SCHEMA if "*" not in k]
    for svc, fields in SERVICE_FIELDS.items():
        keys += [f"services.{svc}.{f}" for f in fields]
    for name in (lookup(data or {}, "remote.endpoints") or {}):
        keys += [f"remote.endpoints.{name}.url", f"remote.endpoints.{name}.auth_method"]
    return keys


def check_key(key, data=None):
    """Raise UsageError for a key cubbi does not know, naming the nearest."""
    entry = schema_entry(key)
    parts = key.split(".")
    why = None
    if entry is None:
        why = "unknown key"
    elif parts[0] == "services":
        svc, field = parts[1], parts[2]
        if not _SERVICE.match(svc):
            why = "invalid service name (lowercase letters, digits, '-', '_'; a letter first)"
        elif not _FIELD.match(field):
            why = "invalid field name (lowercase letters, digits, '_'; a letter first)"
        elif svc in SERVICE_FIELDS and field not in SERVICE_FIELDS[svc]:
            why = f"unknown field for {svc} (known: {', '.join(SERVICE_FIELDS[svc])})"
    elif parts[0] == "remote" and len(parts) == 4 and not _ENDPOINT.match(parts[2]):
        why = "invalid endpoint name (letters, digits, '_', '.', '-')"
    if why:
        import difflib

        near = difflib.get_close_matches(key, known_keys(data), n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else "; see cubbi-config list or man 5 cubbi-config"
        raise UsageError(f"{key}: {why}{hint}")
    return entry


def env_var(service, field):
    """The session variable for services.SERVICE.FIELD."""
    special = SPECIAL_ENV.get((service, field))
    if special:
        return special
    return re.sub(r"[^A-Za-z0-9]", "_", f"{service}_{field}").upper()


# -- values --------------------------------------------------------------------
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse(key, text, data=None):
    """A command-line string for KEY as the typed value to store (UsageError
    when it does not fit)."""
    try:
        return coerce(key, text, data=data, strict=True)
    except ValueError as exc:
        shown = MASK if is_secret(key) else repr(text)
        raise UsageError(f"{key} {shown}: {exc}") from None


def coerce(key, raw, source=None, data=None, strict=False):
    """RAW (from the file or the command line) as KEY's type.  From the file
    (source given) a misfit is a CubbiError naming the file and key; else
    ValueError."""
    entry = schema_entry(key)
    if entry is None:
        return raw
    kind = entry[1]
    try:
        return _COERCE[kind](raw, data, strict) if raw is not None else None
    except ValueError as exc:
        if source is None:
            raise
        raise CubbiError(f"{source}: {key}: {exc}; fix it with cubbi-config set {key} VALUE") from None


def _string(raw, data, strict):
    if isinstance(raw, (dict, list)):
        raise ValueError("expected a single value, not a list or mapping")
    if isinstance(raw, bool):
        return "true" if raw else "false"
    text = str(raw)
    if strict and not text:
        raise ValueError("empty value; to remove it use cubbi-config unset")
    return text


def _bool(raw, data, strict):
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def network_name(name):
    name = str(name).strip()
    if name in ("host", "none"):
        raise ValueError(f"a session cannot join the {name!r} network besides cubbi-network")
    if not _NETWORK.match(name):
        raise ValueError(f"invalid network name {name!r}: use letters, digits, '_', '.', '-', "
                         "starting with a letter or digit (at most 128 characters)")
    return name


def _network(raw, data, strict):
    return network_name(_string(raw, data, True))


def _networks(raw, data, strict):
    if isinstance(raw, str):
        text = raw.strip().strip("[]")
        items = [p.strip().strip("'\"") for p in text.split(",")] if text.strip() else []
    elif isinstance(raw, list):
        items = raw
    else:
        raise ValueError("expected a list of network names")
    return list(dict.fromkeys(network_name(n) for n in items))


def _cpus(raw, data, strict):
    try:
        n = float(raw)
    except (TypeError, ValueError):
        n = 0
    if isinstance(raw, bool) or not n > 0:
        raise ValueError("expected a positive number of CPUs, e.g. 1.5")
    return int(n) if n == int(n) else n


def _count(raw, data, strict):
    try:
        n = int(str(raw))
    except ValueError:
        n = 0
    if isinstance(raw, bool) or n <= 0:
        raise ValueError("expected a positive whole number")
    return n


def _memory(raw, data, strict):
    text = str(raw).strip()
    if isinstance(raw, bool) or not _MEMORY.match(text):
        raise ValueError("expected a size such as 512m or 2g")
    return text


def _socket(raw, data, strict):
    text = _string(raw, data, True)
    if text.startswith("/") or re.match(r"(unix|tcp|http|https)://.", text):
        return text
    raise ValueError("expected an absolute socket path or a unix://, tcp:// or https:// address")


def _url(raw, data, strict):
    text = _string(raw, data, True)
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _endpoint(raw, data, strict):
    name = _string(raw, data, True)
    endpoints = lookup(data or {}, "remote.endpoints") or {}
    if strict and name not in endpoints:
        have = ", ".join(sorted(endpoints)) or "none"
        raise ValueError(f"no remote endpoint of that name (configured: {have}); "
                         "add it with cubbi-remote add")
    return name


def _file(raw, data, strict):
    text = _string(raw, data, True)
    if not strict:
        return os.path.expanduser(text)
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isfile(path):
        raise ValueError(f"no such file {path}")
    return path


def _files(raw, data, strict):
    """One path, or a list (comma-separated on the command line)."""
    if isinstance(raw, list):
        return [_file(p, data, strict) for p in raw]
    text = _string(raw, data, True)
    if strict and "," in text:
        return [_file(p.strip(), data, strict) for p in text.split(",") if p.strip()]
    return _file(text, data, strict)


_COERCE = {
    "string": _string, "bool": _bool, "network": _network, "networks": _networks,
    "cpus": _cpus, "count": _count, "memory": _memory, "socket": _socket, "url": _url,
    "endpoint": _endpoint, "file": _file, "files": _files,
}


def has_env_ref(text):
    return isinstance(text, str) and any(not m.group(1) for m in _ENVREF.finditer(text))


def secret_ref(key, raw):
    """The secret name RAW refers to, or None.  Only a secret key's value is
    a reference (cubbi writes secret:KEY there); elsewhere `secret:...` is
    a plain string."""
    if isinstance(raw, str) and raw.startswith(SECRET_REF) and is_secret(key):
        return raw[len(SECRET_REF):]
    return None


def owned_secrets(before, after):
    """The secret-store names that belonged to settings of BEFORE that AFTER
    no longer has: each removed secret key's own name (never a name its
    value mentions), and the token of each removed remote endpoint."""
    names = [k for k, _ in flatten(before) if is_secret(k) and lookup(after, k) is None]
    old = lookup(before, "remote.endpoints")
    new = lookup(after, "remote.endpoints")
    if isinstance(old, dict):
        from .remote import token_secret

        new = new if isinstance(new, dict) else {}
        names += [token_secret(n) for n in old if n not in new]
    return names


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

    def sub(m):
        if m.group(1):
            return "${" + m.group(2) + "}"
        var = m.group(2)
        if var not in os.environ:
            raise CubbiError(f"{key}: ${{{var}}} is not set in the environment; export "
                             f"{var}=... or remove the setting with: cubbi-config unset {key}")
        return os.environ[var]

    return _ENVREF.sub(sub, raw)


def session_env(cfg, skip=()):
    """The session variables the config's services give (OPENAI_API_KEY, ...),
    references resolved.  Variables in SKIP (set by a stronger source: -e,
    --env-file) are not resolved at all."""
    services = cfg.get("services") or {}
    if not isinstance(services, dict):
        raise CubbiError(f"{config_path()}: services must be a mapping of services")
    env = {}
    for svc, fields in services.items():
        if fields is None:
            continue
        if not isinstance(fields, dict):
            raise CubbiError(f"{config_path()}: services.{svc} must be a mapping of fields, "
                             "e.g. api_key: ...")
        for field, raw in fields.items():
            var = env_var(str(svc), str(field))
            if var in skip or raw is None or raw == "":
                continue
            key = f"services.{svc}.{field}"
            text = _string(resolve(key, raw), None, False) if not isinstance(raw, (dict, list)) \
                else None
            if text is None:
                raise CubbiError(f"{config_path()}: {key} must be a single value")
            if text:
                env[var] = text
    return env


# -- writing -------------------------------------------------------------------
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


def save(data, path=None):
    """Write DATA as the config file: atomically, mode 0600.  A symlinked
    file (dotfiles) is written through to its target."""
    import yaml

    path = os.path.realpath(path or config_path())
    header = "# written by cubbi (mode 0600)\n"
    if os.path.basename(path) == FILE:
        header = "# cubbi configuration: see man 5 cubbi-config; edit with cubbi-config\n"
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)
    atomic_write(path, (header + (text if data else "")).encode())
    _cache.clear()


class edit:
    """`with config.edit() as data:` the file under an exclusive lock, read
    fresh, saved when the block succeeds; untouched when it raises."""

    def __init__(self, path=None):
        self.path = path or config_path()

    def __enter__(self):
        import fcntl

        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._lock = open(os.path.join(directory, f".{os.path.basename(self.path)}.lock"), "a")
        except OSError as exc:
            raise CubbiError(f"cannot write in {directory}: {exc.strerror}") from None
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.data = load(self.path, fresh=True)
        return self.data

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                save(self.data, self.path)
        finally:
            self._lock.close()
        return False


def set_in(data, key, val):
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise CubbiError(f"{'.'.join(parts[:i + 1])} holds a value, not a section; "
                             f"unset it first")
        node = nxt
    node[parts[-1]] = val


def unset_in(data, key):
    """Remove KEY (and sections it leaves empty); its old value, or raise NotFound."""
    parts = key.split(".")
    trail = [data]
    for part in parts[:-1]:
        node = trail[-1].get(part) if isinstance(trail[-1], dict) else None
        if not isinstance(node, dict):
            raise NotFound(f"{key} is not set")
        trail.append(node)
    if parts[-1] not in trail[-1]:
        raise NotFound(f"{key} is not set")
    old = trail[-1].pop(parts[-1])
    for i in range(len(parts) - 1, 0, -1):
        if trail[i]:
            break
        del trail[i - 1][parts[i - 1]]
    return old


def flatten(data, prefix=""):
    """(dotted key, leaf value) for every leaf of a nested mapping."""
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


FORMAT_DOC = """\
NAME
    config.yaml - the cubbi user configuration file

SYNOPSIS
    ~/.config/cubbi/config.yaml  (or $CUBBI_CONFIG_DIR/config.yaml)

DESCRIPTION
    A YAML mapping of sections: defaults, services, docker, remote, ui and
    images. Edit it with cubbi-config(1) (which checks every key and value)
    or by hand. cubbi-config rewrites the whole file atomically (a temp file
    in the same directory, fsync, rename) with mode 0600, so a crash or a
    full disk never leaves half a file; comments written by hand are not
    kept. A file that other users may read is repaired to 0600 (and said so
    on stderr), or refused when it cannot be. A file with invalid YAML is
    an error naming file:line:column and is never overwritten.

    The directory is $CUBBI_CONFIG_DIR when set, else
    $XDG_CONFIG_HOME/cubbi, else ~/.config/cubbi. Secrets kept in a file
    (see SECRETS) are in secrets.yaml beside config.yaml, also 0600.

DEFAULTS
    defaults.image (string, default goose)
        image for cubbi-create and bare cubbi when --image is not given.
    defaults.connect (true|false, default true)
        connect after creating a session (on a terminal).
    defaults.mount_local (true|false, default true)
        mount the current directory at /app unless --mount/--no-mount.
    defaults.networks (list, default [])
        networks every session joins besides cubbi-network, added to
        --network; managed with cubbi-config network add|remove|list.
        Names: letters, digits, '_', '.', '-', a letter or digit first;
        host and none are refused.
    defaults.cpus (number), defaults.memory (size such as 2g),
    defaults.pids_limit (whole number), defaults.hardened (true|false)
        resource limits and hardening for sessions, unless given as
        switches to cubbi-create.

SERVICES
    services.NAME.FIELD is delivered into every session as an environment
    variable (in the 0600 file /cubbi/env, which the init exports to the
    tool and to login shells; never as a container variable, so never in
    docker inspect). The spec's names:
        services.openai.api_key         OPENAI_API_KEY
        services.anthropic.api_key      ANTHROPIC_API_KEY
        services.openrouter.api_key     OPENROUTER_API_KEY
        services.langfuse.url           LANGFUSE_URL
        services.langfuse.public_key    LANGFUSE_INIT_PROJECT_PUBLIC_KEY
        services.langfuse.secret_key    LANGFUSE_INIT_PROJECT_SECRET_KEY
    Every other field follows one rule: services.NAME.FIELD becomes
    NAME_FIELD in upper case with '-' as '_', e.g. services.openai.base_url
    is OPENAI_BASE_URL and services.mistral.api_key is MISTRAL_API_KEY.
    The spec's four services take only their known fields (openai:
    api_key, base_url, org_id, project_id; anthropic: api_key, base_url,
    auth_token; openrouter: api_key, base_url; langfuse: url, public_key,
    secret_key), so a typo is caught; a service you add takes any field
    (lowercase letters, digits, '_'). A service name is lowercase letters,
    digits, '-' and '_', a letter first. On the command line the section
    may be left out: openai.api_key means services.openai.api_key.

    Precedence, strongest first: cubbi-create -e KEY=VALUE, then
    --env-file FILE, then these services, then cubbi's own defaults.
    References of a variable overridden by -e or --env-file are not
    resolved at all.

DOCKER
    docker.socket (path or unix://, tcp://, https:// address)
        the Docker engine, when DOCKER_HOST is not set; default
        /var/run/docker.sock.
    docker.network (network name, default cubbi-network)
        the network every session joins, made on demand (as a bridge
        network labelled cubbi.network=true) when it does not exist. On a
        server, the service config's docker.network decides instead.

REMOTE
    remote.default (endpoint name)
        the remote service commands use when -r/CUBBI_REMOTE is not given;
        it must name a configured endpoint.
    remote.endpoints.NAME.url (http:// or https:// URL)
    remote.endpoints.NAME.auth_method (string, e.g. oauth)
        a remote cubbi service; managed by cubbi-remote(1). Its tokens are
        kept in the secret store, not in this file.

UI
    ui.colors (true|false, default true)
        colour on terminals (NO_COLOR always wins).
    ui.verbose (true|false, default false)
        the spec's switch for more progress messages; accepted and checked,
        but no command prints more with it yet. Secrets are never shown,
        verbose or not.

IMAGES
    images.ca_cert (path of a PEM file, or a list of them)
        extra CA certificates added to image builds, for TLS-intercepting
        proxies (like cubbi-image build --ca-cert). cubbi-config stores
        absolute paths and checks the files exist; separate several with
        commas.
    images.base (a Docker image)
        the image built-in images are built FROM (build argument
        BASE_IMAGE); default debian:bookworm-slim, falling back to
        cubbi/base-os:bookworm (cubbi-image bootstrap-base) when it cannot
        be pulled. When set, it must exist or be pullable.
    images.mirror (URL)
        the Debian mirror cubbi-image bootstrap-base uses; default
        http://deb.debian.org/debian

SECRETS
    A key whose last part contains key, token, secret or password (api_key,
    public_key, auth_token, ...) is a secret. cubbi-config list and get show
    it as ******** unless --reveal is given. cubbi-config set stores its
    value in the secret store and writes a reference into this file:
        api_key: secret:services.openai.api_key
    The secret store is the system keyring through Python keyring (service
    name "cubbi"; e.g. the Secret Service of GNOME Keyring or KWallet, the
    macOS Keychain) when a usable backend exists, else secrets.yaml beside
    this file (mode 0600). cubbi-config set says which; cubbi-config path
    --json shows it. CUBBI_SECRETS=file forces the file, CUBBI_SECRETS=keyring
    requires the keyring (an error when none is usable), CUBBI_SECRETS=auto
    (the default) chooses. A secret written as a plain value by hand is used
    as it is (still masked), but it then sits in this file.

    Each secret belongs to its key: unset and reset delete the stored
    secret named after each key they remove (and cubbi-config unset of
    remote, remote.endpoints or an endpoint deletes the removed endpoints'
    tokens, remote:NAME:token), never a secret another key's value names.
    Removing a section or any key that holds settings (unset services,
    unset remote) asks first, or needs --yes off a terminal.

REFERENCES
    A value may refer to something resolved each time it is used:
        secret:NAME     in a secret key's value only: the secret NAME from
                        the secret store (in any other key, such as
                        defaults.image, secret:... is a plain string)
        ${VAR}          the environment variable VAR (anywhere in a string;
                        $${VAR} stands for a literal ${VAR})
    An environment variable that is not set when the value is needed is an
    error naming the key (exit status 1); a services key is needed by every
    cubbi-create, so export the variable in the shell that creates
    sessions (or cubbi-config unset the key), e.g.
        services.openai.api_key: ${OPENAI_KEY} is not set in the
        environment; export OPENAI_KEY=... or remove the setting with:
        cubbi-config unset services.openai.api_key
    cubbi-config set KEY '${VAR}' stores the reference itself, not a secret.

ENVIRONMENT
    CUBBI_CONFIG_DIR   directory holding config.yaml and secrets.yaml.
    CUBBI_SECRETS      auto (default), keyring or file: the secret store.
    DOCKER_HOST        the Docker engine; wins over docker.socket.

EXAMPLE
    defaults:
      image: aider
      connect: true
      mount_local: true
      networks: [teamnet]
    services:
      openai:
        api_key: secret:services.openai.api_key
      langfuse:
        url: https://cloud.langfuse.com
        public_key: ${LANGFUSE_PK}
        secret_key: secret:services.langfuse.secret_key
    docker:
      socket: /var/run/docker.sock
    remote:
      default: production
      endpoints:
        production:
          url: https://cubbi.example.com
          auth_method: oauth

SEE ALSO
    cubbi-config(1), cubbi-create(1), cubbi-remote(1)
"""

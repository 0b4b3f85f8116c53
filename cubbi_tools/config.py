"""The user configuration file: ~/.config/cubbi/config.yaml, its schema.

(Over 500 lines: SCHEMA, the table of every key with its type and default,
is most of it; splitting the table from its few readers would scatter one
definition over two files.)

The directory can be moved with CUBBI_CONFIG_DIR (files.config_dir).  The
file is read and written by files.py (lazily, atomically, mode 0600;
`peek` imports nothing when there is no file).  The known keys, their types
and defaults are in SCHEMA; the file format is documented in
data/cubbi-config.5.txt (FORMAT_DOC, man page cubbi-config(5)).  Values may
be references (`secret:NAME`, `${VAR}`), resolved at use by expand.py.
"""

import os
import re

from . import files
from .errors import CubbiError, NotFound, UsageError
from .expand import SECRET_REF, SECRET_WORDS, has_env_ref, is_secret, resolve, secret_ref  # noqa: F401
from .files import atomic_write, cache as _cache, config_dir  # noqa: F401

FILE = "config.yaml"
MASK = "********"
SECTIONS = ("defaults", "services", "docker", "remote", "ui", "images", "logging", "ssh")

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
    "defaults.idle_timeout": ("duration", None),
    "defaults.mcp": ("mcp_names", []),
    "defaults.allow_hosts": ("allow_hosts", []),
    "defaults.log_max_size": ("log_size", "10m"),
    "defaults.log_max_files": ("count", 3),
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
    "logging.providers": ("providers", []),
    "ssh.public_key": ("string", None),
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

_SERVICE = re.compile(r"[a-z][a-z0-9_-]*\Z")
_FIELD = re.compile(r"[a-z][a-z0-9_]*\Z")
_ENDPOINT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_MEMORY = re.compile(r"\d+(\.\d+)?[bkmgt]?b?\Z", re.I)


def config_path():
    return os.path.join(config_dir(), FILE)


# -- reading -------------------------------------------------------------------
# what a malformed config.yaml's error ends with
ADVICE = f"fix or remove the file, or run 'cubbi-config reset --yes' (keeps it as {FILE}.bak)"


def load(path=None, fresh=False):
    """The parsed YAML file as a dict ({} when the file does not exist)."""
    return files.load(path or config_path(), fresh, ADVICE)


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
    if key.split(".", 1)[0] not in SECTIONS and key.count(".") == 1:
        key = "services." + key  # only NAME.FIELD is the shorthand
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
        near = nearest_key(key, known_keys(data))
        hint = f"; did you mean {near}?" if near else "; see cubbi-config list or man 5 cubbi-config"
        raise UsageError(f"{key}: {why}{hint}")
    return entry


def nearest_key(key, keys, cutoff=0.6):
    """The known key closest to KEY when it is close (difflib ratio at
    least CUTOFF), else None.  Keys of KEY's own section are compared
    without it, so a shared 'services.' does not make a stranger close."""
    import difflib

    first, _, rest = key.partition(".")
    best, score = None, cutoff
    for k in keys:
        kfirst, _, krest = k.partition(".")
        a, b = (rest, krest) if kfirst == first else (key, k)
        ratio = difflib.SequenceMatcher(None, a, b).ratio()
        if ratio >= score:
            best, score = k, ratio
    return best


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


def _items(raw, what):
    """A list from the file, or comma-separated (optionally [...]) on the command line."""
    if isinstance(raw, str):
        text = raw.strip().strip("[]")
        return [p.strip().strip("'\"") for p in text.split(",")] if text.strip() else []
    if isinstance(raw, list):
        return raw
    raise ValueError(f"expected a list of {what}")


def _networks(raw, data, strict):
    return list(dict.fromkeys(network_name(n) for n in _items(raw, "network names")))


def _mcp_names(raw, data, strict):
    """MCP server names (cubbi-mcp): a list, or comma-separated on the command line."""
    items = _items(raw, "MCP server names")
    out = []
    for item in items:
        if not isinstance(item, str) or not re.match(r"[a-z0-9][a-z0-9_-]{0,39}\Z", item):
            raise ValueError(f"{item!r} is not an MCP server name (see cubbi-mcp list)")
        out.append(item)
    return list(dict.fromkeys(out))


def _allow_hosts(raw, data, strict):
    """An egress allowlist (HOST[:PORT], validate.parse_allow_host): a list,
    or comma-separated on the command line."""
    from .validate import allow_hosts

    try:
        return allow_hosts(_items(raw, "HOST[:PORT]"), "value")
    except UsageError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def _cpus(raw, data, strict):
    try:
        n = float(raw)
    except (TypeError, ValueError):
        n = 0
    if isinstance(raw, bool) or not n >= 0.01:  # validate.MIN_CPUS, as the docker CLI
        raise ValueError("expected a number of CPUs from 0.01, e.g. 1.5")
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


def _log_size(raw, data, strict):
    from .validate import parse_log_size

    try:
        return parse_log_size(raw, "size")
    except UsageError:
        raise ValueError("expected a size from 1k to 1024g such as 10m") from None


def _duration(raw, data, strict):
    from .validate import parse_duration

    try:
        parse_duration(raw, "duration")
    except UsageError:
        raise ValueError("expected a duration such as 30s, 15m, 2h or 1d") from None
    return str(raw).strip()


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


def _providers(raw, data, strict):
    """logging.providers: a YAML list (cubbi-config set takes it in flow
    style: '[{type: fluentd, url: tcp://127.0.0.1:24224}]').  Langfuse is
    configured as services.langfuse here, whose keys are kept as secrets."""
    from . import logfwd

    if isinstance(raw, str):
        from .files import parse_yaml

        try:
            raw = parse_yaml(raw, "logging.providers", advice=None)
        except CubbiError as exc:
            raise ValueError(str(exc)) from None
    return logfwd.parse(raw, where="providers", types=("fluentd", "syslog"))


_COERCE = {
    "string": _string, "bool": _bool, "network": _network, "networks": _networks,
    "mcp_names": _mcp_names, "allow_hosts": _allow_hosts,
    "cpus": _cpus, "count": _count, "memory": _memory, "log_size": _log_size, "socket": _socket,
    "duration": _duration,
    "url": _url, "endpoint": _endpoint, "file": _file, "files": _files, "providers": _providers,
}


def owned_secrets(before, after):
    """The secret-store names that belonged to settings of BEFORE that AFTER
    no longer has: each removed secret key's own name (never a name its
    value mentions), and the token of each removed remote endpoint."""
    names = [k for k, _ in flatten(before) if is_secret(k) and lookup(after, k) is None]
    old = lookup(before, "remote.endpoints")
    new = lookup(after, "remote.endpoints")
    if isinstance(old, dict):
        from .secrets import token_secret

        new = new if isinstance(new, dict) else {}
        names += [token_secret(n) for n in old if n not in new]
    return names


def config_secret(name):
    """True for a secret-store name that a setting of config.yaml owns: a
    secret key's own name (services.openai.api_key) or a remote endpoint's
    token (remote:NAME:token); never a project's (cubbi-project owns those)."""
    name = str(name)
    if re.fullmatch(r"remote:[^:\s]+:token", name):
        return True
    return name.split(".", 1)[0] in SECTIONS and "." in name and is_secret(name)


def scan_secret_names(text):
    """The secret-store names a config.yaml too broken to parse owned, as
    far as its text tells: each secret:NAME reference, and the token of each
    endpoint under remote.endpoints (read by indentation, as cubbi writes
    the file).  Only names config_secret() accepts."""
    names = re.findall(r"secret:([A-Za-z0-9_.:/@-]+)", text)
    path = []  # [(indent, key)]
    for line in text.splitlines():
        m = re.match(r"( *)([A-Za-z0-9_.-]+)\s*:", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        while path and path[-1][0] >= indent:
            path.pop()
        if [k for _, k in path] == ["remote", "endpoints"]:
            from .secrets import token_secret

            names.append(token_secret(m.group(2)))
        path.append((indent, m.group(2)))
    return [n for n in dict.fromkeys(names) if config_secret(n)]


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
HEADER = "# cubbi configuration: see man 5 cubbi-config; edit with cubbi-config\n"


def save(data, path=None):
    """Write DATA as the config file: atomically, mode 0600.  A symlinked
    file (dotfiles) is written through to its target."""
    path = path or config_path()
    if os.path.basename(os.path.realpath(path)) == FILE:
        files.save(data, path, HEADER)
    else:
        files.save(data, path)


def edit(path=None):
    """`with config.edit() as data:` the file under an exclusive lock, read
    fresh, saved when the block succeeds; untouched when it raises."""
    path = path or config_path()
    return files.edit(path, HEADER if os.path.basename(os.path.realpath(path)) == FILE else None,
                      ADVICE)


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


def __getattr__(name):
    """FORMAT_DOC: the text of man page cubbi-config(5), read from
    data/cubbi-config.5.txt when asked for (docs.py renders it)."""
    if name == "FORMAT_DOC":
        with open(os.path.join(os.path.dirname(__file__), "data", "cubbi-config.5.txt"),
                  encoding="utf-8") as fh:
            return fh.read()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

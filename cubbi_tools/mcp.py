"""MCP servers: their definitions, and what a session is told about them.

Three kinds, by where the server runs:

    container  a stdio server in its own container (IMAGE, --command CMD,
               -e K=V), behind mcp-proxy, which serves it over streamable
               HTTP (/mcp) and SSE (/sse) on a network that only the
               sessions using it join (cubbi_tools.mcpserve runs it)
    remote     a server elsewhere (URL, --header K=V)
    local      a stdio server that runs inside each session (argv)

Definitions live in `mcp.yaml` in the config directory (mode 0600, written
atomically under a lock), as projects do in projects.yaml.  A value (an -e
value or a header) whose name says key, token, secret, password or auth is
stored only in the secret store, under `mcp:<name>:env:<K>` or
`mcp:<name>:header:<K>`; mcp.yaml records `secret:` in its place.  The
default list (servers a session gets without --mcp) is `defaults.mcp` in
config.yaml.

A session gets the servers as /cubbi/mcp.json (FORMAT below, written by
session_files) and MCP_HOST, the URL of the first one that has a URL.
Every value (header, env) is given by reference: the name of a variable of
the session's environment (/cubbi/env, 0600), never the value itself.
"""

import os
import re

from .errors import CubbiError, NotFound, UsageError

FILE = "mcp.yaml"
KINDS = ("container", "remote", "local")
SECRET_WORDS = ("key", "token", "secret", "password", "auth", "credential")
SECRET = "secret:"
MASK = "********"
PORT = 8080
JSON_PATH = "/cubbi/mcp.json"

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}\Z")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")

FORMAT = """\
/cubbi/mcp.json (mode 0644, one object):
  {"version": 1,
   "servers": [
     {"name": "time", "kind": "container", "transport": "http",
      "url": "http://cubbi-mcp-time:8080/mcp", "sse_url": "http://cubbi-mcp-time:8080/sse",
      "headers": {}},
     {"name": "docs", "kind": "remote", "transport": "http",
      "url": "https://mcp.example.com/mcp", "sse_url": null,
      "headers": {"Authorization": {"env": "CUBBI_MCP_DOCS_H_AUTHORIZATION"}}},
     {"name": "clock", "kind": "local", "transport": "stdio",
      "command": "mcp-server-time", "args": ["--local-timezone", "UTC"],
      "env": {"TZ": {"env": "CUBBI_MCP_CLOCK_E_TZ"}}}]}
  transport is "http" (streamable HTTP at url; sse_url serves SSE where the
  server has it, a remote URL ending in /sse is transport "sse") or "stdio".
  Each header and env value is a reference {"env": VAR}: its value is the
  session variable VAR (in /cubbi/env, 0600, loaded by login shells)."""


def check_name(name):
    name = str(name or "").strip()
    if not _NAME.match(name):
        raise UsageError(f"invalid MCP server name {name!r}: use 1-40 lowercase letters, "
                         "digits, '_' and '-', starting with a letter or digit")
    return name


def is_secret(key):
    low = key.lower()
    return any(word in low for word in SECRET_WORDS)


def parse_pairs(items, what, header=False):
    """{K: V} from K=V strings (-e, --header); UsageError naming the bad one."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        ok = _HEADER.match(key) if header else _VAR.match(key)
        if not sep or not ok:
            raise UsageError(f"{what} {item!r}: expected " +
                             ("NAME=VALUE with a header name" if header else "KEY=VALUE"))
        out[key] = value
    return out


def check_url(url):
    url = str(url or "").strip()
    if not re.match(r"https?://[^/\s?#]+(/\S*)?\Z", url):
        raise UsageError(f"invalid MCP server URL {url!r}: expected http(s)://host[:port]/path")
    if re.match(r"https?://[^/@]*@", url):
        raise UsageError("an MCP server URL must not hold a password or token; "
                         "give it as --header 'Authorization=Bearer ...'")
    return url


def secret_name(name, part, key):
    return f"mcp:{name}:{part}:{key}"


# -- the definitions file -----------------------------------------------------
def path():
    from . import files

    return os.path.join(files.config_dir(), FILE)


def _servers_of(data):
    servers = data.setdefault("servers", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise CubbiError(f"{path()}: 'servers' must be a mapping of name to server")
    return servers


def _read():
    from . import files

    return _servers_of(files.load(path(), fresh=True))


def _store():
    from . import secrets

    return secrets


def split_secrets(name, meta):
    """(meta with secret values replaced by 'secret:', {secret name: value})."""
    meta = dict(meta)
    found = {}
    for part, field in (("env", "env"), ("header", "headers")):
        if field not in meta:
            continue
        values = dict(meta.get(field) or {})
        for key, value in values.items():
            if is_secret(key) and value != SECRET:
                found[secret_name(name, part, key)] = value
                values[key] = SECRET
        meta[field] = values
    return meta, found


def definition(kind, image=None, command=None, env=None, url=None, headers=None, argv=None):
    """A checked definition (the fields of its kind only)."""
    if kind == "container":
        if not str(image or "").strip():
            raise UsageError("give the server's Docker image")
        from .validate import check_image_ref

        meta = {"kind": kind, "image": check_image_ref(image.strip(), "IMAGE"),
                "command": command or None, "env": dict(env or {})}
    elif kind == "remote":
        meta = {"kind": kind, "url": check_url(url), "headers": dict(headers or {})}
    elif kind == "local":
        argv = [str(a) for a in argv or []]
        if not argv or not argv[0].strip():
            raise UsageError("add-local: give the server's command after --, e.g. "
                             "cubbi-mcp add-local NAME -- mcp-server-time")
        meta = {"kind": kind, "command": argv[0], "args": argv[1:], "env": dict(env or {})}
    else:
        raise UsageError(f"unknown MCP server kind {kind!r}")
    return meta


def exists_error(name):
    return CubbiError(f"MCP server {name} exists; use --force to replace it, or "
                      f"cubbi-mcp remove {name}")


def add(name, meta, force=False):
    """Store a definition (secret values to the secret store); return
    (record, replaced)."""
    import datetime

    from . import files

    name = check_name(name)
    meta, found = split_secrets(name, meta)
    meta["added"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    store = _store()
    stored = []
    try:
        with files.edit(path()) as data:
            servers = _servers_of(data)
            old = servers.get(name)
            if old is not None and not force:
                raise exists_error(name)
            for secret in _secret_names(name, old or {}):
                if secret not in found:
                    store.delete(secret)
            for secret, value in found.items():
                store.put(secret, value)
                stored.append(secret)
            servers[name] = meta
    except BaseException:
        for secret in stored:
            store.delete(secret)
        raise
    return record(name, meta), old is not None


def _secret_names(name, meta):
    out = []
    for part, field in (("env", "env"), ("header", "headers")):
        out += [secret_name(name, part, k) for k, v in (meta.get(field) or {}).items() if v == SECRET]
    return out


def record(name, meta):
    """The public record (secret values masked)."""
    rec = {"name": name, "kind": meta.get("kind")}
    for key in ("image", "command", "args", "url"):
        if key in meta:
            rec[key] = meta[key]
    for field in ("env", "headers"):
        if field in meta:
            rec[field] = {k: (MASK if v == SECRET else v) for k, v in (meta[field] or {}).items()}
    rec["added"] = meta.get("added")
    return rec


def all_servers():
    return [record(n, m) for n, m in sorted(_read().items())]


def find(name):
    meta = _read().get(str(name or "").strip())
    if meta is None:
        raise NotFound(f"no MCP server {name!r}; see cubbi-mcp list")
    return meta


def get(name):
    return record(name, find(name))


def remove(name):
    from . import files

    name = str(name or "").strip()
    find(name)
    with files.edit(path()) as data:
        meta = _servers_of(data).pop(name, None)
        if meta is None:
            raise NotFound(f"no MCP server {name!r}; see cubbi-mcp list")
        for secret in _secret_names(name, meta):
            _store().delete(secret)
    return record(name, meta)


def resolved(name, meta=None, secret=None):
    """The definition with its secret values read back (for running it and
    for sessions); secret(name) reads one (default: the local store)."""
    meta = dict(meta if meta is not None else find(name))
    get_secret = secret or _store().get
    for part, field in (("env", "env"), ("header", "headers")):
        values = dict(meta.get(field) or {})
        for key, value in values.items():
            if value == SECRET:
                got = get_secret(secret_name(name, part, key))
                if got is None:
                    raise CubbiError(f"the {part} value {key} of MCP server {name} is missing "
                                     f"from the secret store; add the server again with --force")
                values[key] = got
        if field in meta:
            meta[field] = values
    return meta


# -- into a session ---------------------------------------------------------------
def env_name(name, part, key):
    """The session variable holding one value: CUBBI_MCP_<NAME>_<H|E>_<KEY>."""
    clean = re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{part}_{key}").upper()
    return f"CUBBI_MCP_{clean}"


def container_url(host, sse=False):
    return f"http://{host}:{PORT}/" + ("sse" if sse else "mcp")


def session_setup(servers):
    """(mcp.json dict, env) for a session given [(name, resolved meta,
    runtime)], runtime {host} for a container server.  Values go to env
    only; mcp.json refers to them by variable name."""
    entries, env = [], {}
    for name, meta, runtime in servers:
        kind = meta["kind"]
        entry = {"name": name, "kind": kind}
        if kind == "container":
            entry.update(transport="http", url=container_url(runtime["host"]),
                         sse_url=container_url(runtime["host"], sse=True), headers={})
        elif kind == "remote":
            url = meta["url"]
            sse = url.rstrip("/").endswith("/sse")
            entry.update(transport="sse" if sse else "http", url=url,
                         sse_url=url if sse else None, headers={})
            for key, value in (meta.get("headers") or {}).items():
                var = env_name(name, "h", key)
                env[var] = value
                entry["headers"][key] = {"env": var}
        else:
            entry.update(transport="stdio", command=meta["command"],
                         args=list(meta.get("args") or []), env={})
            for key, value in (meta.get("env") or {}).items():
                var = env_name(name, "e", key)
                env[var] = value
                entry["env"][key] = {"env": var}
        entries.append(entry)
    doc = {"version": 1, "servers": entries}
    first = next((e["url"] for e in entries if e.get("url")), None)
    if first:
        env["MCP_HOST"] = first
    env["CUBBI_MCP_FILE"] = JSON_PATH
    return doc, env

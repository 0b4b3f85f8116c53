"""Running container MCP servers on the engine (cubbi_tools.mcp has the
definitions).

A `container` server NAME is two containers on a network of its own:

    cubbi-mcp-NAME-server   the server's IMAGE running its stdio command,
                            stdin and stdout on two FIFOs in a volume
    cubbi-mcp-NAME          mcp-proxy (cubbi's proxy image, data/mcp-proxy)
                            whose stdio command is a bridge to those FIFOs;
                            it serves http://cubbi-mcp-NAME:8080/mcp
                            (streamable HTTP) and /sse (SSE)

The network (cubbi-mcp-NAME) is joined by the two containers and by each
session that uses the server, nothing else.  On a server (a scope: the
owner's labels) every name carries the owner's hash, so users never share
a server.  The server's environment (-e, secrets included) goes in as a file
written into the container before it starts, never into its config (docker
inspect).  mcp-proxy answers only after the server has answered MCP's
initialize, so "Uvicorn running" in the proxy's log is the readiness signal.
"""

import hashlib
import json
import os
import shlex
import time

from .dockerapi import APIError
from .errors import CubbiError, NotFound

LABEL = "cubbi.mcp"
L_NAME = "cubbi.mcp.name"
L_ROLE = "cubbi.mcp.role"
L_OWNER = "cubbi.mcp.owner"
L_SCOPE = "cubbi.mcp.scope"
L_DIGEST = "cubbi.mcp.digest"
IO = "/cubbi-mcp-io"
READY = "Uvicorn running on"
START_TIMEOUT = float(os.environ.get("CUBBI_MCP_START_TIMEOUT") or 90)
LOG_LINES = 8
_LOCKS = {}  # server -> threading.Lock (see ensure)

_RUN = """\
# cubbi: run the MCP server with stdin/stdout on the proxy's FIFOs
set -a; . {env}; set +a
mkfifo {io}/in {io}/out 2>/dev/null
[ -p {io}/in ] && [ -p {io}/out ] || {{ echo "cubbi-mcp: cannot make FIFOs in {io}" >&2; exit 1; }}
exec /bin/sh -c "$(cat {command})" < {io}/in > {io}/out
"""


def run_server(env="/cubbi-mcp/env", command="/cubbi-mcp/command"):
    """The server container's script: the environment file ENV and the
    command file COMMAND read where they were put (here, or a swarm's
    secrets: swarmmcp)."""
    return _RUN.format(io=IO, env=env, command=command)


RUN_SERVER = run_server()
# the proxy's stdio command: the server's output copied in the background
# (the only holder of the proxy's stdout pipe, so the proxy sees EOF when
# the server goes away), the proxy's stdin copied in the foreground (an
# asynchronous command's stdin would be /dev/null)
BRIDGE = (f"mkfifo {IO}/in {IO}/out 2>/dev/null; "
          f"cat {IO}/out & exec cat > {IO}/in")
PROXY_COMMAND = ["/opt/mcp-proxy/bin/mcp-proxy", "--host", "0.0.0.0", "--port", "8080",
                 "--", "/bin/sh", "-c", BRIDGE]


def _scope_hash(scope):
    return hashlib.sha256("\n".join(scope).encode()).hexdigest()[:12] if scope else ""


def names(name, scope=()):
    """{proxy, server, network, host} of server NAME in SCOPE."""
    base = f"cubbi-mcp-{name}"
    h = _scope_hash(scope)
    full = f"{base}-{h}" if h else base
    return {"proxy": full, "server": f"{full}-server", "network": full, "host": base}


def labels_of(name, role, scope, owner):
    labels = {LABEL: "true", L_NAME: name, L_ROLE: role}
    if scope:
        labels[L_SCOPE] = _scope_hash(scope)
    if owner:
        labels[L_OWNER] = owner
    return labels


def digest(meta):
    """What a running server was started from (its definition, values included
    but hashed): a changed definition shows as stale."""
    text = json.dumps({k: meta.get(k) for k in ("image", "command", "env")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _containers(api, name, scope):
    n = names(name, scope)
    out = {}
    for role in ("server", "proxy"):
        try:
            out[role] = api.inspect_container(n[role])
        except APIError as exc:
            if exc.status != 404:
                raise
            out[role] = None
    return out


def status(api, name, scope=()):
    """{name, status, containers, started, digest}: status running (both up),
    stopped (none), failed (one or both exited)."""
    found = _containers(api, name, scope)
    states = {r: (c or {}).get("State", {}).get("Status") for r, c in found.items()}
    if all(s is None for s in states.values()):
        st = "stopped"
    elif all(s == "running" for s in states.values()):
        st = "running"
    else:
        st = "failed"
    proxy = found.get("proxy") or {}
    labels = (proxy.get("Config") or {}).get("Labels") or {}
    return {"name": name, "status": st, "started": (proxy.get("State") or {}).get("StartedAt"),
            "digest": labels.get(L_DIGEST), "network": names(name, scope)["network"]}


def stop(api, name, scope=()):
    """Remove the server's containers (its network stays while sessions
    use it); True when something was running."""
    n = names(name, scope)
    removed = False
    for role in ("proxy", "server"):
        try:
            api.remove(n[role])
            removed = True
        except APIError as exc:
            if exc.status != 404:
                raise
    try:
        api.remove_network(n["network"])
    except APIError:
        pass  # in use by a session, or gone: kept for the sessions that use it
    return removed


def proxy_image(engine, progress=None):
    """cubbi's proxy image, built on first use (tag from its definition's digest)."""
    return builtin_image(engine, "mcp-proxy", "the MCP proxy image", progress)


def builtin_image(engine, name, what, progress=None):
    """Image cubbi/NAME:DIGEST of cubbi's own definition data/NAME (the MCP
    proxy, the egress proxy), built on ENGINE's image settings on first use."""
    from . import imagedef, images

    here = os.path.join(os.path.dirname(__file__), "data", name)
    defn = imagedef.load(here)
    defn["source"] = "builtin"
    tag = f"cubbi/{name}:" + images.digest(here).split(":", 1)[-1][:12]
    if images.inspect(engine.api, tag) is None:
        if progress:
            progress(f"building {what} {tag} (first use)")
        settings = engine.image_settings
        images.build(engine.api, defn, base=settings.get("base"),
                     ca_certs=settings.get("ca_certs"), tag=tag, progress=progress,
                     log=(lambda text: None) if progress is None else
                     (lambda text: [progress(ln) for ln in text.rstrip("\n").split("\n")
                                    if ln.strip()]))
    return tag


def server_command(api, meta):
    """The server's stdio command: its definition's, else its image's."""
    if meta.get("command"):
        return meta["command"]
    info = api.inspect_image(meta["image"])
    cfg = info.get("Config") or {}
    argv = list(cfg.get("Entrypoint") or []) + list(cfg.get("Cmd") or [])
    if not argv:
        raise CubbiError(f"image {meta['image']} has no entrypoint or command; "
                         "give the server's command with --command")
    return shlex.join(argv)


def env_file(env):
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in sorted((env or {}).items()))


def last_lines(api, cid, n=LOG_LINES):
    try:
        frames = api.logs(cid, tail=n, timestamps=False)
        text = b"".join(data for _, data in frames).decode(errors="replace")
    except CubbiError:
        return ""
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def ensure(engine, name, meta, scope=(), owner=None, progress=None, timeout=None):
    """Start container server NAME (resolved definition META) unless it runs;
    wait until it answers.  Returns status(); CubbiError naming the server's
    last log lines when it exits or does not answer in time.  One start at a
    time per server (one_start)."""
    with one_start(names(name, scope)["proxy"]):
        return _ensure(engine, name, meta, scope, owner, progress, timeout)


def one_start(key):
    """A lock held while server KEY (names()'s proxy) is started on this
    host: two sessions made at once share the one the first starts.  A lock
    of this process first (cooperative under the server's gevent, where a
    second flock of one process would block it whole), then a lock file for
    other processes."""
    import contextlib
    import fcntl
    import tempfile
    import threading

    @contextlib.contextmanager
    def held():
        with _LOCKS_LOCK:
            lock = _LOCKS.setdefault(key, threading.Lock())
        with lock:
            fd = os.open(os.path.join(tempfile.gettempdir(), f"{key}.lock"),
                         os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    return held()


def _locks_lock():
    import threading

    return threading.Lock()


_LOCKS_LOCK = _locks_lock()


def _ensure(engine, name, meta, scope, owner, progress, timeout):
    api = engine.api
    st = status(api, name, scope)
    if st["status"] == "running":
        return st
    if st["status"] == "failed":
        stop(api, name, scope)
    n = names(name, scope)
    image_exists(api, meta)
    command = server_command(api, meta)
    tag = proxy_image(engine, progress)
    try:
        api.network(n["network"])
    except APIError as exc:
        if exc.status != 404:
            raise
        try:
            api.create_network(n["network"], labels=labels_of(name, "network", scope, owner))
        except APIError as exc2:
            if exc2.status != 409:
                raise
    if progress:
        progress(f"starting MCP server {name}")
    labels = labels_of(name, "server", scope, owner)
    labels[L_DIGEST] = digest(meta)
    server = api.create_container(n["server"], {
        "Image": meta["image"], "Entrypoint": ["/bin/sh", "/cubbi-mcp/run.sh"], "Cmd": [],
        "Labels": labels, "Volumes": {IO: {}}, "Env": [],
        "HostConfig": {"NetworkMode": n["network"], "RestartPolicy": {"Name": "no"}},
    })["Id"]
    try:
        from .files import tar_bytes

        api.put_archive(server, "/", tar_bytes({
            "/cubbi-mcp/run.sh": (RUN_SERVER.encode(), 0o755, 0, 0),
            "/cubbi-mcp/command": (command.encode() + b"\n", 0o644, 0, 0),
            "/cubbi-mcp/env": (env_file(meta.get("env")).encode(), 0o644, 0, 0)}))
        plabels = labels_of(name, "proxy", scope, owner)
        plabels[L_DIGEST] = labels[L_DIGEST]
        proxy = api.create_container(n["proxy"], {
            "Image": tag, "Labels": plabels,
            "Cmd": PROXY_COMMAND,
            "HostConfig": {"NetworkMode": n["network"], "VolumesFrom": [server],
                           "RestartPolicy": {"Name": "no"}},
            "NetworkingConfig": {"EndpointsConfig": {n["network"]: {"Aliases": [n["host"]]}}},
        })["Id"]
        api.start(server)
        api.start(proxy)
        wait_ready(api, name, server, proxy, timeout or START_TIMEOUT)
    except BaseException:
        stop(api, name, scope)
        raise
    return status(api, name, scope)


def image_exists(api, meta):
    try:
        api.inspect_image(meta["image"])
    except APIError as exc:
        if exc.status != 404:
            raise
        raise NotFound(f"no local Docker image {meta['image']!r} for the MCP server; "
                       "build or pull it first (see docker images)") from None


def wait_ready(api, name, server, proxy, timeout):
    """Follow the proxy's log (container PROXY on API) for READY; CubbiError
    naming the last log lines of SERVER (else PROXY) when it ends or times out."""
    from .dockerapi import Deadline

    deadline = time.monotonic() + timeout
    reason = f"it did not answer MCP's initialize within {timeout:g} s"
    try:
        pending = b""
        for _, data in api.logs(proxy, follow=True, timestamps=False, deadline=deadline):
            pending += data
            if READY.encode() in pending:
                return
            pending = pending[-200:]
            if time.monotonic() > deadline:
                break
        reason = "it exited"
    except Deadline:
        pass
    lines = last_lines(api, server) or last_lines(api, proxy) or "no output"
    raise CubbiError(f"MCP server {name} failed to start: {reason}; its last log lines: {lines}")


def probe(url, timeout=3.0):
    """None when URL answers HTTP at all (any status: an MCP endpoint
    refuses a plain GET), else why not, in a few words."""
    import http.client
    import socket
    import ssl
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kw = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
    conn = cls(parts.hostname, parts.port, timeout=timeout, **kw)
    try:
        conn.request("GET", parts.path or "/", headers={"Accept": "text/event-stream"})
        conn.getresponse().close()
        return None
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        return str(exc) or type(exc).__name__
    finally:
        conn.close()


class Servers:
    """The MCP servers of one backend: their definitions (cubbi_tools.mcp on
    this machine) and their containers on ENGINE (a LocalEngine).  The
    command cubbi-mcp calls this; the remote client has the same methods."""

    def __init__(self, engine, scope=(), owner=None, store=None):
        self.engine, self.scope, self.owner = engine, list(scope), owner
        self.store = store  # the definitions (all_servers, get, find, add, remove,
        #                     resolved): cubbi_tools.mcp, or the service's per user

    def _store(self):
        if self.store is None:
            from . import mcp

            self.store = mcp
        return self.store

    # -- where the containers run: one engine here; a swarm's services in
    #    swarmmcp.SwarmServers, which overrides these four
    def state(self, name):
        """status() of container server NAME."""
        return status(self.engine.api, name, self.scope)

    def run(self, name, meta, progress=None):
        """ensure() container server NAME (resolved definition META)."""
        return ensure(self.engine, name, meta, scope=self.scope, owner=self.owner,
                      progress=progress)

    def halt(self, name):
        """stop() container server NAME: True when something ran."""
        return stop(self.engine.api, name, self.scope)

    def log_frames(self, name, follow=False, tail=None, proxy=False):
        """(stream, bytes) frames of the server's log (or its proxy's)."""
        cname = names(name, self.scope)["proxy" if proxy else "server"]
        try:
            return self.engine.api.logs(cname, follow=follow, tail=tail, timestamps=False)
        except APIError as exc:
            if exc.status == 404:
                raise NotFound(f"MCP server {name} is not running; start it with "
                               f"cubbi-mcp start {name}") from None
            raise

    def _with_status(self, rec):
        """rec with its status: running, stopped, failed (a container
        server; unknown while the engine does not answer: definitions are
        managed without it), remote or in-session."""
        from .errors import EngineUnreachable

        if rec.get("kind") == "container":
            try:
                st = self.state(rec["name"])
            except EngineUnreachable:
                st = {"status": "unknown", "network": names(rec["name"], self.scope)["network"]}
            rec["status"] = st["status"]
            rec["network"] = st["network"]
        else:
            rec["status"] = "remote" if rec.get("kind") == "remote" else "in-session"
        return rec

    def all_servers(self):
        return [self._with_status(r) for r in self._store().all_servers()]

    def get(self, name):
        return self._with_status(self._store().get(name))

    def add(self, name, meta, force=False):
        store = self._store()
        rec, replaced = store.add(name, meta, force=force)
        if replaced:
            self._stop_quietly(rec["name"])  # the next use starts the new one
        return self._with_status(store.get(rec["name"])), replaced

    def remove(self, name):
        store = self._store()
        store.find(name)
        self._stop_quietly(name)
        return store.remove(name)

    def _stop_quietly(self, name):
        """Stop NAME's containers if the engine answers (none run where it does not)."""
        from .errors import EngineUnreachable

        try:
            self.halt(name)
        except EngineUnreachable:
            pass

    def _container(self, name):
        from .errors import UsageError

        meta = self._store().find(name)
        if meta.get("kind") != "container":
            where = "runs elsewhere" if meta.get("kind") == "remote" else "runs inside each session"
            raise UsageError(f"MCP server {name} {where}: only servers added with "
                             "cubbi-mcp add (an image) are started and stopped")
        return meta

    def start(self, name, progress=None):
        meta = self._store().resolved(name, self._container(name))
        self.run(name, meta, progress)
        return self.get(name)

    def stop(self, name):
        self._container(name)
        was = self.halt(name)
        return dict(self.get(name), stopped=was)

    def restart(self, name, progress=None):
        self.stop(name)
        return self.start(name, progress)

    def logs(self, name, follow=False, tail=None, proxy=False):
        """Yield the log lines of the server's container (or its proxy's)."""
        self._container(name)
        frames = self.log_frames(name, follow=follow, tail=tail, proxy=proxy)
        pending = ""
        for _, data in frames:
            text = pending + data.decode(errors="replace")
            *lines, pending = text.split("\n")
            yield from lines
        if pending:
            yield pending

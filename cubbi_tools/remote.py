"""RemoteService: the sessions of a Cubbi Service, with the interface of
engine.LocalEngine (list, resolve, create, close, logs, wait_ready), plus
connect() in place of exec_argv (there is no local docker CLI to exec).

Stdlib only (http.client, json): a command using a remote must start as
fast as a local one.  The endpoint comes from the config's
remote.endpoints.NAME.url (read by backend.endpoint, at the edge), its
token from the secret store (`remote:NAME:token`, written by cubbi-remote
add).  Server errors come back
as JSON with a `kind` that maps onto the exception (and so the exit code)
the local command would raise.
"""

import http.client
import json
import os
from urllib.parse import quote, urlencode, urlsplit

from .errors import (AuthError, CubbiError, EngineUnreachable, Forbidden, NotFound, UsageError,
                     from_wire)
from .validate import IMAGE_PATH_REFUSED, refuse_host_paths  # noqa: F401

LOCAL = "local"  # -r local / CUBBI_REMOTE=local: the local engine, whatever remote.default says


ENV_URL, ENV_TOKEN = "CUBBI_REMOTE_URL", "CUBBI_REMOTE_TOKEN"


def check_url(url, what="URL"):
    """URL without a trailing slash, or UsageError: http(s)://HOST[:PORT][/PATH]
    with a port in 1-65535."""
    url = str(url or "").strip().rstrip("/")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.username is not None or parts.password is not None:
        # never echo it back: the part before @ may be a password
        raise UsageError(f"invalid {what}: no user or password in the URL; give the "
                         "token with --token (it goes to the secret store)")
    if (parts.scheme not in ("http", "https") or not parts.hostname or port == -1
            or port == 0 or parts.query or parts.fragment):
        raise UsageError(f"invalid {what} {url!r}: use http(s)://HOST[:PORT] "
                         "(a port from 1 to 65535)")
    return url


_warned = []  # the plain-http warning goes out once per process


def is_loopback(host):
    """Whether HOST (a URL's host) names this machine's loopback in any of
    the forms the resolver takes: localhost(.), 127.1, 0x7f.1, ::1,
    ::ffff:127.0.0.1."""
    import ipaddress
    import socket

    host = (host or "").lower().strip("[]")
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:  # the short and hex IPv4 forms getaddrinfo takes (127.1)
            ip = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def warn_plain_http(parts, remote):
    """One stderr line, once per process, when a token is about to go over
    plain http:// to a host other than loopback (anyone on the path reads it)."""
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or _warned or is_loopback(host):
        return
    _warned.append(host)
    import sys

    sys.stderr.write(f"cubbi: warning: remote {remote!r} is plain http://{host}: its token "
                     "crosses the network unencrypted; use https:// (a TLS proxy in front "
                     "of cubbi-server)\n")


def raise_for(status, body, remote=None):
    """Raise the CubbiError of an error response of the service."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    exc = from_wire(data, status, f"HTTP {status} from remote {remote!r}")
    if isinstance(exc, AuthError) and remote:
        exc = AuthError(f"remote {remote!r}: {exc}")
    raise exc


class RemoteService:
    """The sessions of the service at URL (interface.Backend), called NAME.
    backend.get() finds the URL (backend.endpoint); ad_hoc: the pair of
    $CUBBI_REMOTE_URL and $CUBBI_REMOTE_TOKEN, whose token goes to that URL
    only."""

    def __init__(self, name, url, token=None, ad_hoc=False):
        self.remote = name
        self.ad_hoc = ad_hoc
        self.url = check_url(url, f"URL of remote {name!r}")
        parts = urlsplit(self.url)
        self._parts = parts
        self._base = parts.path.rstrip("/")
        self._token = token
        self._conn = None

    # -- transport -------------------------------------------------------
    def token(self):
        if self._token is None:
            if self.ad_hoc:  # the environment's pair: its token goes to its URL only
                tok = os.environ.get(ENV_TOKEN)
                if not tok:
                    raise AuthError(f"{ENV_URL} is set but {ENV_TOKEN} is not: export the "
                                    f"token for {self.url}")
            else:
                from . import secrets, signin

                tok = signin.fresh(self)  # a sign-in (OIDC) first, refreshed near expiry
                self.signed_in = tok is not None
                if tok is None:
                    tok = secrets.get(secrets.token_secret(self.remote))
                if not tok:
                    raise AuthError(f"no token for remote {self.remote!r}; sign in with "
                                    f"cubbi -r {self.remote} auth, or store an API token with "
                                    f"cubbi-remote add --force {self.remote} {self.url} --token -")
            self._token = tok
        return self._token

    signed_in = False

    def _refreshed(self):
        """After a 401 with a sign-in's access token: refresh it once (True),
        else False (an API token: the 401 stands)."""
        if not self.signed_in or getattr(self, "_retried", False):
            return False
        from . import signin

        self._retried = True
        self._token = signin.fresh(self, force=True)
        return True

    def _connection(self, timeout):
        p = self._parts
        if p.scheme == "https":
            return http.client.HTTPSConnection(p.hostname, p.port or 443, timeout=timeout)
        return http.client.HTTPConnection(p.hostname, p.port or 80, timeout=timeout)

    def _unreachable(self, exc):
        return EngineUnreachable(f"cannot reach remote {self.remote!r} at {self.url} "
                                 f"({getattr(exc, 'strerror', None) or exc}); is cubbi-server "
                                 "running there?")

    def request(self, method, path, params=None, body=None, stream=False, timeout=60,
                auth=True, bearer=None):
        """JSON of a 2xx answer; with stream=True the open response (its own
        connection).  Error answers raise the matching CubbiError; a 401
        with a sign-in's token refreshes it and tries once more.  auth=False:
        no token (the /auth routes), or the BEARER given."""
        try:
            return self._request(method, path, params, body, stream, timeout, auth, bearer)
        except AuthError as exc:
            if isinstance(exc, Forbidden) or not auth or not self._refreshed():
                raise
            return self._request(method, path, params, body, stream, timeout, auth, bearer)

    def _request(self, method, path, params, body, stream, timeout, auth, bearer):
        if params:
            params = {k: v for k, v in params.items() if v not in (None, False, "")}
            if params:
                path += "?" + urlencode(params)
        headers = {"Accept": "application/json"}
        token = self.token() if auth else bearer
        if token:
            headers["Authorization"] = f"Bearer {token}"
        warn_plain_http(self._parts, self.remote)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        reuse = not stream and timeout == 60
        for attempt in (0, 1):
            conn = self._conn if reuse and self._conn else self._connection(timeout)
            try:
                conn.request(method, self._base + path, body=data, headers=headers)
                resp = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if conn is self._conn:
                    self._conn = None
                    if attempt == 0 and not isinstance(exc, ConnectionRefusedError):
                        continue  # a kept-alive connection the server closed: retry once
                raise self._unreachable(exc) from None
        if stream and resp.status < 300:
            resp._cubbi_conn = conn
            return resp
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._unreachable(exc) from None
        if reuse and not resp.will_close:
            self._conn = conn
        else:
            conn.close()
        if resp.status >= 300:
            raise_for(resp.status, raw, self.remote)
        return json.loads(raw) if raw else None

    def _mark(self, rec):
        rec["remote"] = self.remote
        return rec

    # -- the engine interface ------------------------------------------------
    def list(self, all=False, filters=None, labels=(), status=True):
        """Session records; labels narrow the engine's answer on the local
        engine only (the service scopes by user itself); the service always
        reads each status."""
        if labels:
            raise UsageError("label filters are not available with a remote")
        params = {"all": "1" if all else None}
        params.update(filters or {})
        return [self._mark(r) for r in self.request("GET", "/sessions", params)["sessions"]]

    def resolve(self, ref, records=None):
        ref = (ref or "").strip()
        if not ref:
            raise UsageError("empty session id")
        return self._mark(self.request("GET", "/sessions/" + quote(ref, safe="")))

    def create(self, req, progress=None):
        refuse_host_paths(req.volumes, req.mount_explicit and req.mount, req.image)
        body = req.to_dict()
        body["mount"] = None  # the default (current directory) is not on the server
        for key in ("uid", "gid", "owner", "state_dir", "volumes", "mount_explicit"):
            body.pop(key, None)
        body.pop("files", None)  # a project's files are made on the service (it refuses a client's)
        rec = self._mark(self.request("POST", "/sessions", body=body, timeout=None))
        self._check_fenced(req, rec)
        return rec

    def _check_fenced(self, req, rec):
        """A service that ignored allow_hosts or no_network (one older than
        them) made a session with a way out: closed, and said so."""
        nets = rec.get("networks") or []
        # --no-network: the engine's `none`, or (swarm mode: a service cannot use
        # `none`) alone on its own internal network, with no allowlist
        alone = nets == ["none"] or (nets == [f"cubbi-egress-{rec.get('id')}"]
                                     and not rec.get("allow_hosts"))
        fenced = alone if req.no_network else \
            (not req.allow_hosts or any(n.startswith("cubbi-egress-") for n in nets))
        if not fenced:
            what = "--no-network" if req.no_network else "--allow-host"
            try:
                self.close(rec["id"])
                done = "was closed"
            except CubbiError:
                done = f"could not be closed: close it with cubbi-close -r {self.remote} {rec['id']}"
            raise CubbiError(f"the service at {self.url} does not apply {what} (a cubbi-server "
                             f"older than it?): session {rec['id']}, made without it, {done}")

    def close(self, ref, records=None):
        return self._mark(self.request("DELETE", "/sessions/" + quote(ref.strip(), safe="")))

    def logs(self, rec, follow=False, tail=None, since=None, deadline=None):
        """Yield {session, stream, time, line}, as LocalEngine.logs (the
        deadline is the service's: wait_ready asks it to wait)."""
        resp = self.request("GET", f"/sessions/{quote(rec['id'], safe='')}/logs",
                            {"follow": "1" if follow else None,
                             "tail": None if tail is None else str(tail),
                             "since": None if since is None else str(since)},
                            stream=True, timeout=None)
        return self._ndjson(resp, "the log", "line")

    def egress_log(self, rec):
        """What the session's egress proxy refused, as LocalEngine.egress_log."""
        return self.request("GET", f"/sessions/{quote(rec['id'], safe='')}/egress")["refused"]

    def events(self, since=None, until=None, filters=None, labels=()):
        """Yield lifecycle events, as LocalEngine.events: the service's
        GET /events, scoped there to this user (labels are the service's)."""
        params = {"since": None if since is None else str(since),
                  "until": None if until is None else str(until)}
        params.update(filters or {})
        resp = self.request("GET", "/events", params, stream=True, timeout=None)
        return ({**ev, "remote": self.remote} for ev in self._ndjson(resp, "the event stream",
                                                                     "event"))

    def _ndjson(self, resp, what, field):
        """The JSON lines of a streamed response; an error line (no FIELD)
        raises its exception, a cut connection EngineUnreachable."""
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise self._unreachable(exc) from None
                if not line:
                    # the end of the stream, or the service gone mid-stream: only a
                    # stream the service ended had its last chunk (http.client then
                    # sets chunk_left to None; a cut between chunks reads as EOF)
                    if resp.chunked and resp.chunk_left is not None:
                        raise EngineUnreachable(
                            f"lost the connection to remote {self.remote!r} at {self.url} "
                            f"in the middle of {what}; is cubbi-server running there?")
                    return
                if not line.strip():
                    continue  # heartbeat
                item = json.loads(line)
                if "error" in item and field not in item:
                    raise from_wire(item)
                yield item
        finally:
            resp.close()
            resp._cubbi_conn.close()

    def wait_ready(self, rec, timeout=600):
        if rec.get("status") == "running":
            return rec
        return self._mark(self.request("GET", f"/sessions/{quote(rec['id'], safe='')}",
                                       {"wait": str(timeout)}, timeout=timeout + 30))

    # -- connect ---------------------------------------------------------
    def connect(self, rec, command=None, tty=False, use_stdin=True, stdout=None):
        """Run command (or a login shell) in the session over the service's
        WebSocket terminal; stdin (unless use_stdin=False), stdout (or the
        binary stream given) and stderr pass through.  Returns the exit status."""
        from . import terminal

        return terminal.run(self, rec, command, tty, use_stdin=use_stdin, stdout=stdout)

    def websocket(self, rec, command=None, tty=False, size=None):
        from .wsclient import HandshakeError, WebSocket

        q = {"tty": "1" if tty else None, "term": os.environ.get("TERM") if tty else None,
             "cmd": json.dumps(list(command)) if command else None}
        if size:
            q["rows"], q["cols"] = str(size[0]), str(size[1])
        query = urlencode({k: v for k, v in q.items() if v})
        scheme = "wss" if self._parts.scheme == "https" else "ws"
        url = (f"{scheme}://{self._parts.netloc}{self._base}/sessions/"
               f"{quote(rec['id'], safe='')}/connect" + (f"?{query}" if query else ""))
        warn_plain_http(self._parts, self.remote)
        for attempt in (0, 1):
            try:
                return WebSocket(url, headers={"Authorization": f"Bearer {self.token()}"})
            except HandshakeError as exc:
                if exc.status == 401 and attempt == 0 and self._refreshed():
                    continue
                raise_for(exc.status, exc.body, self.remote)
            except OSError as exc:
                raise self._unreachable(exc) from None

    # -- images and projects (cubbi-image -r, cubbi-project -r) -------------
    def images(self, errors=None, offline=False):
        """The service's image records (it skips broken definitions itself)."""
        return self.request("GET", "/images")["images"]

    def image(self, name):
        return self.request("GET", "/images/" + quote(name, safe=""))

    @property
    def projects(self):
        return RemoteProjects(self)

    @property
    def mcp(self):
        """The user's MCP servers on the service (RemoteMCP)."""
        return RemoteMCP(self)

    def project_setup(self, url):
        """A project's clone URL, id, env and files for a session on the
        service: only the service's own stored projects lend credentials
        (it adds them), a local key or token never travels to a shared
        server unasked."""
        from . import projects

        clone, pid, _, files = projects.session_setup(url, (None, None))
        return clone, pid, {}, files  # the service sets the session's CUBBI_PROJECT_* itself

    def index(self):
        """None: each reference is resolved on the service."""
        return None


class RemoteMCP:
    """The interface of mcpserve.Servers (all_servers, get, add, remove,
    start, stop, restart, logs) over the service: the definitions and their
    secrets are the user's there, the servers run on its engine."""

    def __init__(self, service):
        self.service = service

    def _path(self, name, *rest):
        return "/".join(["/mcp", quote(str(name).strip(), safe="")] + list(rest))

    def all_servers(self):
        return self.service.request("GET", "/mcp")["servers"]

    def get(self, name):
        return self.service.request("GET", self._path(name))

    def add(self, name, meta, force=False):
        body = dict(meta, name=name, force=bool(force))
        if meta.get("kind") == "local":
            body["argv"] = [body.pop("command")] + list(body.pop("args", []))
        try:
            self.get(name)
            replaced = True
        except NotFound:
            replaced = False
        return self.service.request("POST", "/mcp", body=body), replaced

    def remove(self, name):
        return self.service.request("DELETE", self._path(name))

    # a start may build the proxy image, or push and pull images on a swarm:
    # no read timeout, as a create has none (the service bounds its own waits)
    def start(self, name, progress=None):
        return self.service.request("POST", self._path(name, "start"), timeout=None)

    def stop(self, name):
        return self.service.request("POST", self._path(name, "stop"))

    def restart(self, name, progress=None):
        return self.service.request("POST", self._path(name, "restart"), timeout=None)

    def logs(self, name, follow=False, tail=None, proxy=False):
        if follow:
            raise UsageError("cubbi-mcp logs -f works on the local engine only; "
                             "leave -f out for the log so far")
        query = "?" + "&".join(([f"tail={int(tail)}"] if tail is not None else [])
                               + (["proxy=1"] if proxy else []))
        yield from self.service.request("GET", self._path(name, "logs") + query.rstrip("?"))["lines"]


class RemoteProjects:
    """The interface of cubbi_tools.projects (all_projects, get, add,
    remove) over the service: credentials are stored there, encrypted."""

    def __init__(self, service):
        self.service = service

    def _path(self, pid):
        return "/projects/" + quote(pid.strip(), safe="")

    def all_projects(self):
        return self.service.request("GET", "/projects")["projects"]

    def get(self, url_or_id, detail=False):
        return self.service.request("GET", self._path(url_or_id))

    def add(self, url, ssh_key=None, token=None, force=False):
        from .projects import exists_error

        auth = "ssh_key" if ssh_key else "token" if token else "none"
        body = {"url": url, "auth": auth}
        if auth != "none":
            body[auth] = ssh_key or token
        try:
            pid = self.service.request("GET", self._path(url))["id"]
            replaced = True
        except NotFound:
            replaced = False
        if replaced and not force:  # (POST refuses one added meanwhile)
            raise exists_error(pid)
        if replaced:
            return self.service.request("PUT", self._path(url), body=body), True
        return self.service.request("POST", "/projects", body=body), False

    def remove(self, url_or_id):
        return self.service.request("DELETE", self._path(url_or_id))

"""A small Docker Engine API client on the standard library.

(Over 500 lines: the transport, the HTTP/1.1 reader and the endpoints are
one client that every command imports at start; one module is one import.)

Why not the docker SDK: `import docker` costs ~137 ms here (requests,
urllib3, ...), while `docker ps` answers in ~19 ms and `cubbi-ls` must stay
within 6x of it.  On the unix socket this module speaks HTTP/1.1 itself
(socket and json only: http.client alone, with email.parser and ssl, costs
~12 ms); over TCP it uses http.client, with TLS when DOCKER_TLS_VERIFY is
set.  Requests go to unversioned paths, so there is no version round trip
and any engine API level is accepted.
"""

import json
import os
import socket
import struct
import sys
from urllib.parse import quote, urlencode

from .errors import CubbiError, EngineUnreachable, NotFound

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60  # seconds a plain request may wait; CUBBI_DOCKER_TIMEOUT overrides
DEFAULT = object()  # request(timeout=DEFAULT): the client's timeout; None: wait forever


def default_timeout():
    """CUBBI_DOCKER_TIMEOUT (seconds) when set to a positive number, else 60."""
    try:
        value = float(os.environ.get("CUBBI_DOCKER_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


class APIError(CubbiError):
    """The engine answered with an error status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        if status == 404:
            self.code = NotFound.code

    def wire_status(self):
        """The engine's own 4xx goes to the client as it is; a 5xx is 502."""
        return self.status if 400 <= self.status < 500 else 502


class ProtocolError(OSError):
    """An HTTP answer that is malformed or cut short."""


class Deadline(CubbiError):
    """A followed stream was silent until its deadline (logs(deadline=...))."""


def _transport_errors():
    """What a broken transport raises: OSError (ProtocolError included), and
    http.client's own exceptions when it is in use (TCP)."""
    hc = sys.modules.get("http.client")
    return (OSError, hc.HTTPException) if hc else (OSError,)


class _UnixConnection:
    """The part of http.client.HTTPConnection cubbi uses (connect, sock,
    request, getresponse, close), over a unix socket."""

    def __init__(self, path, timeout=None):
        self._path = path
        self.timeout = timeout
        self.sock = None
        self._method = None

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def request(self, method, path, body=None, headers=None):
        if self.sock is None:
            self.connect()
        self._method = method
        hdrs = dict(headers or {})
        if body is None:
            if method in ("POST", "PUT", "PATCH"):
                hdrs["Content-Length"] = "0"
        elif isinstance(body, (bytes, bytearray)):
            hdrs["Content-Length"] = str(len(body))
        else:  # a file: streamed in chunks, as http.client does
            hdrs["Transfer-Encoding"] = "chunked"
        head = "".join([f"{method} {path} HTTP/1.1\r\n"] +
                       [f"{k}: {v}\r\n" for k, v in hdrs.items()] + ["\r\n"]).encode("latin-1")
        if body is None or isinstance(body, (bytes, bytearray)):
            self.sock.sendall(head + bytes(body or b""))
            return
        self.sock.sendall(head)
        while True:
            block = body.read(65536)
            if not block:
                break
            if isinstance(block, str):
                block = block.encode()
            self.sock.sendall(b"%x\r\n" % len(block) + block + b"\r\n")
        self.sock.sendall(b"0\r\n\r\n")

    def getresponse(self):
        return _Response(self.sock, self._method)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _Response:
    """An HTTP/1.1 answer read off a socket: status, headers, and a body by
    Content-Length, chunked, or until the connection closes; read(n),
    read1(n) and getheader() as http.client.HTTPResponse has them."""

    def __init__(self, sock, method):
        self._sock = sock
        self._buf = b""
        status_line = self._line()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP answer: {status_line[:60]!r}")
        self.status = int(parts[1])
        self._headers = {}
        while True:
            line = self._line()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            self._headers[key.strip().lower()] = value.strip()
        self._chunked = "chunked" in self._headers.get("transfer-encoding", "").lower()
        self._left = 0
        length = self._headers.get("content-length")
        self._length = int(length) if length and length.isdigit() and not self._chunked else None
        self._done = method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200
        # the body's end is known without the connection closing: it can carry another request
        self._framed = (self._done or self._chunked or self._length is not None) and \
            self._headers.get("connection", "").lower() != "close"

    def getheader(self, name, default=None):
        return self._headers.get(name.lower(), default)

    def _fill(self):
        data = self._sock.recv(65536)
        self._buf += data
        return bool(data)

    def _line(self):
        while b"\r\n" not in self._buf:
            if len(self._buf) > 65536 or not self._fill():
                raise ProtocolError("the connection closed in the middle of an HTTP answer")
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _take(self, n, eof_ok=False):
        if not self._buf and not self._fill():
            if eof_ok:
                return b""
            raise ProtocolError("the connection closed in the middle of an HTTP answer")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read1(self, n=65536):
        """Up to n bytes of the body (fewer when that is what has arrived);
        b"" at its end."""
        if self._done or n == 0:
            return b""
        if self._chunked:
            if self._left == 0:
                size = self._line().split(b";", 1)[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size[:20]!r}") from None
                if self._left == 0:
                    while self._line():  # trailers, up to the empty line
                        pass
                    self._done = True
                    return b""
            data = self._take(min(n, self._left))
            self._left -= len(data)
            if self._left == 0:
                self._line()  # the CRLF that ends the chunk
            return data
        if self._length is not None:
            if self._length == 0:
                self._done = True
                return b""
            data = self._take(min(n, self._length))
            self._length -= len(data)
            return data
        data = self._take(n, eof_ok=True)
        if not data:
            self._done = True
        return data

    def read(self, n=-1):
        if n is not None and n >= 0:
            out = b""
            while len(out) < n:
                data = self.read1(n - len(out))
                if not data:
                    break
                out += data
            return out
        parts = []
        while True:
            data = self.read1(1 << 20)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def reusable(self):
        """Whether the body was read to its framed end, nothing more came, and
        the engine did not ask to close: the connection can be kept."""
        return self._framed and self._done and not self._buf

    def close(self):
        self._done = True


class Flights:
    """Single-flight for idempotent reads: run(key, fn) calls fn once for
    all the callers that ask for the same key while it waits to start, and
    gives each the same answer (or exception).  A caller never shares a
    call that had started before it asked, so every answer is no older than
    its request: one call per key runs at a time, and whoever asks during
    it boards the next one, which starts when it lands.  threading's Lock
    and Event: under gevent's monkey-patching they block a greenlet only."""

    class _Flight:
        def __init__(self):
            import threading

            self.done = threading.Event()
            self.result = self.error = None
            self.aborted = False
            self.riders = 0
            self.again = None  # the call made again for its riders when this one was cut

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._boarding = {}  # key -> the flight not yet started
        self._flying = {}  # key -> the flight in progress

    def waiting(self, key):
        """How many callers wait for the next call of key to start."""
        with self._lock:
            flight = self._boarding.get(key)
            return flight.riders if flight else 0

    def run(self, key, fn):
        with self._lock:
            flight = self._boarding.get(key)
            leader = flight is None
            if leader:
                flight = self._boarding[key] = self._Flight()
            flight.riders += 1
        while True:
            if leader:
                self._fly(key, flight, fn)
            else:
                flight.done.wait()
            if not flight.aborted:
                break
            with self._lock:  # its caller was killed mid-call: one rider makes it again
                leader = flight.again is None
                if leader:
                    flight.again = self._Flight()
                flight = flight.again
        if flight.error is not None:
            raise flight.error
        return flight.result

    def _fly(self, key, flight, fn):
        flight.aborted = True  # until fn returns or raises an Exception
        flying = False
        try:
            while True:
                with self._lock:
                    ahead = self._flying.get(key)
                    if ahead is None:  # boarding closes: later callers make the next flight
                        if self._boarding.get(key) is flight:
                            del self._boarding[key]
                        self._flying[key] = flight
                        flying = True
                        break
                ahead.done.wait()
            flight.result = fn()
            flight.aborted = False
        except Exception as exc:  # each rider gets it
            flight.error = exc
            flight.aborted = False
        finally:  # killed while waiting or calling: the riders make it again
            with self._lock:
                if flying:
                    del self._flying[key]
                elif self._boarding.get(key) is flight:
                    del self._boarding[key]
            flight.done.set()


SHOWN_VALUE = 32  # longer query values are shown as ... in the verbose log


def shown_path(path):
    """PATH as the verbose log shows it: every query parameter's name, its
    value only when short and not JSON."""
    base, _, query = path.partition("?")
    if not query:
        return path
    from urllib.parse import parse_qsl

    parts = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if len(value) > SHOWN_VALUE or value[:1] in ("{", "["):
            value = "..."
        parts.append(f"{quote(name, safe='')}={quote(value, safe='/:@.,_-~')}")
    return base + "?" + "&".join(parts)


def resolve_host(host=None):
    """The engine address: explicit (the caller read the settings), else
    DOCKER_HOST, else the default."""
    return host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class DockerAPI:
    # Idle connections kept for plain GETs on the unix socket (at most this
    # many).  0, one connection per request, for the commands: each makes a
    # few requests and exits, and tests/engine_proxy.py looks at the first
    # request of a connection only.  The server sets it (service.Service):
    # a new connection per GET /sessions cost it a connect and the engine
    # an accept, on every request.
    keep_alive = 0
    # Identical concurrent container lists share one engine request (Flights).
    # Off for the commands (one list each); the server sets it: 32 clients
    # listing their sessions at once were 32 identical engine requests.
    coalesce = False

    def __init__(self, host=None, timeout=None, verbose=False, tls=None):
        self.host = resolve_host(host)
        self.tls = tls  # a folder of ca.pem, cert.pem, key.pem (mutual TLS); else DOCKER_CERT_PATH
        self._idle = []
        self._flights = None
        self.timeout = default_timeout() if timeout is None else timeout
        self.verbose = verbose  # ui.verbose: one line per request on stderr
        if self.host.startswith("unix://"):
            self._path = self.host[len("unix://"):]
        elif self.host.startswith("/"):
            self._path = self.host
        elif self.host.startswith(("tcp://", "http://", "https://")):
            self._path = None
            rest = self.host.split("://", 1)[1].rstrip("/")
            hostpart, _, port = rest.rpartition(":")
            if not hostpart:
                hostpart, port = rest, "2375"
            self._tcp = (hostpart, int(port))
            self._tls = self.host.startswith("https://") or bool(tls) or os.environ.get(
                "DOCKER_TLS_VERIFY", ""
            ) not in ("", "0")
        else:
            raise EngineUnreachable(
                f"unsupported Docker host {self.host!r}: use unix:// or tcp:// "
                "(set DOCKER_HOST or docker.socket in cubbi-config)"
            )

    # -- transport -------------------------------------------------------
    def _connection(self, timeout):
        if self._path is not None:
            return _UnixConnection(self._path, timeout=timeout)
        host, port = self._tcp
        if self._tls:
            import http.client

            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self._ssl_context())
        import http.client

        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _ssl_context(self):
        """The TLS context: the CA and client certificate of the tls folder
        (or DOCKER_CERT_PATH), made once."""
        if getattr(self, "_ctx", None) is None:
            import ssl

            ctx = ssl.create_default_context()
            certs = self.tls or os.environ.get("DOCKER_CERT_PATH")
            if certs:
                ca = os.path.join(certs, "ca.pem")
                if os.path.exists(ca):
                    ctx.load_verify_locations(ca)
                ctx.load_cert_chain(
                    os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem")
                )
            self._ctx = ctx
        return self._ctx

    def _unreachable(self, exc):
        return EngineUnreachable(
            f"cannot reach the Docker engine at {self.host} ({exc.strerror or exc}); "
            "start it, or point DOCKER_HOST / docker.socket at a running engine"
        )

    def request(self, method, path, params=None, body=None, headers=None,
                stream=False, timeout=DEFAULT):
        """Send one request; return the decoded JSON (or None), or, with
        stream=True, the open response for the caller to read and close.
        timeout: seconds per socket operation; DEFAULT the client's (60 s,
        CUBBI_DOCKER_TIMEOUT); None none at all (streams that follow)."""
        if params:
            params = {k: v for k, v in params.items() if v is not None}
            path = path + "?" + urlencode(params)
        self._log(method, path)
        hdrs = {"Host": "docker"}
        if headers:
            hdrs.update(headers)
        if body is not None and not isinstance(body, (bytes, bytearray)) and not hasattr(body, "read"):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        timeout = self.timeout if timeout is DEFAULT else timeout
        keep = (self.keep_alive and method == "GET" and body is None and not stream
                and self._path is not None)
        resp = None
        if keep and self._idle:
            conn = self._idle.pop()
            conn.sock.settimeout(timeout)
            try:
                resp = self._send(conn, method, path, hdrs)
            except EngineUnreachable:
                if conn.timed_out:
                    raise
                resp = None  # the engine had closed the kept connection: once more on a new one
        if resp is None:
            conn = self._connection(timeout)
            resp = self._send(conn, method, path, hdrs, body)
        if resp.status >= 400:
            data = self._read_all(resp, conn)
            try:
                message = json.loads(data).get("message") or data.decode()
            except (ValueError, AttributeError):
                message = data.decode(errors="replace").strip()
            raise APIError(resp.status, message or f"HTTP {resp.status}")
        if stream:
            resp._cubbi_conn = conn  # keep the connection alive with the response
            return resp
        data = self._read_all(resp, conn, keep=keep)
        if not data:
            return None
        ctype = resp.getheader("Content-Type", "")
        if "json" in ctype:
            return json.loads(data)
        return data

    def _log(self, method, path):
        """ui.verbose: one line per request, on request() and on the raw
        socket alike (exec start): the method and the path, never a body,
        and of the query only the short values (a build's labels and build
        arguments, which may hold a proxy's password, become ...)."""
        if not self.verbose:
            return
        sys.stderr.write(f"cubbi: engine {method} {shown_path(path)}\n")
        sys.stderr.flush()

    def _send(self, conn, method, path, hdrs, body=None):
        """The response to one request on conn (closed when that fails)."""
        conn.timed_out = False
        try:
            conn.request(method, path, body=body, headers=hdrs)
            return conn.getresponse()
        except _transport_errors() as exc:
            conn.close()
            if isinstance(exc, socket.timeout):
                conn.timed_out = True
                raise EngineUnreachable(
                    f"the Docker engine at {self.host} did not answer in time"
                ) from None
            raise self._unreachable(exc) from None

    def _read_all(self, resp, conn, keep=False):
        try:
            data = resp.read()
        except _transport_errors() as exc:
            conn.close()
            raise self._unreachable(exc) from None
        if keep and resp.reusable() and len(self._idle) < self.keep_alive:
            self._idle.append(conn)
        else:
            conn.close()
        return data

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- endpoints -------------------------------------------------------
    def containers(self, all=False, labels=(), status=None):
        """The engine's container list.  With coalesce set, callers asking
        the same at once share one request (never one that started before
        they asked); the entries are then shared: read them, do not change
        them (the list itself is each caller's own)."""
        filters = {"label": list(labels)} if labels else {}
        if status:
            filters["status"] = [status]
        params = {"all": "1" if all else "0",
                  "filters": json.dumps(filters) if filters else None}
        if not self.coalesce:
            return self.get("/containers/json", params=params)
        if self._flights is None:
            self._flights = Flights()
        key = (params["all"], params["filters"])
        return list(self._flights.run(key, lambda: self.get("/containers/json", params=params)))

    def events(self, since=None, until=None, filters=None):
        """GET /events: the open stream of the engine's events (JSON objects,
        one per line), from since (epoch seconds; replayed first) until
        until, or without end; the caller reads it with json_stream."""
        params = {"since": None if since is None else str(since),
                  "until": None if until is None else str(until),
                  "filters": json.dumps(filters) if filters else None}
        return self.get("/events", params=params, stream=True, timeout=None)

    def inspect_container(self, cid):
        return self.get(f"/containers/{quote(cid)}/json")

    def create_container(self, name, config):
        return self.post("/containers/create", params={"name": name}, body=config)

    def start(self, cid):
        self.post(f"/containers/{quote(cid)}/start")

    # a forced remove the engine refused for a reason that passes is made
    # again, at most this many times in all, after waiting (at most
    # REMOVE_WAIT seconds) for the container to stop or go
    REMOVE_TRIES = 3
    REMOVE_WAIT = 20

    def remove(self, cid, force=True):
        """Remove a container and its anonymous volumes (force: kill it
        first).  The engine refuses a forced remove now and then for a
        reason that passes, and then the container stays listed: a removal
        of it already under way (409: waited for; it is gone when that one
        ends), a kill whose exit event came late or a file system still
        busy (5xx: the container is left stopping, or Dead; removed again
        once it is not running).  Another refusal, or the last one, raises."""
        path = f"/containers/{quote(cid)}"
        for attempt in range(1, self.REMOVE_TRIES + 1):
            try:
                self.delete(path, params={"force": "1" if force else "0", "v": "1"})
                return
            except APIError as exc:
                if not (force and (exc.status == 409 or exc.status >= 500)) \
                        or attempt == self.REMOVE_TRIES:
                    raise
                condition = "removed" if exc.status == 409 else "not-running"
            try:
                self.post(path + "/wait", params={"condition": condition},
                          timeout=self.REMOVE_WAIT)
            except APIError as exc:
                if exc.status == 404:
                    return  # gone
            except EngineUnreachable:
                pass  # not within REMOVE_WAIT (or the engine went: the next remove says so)
            else:
                if condition == "removed":
                    return

    def put_archive(self, cid, path, data):
        self.request("PUT", f"/containers/{quote(cid)}/archive", params={"path": path},
                     body=data, headers={"Content-Type": "application/x-tar"})

    def get_archive(self, cid, path):
        """A tar archive of PATH in the container (bytes), read without
        running anything in it."""
        return self.get(f"/containers/{quote(cid)}/archive", params={"path": path}) or b""

    def info(self):
        return self.get("/info")

    def inspect_image(self, ref):
        return self.get(f"/images/{quote(ref, safe='/:@')}/json")

    def network(self, name):
        return self.get(f"/networks/{quote(name)}")

    def networks(self, labels=()):
        if not labels:
            return self.get("/networks")
        return self.get("/networks", params={"filters": json.dumps({"label": list(labels)})})

    def create_network(self, name, labels=None, options=None, subnet=None):
        body = {"Name": name, "CheckDuplicate": True, "Driver": "bridge",
                "Labels": labels or {}, "Options": options or {}}
        if subnet:  # else one of the engine's default address pools
            body["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
        return self.post("/networks/create", body=body)

    def remove_network(self, name):
        self.delete(f"/networks/{quote(name)}")

    def connect_network(self, net, cid):
        self.post(f"/networks/{quote(net)}/connect", body={"Container": cid})

    # -- exec (connect over the API: the server's terminal and exec mode) --
    def exec_create(self, cid, cmd, user=None, workdir=None, env=None, tty=False, stdin=True):
        body = {"Cmd": list(cmd), "AttachStdin": bool(stdin), "AttachStdout": True,
                "AttachStderr": True, "Tty": bool(tty)}
        if user:
            body["User"] = user
        if workdir:
            body["WorkingDir"] = workdir
        if env:
            body["Env"] = [f"{k}={v}" for k, v in env.items()]
        return self.post(f"/containers/{quote(cid)}/exec", body=body)["Id"]

    def exec_start(self, exec_id, tty=False):
        """Start an exec and return its hijacked connection: raw bytes with a
        TTY, else multiplexed frames (Hijacked.frames()).  Write stdin with
        sendall(); shutdown_write() sends EOF."""
        body = json.dumps({"Detach": False, "Tty": bool(tty)}).encode()
        self._log("POST", f"/exec/{quote(exec_id)}/start")
        conn = self._connection(None)
        try:
            if self._path is None and self._tls:  # half-closable TLS (TLSStream)
                conn.sock = sock = TLSStream(socket.create_connection(self._tcp),
                                             self._ssl_context(), self._tcp[0])
            else:
                conn.connect()
                sock = conn.sock
            sock.sendall((f"POST /exec/{quote(exec_id)}/start HTTP/1.1\r\nHost: docker\r\n"
                          "Content-Type: application/json\r\nConnection: Upgrade\r\n"
                          f"Upgrade: tcp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    raise OSError("connection closed during exec start")
                head += chunk
        except OSError as exc:
            conn.close()
            raise self._unreachable(exc) from None
        head, rest = head.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status >= 400:
            conn.close()
            raise APIError(status, rest.decode(errors="replace").strip() or f"HTTP {status}")
        return Hijacked(sock, rest, self)

    def exec_resize(self, exec_id, rows, cols):
        self.post(f"/exec/{quote(exec_id)}/resize", params={"h": int(rows), "w": int(cols)})

    def exec_exit_code(self, exec_id, timeout=5):
        """The exit status of an exec whose output has ended, or None when the
        engine has not recorded one within TIMEOUT seconds: it may take a
        moment after the end of the stream (polled; the engine sends no
        event for it)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            info = self.exec_inspect(exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return info["ExitCode"]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def exec_inspect(self, exec_id):
        return self.get(f"/exec/{quote(exec_id)}/json")

    def logs(self, cid, follow=False, tail=None, since=None, timestamps=True, deadline=None):
        """Yield (stream, bytes) frames of a container's log, stream being
        'stdout' or 'stderr'; with follow=True until the container stops,
        with no read timeout, or until deadline (time.monotonic()), past
        which a silent stream raises Deadline."""
        return self._log_frames(f"/containers/{quote(cid)}/logs", follow, tail, since,
                                timestamps, deadline)

    def service_logs(self, service_id, follow=False, tail=None, since=None, timestamps=True,
                     deadline=None):
        """logs() of a Swarm service (its tasks' output, from whichever node
        runs them), in the same (stream, bytes) frames."""
        return self._log_frames(f"/services/{quote(service_id)}/logs", follow, tail, since,
                                timestamps, deadline)

    def _log_frames(self, path, follow, tail, since, timestamps, deadline):
        params = {"stdout": "1", "stderr": "1", "follow": "1" if follow else "0",
                  "timestamps": "1" if timestamps else "0",
                  "tail": str(tail) if tail is not None else "all"}
        if since is not None:
            params["since"] = str(since)
        resp = self.get(path, params=params, stream=True, timeout=None if follow else DEFAULT)
        return _frames(resp, self, deadline)

    def build(self, context, params, headers=None):
        """POST /build with a tar context; return the open progress stream."""
        return self.request("POST", "/build", params=params, body=context,
                            headers={"Content-Type": "application/x-tar", **(headers or {})},
                            stream=True, timeout=None)

    def pull(self, ref):
        """POST /images/create?fromImage=REF; return the open progress stream."""
        name, tag = ref, "latest"
        if "@" not in ref and ":" in ref.rsplit("/", 1)[-1]:
            name, tag = ref.rsplit(":", 1)
        return self.request("POST", "/images/create", params={"fromImage": name, "tag": tag},
                            stream=True, timeout=None)

    def import_image(self, tar_fileobj, repo, tag, changes=()):
        """POST /images/create?fromSrc=- with a root filesystem tar; changes
        are Dockerfile instructions (CMD, ENV...) applied to the image."""
        query = urlencode([("fromSrc", "-"), ("repo", repo), ("tag", tag)]
                          + [("changes", c) for c in changes])
        return self.request("POST", "/images/create?" + query,
                            body=tar_fileobj,
                            headers={"Content-Type": "application/x-tar"},
                            stream=True, timeout=None)


_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


class TLSStream:
    """A hijacked exec over TLS, as a socket (recv, sendall, shutdown,
    settimeout, fileno, close).  ssl.SSLSocket cannot half-close: its
    shutdown(SHUT_WR) drops TLS and reads the rest as raw bytes, so stdin's
    EOF would lose the command's output.  Here TLS runs over memory buffers
    and SHUT_WR sends close_notify, which the engine reads as EOF, while the
    output is still read through TLS.  One lock around the TLS state: a
    reader and a writer (greenlets or threads) share it, never across a wait
    on the socket."""

    def __init__(self, raw, context, hostname):
        import ssl
        import threading

        self.raw = raw
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=hostname)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    raise OSError("the engine closed the connection during the TLS handshake")
        self._flush()

    def _flush(self):
        with self._send_lock:
            with self._lock:
                data = self._out.read()
            if data:
                self.raw.sendall(data)

    def _feed(self):
        data = self.raw.recv(65536)
        with self._lock:
            if not data:
                self._in.write_eof()
                return False
            self._in.write(data)
        return True

    def recv(self, n=65536):
        import ssl

        while True:
            try:
                with self._lock:
                    data = self._tls.read(n)
                    while len(data) < n and self._tls.pending():
                        data += self._tls.read(n - len(data))
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            self._flush()
            return data

    def sendall(self, data):
        with self._lock:
            self._tls.write(data)
        self._flush()

    def shutdown(self, how):
        import ssl

        if how == socket.SHUT_WR:
            try:
                with self._lock:
                    self._tls.unwrap()
            except ssl.SSLWantReadError:
                pass  # close_notify is written; the engine's answer is not awaited
            except ssl.SSLError:
                pass
            self._flush()
            return
        self.raw.shutdown(how)

    def settimeout(self, value):
        self.raw.settimeout(value)

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        self.raw.close()


class Hijacked:
    """The raw stream of a started exec (after the HTTP upgrade)."""

    def __init__(self, sock, pending=b"", api=None):
        self.sock = sock
        self.api = api
        self._pending = pending

    def read(self, n=65536):
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        return self.sock.recv(n)

    def sendall(self, data):
        self.sock.sendall(data)

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def frames(self, turn=None):
        """(stream, bytes) frames of a non-TTY exec, until it ends; turn(),
        when given, is called before each read (the server's fairness)."""
        return _frames(self, self.api, turn=turn)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _frames(resp, api, deadline=None, turn=None):
    """Demultiplex the Engine API's stream format (8-byte frame headers).
    The engine ends the stream cleanly when the container stops; a stream
    cut short (the engine stopped, the socket closed) is EngineUnreachable.
    With a deadline (time.monotonic()), each read waits only until then.
    Reads what has arrived, up to 64 KiB, and cuts the frames out of it:
    one read per frame header cost a system call and a Python loop per
    frame, when a command prints fast."""
    sock = getattr(getattr(resp, "_cubbi_conn", None), "sock", None)
    read = resp.read1 if hasattr(resp, "read1") else resp.read  # what has arrived
    buf = bytearray()
    try:
        while True:
            while len(buf) >= 8:
                kind, size = struct.unpack_from(">BxxxL", buf)
                if len(buf) < 8 + size:
                    break
                data = bytes(buf[8:8 + size])
                del buf[:8 + size]
                yield _STREAMS.get(kind, "stdout"), data
            if deadline is not None and sock is not None:
                import time

                sock.settimeout(max(0.001, deadline - time.monotonic()))
            if turn is not None:
                turn()
            chunk = read(max(65536, 8 + size - len(buf)) if len(buf) >= 8 else 65536)
            if not chunk:
                return
            buf += chunk
    except socket.timeout:
        if deadline is None:
            raise EngineUnreachable(f"the Docker engine at {api.host} did not answer in time") from None
        raise Deadline("the stream was silent until its deadline") from None
    except _transport_errors() as exc:
        raise EngineUnreachable(
            f"lost the connection to the Docker engine at {api.host} "
            f"({getattr(exc, 'strerror', None) or type(exc).__name__}); check that it is running"
        ) from None
    finally:
        resp.close()
        conn = getattr(resp, "_cubbi_conn", None)
        if conn is not None:
            conn.close()


def json_stream(resp):
    """Yield the JSON objects of a streamed progress response (build, pull)."""
    buf = b""
    try:
        while True:
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)
    finally:
        resp.close()
        conn = getattr(resp, "_cubbi_conn", None)
        if conn is not None:
            conn.close()

"""Bounded input and connections for the Cubbi Service, below Bottle and
gevent-websocket.

- `bounded_body(app, max_body, authorized, body_timeout)`: a WSGI middleware
  that reads a request body only once its token is valid (else 401, the
  body unread), refuses one over server.max_body before reading it (a
  Content-Length over it, or a chunked body at max_body + 1 bytes), and
  reads the rest in full within server.body_timeout (408 past it), handing
  Bottle a plain body so it never spools one to a temporary file.  A
  refusal closes the connection: the rest of the body is never read.
- `handler(...)`: the gevent WebSocketHandler of the server: at most
  server.max_connections at once (503 past it, logged once), a request's
  line and headers within server.header_timeout, a kept-alive connection
  closed after server.idle_timeout, a chunk-size line over max_body
  refused from the line, one log line (no traceback) for a malformed
  request, WebSocket upgrades on the terminal route only, and WebSockets
  that check each frame's header before its payload is read: a frame or
  message over server.max_message closes with 1009 (a 64 MiB frame is never
  read into memory), a message of more than server.max_fragments frames
  with 1008; the reader yields every 64 frames.
- Every client socket has TCP keepalive (about two minutes to notice a
  peer that vanished without closing), so no wait on a client is endless.
- `Peers`: per-user counts of open log streams (and waits), terminals and
  exec-mode commands, refused with TooMany (429) at the cap and released
  when one ends.
"""

import io
import json
import re
import struct

from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket

from cubbi_tools.errors import TooMany

REFUSED = "cubbi.refused"  # environ key: the body was refused, do not read the rest
SOCKET = "cubbi.socket"  # environ key: the client's socket (exec mode watches it)


def too_large(max_body):
    return _error(413, f"request body too large (over {max_body} bytes; server.max_body)")


def _error(status, message, kind="http"):
    return json.dumps({"error": message, "kind": kind, "status": status}).encode()


class BodyTooLarge(Exception):
    """A chunk whose size line alone is over server.max_body."""


_REASONS = {401: "Unauthorized", 403: "Forbidden"}
PUBLIC = object()  # authorized()'s answer for a route that takes a body before any token
PUBLIC_BODY = 65536  # the most such a route reads (a sign-in: a token, a code)


def bounded_body(app, max_body, authorized=None, body_timeout=60):
    """app behind the body limit.  authorized(environ), when given, is asked
    before any byte of a body is read: a request with a body that it refuses
    gets its answer (the CubbiError it returns: 401, or 403) with its body
    unread (and the connection closed); PUBLIC (a
    sign-in route) lets it through with a body of PUBLIC_BODY at most.  A
    body is read in full, within body_timeout seconds, before app sees it."""
    import gevent

    def wsgi(environ, start_response):
        def refuse(status, body, headers=()):
            environ[REFUSED] = True
            start_response(status, [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body))), ("Connection", "close"),
                                    *headers])
            return [body]

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not (length or chunked):
            return app(environ, start_response)
        limit = max_body
        if authorized is not None:
            why = authorized(environ)
            if why is PUBLIC:
                limit = min(max_body, PUBLIC_BODY)
            elif why:  # the refusal, a CubbiError: 401, or 403 for a cookie's wrong origin
                from cubbi_tools.errors import to_wire

                wire = to_wire(why)
                status = f"{wire['status']} {_REASONS.get(wire['status'], 'Refused')}"
                return refuse(status, json.dumps(wire).encode(),
                              [("WWW-Authenticate", 'Bearer realm="cubbi"')]
                              if wire["status"] == 401 else [])
        if length > limit:
            return refuse("413 Request Entity Too Large", too_large(limit))
        stream = environ["wsgi.input"]
        data = b""
        try:
            with gevent.Timeout(body_timeout, BodyTimeout):
                while len(data) <= limit:
                    part = stream.read(min(65536, limit + 1 - len(data)))
                    if not part:
                        break
                    data += part
        except BodyTooLarge:
            return refuse("413 Request Entity Too Large", too_large(limit))
        except BodyTimeout:
            return refuse("408 Request Timeout", _error(
                408, f"request body not received within {body_timeout:g} s "
                     "(server.body_timeout)"))
        except (OSError, ValueError) as exc:  # cut short, or not chunked as announced
            _log(f"bad request body from {environ.get('REMOTE_ADDR')}: {exc}")
            return refuse("400 Bad Request", _error(400, f"malformed request body: {exc}"))
        if len(data) > limit:
            return refuse("413 Request Entity Too Large", too_large(limit))
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return app(environ, start_response)

    return wsgi


class BodyTimeout(Exception):
    pass


def _log(text):
    import sys

    sys.stderr.write(f"cubbi-server: {text}\n")


class MessageTooBig(Exception):
    pass


class _Drained:
    """The wsgi.input of a refused request: nothing more is read from it."""

    def _discard(self):
        pass


class TooManyFragments(Exception):
    pass


class BoundedWebSocket(WebSocket):
    __slots__ = ("max_message", "message_length", "max_fragments", "fragments", "frames")

    def read_frame(self):
        """geventwebsocket's read_frame, with the frame's length and the
        message's so far checked against max_message from the header, and
        the message's frames against max_fragments.  Every 64 frames it
        yields: frames already buffered are read without waiting, and a
        client sending many tiny ones would hold up every other greenlet."""
        self.frames += 1
        if not self.frames % 64:
            import gevent

            gevent.sleep(0)
        header = Header.decode_header(self.stream)
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_length = header.length
            self.fragments = 1
        elif header.opcode == self.OPCODE_CONTINUATION:
            self.message_length += header.length
            self.fragments += 1
            if self.fragments > self.max_fragments:
                raise TooManyFragments()
        if header.length > self.max_message or (
                header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY,
                                  self.OPCODE_CONTINUATION)
                and self.message_length > self.max_message):
            raise MessageTooBig()
        return self._payload(header)

    def _payload(self, header):
        from geventwebsocket.exceptions import ProtocolError, WebSocketError

        if header.flags:
            raise ProtocolError
        if not header.length:
            return header, b""
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = header.unmask_payload(payload)
        return header, payload

    def receive(self):
        try:
            return super().receive()
        except (MessageTooBig, TooManyFragments) as exc:
            from geventwebsocket.exceptions import WebSocketError

            if isinstance(exc, MessageTooBig):
                code, reason = 1009, f"message over {self.max_message} bytes (server.max_message)"
            else:
                code, reason = 1008, (f"message in over {self.max_fragments} frames "
                                      "(server.max_fragments)")
            try:  # geventwebsocket's close() sends no status code
                self.send_frame(struct.pack("!H", code) + reason.encode(), self.OPCODE_CLOSE)
            except WebSocketError:
                pass
            self.closed = True
            self.stream = self.raw_write = self.raw_read = None
            return None


class HeaderTimeout(BaseException):
    """The request line and headers did not come within server.header_timeout
    (a BaseException: gevent's handler must not catch it as bad input)."""


_BAD = _error(400, "malformed request")
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json"
               b"\r\nContent-Length: %d\r\n\r\n" % len(_BAD) + _BAD)
# the one route that upgrades, under server.base_path too (this handler sees
# the path before the prefix is taken off)
TERMINAL = re.compile(r"^(/[^/]+)*/sessions/[^/]+/connect$")


def handler(max_message, max_fragments=1024, header_timeout=10, idle_timeout=60,
            max_connections=1000, max_body=None, origin_ok=None):
    """The WSGI handler class of the server (gevent WebSocketHandler): the
    connection cap, the header and keep-alive timeouts, the chunk-size
    limit, one log line for a malformed request, WebSockets on the terminal
    route only, and the message limits.  origin_ok(environ): whether a
    WebSocket upgrade's Origin is allowed (server/web.py); one that is not
    gets 403 before the handshake."""
    import gevent
    from gevent import pywsgi

    conns = {"open": 0, "refusing": False}

    class BoundedInput(pywsgi.Input):
        """gevent's request body, with a chunk whose size line is over
        max_body refused before any of it is read."""
        __slots__ = ()

        def _Input__read_chunk_length(self, rfile):
            size = pywsgi.Input._Input__read_chunk_length(self, rfile)
            if max_body is not None and size is not None and size > max_body:
                self._chunked_input_error = True
                raise BodyTooLarge()
            return size

    class Handler(WebSocketHandler):
        served = 0  # requests answered on this connection
        deadline = None

        def handle(self):
            if conns["open"] >= max_connections:
                self._refuse()
                return
            conns["open"] += 1
            try:
                _keepalive(self.socket)
                super().handle()
            finally:
                conns["open"] -= 1
                if conns["refusing"] and conns["open"] < max_connections * 0.9:
                    conns["refusing"] = False
                    _log(f"{conns['open']} connections open: accepting new ones again")

        def _refuse(self):
            """503 and closed: the connection cap is reached (logged once
            until the count is down again)."""
            if not conns["refusing"]:
                conns["refusing"] = True
                _log(f"{max_connections} connections open, the most allowed "
                     "(server.max_connections): refusing new ones")
            body = _error(503, f"too many connections (server.max_connections: "
                               f"{max_connections}); try again later")
            try:
                with gevent.Timeout(1, False):
                    self.socket.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            except OSError:
                pass
            finally:
                self.socket.close()

        def read_requestline(self):
            """The request line; a keep-alive connection waits idle_timeout
            for it, then the line and headers must come within header_timeout."""
            if self.served:
                with gevent.Timeout(idle_timeout, False):
                    self.rfile.peek(1)
                    self.deadline = gevent.Timeout.start_new(header_timeout, HeaderTimeout)
                if self.deadline is None:
                    return ""  # idle too long: closed
            else:
                self.deadline = gevent.Timeout.start_new(header_timeout, HeaderTimeout)
            return super().read_requestline()

        def read_request(self, raw_requestline):
            try:
                return super().read_request(raw_requestline)
            finally:
                self._stop_deadline()

        def _stop_deadline(self):
            if self.deadline is not None:
                self.deadline.close()
                self.deadline = None

        def handle_one_request(self):
            try:
                result = super().handle_one_request()
            except HeaderTimeout:
                return None  # headers too slow (slowloris): closed
            finally:
                self._stop_deadline()
            self.served += 1
            return result

        def _handle_client_error(self, ex):
            """A malformed request: 400 and one log line (gevent prints a
            traceback for some, e.g. over 100 headers)."""
            _log(f"bad request from {_address(self.client_address)}: "
                 f"{str(ex) or type(ex).__name__}"[:300])
            return ("400", BAD_REQUEST)

        def get_environ(self):
            env = super().get_environ()
            env[SOCKET] = self.socket
            self.wsgi_input.__class__ = BoundedInput
            return env

        def upgrade_websocket(self):
            if not TERMINAL.match(self.environ.get("PATH_INFO", "")):
                return None  # answered as a plain request
            env = self.environ
            if (origin_ok is not None and env.get("HTTP_UPGRADE", "").lower() == "websocket"
                    and not origin_ok(env)):
                body = json.dumps({"error": "WebSocket from another origin refused "
                                            "(server.origins)", "kind": "forbidden",
                                   "status": 403}).encode()
                self.start_response("403 Forbidden", [("Content-Type", "application/json"),
                                                      ("Content-Length", str(len(body)))])
                return [body]
            result = super().upgrade_websocket()
            old = getattr(self, "websocket", None)
            if old is not None:
                # the replaced object must not send a close frame from its
                # __del__ (before the 101 is even written)
                old.closed = True
                ws = BoundedWebSocket(self.environ, Stream(self), self)
                ws.max_message = max_message
                ws.max_fragments = max_fragments
                ws.message_length = ws.fragments = ws.frames = 0
                old.stream = old.raw_write = old.raw_read = None
                self.websocket = ws
                self.environ["wsgi.websocket"] = ws
            return result

        def log_request(self):
            """The access log on the server's log (stderr unless --quiet), as
            gevent's own handler writes it; geventwebsocket's sends it to a
            logger nobody reads.  A terminal is logged when it ends."""
            if self.server.log is not None:
                self.server.log.write(self.format_request() + "\n")

        def run_application(self):
            try:
                super().run_application()
            finally:
                if (self.environ or {}).get(REFUSED):
                    self.close_connection = True
                    self.wsgi_input = _Drained()

    return Handler


def _address(addr):
    return addr[0] if isinstance(addr, tuple) else str(addr)


KEEPALIVE = (60, 10, 6)  # idle seconds, probe interval, probes: a dead peer in ~2 min


def _keepalive(sock):
    """TCP keepalive on a client's socket: a client whose host vanished
    (no FIN, no RST) is noticed, so a terminal or stream waiting on it ends."""
    import socket

    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = KEEPALIVE
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    except (OSError, AttributeError):
        pass


class Peers:
    """Open log streams and terminals, per user and in all (/health shows
    the totals): take() refuses one over the cap with TooMany (429)."""

    def __init__(self, caps):
        self.caps = caps  # {"streams": N, "terminals": N}
        self.open = {kind: {} for kind in caps}

    def total(self, kind):
        return sum(self.open[kind].values())

    def count(self, kind, user):
        return self.open[kind].get(user, 0)

    def take(self, kind, user):
        have = self.open[kind].get(user, 0)
        cap = self.caps[kind]
        if have >= cap:
            setting = f"server.max_{kind}_per_user"
            what = {"streams": "log streams or waits", "execs": "exec-mode commands"}.get(kind, kind)
            raise TooMany(f"{user} has {have} open {what}"
                          f", the most allowed ({setting}: {cap}); close one first")
        self.open[kind][user] = have + 1

    def give(self, kind, user):
        left = self.open[kind].get(user, 0) - 1
        if left > 0:
            self.open[kind][user] = left
        else:
            self.open[kind].pop(user, None)

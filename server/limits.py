"""Bounded input for the Cubbi Service, below Bottle and gevent-websocket.

- `bounded_body(app, max_body)`: a WSGI middleware that refuses a body over
  server.max_body before anything reads it.  A Content-Length over the limit
  is refused unread; a chunked body (gevent's wsgi.input decodes the chunks)
  is read up to max_body + 1 bytes and handed to Bottle as a plain body of
  that length, so Bottle never spools one to a temporary file.  A refusal is
  413 with the JSON error body and closes the connection: the rest of the
  body is never read (gevent would otherwise read it to reuse the
  connection).
- `handler(max_message)`: the gevent WebSocketHandler whose WebSockets check
  each frame's header before its payload is read: a frame, or a message of
  several frames, over server.max_message closes the socket with 1009
  (message too big), so a 64 MiB frame is never read into memory.
- Every client socket has TCP keepalive (about two minutes to notice a
  peer that vanished without closing), so no wait on a client is endless.
- `Peers`: per-user counts of open log streams and terminals, refused with
  TooMany (429) at the cap and released when the stream or terminal ends.
"""

import io
import json
import struct

from geventwebsocket.handler import WebSocketHandler
from geventwebsocket.websocket import Header, Stream, WebSocket

from cubbi_tools.errors import TooMany

REFUSED = "cubbi.refused"  # environ key: the body was refused, do not read the rest
SOCKET = "cubbi.socket"  # environ key: the client's socket (exec mode watches it)


def too_large(max_body):
    return json.dumps({"error": f"request body too large (over {max_body} bytes; "
                                "server.max_body)", "kind": "http", "status": 413}).encode()


def bounded_body(app, max_body):
    def wsgi(environ, start_response):
        def refuse():
            environ[REFUSED] = True
            body = too_large(max_body)
            start_response("413 Request Entity Too Large",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), ("Connection", "close")])
            return [body]

        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > max_body:
            return refuse()
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            data = b""
            stream = environ["wsgi.input"]
            while len(data) <= max_body:
                part = stream.read(min(65536, max_body + 1 - len(data)))
                if not part:
                    break
                data += part
            if len(data) > max_body:
                return refuse()
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            del environ["HTTP_TRANSFER_ENCODING"]
        return app(environ, start_response)

    return wsgi


class MessageTooBig(Exception):
    pass


class _Drained:
    """The wsgi.input of a refused request: nothing more is read from it."""

    def _discard(self):
        pass


class BoundedWebSocket(WebSocket):
    __slots__ = ("max_message", "message_length")

    def read_frame(self):
        """geventwebsocket's read_frame, with the frame's length and the
        message's so far checked against max_message from the header."""
        header = Header.decode_header(self.stream)
        if header.opcode in (self.OPCODE_TEXT, self.OPCODE_BINARY):
            self.message_length = header.length
        elif header.opcode == self.OPCODE_CONTINUATION:
            self.message_length = getattr(self, "message_length", 0) + header.length
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
        except MessageTooBig:
            from geventwebsocket.exceptions import WebSocketError

            reason = f"message over {self.max_message} bytes (server.max_message)"
            try:  # geventwebsocket's close() sends no status code
                self.send_frame(struct.pack("!H", 1009) + reason.encode(), self.OPCODE_CLOSE)
            except WebSocketError:
                pass
            self.closed = True
            self.stream = self.raw_write = self.raw_read = None
            return None


def handler(max_message, origin_ok=None):
    """The WSGI handler class of the server (gevent WebSocketHandler).
    origin_ok(environ): whether a WebSocket upgrade's Origin is allowed
    (server/web.py); one that is not gets 403 before the handshake."""

    class Handler(WebSocketHandler):
        def handle(self):
            _keepalive(self.socket)
            super().handle()

        def get_environ(self):
            env = super().get_environ()
            env[SOCKET] = self.socket
            return env

        def upgrade_websocket(self):
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
            if getattr(self, "websocket", None) is not None:
                ws = BoundedWebSocket(self.environ, Stream(self), self)
                ws.max_message = max_message
                ws.message_length = 0
                # the one replaced must not close itself when collected: its
                # __del__ sends a close frame, which went out before the 101
                # answer, and a browser fails that handshake
                old = self.websocket
                old.stream = old.raw_write = old.raw_read = None
                old.closed = True
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

    def take(self, kind, user):
        have = self.open[kind].get(user, 0)
        cap = self.caps[kind]
        if have >= cap:
            setting = f"server.max_{kind}_per_user"
            raise TooMany(f"{user} has {have} open {'log streams' if kind == 'streams' else kind}"
                          f", the most allowed ({setting}: {cap}); close one first")
        self.open[kind][user] = have + 1

    def give(self, kind, user):
        left = self.open[kind].get(user, 0) - 1
        if left > 0:
            self.open[kind][user] = left
        else:
            self.open[kind].pop(user, None)

"""WebSockets through a real cubbi-server and engine, from clients that are
not cubbi's own: the standard `websocket-client` library gets a clean
101 (no close frame before it) and a working terminal; only the terminal
route upgrades (the others answer as usual); a message in very many tiny
frames is closed with 1008 past server.max_fragments and never holds up
other clients."""

import json
import socket
import struct
import threading
import time

import websocket  # PyPI websocket-client, the test extra

from conftest import served_session

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _ws_url(server, rec, query="tty=1&rows=24&cols=80"):
    return f"ws://127.0.0.1:{server.port}/sessions/{rec['id']}/connect?{query}"


def _upgrade(port, path, token=None):
    """The raw bytes a server answers to a WebSocket upgrade of path."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{auth}\r\n").encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = s.recv(4096)
            if not part:
                break
            data += part
    finally:
        s.close()
    return data


def test_the_101_comes_first_and_websocket_client_runs_a_terminal(server, alice, busybox_image,
                                                                   prefix):
    rec = served_session(alice, busybox_image, f"{prefix}-wsc")
    raw = _upgrade(server.port, f"/sessions/{rec['id']}/connect?tty=1", alice.token)
    assert raw.startswith(b"HTTP/1.1 101 "), raw[:80]
    ws = websocket.create_connection(_ws_url(server, rec), timeout=20,
                                     header=[f"Authorization: Bearer {alice.token}"])
    try:
        ws.send_binary(b"echo from-$((6*7))-client; exit 3\n")
        out, code = b"", None
        while code is None:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_BINARY:
                out += data[1:]
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                msg = json.loads(data)
                assert msg["type"] == "exit", msg
                code = msg["code"]
        assert b"from-42-client" in out and code == 3, (out, code)
    finally:
        ws.close()


def test_only_the_terminal_route_upgrades(server, alice):
    for path in ("/health", "/sessions", "/openapi.json", "/projects"):
        raw = _upgrade(server.port, path, alice.token)
        status = raw.split(b"\r\n")[0]
        assert status == b"HTTP/1.1 200 OK" and b"\x88" not in raw, (path, raw[:200])
    raw = _upgrade(server.port, "/sessions/nope/logs", alice.token)
    assert raw.startswith(b"HTTP/1.1 404 "), raw[:200]


def _frame(opcode, payload, fin):
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload)) + mask + masked


def test_a_message_in_many_tiny_frames_is_closed_and_stalls_no_one(server, alice, busybox_image,
                                                                   prefix):
    """A million one-byte frames of one message (within server.max_message):
    the server closes with 1008 (server.max_fragments), and /health keeps
    answering within a second meanwhile (it took seconds before)."""
    from serverproc import Client

    rec = served_session(alice, busybox_image, f"{prefix}-frag")
    ws = websocket.create_connection(_ws_url(server, rec), timeout=20,
                                     header=[f"Authorization: Bearer {alice.token}"])
    one = _frame(0, b"x", False)
    burst = _frame(2, b"x", False) + one * 1_000_000 + _frame(0, b"x", True)

    def flood():
        try:
            ws.sock.sendall(burst)
        except OSError:
            pass  # the server closed: the rest is refused

    closes = []

    def read():  # from the start: the close frame is read before the server drops the socket
        ws.sock.settimeout(30)
        try:
            while True:
                frame = ws.recv_frame()  # no close reply: the flood is still being sent
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    closes.append(struct.unpack("!H", frame.data[:2])[0])
                    return
        except (websocket.WebSocketException, OSError) as exc:
            closes.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    slowest = 0.0
    health = Client(server.url)
    for _ in range(10):
        start = time.monotonic()
        st, _ = health.call("GET", "/health")
        slowest = max(slowest, time.monotonic() - start)
        assert st == 200
    reader.join(30)
    sender.join(30)
    ws.sock.close()
    assert slowest < 1, f"/health took {slowest:.2f} s during the flood"
    assert closes == [1008], closes
    print(f"many-fragment message closed with 1008; slowest /health {slowest * 1000:.0f} ms")

"""A small RFC 6455 WebSocket client on the standard library (socket, ssl),
for cubbi-connect against a remote service.  Only what the terminal needs:
the opening handshake, masked client frames, fragmented messages, ping/pong
and the closing handshake.  (websocket-client from PyPI would do it too, at
the cost of a dependency and its import time for one small protocol.)"""

import base64
import hashlib
import os
import socket
import struct
import threading
from urllib.parse import urlsplit

from .errors import CubbiError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class HandshakeError(CubbiError):
    def __init__(self, status, body):
        super().__init__(f"WebSocket handshake refused: HTTP {status}")
        self.status = status
        self.body = body


class WebSocket:
    def __init__(self, url, headers=None, timeout=30):
        parts = urlsplit(url)
        secure = parts.scheme in ("wss", "https")
        host = parts.hostname
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self._lock = threading.Lock()
        self._buf = b""
        self.closed = False
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        hdrs = {}
        for line in header_lines:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            length = int(hdrs.get("content-length") or 0)
            body = self._read_exact(length) if length else b""
            raise HandshakeError(status, body)
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise CubbiError("WebSocket handshake failed: bad Sec-WebSocket-Accept")
        sock.settimeout(None)

    # -- reading ---------------------------------------------------------
    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self._buf += chunk

    def _read_until(self, mark):
        while mark not in self._buf:
            self._fill()
        head, self._buf = self._buf.split(mark, 1)
        return head

    def _read_exact(self, n):
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _frame(self):
        b1, b2 = self._read_exact(2)
        fin, opcode = b1 & 0x80, b1 & 0x0F
        length = b2 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read_exact(8))[0]
        key = self._read_exact(4) if b2 & 0x80 else None
        data = self._read_exact(length)
        if key:
            data = bytes(mask(data, key))
        return bool(fin), opcode, data

    def recv(self):
        """The next message: bytes (binary), str (text), or None once closed."""
        parts, kind = [], None
        while True:
            try:
                fin, opcode, data = self._frame()
            except (OSError, ConnectionError, ValueError):
                self.closed = True
                return None
            if opcode == PING:
                self._send(PONG, data)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                if not self.closed:
                    self.closed = True
                    try:
                        self._send(CLOSE, data[:2])
                    except OSError:
                        pass
                return None
            if opcode != CONT:
                kind = opcode
            parts.append(data)
            if fin:
                payload = b"".join(parts)
                return payload.decode("utf-8", "replace") if kind == TEXT else payload

    # -- writing ---------------------------------------------------------
    def _send(self, opcode, data):
        key = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        with self._lock:
            self.sock.sendall(head + key + mask(data, key))

    def send_text(self, text):
        self._send(TEXT, text.encode())

    def send_binary(self, data):
        self._send(BINARY, bytes(data))

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self._send(CLOSE, struct.pack(">H", 1000))
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


_XOR = {}  # k: the bytes.translate table of XOR with k (each made at first use)


def mask(data, key):
    """data XORed with the 4-byte key repeated (RFC 6455 5.3), as a new
    bytearray; the same call masks and unmasks.  At C speed: each of the
    four byte lanes through bytes.translate (a 64 KiB frame in ~0.1 ms; a
    big-integer XOR ~0.3 ms, a Python loop ~8 ms; CPU time).  The client masks
    what it sends and the server unmasks it with this."""
    out = bytearray(data)
    if len(out) < 64:  # a keystroke: the lanes cost more than they save
        for i in range(len(out)):
            out[i] ^= key[i & 3]
        return out
    for i in range(4):
        k = key[i]
        table = _XOR.get(k) or _XOR.setdefault(k, bytes(b ^ k for b in range(256)))
        out[i::4] = out[i::4].translate(table)
    return out

"""A unix-socket proxy in front of the real Docker engine that can fail the
way an engine does when it stops: cut a request off, or go away entirely;
or refuse a request with an error answer of its own.

Tests point DOCKER_HOST at proxy.url and run the real commands through it;
everything else reaches the real engine untouched.  cubbi's client opens one
connection per request, so the proxy looks at each connection's request
line only (a server keeps idle connections for plain GETs: those after
the first on a connection pass unseen; a DELETE or POST always opens one).
"""

import json
import os
import re
import socket
import threading


class EngineProxy:
    def __init__(self, path, upstream="/var/run/docker.sock"):
        self.path = path
        self.upstream = upstream
        self.url = "unix://" + path
        self.drop = None        # regex on "METHOD /path": such requests are cut off
        self.dropped = []       # request lines that were cut off
        # (regex on "METHOD /path", HTTP status, message): such requests get
        # that error answer, as the engine gives its own ({"message": ...})
        self.refuse = None
        self.refused = []       # request lines that were refused
        self.seen = []          # every request line forwarded
        # a regex on "METHOD /path": the first such request waits, before it
        # is forwarded, until release is set (held is set when it arrives), so
        # a test can stop the engine at that very point
        self.hold = None
        self.held = threading.Event()
        self.release = threading.Event()
        self._socks = set()
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _track(self, sock):
        with self._lock:
            self._socks.add(sock)

    def _accept(self):
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                head += chunk
        except OSError:
            client.close()
            return
        line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        method_path = " ".join(line.split(" ")[:2])
        if self.drop and re.search(self.drop, method_path):
            self.dropped.append(method_path)
            client.close()  # the engine went away before answering
            return
        refuse = self.refuse
        if refuse and re.search(refuse[0], method_path):
            self.refused.append(method_path)
            body = json.dumps({"message": refuse[2]}).encode()
            try:
                client.sendall(f"HTTP/1.1 {refuse[1]} Refused\r\nContent-Type: application/json"
                               f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                               .encode() + body)
            except OSError:
                pass
            client.close()
            return
        if self.hold and re.search(self.hold, method_path) and not self.held.is_set():
            self.held.set()
            self.release.wait(60)
        self.seen.append(method_path)
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.upstream)
        except OSError:
            client.close()
            return
        self._track(up)
        up.sendall(head)
        threading.Thread(target=_pump, args=(up, client), daemon=True).start()
        _pump(client, up)

    def stop(self):
        """The engine stops: no new connections, open ones cut."""
        try:
            self._server.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

"""A Fluentd forward-protocol receiver for the tests (there is no Fluentd
in the reachable package registries): a TCP server on loopback that
decodes what Docker's fluentd log driver sends, with msgpack.

The forward protocol (fluent/fluentd docs, "Forward Protocol Specification
v1") carries Message [tag, time, record], Forward [tag, [[time, record],
...], option] and PackedForward [tag, bin, option] (bin: a msgpack stream
of [time, record] entries); time is an integer or the EventTime extension
(type 0).  An option with "chunk" asks for an ack: {"ack": chunk}.
"""

import socket
import threading

import msgpack


def _time(value):
    if isinstance(value, msgpack.ExtType) and value.code == 0:
        secs = int.from_bytes(value.data[:4], "big")
        nanos = int.from_bytes(value.data[4:8], "big")
        return secs + nanos / 1e9
    return float(value)


class Receiver:
    """Records (tag, time, record) as they arrive; stop() closes it."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.records = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.conns = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                unpacker.feed(data)
                for msg in unpacker:
                    self._message(conn, msg)
        except OSError:
            return
        finally:
            conn.close()

    def _message(self, conn, msg):
        tag, second = msg[0], msg[1]
        option = None
        if isinstance(second, (bytes, bytearray)):  # PackedForward
            entries = list(msgpack.Unpacker(__import__("io").BytesIO(second), raw=False,
                                            strict_map_key=False))
            option = msg[2] if len(msg) > 2 else None
        elif isinstance(second, list):  # Forward
            entries = second
            option = msg[2] if len(msg) > 2 else None
        else:  # Message
            entries = [[second, msg[2]]]
            option = msg[3] if len(msg) > 3 else None
        with self.arrived:
            for when, record in entries:
                self.records.append((tag, _time(when), record))
            self.arrived.notify_all()
        if isinstance(option, dict) and option.get("chunk"):
            conn.sendall(msgpack.packb({"ack": option["chunk"]}))

    def wait_for(self, pred, timeout):
        """Wait until pred(records) is true; the records then (or at the deadline)."""
        with self.arrived:
            self.arrived.wait_for(lambda: pred(self.records), timeout=timeout)
            return list(self.records)

    def stop(self):
        self.running = False
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

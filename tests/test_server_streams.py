"""Streams through the service: exec mode, logs (tail, since, follow), and
the WebSocket terminal (a real tty, resized; a client that vanishes leaves
no process), against a real cubbi-server and the real engine."""

import json
import os
import socket
import time

from conftest import served_session


# -- exec mode, logs ---------------------------------------------------------------
def test_exec_mode_separates_streams_and_passes_the_status(alice, busybox_image, prefix):
    rec = served_session(alice, busybox_image, f"{prefix}-exec")
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["sh", "-c", "cat; echo oops >&2; id -u; exit 7"],
                          "stdin": "from stdin\n"})
    assert st == 200, out
    assert out == {"exit_code": 7, "stdout": "from stdin\n1000\n", "stderr": "oops\n"}


def _health(client):
    return client.call("GET", "/health")[1]  # the counts need a token


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_client_leaving_a_followed_log_stream_leaks_nothing(server, alice, busybox_image, prefix):
    rec = served_session(alice, busybox_image, f"{prefix}-logs")
    before_fds = _fds(server.proc.pid)
    socks = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall((f"GET /sessions/{rec['id']}/logs?follow=1 HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {alice.token}\r\n\r\n").encode())
        # a stalled or closed stream fails the test, never hangs it (the
        # heartbeats keep a socket timeout alone from firing: a deadline too)
        s.settimeout(30)
        data, deadline = b"", time.monotonic() + 30
        while b"cubbi-init: ready" not in data:
            assert time.monotonic() < deadline, f"no ready line within 30 s: {data[-500:]!r}"
            chunk = s.recv(4096)
            assert chunk, f"the server closed the stream before the ready line: {data!r}"
            data += chunk
        socks.append(s)
    assert _health(alice)["streams"] == 5
    for s in socks:
        s.close()
    deadline = time.time() + 10
    while time.time() < deadline and _health(alice)["streams"]:
        time.sleep(0.2)
    assert _health(alice)["streams"] == 0
    while time.time() < deadline and _fds(server.proc.pid) > before_fds:
        time.sleep(0.2)  # the last /health connection closing
    assert _fds(server.proc.pid) <= before_fds, os.listdir(f"/proc/{server.proc.pid}/fd")


def test_logs_tail_and_since(server, alice, busybox_image, prefix):
    rec = served_session(alice, busybox_image, f"{prefix}-tail", server=server, user="alice",
                         hook="for i in 1 2 3; do echo line$i >&2; done\n")
    st, text = alice.call("GET", f"/sessions/{rec['id']}/logs?tail=3")
    lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    assert [x["line"] for x in lines] == ["line2", "line3", "cubbi-init: ready"], lines
    st, text = alice.call("GET", f"/sessions/{rec['id']}/logs?since={int(time.time()) + 60}")
    assert st == 200 and not text.strip()
    assert set(lines[0]) == {"session", "stream", "time", "line"}
    st, body = alice.call("GET", f"/sessions/{rec['id']}/logs?tail=-1")
    assert st == 400


# -- WebSocket terminal ----------------------------------------------------------
def test_websocket_terminal_is_a_real_tty_with_resize(server, alice, busybox_image, prefix):
    """The terminal starts at the size asked in the URL, and a resize frame
    mid-session changes it: what `stty size` says, before and after."""
    from cubbi_tools.remote import RemoteService

    rec = served_session(alice, busybox_image, f"{prefix}-tty")
    svc = RemoteService("t", url=server.url, token=alice.token)
    ws = svc.websocket(rec, tty=True, size=(33, 101))
    ws.sock.settimeout(30)  # a terminal that stops answering fails the test
    out, code = b"", None

    def read_until(mark):
        nonlocal out, code
        while mark not in out:
            msg = ws.recv()
            assert msg is not None, ("the terminal closed before", mark, out)
            if isinstance(msg, bytes):
                out += msg[1:]
            elif json.loads(msg)["type"] == "exit":
                code = json.loads(msg)["code"]
                assert mark in out, ("the command exited before", mark, out)

    ws.send_binary(b"echo size-$(stty size | tr ' ' x)-; tty\n")
    read_until(b"size-33x101-")
    read_until(b"/dev/pts/")
    ws.send_text(json.dumps({"type": "resize", "rows": 40, "cols": 132}))
    ws.send_binary(b"echo size-$(stty size | tr ' ' x)-; exit 5\n")
    read_until(b"size-40x132-")
    while (msg := ws.recv()) is not None:  # to the server's close
        if isinstance(msg, str) and json.loads(msg)["type"] == "exit":
            code = json.loads(msg)["code"]
    assert code == 5
    assert _health(alice)["terminals"] == 0


def test_a_terminal_client_that_vanishes_leaves_no_process(server, alice, engine, busybox_image,
                                                           prefix):
    from cubbi_tools.remote import RemoteService

    rec = served_session(alice, busybox_image, f"{prefix}-gone")

    def procs():
        top = engine.get(f"/containers/{rec['container_id']}/top", params={"ps_args": "-o pid,args"})
        return [p[-1] for p in top["Processes"]]

    before = len(procs())
    svc = RemoteService("t", url=server.url, token=alice.token)
    ws = svc.websocket(rec, tty=True, size=(24, 80))
    ws.send_binary(b"sleep 600\n")
    deadline = time.time() + 10
    while time.time() < deadline and not any("sleep 600" in p for p in procs()):
        time.sleep(0.2)
    assert any("sleep 600" in p for p in procs())
    assert _health(alice)["terminals"] == 1
    ws.sock.close()  # no closing handshake: the client just goes away
    deadline = time.time() + 15
    while time.time() < deadline and (_health(alice)["terminals"] or len(procs()) > before):
        time.sleep(0.3)
    assert _health(alice)["terminals"] == 0
    assert not any("sleep 600" in p for p in procs()), procs()


def test_client_frames_are_unmasked_as_gevent_websocket_would():
    """server/terminal.py replaces gevent-websocket's byte-by-byte unmasking
    (milliseconds per 64 KiB frame with no other greenlet running) with one
    big-integer XOR: the same bytes, for every length and mask."""
    from geventwebsocket.websocket import Header

    def slow(mask, payload):  # gevent-websocket 0.10's Header.mask_payload
        out = bytearray(payload)
        for i in range(len(out)):
            out[i] ^= mask[i % 4]
        return out

    from cubbi_server import terminal

    for n in (0, 1, 2, 3, 4, 5, 125, 126, 65535, 65536, 100_003):
        header = Header(length=n)
        header.mask = os.urandom(4)
        payload = os.urandom(n)
        got = header.unmask_payload(payload)
        assert Header.unmask_payload is terminal._unmask
        assert got == slow(header.mask, payload) and isinstance(got, bytearray)

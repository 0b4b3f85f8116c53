"""Bounded input and private files on the service, through a real
cubbi-server (and the real engine where a session is needed): a chunked
body past server.max_body is refused unread, a WebSocket frame past
server.max_message closes with 1009 before its payload is read, exec output
is capped and the command stopped (also when its client leaves), per-user
caps on log streams and terminals (429, released when they end), the
database private from its first write, /images without server paths, and
the client's warning about a token over plain http."""

import json
import os
import select
import socket
import stat
import struct
import time

import pytest

from conftest import served_session
from serverproc import Client

MiB = 1024 * 1024


def _rss(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _response(sock, timeout=10):
    """The status line and body of the HTTP answer on sock (until it closes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    except (ConnectionResetError, socket.timeout):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


# -- 1. request bodies -------------------------------------------------------------
def test_a_chunked_body_over_max_body_is_refused_unread(start_server, tmp_path):
    """64 MiB sent chunked to a server whose max_body is 64 KiB: 413 with the
    JSON error, after the server read about max_body (the sender is cut off
    within the sockets' buffers), nothing spooled to its temp folder, its
    memory flat."""
    spool = tmp_path / "spool"
    spool.mkdir()
    srv = start_server(env={"TMPDIR": str(spool)})
    token = srv.token("alice")
    rss0 = _rss(srv.proc.pid)
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall((f"POST /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    chunk = b"%x\r\n" % MiB + b" " * MiB + b"\r\n"
    sent, answered = 0, False
    start = time.monotonic()
    s.settimeout(10)
    try:
        while sent < 64 * MiB:
            s.sendall(chunk)
            sent += MiB
            if select.select([s], [], [], 0)[0]:
                answered = True
                break
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    status, body = _response(s)
    elapsed = time.monotonic() - start
    s.close()
    assert status.startswith("HTTP/1.1 413"), (status, body[:200], sent)
    err = json.loads(body)
    assert err["status"] == 413 and err["kind"] == "http" and "max_body" in err["error"], err
    assert sent <= 16 * MiB, (sent, answered)  # refused at 64 KiB, not after reading 64 MiB
    assert os.listdir(spool) == []
    assert _rss(srv.proc.pid) - rss0 < 16 * MiB
    print(f"chunked 64 MiB refused after {sent // MiB} MiB sent, in {elapsed:.2f} s")
    st, _ = Client(srv.url, token).call("GET", "/projects")  # the server still serves
    assert st == 200


def test_a_small_chunked_body_is_read_as_a_body(start_server):
    srv = start_server()
    token = srv.token("alice")
    s = socket.create_connection(("127.0.0.1", srv.port))
    payload = json.dumps({"url": "https://example.com/team/app.git"}).encode()
    s.sendall((f"POST /projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n").encode()
              + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
    status, body = _response(s)
    s.close()
    assert status.startswith("HTTP/1.1 201"), (status, body)
    assert json.loads(body)["id"] == "example.com/team/app"


def test_a_content_length_over_max_body_is_refused_before_the_body(start_server):
    srv = start_server()
    token = srv.token("alice")
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall((f"POST /sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {64 * MiB}\r\n\r\n").encode())
    start = time.monotonic()
    status, body = _response(s)  # nothing of the body sent: the answer comes anyway
    s.close()
    assert status.startswith("HTTP/1.1 413") and time.monotonic() - start < 5, (status, body)


# -- 2. WebSocket messages ------------------------------------------------------------
def _close_code(ws, timeout):
    """The status code of the server's close frame (None: closed without one)."""
    ws.sock.settimeout(timeout)
    while True:
        fin, opcode, data = ws._frame()
        if opcode == 8:
            return struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None


def _echo(ws, word):
    ws.send_binary(f"echo {word}\n".encode())
    out = b""
    while f"{word}\r\n".encode() not in out.replace(f"echo {word}".encode(), b""):
        msg = ws.recv()
        assert msg is not None, out
        if isinstance(msg, bytes):
            out += msg[1:]


def test_a_huge_websocket_frame_is_refused_from_its_header(server, alice, busybox_image, prefix):
    """A 64 MiB binary frame's header (and a little of its payload): the
    server closes with 1009 at once, without waiting for the rest, and
    another client's terminal keeps answering."""
    from cubbi_tools.remote import RemoteService

    rec = served_session(alice, busybox_image, f"{prefix}-ws")
    svc = RemoteService("t", url=server.url, token=alice.token)
    other = svc.websocket(rec, tty=True, size=(24, 80))
    other.sock.settimeout(20)
    _echo(other, "before")
    ws = svc.websocket(rec, tty=True, size=(24, 80))
    start = time.monotonic()
    ws.sock.sendall(struct.pack(">BBQ", 0x82, 0x80 | 127, 64 * MiB) + os.urandom(4)
                    + b"x" * 65536)
    code = _close_code(ws, timeout=5)
    elapsed = time.monotonic() - start
    ws.sock.close()
    assert code == 1009 and elapsed < 2, (code, elapsed)
    print(f"64 MiB frame refused with 1009 in {elapsed * 1000:.0f} ms")
    _echo(other, "after")
    other.close()


# -- 3. exec output, a client that leaves --------------------------------------------
LIMITS = ("server:\n  heartbeat: 1\n  max_exec_output: 1048576\n  max_streams_per_user: 2\n"
          "  max_terminals_per_user: 1\n  max_wait: 30\n"
          "state:\n  database: server.db\nsessions:\n  uid: {uid}\n  gid: {gid}\n"
          # the tests' busybox image is a local image
          "policy:\n  images:\n    any_local: true\n")


def _limited(start_server):
    srv = start_server(config_text=LIMITS.format(uid=os.getuid(), gid=os.getgid()))
    return srv, Client(srv.url, srv.token("alice"))


def _procs(engine, rec):
    top = engine.get(f"/containers/{rec['container_id']}/top", params={"ps_args": "-o pid,args"})
    return [p[-1] for p in top["Processes"]]


def _until(check, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)
    return check()


def test_exec_output_is_capped_and_the_command_stopped(start_server, engine, busybox_image,
                                                       prefix):
    srv, alice = _limited(start_server)
    rec = served_session(alice, busybox_image, f"{prefix}-zero")
    rss0 = _rss(srv.proc.pid)
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["cat", "/dev/zero"]})
    assert st == 200, out
    assert out["exit_code"] is None and out["kind"] == "output_limit", {**out, "stdout": "..."}
    assert "server.max_exec_output" in out["error"] and "stopped" in out["error"], out["error"]
    # counted as the JSON answer sends it: a NUL is 6 bytes (\u0000)
    assert MiB - 6 <= len(json.dumps(out["stdout"])) - 2 <= MiB, len(out["stdout"])
    assert _until(lambda: not any("cat /dev/zero" in p for p in _procs(engine, rec))), \
        _procs(engine, rec)
    assert _rss(srv.proc.pid) - rss0 < 64 * MiB
    # under the cap, nothing changes
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect", {"command": ["echo", "hi"]})
    assert out == {"exit_code": 0, "stdout": "hi\n", "stderr": ""}, out


def test_an_exec_whose_client_leaves_is_stopped(start_server, engine, busybox_image, prefix):
    srv, alice = _limited(start_server)
    rec = served_session(alice, busybox_image, f"{prefix}-leave")
    body = json.dumps({"command": ["sleep", "654"]}).encode()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall((f"POST /sessions/{rec['id']}/connect HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {alice.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    assert _until(lambda: any("sleep 654" in p for p in _procs(engine, rec))), _procs(engine, rec)
    s.close()  # the client goes away without an answer
    assert _until(lambda: not any("sleep 654" in p for p in _procs(engine, rec))), \
        _procs(engine, rec)


# -- 5. per-user caps on log streams and terminals ---------------------------------
def _follow(srv, token, rec):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall((f"GET /sessions/{rec['id']}/logs?follow=1 HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode())
    s.settimeout(20)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    return s, data.split(b"\r\n")[0].decode(), data


def test_per_user_caps_on_log_streams_and_terminals(start_server, busybox_image, prefix):
    from cubbi_tools.errors import TooMany, from_wire
    from cubbi_tools.remote import RemoteService

    srv, alice = _limited(start_server)
    bob = Client(srv.url, srv.token("bob"))
    rec = served_session(alice, busybox_image, f"{prefix}-caps")
    bob_rec = served_session(bob, busybox_image, f"{prefix}-capsb")
    health = lambda: alice.call("GET", "/health")[1]  # noqa: E731
    streams = [_follow(srv, alice.token, rec) for _ in range(2)]
    assert all(st.endswith("200 OK") for _, st, _ in streams), streams
    s3, st, data = _follow(srv, alice.token, rec)
    assert " 429 " in st, data
    body = json.loads(data.partition(b"\r\n\r\n")[2] or s3.recv(4096))
    assert body["kind"] == "too_many" and "server.max_streams_per_user" in body["error"], body
    s3.close()
    b, st, _ = _follow(srv, bob.token, bob_rec)  # another user's cap is their own
    assert st.endswith("200 OK")
    b.close()
    streams[0][0].close()  # released when the stream ends
    assert _until(lambda: health()["streams"] == 1), health()
    again, st, _ = _follow(srv, alice.token, rec)
    assert st.endswith("200 OK")
    for s in (again, streams[1][0]):
        s.close()

    svc = RemoteService("t", url=srv.url, token=alice.token)
    first = svc.websocket(rec, tty=True, size=(24, 80))
    first.sock.settimeout(20)
    _echo(first, "one")
    second = svc.websocket(rec, tty=True, size=(24, 80))
    second.sock.settimeout(20)
    msg = json.loads(second.recv())
    assert msg["type"] == "error" and msg["status"] == 429 and msg["kind"] == "too_many", msg
    second.close()
    exc = from_wire(msg)  # what the client raises: exit 1
    assert isinstance(exc, TooMany) and "server.max_terminals_per_user" in str(exc), exc
    first.close()  # released when the terminal ends
    assert _until(lambda: health()["terminals"] == 0), health()
    third = svc.websocket(rec, tty=True, size=(24, 80))
    third.sock.settimeout(20)
    _echo(third, "three")
    third.close()


def test_a_terminal_slot_is_free_once_its_client_is_gone(start_server, engine, busybox_image,
                                                       prefix):
    """The per-user terminal slot comes back when the client goes away, not
    once what it started is stopped: a command that ignores SIGHUP holds
    the stop for a second and more (KILL a second after the hang-up)."""
    from cubbi_tools.remote import RemoteService

    srv, alice = _limited(start_server)  # max_terminals_per_user: 1
    rec = served_session(alice, busybox_image, f"{prefix}-slot")
    health = lambda: alice.call("GET", "/health")[1]  # noqa: E731
    svc = RemoteService("t", url=srv.url, token=alice.token)
    ws = svc.websocket(rec, command=["sh", "-c", "trap '' HUP; echo up; exec sleep 654"])
    ws.sock.settimeout(20)
    msg = ws.recv()
    assert isinstance(msg, bytes) and msg[1:] == b"up\n", msg
    assert health()["terminals"] == 1
    start = time.monotonic()
    ws.close()
    assert _until(lambda: health()["terminals"] == 0, timeout=5), health()
    elapsed = time.monotonic() - start
    assert elapsed < 1, f"the slot came back {elapsed:.2f} s after the client left"
    again = svc.websocket(rec, tty=True, size=(24, 80))  # the one slot, at once
    again.sock.settimeout(20)
    _echo(again, "again")
    again.close()
    assert _until(lambda: not any("sleep 654" in p for p in _procs(engine, rec))), \
        _procs(engine, rec)


# -- 4. bounded waits ----------------------------------------------------------------
def test_a_wait_is_never_longer_than_max_wait(start_server, busybox_image, prefix):
    """?wait= asks for an hour on a session that never gets ready: the server
    answers after server.max_wait (3 s here), not an hour."""
    srv = start_server(config_text=LIMITS.format(uid=os.getuid(), gid=os.getgid()).replace(
        "max_wait: 30", "max_wait: 3"))
    alice = Client(srv.url, srv.token("alice"))
    # a setup hook that never ends keeps the session initializing; the
    # service takes no files from a client, so it is made as the service would
    rec = served_session(alice, busybox_image, f"{prefix}-slow", hook="sleep 3600\n",
                         server=srv, user="alice", wait=False)
    start = time.monotonic()
    st, body = alice.call("GET", f"/sessions/{rec['id']}?wait=3600")
    elapsed = time.monotonic() - start
    assert st == 409 and "still initializing after 3 s" in body["error"], body
    assert elapsed < 15, elapsed


def test_an_exec_past_max_exec_time_is_stopped(start_server, engine, busybox_image, prefix):
    srv = start_server(config_text=LIMITS.format(uid=os.getuid(), gid=os.getgid()).replace(
        "max_wait: 30", "max_wait: 30\n  max_exec_time: 2"))
    alice = Client(srv.url, srv.token("alice"))
    rec = served_session(alice, busybox_image, f"{prefix}-long")
    start = time.monotonic()
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["sh", "-c", "echo started; sleep 765"]})
    assert st == 200 and time.monotonic() - start < 15, out
    assert out["exit_code"] is None and out["kind"] == "time_limit", out
    assert out["stdout"] == "started\n" and "server.max_exec_time" in out["error"], out
    assert _until(lambda: not any("sleep 765" in p for p in _procs(engine, rec))), \
        _procs(engine, rec)


def test_client_sockets_have_tcp_keepalive(start_server):
    """A client whose host vanishes (no FIN) is noticed: the kernel probes
    the server's side of every connection (`ss -o` shows the timer)."""
    import shutil
    import subprocess

    if not shutil.which("ss"):
        pytest.fail("this test needs ss: apt-get install iproute2 (./install --dev brings it)")
    srv = start_server()
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)  # served, the connection kept alive
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{srv.port} )"],
                         capture_output=True, text=True, check=True).stdout
    s.close()
    assert "keepalive" in out, out


# -- 6. private files, no server paths, plain-http warning ---------------------------
def test_the_database_and_its_folder_are_private_from_the_first_write(start_server, tmp_path):
    srv = start_server(config_text="server:\n  heartbeat: 1\nstate:\n  database: "
                                   "state/deep/server.db\n")
    folder = os.path.join(srv.workdir, "state", "deep")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(folder) == 0o700 and mode(os.path.dirname(folder)) == 0o700
    db = os.path.join(folder, "server.db")
    for f in (db, db + "-wal", db + "-shm"):
        assert os.path.exists(f) and mode(f) == 0o600, (f, oct(mode(f)))
    # the key file made for project credentials (no projects.storage.key here)
    c = Client(srv.url, srv.token("alice"))
    st, rec = c.call("POST", "/projects", {"url": "https://example.com/a/b.git", "auth": "token",
                                           "token": "s3cret"})
    assert st == 201, rec
    assert mode(db + ".key") == 0o600
    for f in os.listdir(folder):
        assert mode(os.path.join(folder, f)) == 0o600, f


def test_image_records_carry_no_server_paths(server, alice):
    st, body = alice.call("GET", "/images")
    assert st == 200 and body["images"], body
    text = json.dumps(body)
    from cubbi_tools import images

    for d in images.definitions():
        assert d["path"] not in text
    for rec in body["images"]:
        assert "path" not in rec, rec
        st, one = alice.call("GET", "/images/" + rec["name"])
        assert st == 200 and "path" not in one, one


def _outside_ip():
    """A local address that is not loopback (the route's source address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent
        return s.getsockname()[0]
    finally:
        s.close()


def test_a_token_over_plain_http_to_another_host_is_warned_once(cubbi, recorder):
    from serverproc import Recorder

    outside = Recorder(host=_outside_ip())
    try:
        env = {"CUBBI_REMOTE_URL": outside.url, "CUBBI_REMOTE_TOKEN": "tok"}
        r = cubbi("cubbi-ls", env=env)
        assert r.exit_code == 0, r
        assert len(outside.requests) >= 1
        warnings = [line for line in r.stderr.splitlines() if "plain http://" in line]
        assert len(warnings) == 1 and "token" in warnings[0], r.stderr
        # in one process, any number of requests: one warning
        import subprocess
        import sys

        code = ("from cubbi_tools.remote import RemoteService as R\n"
                f"s = R('x', url={outside.url!r}, token='tok')\n"
                "for _ in range(3): s.request('GET', '/sessions')\n"
                "s.websocket\n")
        from conftest import cubbi_env

        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=cubbi_env(), timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stderr.count("plain http://") == 1, p.stderr
        assert len(outside.requests) >= 4
    finally:
        outside.close()
    # loopback: no warning
    r = cubbi("cubbi-ls", env={"CUBBI_REMOTE_URL": recorder.url, "CUBBI_REMOTE_TOKEN": "tok"})
    assert r.exit_code == 0 and "plain http" not in r.stderr, r


def test_every_server_limit_is_documented_with_its_default():
    """The server.* keys: in the example config (with the default value) and
    the README's server section."""
    import yaml

    from conftest import ROOT
    from cubbi_tools.service import DEFAULTS

    with open(os.path.join(ROOT, "server", "cubbi-service.example.yaml")) as fh:
        example = yaml.safe_load(fh)["server"]
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    for key, default in DEFAULTS["server"].items():
        if key in ("host",):
            continue  # the example listens on 0.0.0.0, for the container
        assert example.get(key) == default, (key, example.get(key), default)
        if key.startswith("max_"):
            assert f"{key}` [{default}]" in readme, key


def test_websocket_unmasking_matches_the_rfc():
    """The server's unmasking (byte lanes through bytes.translate) is the
    XOR of RFC 6455 5.3 at every length, a keystroke to a 64 KiB frame."""
    from cubbi_server.terminal import _unmask

    class Head:
        mask = b"\x9a\x01\xff\x37"

    for n in [*range(0, 70), 4097, 65536 + 3]:
        data = os.urandom(n)
        want = bytes(b ^ Head.mask[i % 4] for i, b in enumerate(data))
        assert bytes(_unmask(Head, data)) == want, n

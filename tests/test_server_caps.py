"""Per-user caps on what holds the server's resources, through a real
cubbi-server and the real engine: a ?wait= counts as a log stream
(server.max_streams_per_user, 429 past it) and ends, with its Docker
log-follow connection, when its client goes away; exec-mode commands are
capped per user (server.max_execs_per_user); exec output is counted as the
JSON answer sends it, so a command printing NULs keeps the server's memory
within a small multiple of server.max_exec_output; /health shows the
caller's own counts only."""

import json
import os
import socket
import time

from conftest import served_session
from serverproc import Client

MiB = 1024 * 1024
CONFIG = ("server:\n  heartbeat: 1\n  max_streams_per_user: 3\n  max_execs_per_user: 2\n"
          "  max_wait: 60\n  max_exec_output: {output}\n"
          "state:\n  database: server.db\nsessions:\n  uid: {uid}\n  gid: {gid}\n"
          "policy:\n  images:\n    any_local: true\n")


def _start(start_server, output=MiB):
    srv = start_server(config_text=CONFIG.format(output=output, uid=os.getuid(),
                                                 gid=os.getgid()))
    return srv, Client(srv.url, srv.token("alice")), Client(srv.url, srv.token("bob"))


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _until(check, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)
    return check()


def _send(srv, request):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(request.encode())
    return s


def _answer(s, timeout=10):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                      if h.lower().startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
    except socket.timeout:
        raise AssertionError(f"no answer within {timeout} s: {data[:300]!r}") from None
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def test_waits_count_as_streams_and_end_when_their_client_leaves(start_server, busybox_image,
                                                                 prefix):
    srv, alice, bob = _start(start_server)
    # a setup hook that never ends keeps the session initializing
    rec = served_session(alice, busybox_image, f"{prefix}-hang", hook="sleep 3600\n",
                         server=srv, user="alice", wait=False)
    health = lambda c: c.call("GET", "/health")[1]  # noqa: E731
    wait = (f"GET /sessions/{rec['id']}?wait=600 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.token}\r\n\r\n")
    waiting = [_send(srv, wait) for _ in range(3)]
    assert _until(lambda: health(alice)["streams"] == 3), health(alice)
    assert health(bob)["streams"] == 0  # /health: the caller's own counts only
    s = _send(srv, wait)
    status, body = _answer(s, timeout=5)  # at once, not after max_wait
    s.close()
    assert " 429 " in status, (status, body)
    err = json.loads(body)
    assert err["kind"] == "too_many" and "server.max_streams_per_user" in err["error"], err
    for s in waiting:
        s.close()  # the clients go away without an answer
    assert _until(lambda: health(alice)["streams"] == 0), health(alice)
    settled = _settled_fds(srv.proc.pid)  # with the engine's idle connections kept for reuse
    # again: each wait holds its client's socket and a Docker log follow,
    # and lets both go when its client leaves
    waiting = [_send(srv, wait) for _ in range(3)]
    assert _until(lambda: health(alice)["streams"] == 3), health(alice)
    assert _until(lambda: _fds(srv.proc.pid) >= settled + 6), (_fds(srv.proc.pid), settled)
    during = _settled_fds(srv.proc.pid, rising=True)  # (the engine's pool may grow too)
    for s in waiting:
        s.close()
    assert _until(lambda: health(alice)["streams"] == 0), health(alice)
    assert _until(lambda: _fds(srv.proc.pid) <= during - 6), (_fds(srv.proc.pid), during)


def _settled_fds(pid, rising=False):
    """The process's open descriptors once the count stops falling (or
    rising) for a second."""
    last, since = _fds(pid), time.monotonic()
    while time.monotonic() - since < 1:
        time.sleep(0.1)
        now = _fds(pid)
        if (now > last) if rising else (now < last):
            last, since = now, time.monotonic()
    return last


def test_exec_mode_commands_are_capped_per_user(start_server, busybox_image, prefix):
    srv, alice, bob = _start(start_server)
    rec = served_session(alice, busybox_image, f"{prefix}-execs")
    body = json.dumps({"command": ["sleep", "321"]})
    post = (f"POST /sessions/{rec['id']}/connect HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}")
    running = [_send(srv, post) for _ in range(2)]
    assert _until(lambda: alice.call("GET", "/health")[1]["execs"] == 2)
    st, err = alice.call("POST", f"/sessions/{rec['id']}/connect", {"command": ["true"]})
    assert st == 429 and err["kind"] == "too_many", (st, err)
    assert "server.max_execs_per_user" in err["error"], err
    assert bob.call("GET", "/health")[1]["execs"] == 0
    for s in running:
        s.close()  # their commands are stopped, the cap freed
    assert _until(lambda: alice.call("GET", "/health")[1]["execs"] == 0)
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect", {"command": ["echo", "hi"]})
    assert st == 200 and out["stdout"] == "hi\n", out


def _peak_rss(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def test_exec_output_is_counted_as_sent_and_memory_stays_bounded(start_server, busybox_image,
                                                                 prefix):
    """cat /dev/zero under the default cap of 16 MiB: the answer's stdout
    is 16 MiB as sent (a NUL is 6 bytes of JSON), not 100 MB, and the
    server's peak memory grows by a few times the cap at most."""
    srv, alice, _ = _start(start_server, output=16 * MiB)
    rec = served_session(alice, busybox_image, f"{prefix}-nuls")
    peak0 = _peak_rss(srv.proc.pid)
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["cat", "/dev/zero"]})
    assert st == 200 and out["kind"] == "output_limit", {**out, "stdout": "..."}
    sent = len(json.dumps(out["stdout"])) - 2
    assert 16 * MiB - 6 <= sent <= 16 * MiB, sent
    grown = _peak_rss(srv.proc.pid) - peak0
    print(f"16 MiB exec of NULs: {sent} bytes of stdout as sent; peak memory +{grown // MiB} MiB")
    assert grown < 5 * 16 * MiB, grown // MiB

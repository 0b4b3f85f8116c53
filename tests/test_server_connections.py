"""Connections a stranger can open, through a real cubbi-server with short
timeouts and a small cap: request headers that never end (slowloris), an
idle keep-alive connection and a body that trickles are closed after
server.header_timeout / idle_timeout / body_timeout; past
server.max_connections a connection gets 503 at once (logged once) and the
server keeps its file descriptors; a request with a body and no valid
token gets 401 before any of its body is read; a chunk-size line over
server.max_body is refused from the line alone; malformed requests leave one
log line, no traceback."""

import json
import os
import socket
import time

from serverproc import Client

CONFIG = ("server:\n  heartbeat: 1\n  max_body: 65536\n  header_timeout: {header}\n"
          "  idle_timeout: 1\n  body_timeout: 1\n  max_connections: {cap}\n"
          "state:\n  database: server.db\n")


def _server(start_server, header=1, cap=50):
    srv = start_server(config_text=CONFIG.format(header=header, cap=cap))
    return srv, srv.token("alice")


def _connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(10)
    return s


def _closed_within(s, seconds, keep_sending=None):
    """Seconds until the server closed s (reads EOF or the writes fail),
    sending keep_sending every 0.2 s meanwhile; fails past `seconds`."""
    start = time.monotonic()
    s.setblocking(False)
    data = b""
    while time.monotonic() - start < seconds:
        try:
            part = s.recv(65536)
            if not part:
                return time.monotonic() - start, data
            data += part
        except BlockingIOError:
            pass
        except OSError:
            return time.monotonic() - start, data
        if keep_sending:
            try:
                s.send(keep_sending)
            except BlockingIOError:
                pass
            except OSError:
                return time.monotonic() - start, data
        time.sleep(0.2)
    raise AssertionError(f"still open after {seconds} s; read {data[:300]!r}")


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_headers_that_never_end_are_cut_at_header_timeout(start_server):
    srv, _ = _server(start_server)
    s = _connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    took, _ = _closed_within(s, 6, keep_sending=b"X-Slow: 1\r\n")  # a header line every 0.2 s
    assert 0.8 < took < 6, took
    s.close()


def test_an_idle_keep_alive_connection_is_closed_at_idle_timeout(start_server):
    srv, _ = _server(start_server, header=30)
    s = _connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b'"up"' not in data and b'"down"' not in data:
        data += s.recv(4096)
    took, rest = _closed_within(s, 6)
    assert rest == b"" and 0.8 < took < 6, (took, rest)
    s.close()


def test_a_trickling_body_gets_408_at_body_timeout(start_server):
    srv, token = _server(start_server, header=30)
    s = _connect(srv)
    s.sendall((f"POST /projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    took, data = _closed_within(s, 6, keep_sending=b"1\r\n \r\n")  # one byte every 0.2 s
    s.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b"server.body_timeout" in data, data
    assert took < 6, took


def test_past_max_connections_the_server_answers_503_at_once_and_logs_once(start_server):
    cap = 20
    srv, token = _server(start_server, header=30, cap=cap)
    fds0 = _fds(srv.proc.pid)
    held = [_connect(srv) for _ in range(cap)]
    for s in held:
        s.sendall(b"GET /health HTTP/1.1\r\n")  # headers never finished
    deadline = time.monotonic() + 10
    while _fds(srv.proc.pid) < fds0 + cap and time.monotonic() < deadline:
        time.sleep(0.05)  # all accepted
    refused = []
    for _ in range(10):
        s = _connect(srv)
        start = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                part = s.recv(4096)
                if not part:
                    break
                data += part
        except ConnectionResetError:
            pass
        refused.append((time.monotonic() - start, data))
        s.close()
    for took, data in refused:
        assert data.startswith(b"HTTP/1.1 503 ") and b"server.max_connections" in data, data
        assert took < 2, took
    assert _fds(srv.proc.pid) <= fds0 + cap + 2, (_fds(srv.proc.pid), fds0)
    with open(srv.log) as fh:
        log = fh.read()
    assert log.count("server.max_connections") == 1, log
    for s in held:
        s.close()
    # the held ones gone, the server serves again
    deadline = time.monotonic() + 10
    while (answer := Client(srv.url, token).call("GET", "/projects"))[0] == 503:
        assert time.monotonic() < deadline, answer  # the held ones still counted
        time.sleep(0.1)
    assert answer[0] == 200, answer


def _unread_response(s):
    s.settimeout(5)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            part = s.recv(4096)
            if not part:
                break
            data += part
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def test_a_body_without_a_valid_token_gets_401_before_it_is_read(start_server):
    """The headers and the start of a chunk, no more: the answer is 401 at
    once (the server did not wait for the body), for chunked and for
    Content-Length bodies, a missing token and a wrong one."""
    srv, _ = _server(start_server, header=30)
    for auth in ("", "Authorization: Bearer not-a-token\r\n"):
        for framing, start in (("Transfer-Encoding: chunked", b"400000\r\nabc"),
                               ("Content-Length: 60000", b"abc")):
            s = _connect(srv)
            t0 = time.monotonic()
            s.sendall((f"POST /sessions HTTP/1.1\r\nHost: x\r\n{auth}{framing}\r\n"
                       "Content-Type: application/json\r\n\r\n").encode() + start)
            data = _unread_response(s)
            s.close()
            assert data.startswith(b"HTTP/1.1 401 "), (auth, framing, data)
            body = json.loads(data.partition(b"\r\n\r\n")[2])
            assert body["status"] == 401 and "token" in body["error"], body
            assert time.monotonic() - t0 < 2


def test_a_chunk_size_over_max_body_is_refused_from_its_line(start_server):
    srv, token = _server(start_server, header=30)
    for size in (b"FFFFFFFFFFFFFFFF", b"10001", b"1" * 17):
        s = _connect(srv)
        s.sendall((f"POST /projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                  + size + b"\r\n")
        data = _unread_response(s)
        s.close()
        status = data.split(b"\r\n")[0]
        assert status in (b"HTTP/1.1 413 Request Entity Too Large", b"HTTP/1.1 400 Bad Request"), \
            (size, data)
        if len(size) <= 16:
            assert b" 413 " in status, (size, data)


def test_malformed_requests_leave_one_log_line_and_no_traceback(start_server):
    srv, token = _server(start_server, header=30)
    s = _connect(srv)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n"
              + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n")
    data = _unread_response(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    s = _connect(srv)  # a chunked body cut short
    s.sendall((f"POST /projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               "10\r\nabc").encode())
    s.shutdown(socket.SHUT_WR)
    data = _unread_response(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    s = _connect(srv)  # not chunked as announced
    s.sendall((f"POST /projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               "zz\r\n").encode())
    data = _unread_response(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400 "), data
    st, _ = Client(srv.url, token).call("GET", "/projects")
    assert st == 200
    with open(srv.log) as fh:
        log = fh.read()
    assert "Traceback" not in log, log
    bad = [line for line in log.splitlines() if "bad request" in line]
    assert len(bad) == 3 and "100 headers" in bad[0], log


def test_a_wait_that_is_not_a_finite_number_is_refused(start_server):
    srv, token = _server(start_server, header=30)
    for wait in ("nan", "inf", "-1", "x"):
        st, body = Client(srv.url, token).call("GET", f"/sessions/x?wait={wait}")
        assert st == 400 and "?wait=" in body["error"], (wait, st, body)

"""The Engine API client's own HTTP/1.1 on a unix socket, against a small
server on a real socket that answers the way dockerd does (and the ways a
dying one does).  The real engine is exercised by every integration test."""

import json
import os
import socket
import sys
import threading

import pytest

from cubbi_tools.dockerapi import DockerAPI, APIError
from cubbi_tools.errors import EngineUnreachable


class Server:
    """Accepts connections on a unix socket; for each, records the request
    (head and body) and sends back the next canned answer."""

    def __init__(self, path, answers):
        self.path = path
        self.answers = list(answers)
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.answers:
            conn, _ = self.sock.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
            if "Content-Length" in headers:
                while len(body) < int(headers["Content-Length"]):
                    body += conn.recv(65536)
            elif headers.get("Transfer-Encoding") == "chunked":
                while not body.endswith(b"0\r\n\r\n"):
                    body += conn.recv(65536)
            self.requests.append((head.decode().split("\r\n")[0], headers, body))
            for part in self.answers.pop(0):
                conn.sendall(part)
            conn.close()


@pytest.fixture
def serve(tmp_path):
    def _serve(*answers):
        path = str(tmp_path / "engine.sock")
        if os.path.exists(path):
            os.unlink(path)
        server = Server(path, answers)
        return server, DockerAPI("unix://" + path, timeout=5)

    return _serve


def ok_json(obj, chunked=False, status="200 OK"):
    body = json.dumps(obj).encode()
    if chunked:
        mid = len(body) // 2
        return [f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode(),
                b"%x\r\n" % mid + body[:mid] + b"\r\n",
                b"%x;ext=1\r\n" % (len(body) - mid) + body[mid:] + b"\r\n", b"0\r\n\r\n"]
    return [f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body]


def test_content_length_and_chunked_answers(serve):
    rows = [{"Id": "a" * 64, "Names": ["/x"]}] * 50
    server, api = serve(ok_json(rows), ok_json(rows, chunked=True))
    assert api.containers(all=True, labels=["cubbi.session=true"]) == rows
    assert api.get("/containers/json") == rows
    line, headers, body = server.requests[0]
    assert line.startswith("GET /containers/json?all=1&filters=") and line.endswith(" HTTP/1.1")
    assert headers["Host"] == "docker" and body == b""


def test_json_body_and_204(serve):
    server, api = serve([b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert api.post("/networks/n/connect", body={"Container": "c"}) is None
    line, headers, body = server.requests[0]
    assert json.loads(body) == {"Container": "c"}
    assert headers["Content-Type"] == "application/json"


def test_a_file_body_is_sent_chunked(serve, tmp_path):
    f = tmp_path / "big"
    f.write_bytes(os.urandom(200_000))
    server, api = serve(ok_json({"status": "done"}))
    with open(f, "rb") as fh:
        assert api.post("/images/create", body=fh) == {"status": "done"}
    _, headers, raw = server.requests[0]
    assert headers["Transfer-Encoding"] == "chunked"
    body, rest = b"", raw
    while True:
        size, rest = rest.split(b"\r\n", 1)
        if int(size, 16) == 0:
            break
        body += rest[:int(size, 16)]
        rest = rest[int(size, 16) + 2:]
    assert body == f.read_bytes()


def test_error_answers_carry_the_engines_message(serve):
    server, api = serve(ok_json({"message": "No such container: zz"}, status="404 Not Found"),
                        [b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"])
    with pytest.raises(APIError) as e:
        api.inspect_container("zz")
    assert (e.value.status, e.value.code, str(e.value)) == (404, 3, "No such container: zz")
    with pytest.raises(APIError, match="oops"):
        api.get("/info")


def error(status, message):
    return ok_json({"message": message}, status=status)


NO_EXIT = ("Could not kill running container c, cannot remove - tried to kill container, "
           "but did not receive an exit event")
BUSY = ("driver \"overlay2\" failed to remove root filesystem for c: unlinkat "
        "/var/lib/docker/overlay2/x/merged: device or resource busy")


def lines(server):
    return [r[0].rsplit(" ", 1)[0] for r in server.requests]


def test_a_forced_remove_the_engine_refuses_for_a_while_is_made_again(serve):
    """A kill whose exit event came late, a file system still busy: the
    container stays listed (stopping, or Dead) unless it is removed again
    once it is not running; a removal already under way is waited for."""
    server, api = serve(error("500 Internal Server Error", NO_EXIT), ok_json({"StatusCode": 137}),
                        error("500 Internal Server Error", BUSY), ok_json({"StatusCode": 137}),
                        [b"HTTP/1.1 204 No Content\r\n\r\n"])
    api.remove("c")
    assert lines(server) == ["DELETE /containers/c?force=1&v=1",
                             "POST /containers/c/wait?condition=not-running"] * 2 + [
                             "DELETE /containers/c?force=1&v=1"]

    server, api = serve(error("409 Conflict", "removal of container c is already in progress"),
                        ok_json({"StatusCode": 137}))
    api.remove("c")  # the other removal ended with it gone
    assert lines(server) == ["DELETE /containers/c?force=1&v=1",
                             "POST /containers/c/wait?condition=removed"]

    server, api = serve(error("500 Internal Server Error", NO_EXIT),
                        error("404 Not Found", "No such container: c"))
    api.remove("c")  # gone meanwhile
    assert len(server.requests) == 2


def test_a_remove_refused_for_good_raises(serve):
    refusals = [error("500 Internal Server Error", BUSY), ok_json({"StatusCode": 137})] * 2
    server, api = serve(*refusals, error("500 Internal Server Error", BUSY))
    with pytest.raises(APIError, match="device or resource busy"):
        api.remove("c")
    assert len(server.requests) == 2 * api.REMOVE_TRIES - 1
    # not forced, or not a refusal that passes: at once
    server, api = serve(error("409 Conflict", "You cannot remove a running container c"))
    with pytest.raises(APIError, match="cannot remove a running"):
        api.remove("c", force=False)
    server, api = serve(error("404 Not Found", "No such container: c"))
    with pytest.raises(APIError) as e:
        api.remove("c")
    assert e.value.status == 404 and len(server.requests) == 1


@pytest.mark.parametrize("answer", [
    [],                                                      # closed before answering
    [b"HTTP/1.1 200 OK\r\nContent-Le"],                      # cut in the headers
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"],    # cut in the body
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1,2"],  # cut in a chunk
    [b"SSH-2.0-OpenSSH\r\n\r\n"],                            # not HTTP at all
])
def test_a_cut_or_garbled_answer_is_engine_unreachable(serve, answer):
    server, api = serve(answer)
    with pytest.raises(EngineUnreachable, match="Docker engine"):
        api.get("/containers/json")


def test_log_frames_stream_and_a_cut_stream_is_reported(serve):
    def frame(kind, text):
        data = text.encode()
        return bytes([kind, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    payload = frame(1, "out\n") + frame(2, "err\n")
    whole = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
             b"%x\r\n" % len(payload) + payload + b"\r\n", b"0\r\n\r\n"]
    cut = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
           b"%x\r\n" % 100 + payload]
    server, api = serve(whole, cut)
    assert list(api.logs("c", follow=True)) == [("stdout", b"out\n"), ("stderr", b"err\n")]
    got = []
    with pytest.raises(EngineUnreachable, match="lost the connection"):
        for item in api.logs("c", follow=True):
            got.append(item)
    assert got == [("stdout", b"out\n"), ("stderr", b"err\n")]


def test_no_http_client_import_on_the_unix_socket(tmp_path):
    """http.client (with email.parser and ssl) is what the own client saves."""
    import subprocess

    code = ("import sys; from cubbi_tools.dockerapi import DockerAPI; "
            "DockerAPI('unix:///nonexistent').host; import cubbi_tools.engine; "
            "print('http.client' in sys.modules, 'email.parser' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": root, "PATH": os.environ["PATH"]})
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_timeouts_default_none_and_deadline(tmp_path, monkeypatch):
    """DEFAULT is the client's timeout (CUBBI_DOCKER_TIMEOUT), None is none
    at all (followed streams), and a deadline ends a silent stream."""
    import time

    from cubbi_tools import dockerapi

    monkeypatch.setenv("CUBBI_DOCKER_TIMEOUT", "0.5")
    assert DockerAPI("unix:///x").timeout == 0.5
    monkeypatch.setenv("CUBBI_DOCKER_TIMEOUT", "bogus")
    assert DockerAPI("unix:///x").timeout == 60
    path = str(tmp_path / "silent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    held = []

    def accept():  # answers the head of a stream, then says nothing
        while True:
            conn, _ = srv.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n")
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    api = DockerAPI("unix://" + path, timeout=0.3)
    with pytest.raises(EngineUnreachable, match="did not answer in time"):
        list(api.logs("c", follow=False))  # a plain request: the timeout holds
    started = time.monotonic()
    with pytest.raises(dockerapi.Deadline):
        list(api.logs("c", follow=True, deadline=time.monotonic() + 1.0))
    assert 0.9 < time.monotonic() - started < 2  # the deadline, not the 0.3 s timeout
    frames = api.logs("c", follow=True)  # no timeout: still waiting well past 0.3 s
    box = []
    t = threading.Thread(target=lambda: box.append(list(frames)), daemon=True)
    t.start()
    t.join(1.0)
    assert t.is_alive() and not box
    for conn in held:
        conn.close()
    t.join(2)
    assert box == [[]]


def test_kept_connections_carry_gets_and_one_the_engine_closed_is_replaced(tmp_path):
    """keep_alive (the server's): plain GETs reuse an idle connection; a kept
    connection the engine has closed is replaced, the request answered;
    POSTs and streams always get a new connection."""
    path = str(tmp_path / "keep.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    accepted, lines = [], []
    body = json.dumps([{"Id": "a"}]).encode()

    def handle(conn):
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    conn.close()
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            line = head.decode().split("\r\n")[0]
            lines.append(line)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            if "close-after" in line:  # the engine drops the connection once answered
                conn.close()
                return

    def accept():
        while True:
            conn, _ = listener.accept()
            accepted.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    api = DockerAPI("unix://" + path, timeout=5)
    api.keep_alive = 4
    for _ in range(3):
        assert api.get("/containers/json") == [{"Id": "a"}]
    assert len(accepted) == 1
    assert api.get("/close-after") == [{"Id": "a"}]
    assert api.get("/containers/json") == [{"Id": "a"}]  # the closed one replaced
    assert len(accepted) == 2
    api.post("/containers/x/start")
    assert len(accepted) == 3
    assert len(lines) == 6
    plain = DockerAPI("unix://" + path, timeout=5)  # the commands: one connection per request
    plain.get("/containers/json")
    plain.get("/containers/json")
    assert len(accepted) == 5


def test_verbose_logs_every_request_with_short_query_values(serve, capsys):
    """ui.verbose: the exec start on the raw socket is logged like every
    other request, and a build's long labels/buildargs are elided."""
    server, api = serve([b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream"
                         b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"],
                        [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    api.verbose = True
    api.exec_start("abc123", tty=True).close()
    labels = json.dumps({"cubbi.image.definition": "x" * 500})
    api.build(b"", {"t": "cubbi/t:latest", "labels": labels, "buildargs": json.dumps(
        {"http_proxy": "http://user:pw@proxy:3128"}), "rm": "1"}).read()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["cubbi: engine POST /exec/abc123/start",
                     "cubbi: engine POST /build?t=cubbi/t:latest&labels=...&buildargs=...&rm=1"]
    assert server.requests[1][0].startswith("POST /build?t=cubbi%2Ft%3Alatest&labels=%7B")



def _until(check, timeout=10):
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.01)


def _flights_round(flights, answers):
    """Caller a asks first and its call is held until b, c, d have asked
    too; answers[i] is what call i+1 (counting from this round) returns or
    raises.  What each caller got, and how many calls were made."""
    calls, gate, started, got = [], threading.Event(), threading.Event(), {}

    def fn():
        calls.append(1)
        if len(calls) == 1:
            started.set()
            assert gate.wait(10)
        answer = answers[len(calls) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def ask(name):
        try:
            got[name] = flights.run("k", fn)
        except BaseException as exc:
            got[name] = type(exc).__name__

    first = threading.Thread(target=ask, args=("a",))
    first.start()
    assert started.wait(10)
    later = [threading.Thread(target=ask, args=(n,)) for n in "bcd"]
    for t in later:
        t.start()
    _until(lambda: flights.waiting("k") == 3)
    gate.set()
    for t in [first, *later]:
        t.join(10)
    return got, len(calls)


class _Killed(BaseException):
    """What a killed greenlet's call raises (GreenletExit is a BaseException)."""


def test_coalesced_calls_share_one_that_started_after_they_asked():
    """Flights: callers that ask while a call runs never get its answer (it
    may predate them); they all share the next one, which starts when the
    first lands; an error reaches every caller of its call; when the
    caller making a call is killed, the others ask again."""
    from cubbi_tools.dockerapi import Flights

    flights = Flights()
    assert _flights_round(flights, [1, 2]) == ({"a": 1, "b": 2, "c": 2, "d": 2}, 2)
    got, n = _flights_round(flights, [1, APIError(500, "boom")])
    assert got == {"a": 1, "b": "APIError", "c": "APIError", "d": "APIError"} and n == 2, got
    got, n = _flights_round(flights, [1, _Killed(), 3])
    assert got["a"] == 1 and sorted(got.values(), key=str) == [1, 3, 3, "_Killed"] and n == 3, got
    assert flights.waiting("k") == 0 and flights.run("other", lambda: "x") == "x"

"""The service's HTTP API against a real cubbi-server on 127.0.0.1 (free
port, temp SQLite): errors are JSON with the right codes, every endpoint
needs a token, the engine down is a clear 503, the OpenAPI document matches
the routes, and an image path from a client is never read on the server."""

import os

import pytest

from serverproc import Client


# -- errors are JSON, with the right codes ------------------------------------
def test_health_says_only_up_or_down_without_a_token(server, alice):
    st, body = Client(server.url).call("GET", "/health")
    assert st == 200 and body == {"status": "up"}, body  # no engine version, no paths
    st, body = Client(server.url, "cubbi_000000000000_" + "0" * 64).call("GET", "/health")
    assert st == 200 and body == {"status": "up"}, body
    st, body = alice.call("GET", "/health")
    assert st == 200 and body["status"] == "up" and body["engine"] == "ok", body


def test_missing_or_wrong_token_is_401_on_every_endpoint(server):
    anon, wrong = Client(server.url), Client(server.url, "cubbi_000000000000_" + "0" * 64)
    junk = Client(server.url, "not-a-token")
    for method, path in [("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/sessions/x"),
                         ("DELETE", "/sessions/x"), ("GET", "/sessions/x/logs"),
                         ("POST", "/sessions/x/connect"), ("GET", "/images"),
                         ("GET", "/images/x"), ("GET", "/projects"), ("POST", "/projects"),
                         ("GET", "/projects/a/b"), ("PUT", "/projects/a/b"),
                         ("DELETE", "/projects/a/b")]:
        for c in (anon, wrong, junk):
            st, body = c.call(method, path, body={} if method in ("POST", "PUT") else None)
            assert st == 401 and body["kind"] == "auth", (method, path, st, body)


def test_unknown_routes_and_methods_are_json(server, alice):
    st, body = alice.call("GET", "/nope")
    assert st == 404 and body["status"] == 404
    st, body = alice.call("PATCH", "/sessions")
    assert st == 405 and body["status"] == 405


def test_malformed_non_object_and_mistyped_bodies_are_400(alice):
    for raw in (b"{bad", b"[1,2]", b"\xff\xfe", b'"x"'):
        st, body = alice.call("POST", "/sessions", raw=raw,
                              headers={"Content-Type": "application/json"})
        assert st == 400 and body["kind"] == "usage", (raw, body)
    for payload in ({"image": 5}, {"image": "x", "env": {"A": 1}}, {"image": "x", "ports": "80"},
                    {"name": "no-image"}, {"image": "x", "pids_limit": True}):
        st, body = alice.call("POST", "/sessions", payload)
        assert st == 400, (payload, body)


@pytest.mark.parametrize("value", ["nan", "-1", "NaN", "soon"])
def test_a_wait_that_is_not_a_number_of_seconds_is_400(alice, value):
    # ?wait=nan answered "still initializing after nan s" (ATTACK-11 #10)
    st, body = alice.call("GET", f"/sessions/nosuch?wait={value}")
    assert (st, body["error"]) == (400, f"?wait={value!r}: expected a number >= 0"), body


def test_oversized_body_is_413(alice):
    st, body = alice.call("POST", "/sessions", raw=b"{" + b" " * 70000 + b"}",
                          headers={"Content-Type": "application/json"})
    assert st == 413 and "too large" in body["error"]


def test_host_paths_from_a_client_are_refused(alice, busybox_image):
    st, body = alice.call("POST", "/sessions", {"image": busybox_image, "volumes": ["/:/host"]})
    assert st == 400 and "volume" in body["error"]
    st, body = alice.call("POST", "/sessions", {"image": busybox_image, "mount": "/etc"})
    assert st == 400 and "--mount" in body["error"]


def test_unknown_session_is_404_everywhere(alice):
    for method, path in [("GET", "/sessions/zzzz9999"), ("DELETE", "/sessions/zzzz9999"),
                         ("GET", "/sessions/zzzz9999/logs")]:
        st, body = alice.call(method, path)
        assert st == 404 and body["kind"] == "not_found", (method, path, body)
    st, body = alice.call("POST", "/sessions/zzzz9999/connect", {"command": ["true"]})
    assert st == 404


# -- the engine down -----------------------------------------------------------------
def test_engine_down_is_503_with_a_clear_message(start_server, tmp_path):
    srv = start_server(env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    c = Client(srv.url, srv.token("alice"))
    st, body = c.call("GET", "/sessions")
    assert st == 503 and body["kind"] == "engine"
    assert "Docker engine" in body["error"]
    with open(srv.log) as fh:  # the reason is on the server's log too, in one line
        assert [line for line in fh if line.startswith("cubbi-server: GET /sessions: 503 engine: "
                                                       "cannot reach the Docker engine")]
    st, body = c.call("GET", "/health", token=None)
    assert st == 200 and body == {"status": "down"}, body  # not the socket's path
    st, body = c.call("GET", "/health")
    assert st == 200 and body["status"] == "down" and "Docker engine" in body["engine"], body


def test_sigusr1_prints_where_each_request_waits(start_server, tmp_path):
    """A request that hangs can be found: SIGUSR1 puts every greenlet's
    stack on the log (here one waiting in a ?wait= on the missing engine
    is not needed: the server's own serve_forever is there)."""
    import signal
    import time

    from cubbi_tools.commands.server import STACKS_END

    srv = start_server(env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    os.kill(srv.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with open(srv.log) as fh:
            log = fh.read()
        if STACKS_END in log:
            break
        time.sleep(0.05)
    dump = log[log.index("(SIGUSR1):"):log.index(STACKS_END)]
    assert "in serve_forever" in dump and "cubbi_tools/commands/server.py:" in dump, dump
    assert srv.proc.poll() is None  # still serving
    assert Client(srv.url).call("GET", "/health")[0] == 200


def test_openapi_document_matches_the_routes(tmp_path):
    from cubbi_server import openapi
    from cubbi_server.app import make_app
    from cubbi_tools.service import Service, load_config

    conf = load_config(None)
    conf["state"]["database"] = str(tmp_path / "db.sqlite")
    app = make_app(Service(conf), conf)
    import re

    routes = set()
    for r in app.routes:
        path = re.sub(r"<(\w+)(:\w+)?>", lambda m: "{" + ("id" if m.group(1) in ("ref", "pid")
                                                          else m.group(1)) + "}", r.rule)
        routes.add((path, r.method.lower()))
    documented = {(p, m) for p, ops in openapi.DOCUMENT["paths"].items() for m in ops}
    assert routes == documented


def test_image_paths_are_never_read_on_the_server(server, alice, cubbi, remote_env, tmp_path):
    from cubbi_tools.remote import IMAGE_PATH_REFUSED

    for image in ("/etc", "/nonexistent/x", "./x", "../x", "~/x", "~root"):
        st, body = alice.call("POST", "/sessions", {"image": image})
        assert st == 400 and body["error"] == f"image {image!r}: {IMAGE_PATH_REFUSED}", body
    # a reference with a slash is a Docker reference: a directory of that name
    # on the server (its cwd holds one here) is never looked at
    tool = os.path.join(server.workdir, "probe", "tool")
    os.makedirs(tool)
    open(os.path.join(tool, "cubbi_image.yaml"), "w").write("name: tool\n")
    answers = [alice.call("POST", "/sessions", {"image": i}) for i in ("probe/tool", "probe/none")]
    assert [a[0] for a in answers] == [404, 404], answers
    assert answers[0][1]["error"].replace("tool", "none") == answers[1][1]["error"]
    for name in (".", "..", "probe"):
        st, body = alice.call("GET", "/images/" + name)
        assert st == 404 and "cubbi_image.yaml" not in body["error"], (name, body)
    # the client refuses an image directory before sending anything
    defn = tmp_path / "mytool"
    defn.mkdir()
    (defn / "cubbi_image.yaml").write_text("name: mytool\n")
    for image in (str(defn), "./mytool", "./not-here"):
        r = cubbi("cubbi-create", "-i", image, "--no-connect", env=remote_env, cwd=str(tmp_path))
        assert r.exit_code == 2 and IMAGE_PATH_REFUSED in r.stderr, (image, r)

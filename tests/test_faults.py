"""Faults, on real engines and a real server (issue 11, "Faults"):

- the Docker engine stopped during cubbi-create (locally, and through the
  server) gives exit 4 / 503, and leaves no half-made container once the
  engine is back;
- the server killed (SIGKILL) during a followed log stream and started
  again loses no session, token or project, and the follow ends with
  exit 4 and one clear line;
- 20 concurrent creates through the server give 20 distinct sessions.

The engine that is stopped is a SECOND dockerd (tests/dockerd2.py: its own
socket, data and exec roots, in its own network namespace), never the
shared one.  "During" is made exact with tests/engine_proxy.py in front of
it: the proxy holds cubbi's request to start the container, the test stops
the engine, then lets the request go on to the dead socket.
"""

import os
import shutil
import subprocess
import tempfile
import threading

import pytest
from conftest import cubbi_env, one_line, run
from dockerd2 import SecondEngine
from engine_proxy import EngineProxy
from serverproc import Client

START = r"^POST /containers/[^/]+/start"


@pytest.fixture(scope="module")
def engine2(engine, busybox_image):
    """A second Docker engine with the busybox test image, stopped at the end."""
    work = tempfile.mkdtemp(prefix="cubbi-dockerd2-")
    second = SecondEngine(work)
    try:
        second.start()
        second.load_image(busybox_image)
        yield second
    finally:
        second.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def running_engine2(engine2):
    """engine2, started again when a test stopped it (and failed before
    starting it itself)."""
    yield engine2
    if engine2.proc.poll() is not None:
        engine2.start()


def cubbi_containers(second):
    """{name: state} of every container on the second engine."""
    from cubbi_tools.dockerapi import DockerAPI

    return {c["Names"][0].lstrip("/"): c["State"]
            for c in DockerAPI(second.url).get("/containers/json", params={"all": "1"})}


def _service_config(socket):
    return ("server:\n  heartbeat: 1\n  max_body: 65536\n"
            "state:\n  database: server.db\n"
            f"docker:\n  socket: {socket}\n"
            "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n"
            # the tests' busybox image is a local image
            "policy:\n  images:\n    any_local: true\n")


# -- the engine stopped during a create ------------------------------------------

def test_engine_stopped_during_a_local_create(cubbi, running_engine2, busybox_image, tmp_path):
    second = running_engine2
    proxy = EngineProxy(str(tmp_path / "engine.sock"), upstream=second.sock)
    proxy.hold = START
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), "CUBBI_HOME": str(cubbi.cubbi_home),
                     "DOCKER_HOST": proxy.url})
    try:
        proc = subprocess.Popen(["cubbi-create", "--image", busybox_image, "--name", "fault-a",
                                 "--no-mount", "--no-connect", "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proxy.held.wait(60), "cubbi-create never asked to start its container"
        assert cubbi_containers(second) == {"cubbi-fault-a": "created"}
        second.stop()  # the engine goes away as the container is started
        proxy.release.set()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 4, (out, err)
        one_line(err, "Docker engine")
    finally:
        proxy.stop()
    second.start()
    # the engine is back: the half-made container is debris of a create that
    # is over, and the next create removes it before it makes its own
    r = run(["cubbi-create", "--image", busybox_image, "--name", "fault-b", "--no-mount",
             "--no-connect", "--json"], env={**env, "DOCKER_HOST": second.url})
    assert r.exit_code == 0, r
    assert cubbi_containers(second) == {"cubbi-fault-b": "running"}
    r = run(["cubbi-close", "fault-b"], env={**env, "DOCKER_HOST": second.url})
    assert r.exit_code == 0, r


def test_engine_stopped_during_a_create_through_the_server(start_server, running_engine2,
                                                           busybox_image, tmp_path):
    second = running_engine2
    proxy = EngineProxy(str(tmp_path / "engine.sock"), upstream=second.sock)
    proxy.hold = START
    srv = start_server(config_text=_service_config(proxy.path))
    client = Client(srv.url, srv.token("alice"))
    answer = []
    try:
        t = threading.Thread(target=lambda: answer.append(client.call(
            "POST", "/sessions", {"image": busybox_image, "name": "fault-s"})), daemon=True)
        t.start()
        assert proxy.held.wait(60), "the server never asked to start the container"
        second.stop()
        proxy.release.set()
        t.join(120)
        (status, body), = answer
        assert status == 503 and body["kind"] == "engine", body
        second.start()
        # the server itself is still up: the next create removes the debris of
        # the one that failed (through the same proxy, which holds nothing now)
        status, rec = client.call("POST", "/sessions", {"image": busybox_image, "name": "fault-t"})
        assert status == 201, rec
        # served sessions' containers are named per owner: cubbi-NAME-HASH
        (name, state), = cubbi_containers(second).items()
        assert name.startswith("cubbi-fault-t-") and state == "running", (name, state)
        status, _ = client.call("DELETE", f"/sessions/{rec['id']}")
        assert status == 200
    finally:
        proxy.stop()


# -- the server killed during a followed log stream --------------------------------

def test_server_killed_during_a_followed_log_loses_nothing(cubbi, start_server, busybox_image):
    srv = start_server()
    token = srv.token("alice")
    env = {"CUBBI_SECRETS": "file"}
    r = cubbi("cubbi-remote", "add", "srv", srv.url, "--token", "-", input=token, env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-project", "-r", "srv", "add", "https://example.invalid/team/app", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-create", "-r", "srv", "--image", busybox_image, "--no-connect", "--json",
              env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    try:
        proc = subprocess.Popen(
            ["cubbi-logs", "-r", "srv", "-f", rec["id"]], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), **env}))
        seen = _first_line(proc)
        assert "cubbi-init" in seen, seen
        srv.proc.kill()  # SIGKILL: no clean shutdown of anything
        srv.proc.wait(30)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 4, (out, err)
        one_line(err, "cubbi-logs", srv.url)
        srv.start()  # same port, same database
        r = cubbi("cubbi-ls", "-r", "srv", "--json", env=env)
        assert r.exit_code == 0, r
        assert [s["id"] for s in r.json()] == [rec["id"]]
        r = cubbi("cubbi-project", "-r", "srv", "list", "--json", env=env)
        assert r.exit_code == 0 and "example.invalid/team/app" in r.stdout, r
    finally:
        cubbi("cubbi-close", "-r", "srv", rec["id"], env=env)


def _first_line(proc, timeout=60):
    """The first line the follow printed, on stdout or stderr."""
    box = []

    def read(stream):
        line = stream.readline()
        if line:
            box.append(line)
            done.set()

    done = threading.Event()
    for s in (proc.stdout, proc.stderr):
        threading.Thread(target=read, args=(s,), daemon=True).start()
    assert done.wait(timeout), "the follow printed nothing"
    return box[0]


# -- concurrent creates through the server -----------------------------------------

def test_twenty_concurrent_creates_through_the_server(start_server, busybox_image):
    srv = start_server()
    client = Client(srv.url, srv.token("alice"))
    answers = []
    lock = threading.Lock()

    def one():
        out = client.call("POST", "/sessions", {"image": busybox_image})
        with lock:
            answers.append(out)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(20)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert [s for s, _ in answers] == [201] * 20, [b for s, b in answers if s != 201]
        ids = {b["id"] for _, b in answers}
        names = {b["name"] for _, b in answers}
        assert len(ids) == 20 and len(names) == 20
        status, body = client.call("GET", "/sessions?all=1")
        assert status == 200 and {s["id"] for s in body["sessions"]} == ids
    finally:
        status, body = client.call("GET", "/sessions?all=1")
        for s in body.get("sessions", []):
            client.call("DELETE", f"/sessions/{s['id']}")

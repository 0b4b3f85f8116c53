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
from serverproc import Client

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



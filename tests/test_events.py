"""cubbi-events: lifecycle events from the engine's event stream, on the
real engine, locally and through a real cubbi-server (scoped to the user)."""

import json
import queue
import subprocess
import threading
import time

from conftest import cubbi_env, one_line_error, served_session
from test_cli_session import create, failing_image  # noqa: F401 (a fixture)


class Events:
    """A running `cubbi-events --json ...`: its lines, read as they come."""

    def __init__(self, cubbi, *args, env=None):
        # from a second ago: the engine replays what happened while the
        # stream was being opened, so the test cannot miss a first event
        args = ("--since", str(int(time.time()) - 1), *args)
        e = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir),
                       "CUBBI_HOME": str(cubbi.cubbi_home), **(env or {})})
        self.proc = subprocess.Popen(["cubbi-events", "--json", *args], env=e, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def until(self, pred, timeout=60):
        """The events up to the first that satisfies pred (a deadline, never a hang)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no such event within {timeout} s; saw {self.seen}"
            try:
                ev = self.q.get(timeout=left)
            except queue.Empty:
                continue
            assert ev is not None, f"cubbi-events ended: {self.proc.stderr.read()}; saw {self.seen}"
            self.seen.append(ev)
            if pred(ev):
                return ev

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def kinds(evs, name):
    return [e["event"] for e in evs if e["name"] == name]


def test_a_session_is_created_initializes_runs_and_closes(cubbi, busybox_image, prefix, failing_image):
    ev = Events(cubbi, "--filter", f"name={prefix}*")
    try:
        t0 = time.time()
        rec = create(cubbi, busybox_image, f"{prefix}-ok", "--wait")
        cubbi("cubbi-close", rec["id"])
        ev.until(lambda e: e["event"] == "closed" and e["name"] == f"{prefix}-ok")
        assert kinds(ev.seen, f"{prefix}-ok") == ["created", "initializing", "running", "closed"]
        last = ev.seen[-1]
        assert {k: last[k] for k in ("id", "name", "image", "project", "remote")} == \
            {"id": rec["id"], "name": f"{prefix}-ok", "image": busybox_image, "project": None,
             "remote": None}
        assert last["time"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(t0)))
        # a session whose init fails: failed, with the init's reason, once
        t1 = time.time()
        bad = create(cubbi, failing_image, f"{prefix}-bad")
        failed = ev.until(lambda e: e["event"] == "failed")
        assert failed["id"] == bad["id"] and "/app" in failed["reason"], failed
        # a session killed by the engine (not closed): died with its exit code
        dead = create(cubbi, busybox_image, f"{prefix}-dead", "--wait")
        subprocess.run(["docker", "kill", dead["container_id"]], check=True, capture_output=True)
        died = ev.until(lambda e: e["event"] == "died")
        assert died["id"] == dead["id"] and died["exit_code"] == 137, died
        assert "running" in kinds(ev.seen, f"{prefix}-dead")
        # the same events replayed as a window of the past, which ends by itself;
        # the init's markers are read from the logs of sessions that still exist.
        # (A short window: the engine keeps only its last few hundred events of
        # every kind, health checks included.)
        r = cubbi("cubbi-events", "--json", "--since", str(int(t1) - 1), "--until", "0s",
                  "--filter", f"name={prefix}*")
        assert r.exit_code == 0, r
        for name, want in (("-bad", ["created", "initializing", "failed"]),
                           ("-dead", ["created", "initializing", "running", "died"])):
            assert kinds(r.json(), prefix + name) == want, (name, r.json())
    finally:
        ev.stop()
    assert not [e for e in ev.seen if not e["name"].startswith(prefix)], ev.seen


def test_a_missing_required_variable_is_a_failed_event(cubbi, busybox_image, prefix, tmp_path):
    d = tmp_path / "t-req"
    d.mkdir()
    (d / "cubbi_image.yaml").write_text("name: t-req\nenvironment:\n  - name: NEEDED_KEY\n"
                                        "    description: the model's key\n    required: true\n")
    (d / "Dockerfile").write_text(f"FROM {busybox_image}\n")
    ev = Events(cubbi, "--filter", f"name={prefix}*")
    rec = None
    try:
        rec = create(cubbi, str(d), f"{prefix}-req")
        failed = ev.until(lambda e: e["event"] == "failed")
        assert failed["id"] == rec["id"], failed
        assert "required variable NEEDED_KEY is not set" in failed["reason"], failed
        assert kinds(ev.seen, f"{prefix}-req") == ["created", "initializing", "failed"]
    finally:
        ev.stop()
        if rec:
            subprocess.run(["cubbi-close", rec["id"]], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", rec["image"]], capture_output=True)


def test_a_process_over_the_memory_limit_is_an_oom_event(cubbi, busybox_image, prefix):
    ev = Events(cubbi, "--filter", f"name={prefix}*", "--filter", "status=oom")
    try:
        rec = create(cubbi, busybox_image, f"{prefix}-mem", "--memory", "16m", "--wait")
        # dd's 64 MiB buffer, filled from /dev/zero, cannot fit in 16 MiB (+16 MiB swap)
        r = cubbi("cubbi-connect", rec["id"], "--", "dd", "if=/dev/zero", "of=/dev/null",
                  "bs=64M", "count=1")
        assert r.exit_code != 0, r
        oom = ev.until(lambda e: True)
        assert (oom["event"], oom["id"]) == ("oom", rec["id"]), oom
    finally:
        ev.stop()


def test_bad_input_is_one_line_and_exit_2(cubbi):
    one_line_error(cubbi("cubbi-events", "--filter", "status=stopped"), 2, "status", "oom")
    one_line_error(cubbi("cubbi-events", "--since", "1m", "--until", "1h"), 2, "--until")
    one_line_error(cubbi("cubbi-events", "--until", "yesterday"), 2, "--until")


def test_through_the_service_a_user_sees_only_their_own_events(server, alice, bob, busybox_image,
                                                               prefix, cubbi):
    r = cubbi("cubbi-remote", "add", "srv", server.url, "--token", "-", input=bob.token,
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    ev = Events(cubbi, "-r", "srv", env={"CUBBI_SECRETS": "file"})
    try:
        t0 = int(time.time())
        theirs = served_session(alice, busybox_image, f"{prefix}-alice")
        mine = served_session(bob, busybox_image, f"{prefix}-bob")
        bob.call("DELETE", f"/sessions/{mine['id']}")
        ev.until(lambda e: e["event"] == "closed" and e["id"] == mine["id"])
        assert kinds(ev.seen, f"{prefix}-bob") == ["created", "initializing", "running", "closed"]
        assert all(e["owner"] == "bob" and e["remote"] == "srv" for e in ev.seen), ev.seen
        # the API alike: alice's replayed window has hers and nothing of bob's
        st, text = alice.call("GET", f"/events?since={t0 - 1}&until={int(time.time()) + 1}")
        assert st == 200, text
        got = [json.loads(x) for x in text.decode().splitlines() if x.strip()]
        assert [e["event"] for e in got if e["id"] == theirs["id"]] == \
            ["created", "initializing", "running"], got
        assert all(e["owner"] == "alice" for e in got), got
        alice.call("DELETE", f"/sessions/{theirs['id']}")
        st, body = bob.call("GET", "/events?status=bogus")
        assert st == 400 and "status" in body["error"], body
    finally:
        ev.stop()

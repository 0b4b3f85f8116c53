"""Documented service behaviours that had no test of their own (issue 9),
with a real cubbi-server on loopback: an unset ${VAR} in its config stops
it, and `cubbi-connect -r NAME ID` is a real interactive terminal whose
window size follows the local one (TIOCSWINSZ + SIGWINCH in a real
pseudo-terminal, `stty size` inside)."""

import os
import re
import subprocess
import termios

import pytest

from conftest import BIN, cubbi_env, one_line
from ptyterm import Terminal



# -- an unset ${VAR} in the service config -----------------------------------------
@pytest.mark.parametrize("config,key", [
    ("projects:\n  storage:\n    key: ${CUBBI_T_UNSET_KEY}\n", "projects.storage.key"),
    ("state:\n  database: ${CUBBI_T_UNSET_KEY}/server.db\n", "state.database"),
    ("server:\n  heartbeat: 1\nimages:\n  - name: x\n    image: reg.example/${CUBBI_T_UNSET_KEY}\n",
     "images[0].image"),
])
def test_an_unset_variable_in_the_service_config_stops_the_server(tmp_path, config, key):
    path = tmp_path / "cubbi-service.yaml"
    path.write_text(config)
    env = cubbi_env()
    env.pop("CUBBI_T_UNSET_KEY", None)
    for argv in (["--config", str(path), "--host", "127.0.0.1", "--port", "0"],
                 ["token", "create", "alice", "--config", str(path)]):
        proc = subprocess.Popen([os.path.join(BIN, "cubbi-server"), *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=str(tmp_path))
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"cubbi-server {argv[0]} kept running with ${{CUBBI_T_UNSET_KEY}} "
                        f"unset:\n{err}")
        assert proc.returncode == 1 and out == "", (argv, proc.returncode, out, err)
        one_line(err, key, "${CUBBI_T_UNSET_KEY} is not set")
        # nothing made: no database (the default is cubbi-server.db here, in
        # the config's directory), no log, no key: only the config itself
        assert sorted(os.listdir(tmp_path)) == ["cubbi-service.yaml"], (argv, err)
    # exported, the same config starts (the check is about the variable, not the file)
    env["CUBBI_T_UNSET_KEY"] = str(tmp_path)
    srv = subprocess.Popen([os.path.join(BIN, "cubbi-server"), "token", "create", "alice",
                            "--config", str(path)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    out, err = srv.communicate(timeout=30)
    assert srv.returncode == 0 and out.startswith("cubbi_"), err


# -- an interactive remote terminal, resized ---------------------------------------------
@pytest.fixture
def remote(remote_env, cubbi):
    """cubbi commands against conftest's server as alice: (runner env, full
    env for a pty)."""
    full = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir),
                      "CUBBI_HOME": str(cubbi.cubbi_home), "TERM": "xterm", **remote_env})
    return remote_env, full


SIZE = rb"\[size (\d+) (\d+)\]"


def _size_inside(t, want, timeout=15):
    """Ask the session's shell for its window size until it says want
    (rows, cols), or the deadline: a resize travels on its own message, so
    a command typed at once may run before it lands."""
    import time

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        start = len(t.screen)
        t.type('echo "[size $(stty size)]"\n')
        m = t.expect(SIZE, start=start, timeout=max(1, deadline - time.monotonic()))
        seen = (int(m.group(1)), int(m.group(2)))
        if seen == want:
            return seen
    return seen


def _running(engine, cid, text, present, timeout=15):
    """Whether a process whose command line holds text is (present=True) or
    is not running in container cid, within timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        top = engine.get(f"/containers/{cid}/top", params={"ps_args": "-o pid,args"})
        found = any(text in p[-1] for p in top["Processes"])
        if found == present or time.monotonic() > deadline:
            return found == present
        time.sleep(0.2)


def test_remote_connect_is_an_interactive_terminal_that_follows_resizes(
        cubbi, remote, engine, busybox_image, prefix):
    env, full = remote
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-pty", "--json",
              "--no-connect", "--wait", env=env)
    assert r.exit_code == 0, r
    sid, cid = r.json()[0]["id"], r.json()[0]["container_id"]
    with Terminal([os.path.join(BIN, "cubbi-connect"), sid], full, rows=30, cols=100) as t:
        t.expect(rb"[$#] ")  # a login shell's prompt
        start = len(t.screen)
        # typed keys, one at a time, reach the shell; its answer comes back
        for ch in 'echo "[in $CUBBI_SESSION_ID $(id -u) $(pwd) $(tty)]"\n':
            t.type(ch)
        m = t.expect(rb"\[in (\S+) (\d+) (\S+) (/dev/pts/\d+)\]", start=start)
        assert m.group(1, 2, 3) == (sid.encode(), b"1000", b"/app"), t.text()
        # the size the terminal had at the start...
        assert _size_inside(t, (30, 100)) == (30, 100), t.text()
        # ...and after the window changes, twice
        t.resize(41, 123)
        assert _size_inside(t, (41, 123)) == (41, 123), t.text()
        t.resize(25, 90)
        assert _size_inside(t, (25, 90)) == (25, 90), t.text()
        # Ctrl-C goes to the session's foreground command, not to cubbi-connect
        t.type("sleep 300; echo after-sleep\n")
        assert _running(engine, cid, "sleep 300", True), t.text()
        t.type("\x03")
        assert _running(engine, cid, "sleep 300", False), t.text()
        start = len(t.screen)
        t.type('echo "[still $((6*7))]"\n')
        t.expect(rb"\[still 42\]", start=start)
        assert not re.search(rb"\nafter-sleep\r\n", t.screen), t.text()  # the typed line aside
        t.type("exit 3\n")
        assert t.wait(30) == 3, t.text()
        # the local terminal is back in its own mode (raw mode undone)
        attrs = termios.tcgetattr(t.fd)
        assert attrs[3] & termios.ICANON and attrs[3] & termios.ECHO, attrs
    assert "Traceback" not in t.text()


def test_config_defaults_and_hardened_reach_a_remote_session(cubbi, remote, engine,
                                                            busybox_image, prefix):
    """defaults.cpus / defaults.pids_limit of the client's config, and
    --hardened, travel in the request and reach the container the service makes."""
    env, _ = remote
    cfg = cubbi.config_dir / "config.yaml"
    cfg.write_text(cfg.read_text() + "defaults:\n  cpus: 0.5\n  pids_limit: 64\n")
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-rdef", "--json",
              "--no-connect", "--wait", "--hardened", env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    hc = engine.inspect_container(rec["container_id"])["HostConfig"]
    assert (hc["NanoCpus"], hc["PidsLimit"]) == (500_000_000, 64), hc
    r = cubbi("cubbi-connect", rec["id"], "--", "grep", "-E", "^(CapBnd|NoNewPrivs)",
              "/proc/1/status", env=env)
    assert r.stdout.split() == ["CapBnd:", "00000000000000cb", "NoNewPrivs:", "1"], r

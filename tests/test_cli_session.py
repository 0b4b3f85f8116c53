"""Session lifecycle against the real engine, run as a user types it:
create, ls, close, connect, logs, and what each does with bad input."""

import json
import os
import socket
import subprocess
import threading
import time
import warnings

import pytest

from conftest import BIN, cubbi_env, one_line, one_line_error
from engine_proxy import EngineProxy



def create(cubbi, image, name, *extra, ok=True, **kw):
    """cubbi-create --no-connect --json; the record (or the Result when ok=False)."""
    args = list(extra)
    if "--mount" not in args and "-m" not in args:
        args.append("--no-mount")
    r = cubbi("cubbi-create", "--image", image, "--name", name, "--json", *args, **kw)
    if not ok:
        return r
    assert r.exit_code == 0, r
    (rec,) = r.json()
    return rec


def containers_named(engine, prefix):
    """Every container, session or not, running or not, whose name starts
    with cubbi-PREFIX (what `docker ps -a --filter name=...` shows)."""
    names = []
    for c in engine.get("/containers/json", params={"all": "1"}):
        for n in c.get("Names") or []:
            if n.lstrip("/").startswith(f"cubbi-{prefix}"):
                names.append(n.lstrip("/"))
    return names


def ls_ids(cubbi, prefix, *extra):
    r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", *extra)
    assert r.exit_code == 0, r
    return r.stdout.split()


def inspect(engine, rec):
    return engine.inspect_container(rec["container_id"])


# -- the round trip and the record ----------------------------------------

def test_create_ls_close_roundtrip(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-a")
    assert rec["name"] == f"{prefix}-a"
    assert rec["image"] == busybox_image
    assert rec["status"] in ("running", "initializing")
    assert rec["networks"] == ["cubbi-network"]
    assert rec["remote"] is None and rec["mount"] is None
    assert rec["created"].endswith("Z") and isinstance(rec["created_epoch"], int)
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*")
    assert ls.exit_code == 0, ls
    assert [x["id"] for x in ls.json()] == [rec["id"]]
    table = cubbi("cubbi-ls", "--filter", f"name={prefix}*")
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "NAME", "IMAGE", "STATUS"]
    assert rec["id"] in table.stdout and "{" not in table.stdout
    c = cubbi("cubbi-close", rec["id"])
    assert c.exit_code == 0, c
    assert c.stdout == "" and rec["id"] in c.stderr  # messages on stderr only
    assert ls_ids(cubbi, prefix) == []


def test_ids_prefix_and_name_are_accepted_everywhere(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-p", "--wait")
    for ref in (rec["id"], rec["id"][:6], rec["name"], rec["container_id"][:12]):
        r = cubbi("cubbi-connect", ref, "--", "echo", "hi")
        assert (r.exit_code, r.stdout) == (0, "hi\n"), (ref, r)
        r = cubbi("cubbi-logs", "--json", ref)
        assert r.exit_code == 0 and r.json()[-1]["session"] == rec["id"], (ref, r)


def test_wait_returns_a_ready_session_and_init_log(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-w", "--wait")
    assert rec["status"] == "running"
    r = cubbi("cubbi-logs", "--json", rec["id"])
    assert r.exit_code == 0, r
    (line,) = [x for x in r.json() if x["line"] == "cubbi-init: ready"]
    assert line["session"] == rec["id"] and line["stream"] == "stderr"
    assert line["time"].endswith("Z")


def test_duplicate_name_is_refused_and_the_first_kept(cubbi, busybox_image, prefix):
    first = create(cubbi, busybox_image, f"{prefix}-dup")
    r = create(cubbi, busybox_image, f"{prefix}-dup", ok=False)
    one_line_error(r, 1, f"{prefix}-dup", "--name")
    assert ls_ids(cubbi, prefix) == [first["id"]]


# -- switches reach the container -----------------------------------------

def test_port_shows_its_host_port(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-port", "--port", "8000", "-p", "127.0.0.1::9000/udp")
    ports = {p["container"]: p for p in rec["ports"]}
    assert set(ports) == {8000, 9000}, rec
    assert ports[8000]["protocol"] == "tcp" and ports[9000]["protocol"] == "udp"
    for p in ports.values():
        assert p["host_ip"] == "127.0.0.1" and isinstance(p["host"], int) and p["host"] > 0
    ls = cubbi("cubbi-ls", "--filter", f"name={prefix}*")
    assert f"{ports[8000]['host']}->8000" in ls.stdout


def _listening_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_port_taken_on_the_host_leaves_no_container(cubbi, busybox_image, prefix, engine):
    with _listening_socket() as s:
        port = s.getsockname()[1]
        r = create(cubbi, busybox_image, f"{prefix}-taken", "--port", f"{port}:80", ok=False)
    one_line_error(r, 1, f"127.0.0.1:{port}", "already in use", "--port")
    assert containers_named(engine, prefix) == []


def test_port_taken_by_another_session_leaves_no_container(cubbi, busybox_image, prefix, engine):
    first = create(cubbi, busybox_image, f"{prefix}-p1", "--port", "80")
    host = first["ports"][0]["host"]
    r = create(cubbi, busybox_image, f"{prefix}-p2", "--port", f"{host}:80", ok=False)
    one_line_error(r, 1, str(host), "already in use")
    assert containers_named(engine, prefix) == [f"cubbi-{prefix}-p1"]


def test_network_joined_besides_cubbi_network(cubbi, busybox_image, prefix, engine):
    net = f"{prefix}-net"
    engine.post("/networks/create", body={"Name": net, "Driver": "bridge"})
    try:
        rec = create(cubbi, busybox_image, f"{prefix}-n", "--network", net)
        assert rec["networks"] == sorted(["cubbi-network", net])
        attached = inspect(engine, rec)["NetworkSettings"]["Networks"]
        assert set(attached) == {"cubbi-network", net}
        r = create(cubbi, busybox_image, f"{prefix}-n2", "--network", f"{prefix}-nonet", ok=False)
        one_line_error(r, 3, f"{prefix}-nonet")
        assert containers_named(engine, f"{prefix}-n2") == []
        assert cubbi("cubbi-close", rec["id"]).exit_code == 0
    finally:
        engine.delete(f"/networks/{net}")


def test_mount_and_volumes(cubbi, busybox_image, prefix, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("from the host\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "ro.txt").write_text("read only\n")
    rec = create(cubbi, busybox_image, f"{prefix}-m", "--mount", str(work),
                 "-v", f"{data}:/data:ro", "--wait")
    assert rec["mount"] == str(work)
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
              "cat /app/hello.txt /data/ro.txt && echo new > /app/new.txt && pwd")
    assert r.exit_code == 0, r
    assert r.stdout == "from the host\nread only\n/app\n"
    assert (work / "new.txt").read_text() == "new\n"
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", "echo x > /data/nope")
    assert r.exit_code != 0 and not (data / "nope").exists()


def test_mount_defaults_to_the_current_directory(cubbi, busybox_image, prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-cwd", "--json",
              cwd=str(tmp_path))
    assert r.exit_code == 0, r
    assert r.json()[0]["mount"] == str(tmp_path)


def test_limits_reach_the_host_config(cubbi, busybox_image, prefix, engine):
    rec = create(cubbi, busybox_image, f"{prefix}-l", "--cpus", "0.5", "--memory", "64m",
                 "--pids-limit", "50")
    hc = inspect(engine, rec)["HostConfig"]
    assert hc["NanoCpus"] == 500_000_000
    assert hc["Memory"] == 64 * 1024 * 1024
    assert hc["PidsLimit"] == 50
    assert hc["Privileged"] is False
    assert not any("docker.sock" in b for b in hc.get("Binds") or [])
    # the session's log is rotated (defaults.log_max_size / log_max_files)
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    for key, value in (("defaults.log_max_size", "2m"), ("defaults.log_max_files", "4")):
        r = cubbi("cubbi-config", "set", key, value)
        assert r.exit_code == 0, r
    rec = create(cubbi, busybox_image, f"{prefix}-l2")
    assert inspect(engine, rec)["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "2m", "max-file": "4"}}


def test_env_and_env_file_reach_the_session_not_docker_inspect(cubbi, busybox_image, prefix,
                                                               engine, tmp_path):
    envf = tmp_path / "s.env"
    envf.write_text('# a comment\nFROM_FILE="quoted value"\nBOTH=file\nSECRET_TOKEN=sk-do-not-show\n')
    rec = create(cubbi, busybox_image, f"{prefix}-e", "--env-file", str(envf),
                 "-e", "BOTH=cli", "-e", "EMPTY=", "--wait")
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
              'echo "$FROM_FILE|$BOTH|${EMPTY-unset}|$SECRET_TOKEN"')
    assert (r.exit_code, r.stdout) == (0, "quoted value|cli||sk-do-not-show\n"), r
    assert "sk-do-not-show" not in json.dumps(inspect(engine, rec))


def test_run_runs_once_ready_and_passes_its_status(cubbi, busybox_image, prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-r", "--mount",
              str(tmp_path), "-q", "--run", "echo ran > /app/ran.txt; echo to-stderr; exit 3")
    assert r.exit_code == 3, r
    sid = r.stdout.strip()
    assert len(sid) == 8 and "to-stderr" in r.stderr
    assert (tmp_path / "ran.txt").read_text() == "ran\n"
    assert ls_ids(cubbi, prefix) == [sid]  # kept after a failing --run


def test_connect_passes_stdin_stdout_stderr_and_status(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-c")
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", "tr a-z A-Z; echo oops >&2; exit 7",
              input="hello\n")
    assert (r.exit_code, r.stdout, r.stderr) == (7, "HELLO\n", "oops\n"), r


def _processes(cubbi, rec):
    r = cubbi("cubbi-connect", rec["id"], "--", "ps", "-o", "args")
    assert r.exit_code == 0, r
    return r.stdout


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_connect_interrupted_stops_the_command_in_the_session(cubbi, busybox_image, prefix,
                                                             sig, code):
    import signal

    rec = create(cubbi, busybox_image, f"{prefix}-i", "--wait")
    proc = subprocess.Popen(["cubbi-connect", rec["id"], "--", "sh", "-c",
                             "echo started; sleep 417; exit 3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir)}))
    try:
        assert proc.stdout.readline() == b"started\n"
        assert "sleep 417" in _processes(cubbi, rec)
        started = time.time()
        proc.send_signal(getattr(signal, sig))  # Ctrl-C (or a kill) on cubbi-connect
        assert proc.wait(timeout=20) == code
        assert time.time() - started < 10
    finally:
        proc.kill()
        proc.wait()
    assert "sleep 417" not in _processes(cubbi, rec)


def test_connect_exit_status_like_a_shell_pipeline(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-p", "--wait")
    # the reader goes away: 141 (SIGPIPE), and the command is stopped
    r = cubbi("bash", "-c", f"cubbi-connect {rec['id']} -- seq 1 100000000 | head -1; "
                            "echo \"status ${PIPESTATUS[0]}\"")
    assert r.stdout == "1\nstatus 141\n", r
    assert "seq" not in _processes(cubbi, rec)
    # a command that reads no stdin ends while stdin still comes: its own status
    r = cubbi("bash", "-c", f"yes | cubbi-connect {rec['id']} -- echo done; "
                            "echo \"status ${PIPESTATUS[1]}\"")
    assert r.stdout == "done\nstatus 0\n", r


def test_connect_without_an_id_names_it(cubbi):
    r = cubbi("cubbi-connect")
    one_line_error(r, 2, "required: ID")
    assert "CMD" not in r.stderr, r


# -- streams that last: no read timeout --------------------------------------

def test_following_an_idle_session_outlasts_the_request_timeout(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-idle", "--wait")
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), "CUBBI_DOCKER_TIMEOUT": "1"})
    # the lowered timeout applies to plain requests...
    assert cubbi("cubbi-ls", "-q", env={"CUBBI_DOCKER_TIMEOUT": "1"}).exit_code == 0
    proc = subprocess.Popen(["cubbi-logs", "-f", "--tail", "0", rec["id"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        time.sleep(4)  # silent for 4x the timeout
        assert proc.poll() is None, proc.stderr.read()
        _say(cubbi, rec, "still-here")
        assert _readline(proc.stdout, 15) == b"still-here\n"
    finally:
        proc.terminate()
        proc.wait()


def test_wait_ready_gives_up_at_its_deadline(busybox_image, prefix, engine):
    """A session whose init says nothing: waiting ends at the deadline, not never."""
    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.errors import CubbiError

    cid = engine.post("/containers/create", params={"name": f"cubbi-{prefix}-mute"}, body={
        "Image": busybox_image, "Cmd": ["sleep", "600"],
        "Labels": {"cubbi.session": "true", "cubbi.session.id": prefix[1:] + "mu",
                   "cubbi.session.name": f"{prefix}-mute", "cubbi.image": "x"}})["Id"]
    engine.start(cid)
    local = LocalEngine()
    rec = local.resolve(f"{prefix}-mute")
    rec["status"] = "initializing"  # as a session is until its init reports
    started = time.monotonic()
    with pytest.raises(CubbiError, match="still initializing after 2 s"):
        local.wait_ready(rec, timeout=2)
    assert 1.9 < time.monotonic() - started < 5


def test_the_env_file_never_steers_the_inits_root_shell(debian_image, prefix, engine):
    """A session whose env file says CUBBI_UID=0 and puts a fake setpriv
    first on PATH (as a client's env did before the service refused them,
    ATTACK-11 #1): the init still runs the user's commands as the session
    uid, from the container's own config, and root never runs the fake."""
    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.validate import CreateRequest

    fake = "#!/bin/sh\nid -u > /tmp/fake-setpriv-ran\n"
    hook = "as_user /bin/sh -c 'id -u > /tmp/as-user-uid; printf %s \"$PATH\" > /tmp/as-user-path'\n"
    rec = LocalEngine().create(CreateRequest(
        image=debian_image, name=f"{prefix}-root", uid=1000, gid=1000,
        env={"CUBBI_UID": "0", "CUBBI_GID": "0", "PATH": "/evil:/usr/bin:/bin:/usr/sbin:/sbin",
             "LD_PRELOAD": "/evil/none.so"},
        files={"/evil/setpriv": (fake, 0o755), "/cubbi/hooks/90-test.sh": (hook, 0o644)}))
    LocalEngine().wait_ready(rec, timeout=60)

    def sh(script):
        r = subprocess.run(["docker", "exec", rec["container_id"], "sh", "-c", script],
                           capture_output=True, text=True, timeout=60)
        return r.stdout

    assert sh("cat /tmp/as-user-uid") == "1000\n"
    assert sh("cat /tmp/fake-setpriv-ran 2>/dev/null || echo never") == "never\n"
    assert sh("cat /tmp/as-user-path") == "/evil:/usr/bin:/bin:/usr/sbin:/sbin"  # the user's own
    # a root login shell (an operator's docker exec) does not load the session's file either
    assert not sh("sh -lc 'printf %s \"$PATH\"'").startswith("/evil")


# -- logs -------------------------------------------------------------------

def _say(cubbi, rec, text, fd=1):
    """Write a line to the session's own log (its PID 1's stdout/stderr)."""
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", f"echo {text} > /proc/1/fd/{fd}")
    assert r.exit_code == 0, r


def test_logs_streams_tail_since_and_several_sessions(cubbi, busybox_image, prefix):
    a = create(cubbi, busybox_image, f"{prefix}-a", "--wait")
    b = create(cubbi, busybox_image, f"{prefix}-b", "--wait")
    _say(cubbi, a, "out-a")
    _say(cubbi, a, "err-a", fd=2)
    _say(cubbi, b, "out-b")
    r = cubbi("cubbi-logs", a["id"])
    assert r.exit_code == 0, r
    assert r.stdout.splitlines()[-1:] == ["out-a"]
    assert r.stderr.splitlines()[-2:] == ["cubbi-init: ready", "err-a"]
    r = cubbi("cubbi-logs", "--tail", "1", "--json", a["id"])
    assert [(x["stream"], x["line"]) for x in r.json()] == [("stderr", "err-a")]
    r = cubbi("cubbi-logs", "--since", "1d", a["id"])
    assert "out-a" in r.stdout
    r = cubbi("cubbi-logs", "--since", str(int(time.time()) + 3600), a["id"])
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")
    # several ids: each session's lines, prefixed with its name
    r = cubbi("cubbi-logs", a["id"], b["name"])
    assert r.exit_code == 0, r
    assert [x for x in r.stdout.splitlines() if "out-" in x] == \
        [f"{prefix}-a | out-a", f"{prefix}-b | out-b"]
    # ids on stdin, as cubbi-close takes them: JSON lines from cubbi-ls
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*")
    r = cubbi("cubbi-logs", "--json", input=ls.stdout)
    assert r.exit_code == 0, r
    got = [(x["session"], x["line"]) for x in r.json() if x["stream"] == "stdout"]
    assert sorted(got) == sorted([(a["id"], "out-a"), (b["id"], "out-b")])  # ls order: by second
    # an unknown one among them: reported, the others shown, exit 3
    r = cubbi("cubbi-logs", a["id"], f"{prefix}-nosuch")
    assert r.exit_code == 3 and "out-a" in r.stdout and f"{prefix}-nosuch" in r.stderr, r


def test_logs_follow_interleaves_several_sessions(cubbi, busybox_image, prefix):
    a = create(cubbi, busybox_image, f"{prefix}-fa", "--wait")
    b = create(cubbi, busybox_image, f"{prefix}-fb", "--wait")
    proc = subprocess.Popen(["cubbi-logs", "-f", "--json", "--tail", "0", a["id"], b["id"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(cubbi))
    try:
        # --tail 0 shows only what comes after it follows a stream: a probe
        # line per session, said again until it shows, says it follows both
        lines = _lines(proc.stdout)
        for rec in (a, b):
            _wait_following(cubbi, lines, rec)
        got = []
        for rec, text in ((a, "one"), (b, "two"), (a, "three")):
            _say(cubbi, rec, text)
            got.append(_next_record(lines))  # flushed per line, as it happens
        assert [(x["session"], x["line"]) for x in got] == \
            [(a["id"], "one"), (b["id"], "two"), (a["id"], "three")]
        assert cubbi("cubbi-close", a["id"], b["id"]).exit_code == 0
        assert proc.wait(timeout=30) == 0  # the streams end with their sessions
        assert proc.stderr.read() == ""
    finally:
        proc.kill()


def _lines(stream):
    """A queue fed with STREAM's lines by a thread ('' at its end)."""
    import queue

    q = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            q.put(line)
        q.put("")
    threading.Thread(target=pump, daemon=True).start()
    return q


def _next_record(lines, timeout=15):
    """The next JSON line of cubbi-logs -f that is not a probe line."""
    import queue

    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no line within {timeout}s")
        assert line, "cubbi-logs -f ended"
        rec = json.loads(line)
        if not rec["line"].startswith("probe-"):
            return rec


def _wait_following(cubbi, lines, rec, timeout=30):
    """Wait until `cubbi-logs -f` follows REC's log: say a probe line in the
    session every second until the command prints it."""
    import queue

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _say(cubbi, rec, f"probe-{rec['id']}")
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        assert line, "cubbi-logs -f ended"
        while line and json.loads(line)["line"] != f"probe-{rec['id']}":
            try:  # another session's probe: read on, without saying more
                line = lines.get(timeout=1)
            except queue.Empty:
                break
        else:
            assert line, "cubbi-logs -f ended"
            return
    pytest.fail(f"cubbi-logs -f did not follow {rec['id']} within {timeout}s")


def _env(cubbi):
    return cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir)})


def _readline(stream, timeout):
    """The next line of a child's pipe, failing the test after timeout s."""
    box = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    assert box and box[0], f"no line within {timeout}s"
    return box[0]


# -- closing from pipes --------------------------------------------------------

def test_close_reads_json_lines_and_bare_ids_and_reports_bad_lines(cubbi, busybox_image, prefix):
    a = create(cubbi, busybox_image, f"{prefix}-a")
    b = create(cubbi, busybox_image, f"{prefix}-b")
    c = create(cubbi, busybox_image, f"{prefix}-c")
    stdin = "\n".join([
        json.dumps(a),                 # a record from cubbi-ls --json
        "not an id at all",            # malformed: reported, skipped
        '{"no": "id"}',                # malformed
        "{broken json",                # malformed
        b["id"][:7],                   # a bare id prefix
        "",                            # blank: ignored
    ]) + "\n"
    r = cubbi("cubbi-close", "--json", input=stdin)
    assert r.exit_code == 2, r  # a malformed input line is a usage error
    out = r.json()
    assert all(sorted(x) == ["closed", "error", "id", "name"] for x in out), r
    assert [(x["id"], x["name"], x["closed"]) for x in out] == [
        (a["id"], a["name"], True), (None, None, False), (None, None, False),
        (None, None, False), (b["id"], b["name"], True)]
    assert [x["error"] for x in out if x["closed"]] == [None, None]
    assert [x["error"].split(":")[0] for x in out if not x["closed"]] == \
        ["stdin line 2", "stdin line 3", "stdin line 4"]
    assert r.stderr.count("\n") == 3 and "Traceback" not in r.stderr
    assert ls_ids(cubbi, prefix) == [c["id"]]


def test_close_carries_on_after_unknown_ids(cubbi, busybox_image, prefix):
    a = create(cubbi, busybox_image, f"{prefix}-a")
    r = cubbi("cubbi-close", "-q", f"{prefix}-nosuch", a["id"])
    one_line_error(r, 3, f"{prefix}-nosuch", "cubbi-ls")
    assert r.stdout == a["id"] + "\n"
    assert ls_ids(cubbi, prefix) == []
    r = cubbi("cubbi-close", "-q", input="")
    assert (r.exit_code, r.stdout) == (0, "")


def test_logs_since_out_of_range_exits_2(cubbi):
    one_line_error(cubbi("cubbi-logs", "--since", "9" * 20, "x"), 2, "--since", "9999")


@pytest.mark.parametrize("prog", ["cubbi-close", "cubbi-logs"])
def test_a_malformed_stdin_line_exits_2(cubbi, prog, engine):
    one_line_error(cubbi(prog, input="{bad\n"), 2, "stdin line 1", "not valid JSON")


def test_close_all_with_ids_is_a_usage_error(cubbi):
    one_line_error(cubbi("cubbi-close", "--all", "abc"), 2, "--all")


# -- bad input -------------------------------------------------------------

def test_unknown_ids_exit_3(cubbi, prefix, engine):
    for argv in (["cubbi-close", f"{prefix}-x"], ["cubbi-logs", f"{prefix}-x"],
                 ["cubbi-connect", f"{prefix}-x", "--", "true"], ["cubbi-connect", f"{prefix}-x"]):
        one_line_error(cubbi(*argv), 3, f"{prefix}-x", "cubbi-ls")


def test_ambiguous_prefix_exit_2(cubbi, busybox_image, prefix, engine):
    # two sessions whose ids share a prefix (made as the original cubbi made
    # them: a container with cubbi labels) -- cubbi's own ids are random
    stem = prefix[1:] + "ab"
    for n in ("1", "2"):
        engine.post("/containers/create", params={"name": f"cubbi-{prefix}-amb{n}"}, body={
            "Image": busybox_image, "Cmd": ["sleep", "600"],
            "Labels": {"cubbi.session": "true", "cubbi.session.id": stem + n,
                       "cubbi.session.name": f"{prefix}-amb{n}", "cubbi.image": "legacy"}})
    for argv in (["cubbi-close", stem], ["cubbi-logs", stem], ["cubbi-connect", stem, "--", "true"]):
        one_line_error(cubbi(*argv), 2, "ambiguous", stem + "1", stem + "2")
    r = cubbi("cubbi-ls", "--all", "--json", "--filter", f"name={prefix}*")
    assert sorted(x["id"] for x in r.json()) == [stem + "1", stem + "2"]
    assert {x["status"] for x in r.json()} == {"created"}
    assert cubbi("cubbi-close", stem + "1", f"{prefix}-amb2").exit_code == 0


class NoIPv6Loopback(UserWarning):
    """A test ran its IPv4 variant: this host or engine has no IPv6 loopback."""


@pytest.fixture(scope="session")
def ipv6_loopback(engine, busybox_image):
    """True when a port can be published on [::1] here: the host has the
    address and the engine's port publishing binds it (a container is made
    to try).  Else the reason, as a string."""
    import secrets
    import socket

    from cubbi_tools.errors import CubbiError

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        return f"the host has no IPv6 loopback ({exc})"
    name = "cubbi-test-ipv6-probe-" + secrets.token_hex(3)
    cid = None
    try:
        cid = engine.post("/containers/create", params={"name": name}, body={
            "Image": busybox_image, "Cmd": ["sleep", "60"], "ExposedPorts": {"80/tcp": {}},
            "Labels": {"cubbi.test": "true"},
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "::1", "HostPort": ""}]}},
        })["Id"]
        engine.post(f"/containers/{cid}/start")
        return True
    except CubbiError as exc:
        return f"the engine cannot publish a port on [::1] ({exc})"
    finally:
        if cid:
            engine.remove(cid)


@pytest.mark.parametrize("argv,code,words", [
    (["-e", "NOEQUALS"], 2, ["NOEQUALS", "KEY=VALUE"]),
    (["-e", "1BAD=x"], 2, ["1BAD"]),
    (["-e", "CUBBI_UID=0"], 2, ["-e CUBBI_UID=...", "set by cubbi itself"]),
    (["--env-file", "@CUBBIENV"], 2, ["line 2", "CUBBI_GID", "set by cubbi itself"]),
    (["--port", "http"], 2, ["http", "--port"]),
    (["--memory", "lots"], 2, ["lots"]),
    (["--cpus", "-1"], 2, ["--cpus"]),
    (["--pids-limit", "many"], 2, ["many"]),
    (["-v", "relative-no-colon"], 2, ["-v"]),
    (["--mount", "/nonexistent/dir"], 3, ["/nonexistent/dir"]),
    (["--env-file", "/nonexistent/env"], 2, ["/nonexistent/env"]),
    (["--bogus"], 2, ["--bogus"]),
    (["--name", "bad name!"], 2, ["bad name!"]),
    (["--name", ""], 2, ["--name"]),
    (["--cpus", "1e999"], 2, ["--cpus"]),
    (["--cpus", "nan"], 2, ["--cpus"]),
    (["--cpus", "0.001"], 2, ["--cpus '0.001'", "from 0.01"]),  # 0 NanoCpus would be no limit
    (["--cpus", "1e-10"], 2, ["--cpus '1e-10'", "from 0.01"]),
    (["--memory", "5m"], 2, ["--memory", "'5m'", "6m at least"]),
    (["--memory", "1e999g"], 2, ["1e999g"]),
    (["--pids-limit", "0"], 2, ["--pids-limit"]),
    (["--network", ""], 2, ["--network"]),
    (["--mount", ""], 2, ["--mount"]),
    (["--port", ""], 2, ["--port"]),
    (["--port", "localhost:0:82"], 0, ["127.0.0.1"]),  # exit 0: the address is checked below
    (["--port", "[::1]:0:84"], 0, ["::1"]),
    (["--port", "999.1.1.1:0:80"], 2, ["999.1.1.1", "IP address"]),
    (["--port", "127.0.0.300:0:81"], 2, ["127.0.0.300"]),
    (["--port", "nohost:0:81"], 2, ["nohost"]),
    (["--port", "70000:80"], 2, ["70000:80"]),
    (["--port", "80/sctp"], 2, ["80/sctp"]),
    (["--pids-limit", "99999999999999999999"], 2, ["--pids-limit"]),
    (["--memory", "0"], 2, ["'0'"]),
    (["-i", ""], 2, ["--image"]),
    (["-i", "UPPER/Case"], 2, ["UPPER/Case"]),
    (["--mount", "@COLONDIR"], 2, ["':'"]),
    (["--env-file", "/tmp"], 2, ["/tmp", "directory"]),
    (["--env-file", "@BADENV"], 2, ["line 2", "{bad"]),
])
def test_create_bad_switches(cubbi, busybox_image, prefix, engine, argv, code, words, tmp_path,
                             ipv6_loopback):
    if "[::1]:0:84" in argv and ipv6_loopback is not True:
        # no IPv6 loopback here: the IPv4 loopback path instead, said in the run's output
        warnings.warn(NoIPv6Loopback(f"{ipv6_loopback}: --port [::1]:0:84 not tested; "
                                     "testing 127.0.0.1:0:84 instead"))
        argv, words = ["--port", "127.0.0.1:0:84"], ["127.0.0.1"]
    extra = [] if "--name" in argv else ["--name", f"{prefix}-bad"]
    if "--mount" not in argv:
        extra.append("--no-mount")
    if "@COLONDIR" in argv:  # it exists: the ':' is the problem
        (tmp_path / "a:b").mkdir()
        argv = [str(tmp_path / "a:b") if a == "@COLONDIR" else a for a in argv]
    if "@CUBBIENV" in argv:
        (tmp_path / "cubbi.env").write_text("GOOD=1\nCUBBI_GID=0\n")
        argv = [str(tmp_path / "cubbi.env") if a == "@CUBBIENV" else a for a in argv]
    if "@BADENV" in argv:
        (tmp_path / "bad.env").write_text("GOOD=1\n{bad\n")
        argv = [str(tmp_path / "bad.env") if a == "@BADENV" else a for a in argv]
    r = cubbi("cubbi-create", "--image", busybox_image, "--no-connect", "--json", *extra, *argv)
    if code == 0:  # published on that address only
        assert r.exit_code == 0, r
        (rec,) = r.json()
        assert [p["host_ip"] for p in rec["ports"]] == words, rec
        return
    one_line_error(r, code, *words)
    assert containers_named(engine, prefix) == []


def test_unknown_image_exit_3(cubbi, prefix, engine):
    r = cubbi("cubbi-create", "--image", f"{prefix}/no-such-image:1", "--name", f"{prefix}-i",
              "--no-mount", "--no-connect")
    one_line_error(r, 3, f"{prefix}/no-such-image:1")
    assert containers_named(engine, prefix) == []


def test_image_without_sh_fails_clearly(cubbi, prefix, engine, tmp_path):
    img = f"cubbi-test/{prefix}-nosh:latest"
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-C", str(tmp_path / "rootfs"), "-c", "."], stdout=subprocess.PIPE)
    assert subprocess.run(["docker", "import", "-", img], stdin=tar.stdout,
                          capture_output=True).returncode == 0
    tar.wait()
    try:
        r = create(cubbi, img, f"{prefix}-nosh", ok=False)
        one_line_error(r, 1, "/bin/sh")
        assert containers_named(engine, prefix) == []
    finally:
        subprocess.run(["docker", "rmi", "-f", img], capture_output=True)


UNREACHABLE = "unix:///nonexistent/cubbi-test/docker.sock"


@pytest.mark.parametrize("argv", [
    ["cubbi-ls"], ["cubbi-ls", "--json"], ["cubbi-close", "abc"], ["cubbi-logs", "abc"],
    ["cubbi-connect", "abc", "--", "true"],
    ["cubbi-create", "--image", "x", "--no-mount", "--no-connect"],
])
def test_engine_unreachable_exit_4(cubbi, argv):
    r = cubbi(*argv, env={"DOCKER_HOST": UNREACHABLE})
    one_line_error(r, 4, UNREACHABLE, "DOCKER_HOST")


def test_debug_shows_the_traceback(cubbi, prefix):
    r = cubbi("cubbi-ls", env={"DOCKER_HOST": UNREACHABLE, "CUBBI_DEBUG": "1"})
    assert r.exit_code == 4 and "Traceback" in r.stderr, r
    r = cubbi("cubbi-close", f"{prefix}-nosuch", env={"CUBBI_DEBUG": "1"})
    assert r.exit_code == 3 and "Traceback" in r.stderr and "NotFound" in r.stderr, r


def test_engine_stops_while_following_logs(cubbi, busybox_image, prefix, tmp_path):
    rec = create(cubbi, busybox_image, f"{prefix}-s", "--wait")
    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    proc = subprocess.Popen(["cubbi-logs", "-f", rec["id"]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=_env(cubbi) | {"DOCKER_HOST": proxy.url})
    try:
        assert _readline(proc.stderr, 15) == "cubbi-init: ready\n"
        proxy.stop()
        assert proc.wait(timeout=15) == 4
        one_line(proc.stderr.read(), "lost the connection to the Docker engine")
    finally:
        proc.kill()
        proxy.stop()


def test_engine_stops_mid_create_leaves_no_container(cubbi, busybox_image, prefix, engine, tmp_path):
    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    proxy.drop = r"^POST /containers/[^/]+/start"  # the engine goes away as it starts it
    try:
        r = create(cubbi, busybox_image, f"{prefix}-mid", ok=False,
                   env={"DOCKER_HOST": proxy.url})
        one_line_error(r, 4, "Docker engine")
        assert proxy.dropped and any(s.startswith("DELETE /containers/") for s in proxy.seen)
        assert containers_named(engine, prefix) == []
        # it stays away: the create fails and says how to clean up after it
        proxy.drop = r"^(POST /containers/[^/]+/start|DELETE )"
        r = create(cubbi, busybox_image, f"{prefix}-mid2", ok=False,
                   env={"DOCKER_HOST": proxy.url})
        one_line_error(r, 4, "could not be removed", "cubbi-close")
        (left,) = containers_named(engine, prefix)
        sid = r.stderr.split("cubbi-close ")[1].split("'")[0]
        assert cubbi("cubbi-close", sid).exit_code == 0
        assert containers_named(engine, prefix) == []
    finally:
        proxy.stop()


def test_ls_into_a_closed_pipe_exits_0(cubbi, busybox_image, prefix):
    for n in range(3):
        create(cubbi, busybox_image, f"{prefix}-{n}")
    for pipe in ("cubbi-ls | head -1", "cubbi-ls --json | head -1", "cubbi-ls -q | true",
                 "cubbi-ls --json --all | (exec 0<&-; sleep 0.2)"):
        r = cubbi("bash", "-c", f"set -o pipefail; {pipe}")
        assert r.exit_code == 0, (pipe, r)
        assert r.stderr == "", (pipe, r)


def test_ls_filters(cubbi, busybox_image, prefix):
    a = create(cubbi, busybox_image, f"{prefix}-a")
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-a", "--filter", "image=" + busybox_image)
    assert [x["id"] for x in r.json()] == [a["id"]]
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-a", "--filter", "image=other")
    assert (r.exit_code, r.stdout) == (0, "")
    one_line_error(cubbi("cubbi-ls", "--filter", "colour=red"), 2, "colour=red")
    one_line_error(cubbi("cubbi-ls", "--bogus"), 2, "--bogus")
    one_line_error(cubbi("cubbi-ls", "--filter", "status=bogus"), 2, "status=bogus",
                   "initializing", "running", "failed")
    # the image without its implicit :latest names the same image
    assert busybox_image.endswith(":latest")
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-a",
              "--filter", "image=" + busybox_image[:-len(":latest")])
    assert [x["id"] for x in r.json()] == [a["id"]], r


def test_ls_filter_project_takes_any_url_form(cubbi, busybox_image, prefix, engine):
    # a session of a project, as its labels are (cloning is tested in test_cli_project)
    engine.post("/containers/create", params={"name": f"cubbi-{prefix}-proj"}, body={
        "Image": busybox_image, "Cmd": ["sleep", "600"],
        "Labels": {"cubbi.session": "true", "cubbi.session.id": prefix[1:] + "pj",
                   "cubbi.session.name": f"{prefix}-proj", "cubbi.image": "x",
                   "cubbi.project": "https://github.com/x/y"}})
    for form in ("github.com/x/y", "https://github.com/x/y.git", "git@github.com:x/y.git"):
        r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*",
                  "--filter", f"project={form}")
        assert r.stdout.split() == [prefix[1:] + "pj"], (form, r)
    r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*",
              "--filter", "project=github.com/x/other")
    assert (r.exit_code, r.stdout) == (0, ""), r


def test_closed_standard_streams(cubbi, busybox_image, prefix):
    """CI runs without standard input: a closed stdin is no terminal."""
    r = cubbi("bash", "-c", f'cubbi-create --image {busybox_image} --name {prefix}-x --no-mount <&-')
    assert r.exit_code == 0, r
    assert r.stdout.split()[:2] == ["ID", "NAME"]
    r = cubbi("bash", "-c", f"cubbi-ls --filter name={prefix}-x >&-; echo $?")
    assert r.stdout == "0\n", r
    r = cubbi("bash", "-c", f"cubbi-close {prefix}-x <&-")
    assert r.exit_code == 0, r


@pytest.fixture
def failing_image(busybox_image, prefix):
    """An image whose /app is a file: the init cannot make the directory
    and marks the session failed."""
    tag = f"cubbi-test/{prefix}-fails:latest"
    r = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], capture_output=True, text=True,
                       input=f"FROM {busybox_image}\nRUN echo not-a-dir > /app\n")
    assert r.returncode == 0, r.stderr
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_failed_sessions_say_why_in_ls(cubbi, failing_image, prefix):
    r = create(cubbi, failing_image, f"{prefix}-f1", "--wait", ok=False)
    one_line_error(r, 1, "failed", "/app", "cubbi-logs")
    (rec,) = r.json()  # the failed session's record, then the error
    assert (rec["name"], rec["status"]) == (f"{prefix}-f1", "failed") and "/app" in rec["reason"]
    r = create(cubbi, failing_image, f"{prefix}-f2", ok=True)
    assert r["status"] in ("initializing", "failed")
    # wait for the init of f2 to give up: its log says so
    deadline = time.monotonic() + 30
    while "cubbi-init: failed: " not in (logs := cubbi("cubbi-logs", r["id"])).output:
        assert time.monotonic() < deadline, f"f2 never failed: {logs}"
        time.sleep(0.2)
    # several sessions whose health check has not passed: their log tails
    # are read (concurrently) to tell initializing from failed
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*")
    assert [(x["name"], x["status"]) for x in ls.json()] == \
        [(f"{prefix}-f1", "failed"), (f"{prefix}-f2", "failed")], ls
    assert all("/app" in x["reason"] for x in ls.json())
    r = cubbi("cubbi-ls", "--json", "--filter", "status=failed", "--filter", f"name={prefix}*")
    assert len(r.json()) == 2
    r = cubbi("cubbi-connect", f"{prefix}-f1", "--", "true")
    one_line_error(r, 1, "failed", "/app")


def _on_a_terminal(cubbi, argv, typed, timeout=60, cwd=None):
    """Run argv on a real pseudo-terminal, type `typed`, return what the
    terminal showed and the exit status."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, as typed in a terminal
        if cwd:
            os.chdir(cwd)
        os.execvpe(argv[0], argv, _env(cubbi))
    out = b""
    sent = False
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            if not sent and (b"$ " in out or b"# " in out):  # a shell prompt
                os.write(fd, typed.encode())
                sent = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_connect_on_a_terminal_is_a_login_shell_in_app(cubbi, busybox_image, prefix):
    rec = create(cubbi, busybox_image, f"{prefix}-tty", "--wait", "-e", "GREETING=hi-there")
    shown, code = _on_a_terminal(cubbi, ["cubbi-connect", rec["id"]],
                                 "echo \"[$(pwd)|$(id -u)|$GREETING|$(tty)]\"; exit 3\n")
    assert code == 3, shown
    assert f"[/app|{os.getuid()}|hi-there|/dev/pts/" in shown, shown


def test_bare_cubbi_on_a_terminal_creates_and_connects(cubbi, busybox_image, tmp_path):
    (cubbi.config_dir / "config.yaml").write_text(
        f"defaults:\n  image: {busybox_image}\n  mount_local: false\n")
    shown, code = _on_a_terminal(cubbi, [os.path.join(BIN, "cubbi")],
                                 'echo "[in-$CUBBI_SESSION_ID]"; exit\n', cwd=str(tmp_path))
    import re

    m = re.search(r"\[in-([0-9a-f]{8})\]", shown)
    try:
        assert code == 0 and m, shown
        assert "connecting" in shown
        r = cubbi("cubbi-ls", "--json", "--filter", f"name=busybox-{m.group(1)}")
        assert [x["status"] for x in r.json()] == ["running"]  # stays up until closed
    finally:
        if m:
            cubbi("cubbi-close", m.group(1))


@pytest.mark.parametrize("argv", [["cubbi-ls"], ["cubbi-ls", "--json"], ["cubbi-close", "x"],
                                  ["cubbi-logs", "x"], ["cubbi-connect", "x", "--", "true"]])
def test_engine_cuts_the_answer_exit_4(cubbi, argv, tmp_path):
    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    proxy.drop = r"^GET /containers/json"  # the engine dies as it is asked
    try:
        r = cubbi(*argv, env={"DOCKER_HOST": proxy.url})
        one_line_error(r, 4, "Docker engine", proxy.url)
        assert proxy.dropped
    finally:
        proxy.stop()

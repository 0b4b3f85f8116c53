"""Log forwarding (logging.providers) on the real engine with real
collectors: Docker's fluentd driver into a forward-protocol receiver
(tests/fluentrecv.py, on msgpack: no Fluentd package is reachable here),
Docker's syslog driver into Debian's rsyslog, langfuse's variables; and
the same through a cubbi-server."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import one_line_error, served_session
from test_cli_session import create

LINES = 1000


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _print_in(rec, n):
    """n numbered lines on the session's own stdout (its init's, PID 1):
    what the tool in a session writes to its log."""
    subprocess.run(["docker", "exec", rec["container_id"], "sh", "-c",
                    f"seq 1 {n} > /proc/1/fd/1"], check=True)


@pytest.fixture
def fluentd():
    from fluentrecv import Receiver

    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def rsyslog(tmp_path):
    """Debian's rsyslogd on a loopback tcp port, writing APP-NAME and message."""
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    if not os.path.exists(rsyslogd):
        pytest.fail("these tests need Debian's rsyslog: apt-get install rsyslog (./install --dev)")
    port = _free_port()
    out = tmp_path / "syslog.out"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f'global(workDirectory="{tmp_path}")\nmodule(load="imtcp")\n'
                    f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
                    'template(name="t" type="string" string="%APP-NAME% %msg%\\n")\n'
                    f'*.* action(type="omfile" file="{out}" template="t")\n')
    proc = subprocess.Popen([rsyslogd, "-n", "-f", str(conf), "-i", str(tmp_path / "pid")],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, f"rsyslogd exited: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "rsyslogd did not listen within 20 s"
            time.sleep(0.1)
    proc.port, proc.out = port, out
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def _set_providers(cubbi, text):
    r = cubbi("cubbi-config", "set", "logging.providers", text)
    assert r.exit_code == 0, r


def test_fluentd_gets_every_line_with_its_tags_and_a_dead_collector_stops_nothing(
        cubbi, busybox_image, prefix, fluentd):
    _set_providers(cubbi, f"[{{type: fluentd, url: tcp://127.0.0.1:{fluentd.port}}}]")
    rec = create(cubbi, busybox_image, f"{prefix}-fl", "--wait")
    _print_in(rec, LINES)
    mine = lambda rs: [x for x in rs if x[2].get("cubbi.session.id") == rec["id"]]  # noqa: E731
    got = mine(fluentd.wait_for(lambda rs: sum(x[2].get("source") == "stdout"
                                                for x in mine(rs)) >= LINES, 60))
    lines = [x[2]["log"] for x in got if x[2]["source"] == "stdout"]
    assert lines == [str(i) for i in range(1, LINES + 1)], lines[:5]
    tag, _, record = got[-1]
    assert tag == f"cubbi.root.{busybox_image.replace('/', '_').replace(':', '_')}.{rec['id']}"
    assert {k: record.get(k) for k in ("cubbi.session.id", "cubbi.session.name", "cubbi.image")} \
        == {"cubbi.session.id": rec["id"], "cubbi.session.name": f"{prefix}-fl",
            "cubbi.image": busybox_image}
    assert any(x[2]["log"] == "cubbi-init: ready" for x in got)
    # the engine keeps its own copy: cubbi-logs reads the session as before
    r = cubbi("cubbi-logs", "--json", rec["id"])
    assert [x["line"] for x in r.json() if x["stream"] == "stdout"][-3:] == \
        [str(LINES - 2), str(LINES - 1), str(LINES)], r
    # the collector gone: a session still starts, and its log is still there
    fluentd.stop()
    rec2 = create(cubbi, busybox_image, f"{prefix}-fl2", "--wait")
    _print_in(rec2, 3)
    r = cubbi("cubbi-logs", rec2["id"])
    assert r.exit_code == 0 and r.stdout.endswith("1\n2\n3\n"), r


def test_syslog_into_rsyslog_and_a_collector_that_is_down(cubbi, busybox_image, prefix, rsyslog):
    _set_providers(cubbi, f"[{{type: syslog, url: tcp://127.0.0.1:{rsyslog.port}}}]")
    rec = create(cubbi, busybox_image, f"{prefix}-sl", "--wait")
    _print_in(rec, LINES)
    # APP-NAME holds 48 characters: the image part is shortened, the id never is
    tag = f"cubbi.root.{busybox_image.replace('/', '_').replace(':', '_')[:20]}.{rec['id']}"
    assert len(tag) <= 48
    deadline = time.monotonic() + 60
    while True:
        text = rsyslog.out.read_text() if rsyslog.out.exists() else ""
        mine = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(tag + " ")]
        if len(mine) >= LINES + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine == ["cubbi-init: ready"] + [str(i) for i in range(1, LINES + 1)], mine[:5]
    r = cubbi("cubbi-logs", rec["id"])
    assert r.stdout.endswith(f"{LINES}\n"), r
    rsyslog.terminate()
    rsyslog.wait(timeout=10)
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-sl2", "--wait",
              "--json", "--no-connect")
    assert r.exit_code == 0, r
    assert "warning: the syslog collector" in r.stderr and "does not answer" in r.stderr, r
    assert r.json()[0]["status"] == "running"


def test_bad_providers_are_refused_naming_the_entry(cubbi):
    one_line_error(cubbi("cubbi-config", "set", "logging.providers", "[{type: kafka}]"), 2,
                   "providers[0].type", "fluentd")
    one_line_error(cubbi("cubbi-config", "set", "logging.providers",
                         "[{type: fluentd, url: udp://127.0.0.1:1}]"), 2, "providers[0].url")
    one_line_error(cubbi("cubbi-config", "set", "logging.providers",
                         "[{type: langfuse, url: https://x.example}]"), 2, "services.langfuse")
    # what get prints, set takes back
    r = cubbi("cubbi-config", "set", "logging.providers", "[{type: syslog, url: udp://127.0.0.1:9}]")
    assert r.exit_code == 0, r
    got = cubbi("cubbi-config", "get", "logging.providers").stdout.strip()
    assert got == '[{"type": "syslog", "url": "udp://127.0.0.1:9"}]', got
    assert cubbi("cubbi-config", "set", "logging.providers", got).exit_code == 0


def test_through_the_service(start_server, busybox_image, prefix, fluentd):
    """The service's providers: fluentd for every session, langfuse's keys in
    each session's env file (never in docker inspect), /health per provider."""
    from serverproc import Client

    dead = _free_port()
    srv = start_server(env={"LF_SECRET": "sk-lf-" + os.urandom(6).hex()}, config_text=(
        "server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
        "policy:\n  images:\n    any_local: true\n"
        "logging:\n  providers:\n"
        f"    - type: fluentd\n      url: tcp://127.0.0.1:{fluentd.port}\n"
        "    - type: langfuse\n      url: https://langfuse.invalid\n"
        "      public_key: pk-lf-test\n      secret_key: ${LF_SECRET}\n"
        f"    - type: syslog\n      url: tcp://127.0.0.1:{dead}\n"))
    alice = Client(srv.url, srv.token("alice"))
    rec = served_session(alice, busybox_image, f"{prefix}-svc")
    got = fluentd.wait_for(lambda rs: any(x[2].get("cubbi.session.id") == rec["id"]
                                          for x in rs), 30)
    tags = {x[0] for x in got if x[2].get("cubbi.session.id") == rec["id"]}
    assert tags == {f"cubbi.alice.{busybox_image.replace('/', '_').replace(':', '_')}.{rec['id']}"}
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["sh", "-c", ". /cubbi/env; echo $LANGFUSE_URL "
                                      "$LANGFUSE_PUBLIC_KEY ${#LANGFUSE_SECRET_KEY}"]})
    assert st == 200 and out["stdout"].split() == \
        ["https://langfuse.invalid", "pk-lf-test", str(len(srv.env["LF_SECRET"]))], out
    inspect = subprocess.run(["docker", "inspect", rec["container_id"]], capture_output=True,
                             text=True).stdout
    assert srv.env["LF_SECRET"] not in inspect
    st, health = alice.call("GET", "/health")
    assert health["logging"] == [
        {"type": "fluentd", "url": f"tcp://127.0.0.1:{fluentd.port}", "status": "up"},
        {"type": "langfuse", "url": "https://langfuse.invalid", "status": "n/a"},
        {"type": "syslog", "url": f"tcp://127.0.0.1:{dead}", "status": "down"}], health
    st, anon = alice.call("GET", "/health", token=None)
    assert anon == {"status": "up"}, anon  # nothing about the collectors without a token
    log = open(srv.log).read()
    assert srv.env["LF_SECRET"] not in log
    json.dumps(health)  # plain data
    # a tcp syslog collector that is down: the session starts, and the operator is told
    srv2 = start_server(config_text=(
        "server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
        "policy:\n  images:\n    any_local: true\n"
        f"logging:\n  providers:\n    - type: syslog\n      url: tcp://127.0.0.1:{dead}\n"))
    bob = Client(srv2.url, srv2.token("bob"))
    rec = served_session(bob, busybox_image, f"{prefix}-svc2")
    assert rec["status"] == "running"
    log = open(srv2.log).read()
    assert f"bob: warning: the syslog collector tcp://127.0.0.1:{dead} does not answer" in log, log

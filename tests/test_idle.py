"""Idle sessions, cubbi-prune, the orphan sweep and the disk limit, on the
real engine (issue 15's second half).  Every name starts with "idle" and a
random part, and only those objects are ever closed or removed: other
tests share this engine."""

import secrets
import subprocess
import time

import pytest

from conftest import one_line_error
from serverproc import Client, ServerProcess


def _gone(engine, cid):
    from cubbi_tools.dockerapi import APIError

    try:
        engine.inspect_container(cid)
        return False
    except APIError as exc:
        return exc.status == 404


def _wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)  # polling the signal, not a synchronisation by itself
    pytest.fail(f"{what}: not within {timeout} s")


@pytest.fixture
def names(engine):
    """A unique name prefix; every session and container named so is removed after."""
    p = "idle" + secrets.token_hex(3)
    yield p
    for entry in engine.containers(all=True):
        labels = entry.get("Labels") or {}
        name = labels.get("cubbi.session.name") or (entry.get("Names") or ["/"])[0].lstrip("/")
        if name.startswith(p) or labels.get("cubbi.session.of", "").startswith(p):
            try:
                engine.remove(entry["Id"])
            except Exception:
                pass
    for net in engine.networks():
        if net["Name"].startswith(p):
            try:
                engine.remove_network(net["Name"])
            except Exception:
                pass


def _touched(engine, cid):
    """Whether /cubbi/active is there: a log follow is keeping the session in use."""
    from cubbi_tools.errors import CubbiError

    try:
        engine.get_archive(cid, "/cubbi/active")
        return True
    except CubbiError:
        return False


def _create(cubbi, image, name, *extra):
    r = cubbi("cubbi-create", "-q", "--no-mount", "--no-connect", "--wait", "--image", image,
              "--name", name, *extra)
    assert r.exit_code == 0, r
    return r.stdout.strip()


def test_idle_timeout_closes_an_idle_session_and_leaves_used_ones(engine, busybox_image, cubbi,
                                                                  names):
    from cubbi_tools.reaper import idle_seconds

    def cid(sid):
        return next(r["container_id"] for r in cubbi("cubbi-ls", "--json", "-a").json()
                    if r["id"] == sid)

    # busy: a process that is not attached (its parent is the init) using up to half a CPU
    busy = _create(cubbi, busybox_image, f"{names}-busy", "--idle-timeout", "5s", "--cpus", "0.5")
    busy_cid = cid(busy)
    subprocess.run(["docker", "exec", busy_cid, "sh", "-c",
                    "(while :; do :; done) </dev/null >/dev/null 2>&1 &"], check=True)
    # attached: an exec that runs (as cubbi-connect's would), using no CPU
    attached = _create(cubbi, busybox_image, f"{names}-exec", "--idle-timeout", "5s")
    attached_cid = cid(attached)
    subprocess.run(["docker", "exec", "-d", attached_cid, "sleep", "600"], check=True)
    # followed: cubbi-logs -f, which the init cannot see but cubbi tells it; followed
    # from before it is ready, so no slow start of cubbi-logs counts as unused time
    r = cubbi("cubbi-create", "-q", "--no-mount", "--no-connect", "--image", busybox_image,
              "--name", f"{names}-logs", "--idle-timeout", "5s")
    assert r.exit_code == 0, r
    followed = r.stdout.strip()
    followed_cid = cid(followed)
    from conftest import cubbi_env

    follow = subprocess.Popen(["cubbi-logs", "-f", followed], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              env=cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir)}))
    try:
        r = cubbi("cubbi-connect", followed, "--", "true")  # waits for it to be ready
        assert r.exit_code == 0, r
        _wait("the follow touching the session", lambda: _touched(engine, followed_cid))
        # idle, made last: once it is closed, the others have had their 5 s too
        proj = cubbi.config_dir.parent / "proj"
        proj.mkdir()
        # its timeout from the config's defaults.idle_timeout
        one_line_error(cubbi("cubbi-config", "set", "defaults.idle_timeout", "soon"), 2,
                       "defaults.idle_timeout", "'soon'")
        assert cubbi("cubbi-config", "set", "defaults.idle_timeout", "5s").exit_code == 0
        r = cubbi("cubbi-create", "-q", "--mount", str(proj), "--no-connect", "--wait",
                  "--image", busybox_image, "--name", f"{names}-idle")
        assert r.exit_code == 0, r
        idle = r.stdout.strip()
        idle_cid = cid(idle)
        subprocess.run(["docker", "exec", idle_cid, "sh", "-c", "echo kept > /cubbi-config/state"],
                       check=True)
        info = engine.inspect_container(idle_cid)
        assert info["HostConfig"]["AutoRemove"] is True
        assert info["Config"]["Labels"]["cubbi.idle_timeout"] == "5"
        _wait("the idle session closed", lambda: _gone(engine, idle_cid), timeout=60)
        listed = {r["id"] for r in cubbi("cubbi-ls", "--json", "-a").json()}
        assert idle not in listed and {busy, attached, followed} <= listed
        # its tool state, on the host, survives as on every close
        kept = list(cubbi.cubbi_home.glob("projects/*/config/state"))
        assert [p.read_text() for p in kept] == ["kept\n"]
        for sid, c in ((busy, busy_cid), (attached, attached_cid), (followed, followed_cid)):
            rec = {"status": "running", "container_id": c}
            unused = idle_seconds(engine, rec)
            assert unused is not None and unused < 5, (sid, unused)
    finally:
        follow.kill()
        follow.wait()


def test_a_session_without_a_timeout_counts_but_stays(engine, busybox_image, cubbi, names):
    """Every session measures how long it is unused (cubbi-prune --idle
    reads it); without --idle-timeout none closes itself."""
    from cubbi_tools.reaper import idle_seconds

    sid = _create(cubbi, busybox_image, f"{names}-plain")
    rec = next(r for r in cubbi("cubbi-ls", "--json").json() if r["id"] == sid)
    assert "CUBBI_IDLE_TIMEOUT=" not in " ".join(
        engine.inspect_container(rec["container_id"])["Config"]["Env"])
    assert idle_seconds(engine, rec) == 0  # written by the watch as it starts
    assert not engine.inspect_container(rec["container_id"])["HostConfig"]["AutoRemove"]


def test_prune_dry_run_lists_exactly_what_prune_then_closes(engine, busybox_image, cubbi, names):
    keep = _create(cubbi, busybox_image, f"{names}-keep")
    stopped = [_create(cubbi, busybox_image, f"{names}-s{i}") for i in (1, 2)]
    for sid in stopped:
        r = cubbi("cubbi-ls", "--json")
        subprocess.run(["docker", "stop", "-t", "5", next(x["container_id"] for x in r.json()
                                                          if x["id"] == sid)],
                       check=True, capture_output=True)
    other = _create(cubbi, busybox_image, f"{names}x-other")  # not matched by the filter
    flt = ["--filter", f"name={names}-*", "--failed"]
    dry = cubbi("cubbi-prune", *flt, "--dry-run", "--json")
    assert dry.exit_code == 0, dry
    listed = [(r["kind"], r["id"]) for r in dry.json()]
    assert sorted(listed) == sorted(("session", s) for s in stopped)
    assert {r["id"] for r in cubbi("cubbi-ls", "--json", "-a").json()} >= {keep, *stopped}
    done = cubbi("cubbi-prune", *flt, "--json")
    assert done.exit_code == 0, done
    assert [(r["kind"], r["id"]) for r in done.json()] == listed
    left = {r["id"] for r in cubbi("cubbi-ls", "--json", "-a").json()}
    assert not left & set(stopped) and {keep, other} <= left
    # --older-than / --idle combine with the filter; 0s of --idle: every running one of ours
    idle = cubbi("cubbi-prune", "--filter", f"name={names}-*", "--idle", "0s", "--dry-run", "--json")
    assert [r["id"] for r in idle.json()] == [keep], idle
    assert idle.json()[0]["idle"] >= 0
    one_line_error(cubbi("cubbi-prune", "--older-than", "soon"), 2, "--older-than", "'soon'")


def test_orphans_are_found_by_their_labels_and_removed(engine, busybox_image, cubbi, names):
    from cubbi_tools import reaper
    from cubbi_tools.engine import LocalEngine

    live = _create(cubbi, busybox_image, f"{names}-live")
    net = f"{names}-net"
    subprocess.run(["docker", "network", "create", "--label", f"{reaper.L_OF}={names}-gone",
                    net], check=True, capture_output=True)
    used = f"{names}-used"
    subprocess.run(["docker", "network", "create", "--label", f"{reaper.L_OF}={live}", used],
                   check=True, capture_output=True)
    # the gone session's proxy sits on its network (labelled as the egress helper labels
    # its proxies); the live session's on a network it uses
    for cname, label, network in ((f"{names}-proxy", f"cubbi.egress.session={names}-gone", net),
                                  (f"{names}-liveproxy", f"{reaper.L_OF}={live}", used)):
        subprocess.run(["docker", "create", "--name", cname, "--network", network, "--label",
                        label, busybox_image, "sleep", "60"], check=True, capture_output=True)
    eng = LocalEngine()
    mine = lambda items: sorted((i["kind"], i["name"]) for i in items  # noqa: E731
                                if i["name"].startswith(names))
    assert mine(reaper.orphans(eng)) == []  # in their first minute: a create may be making them
    later = time.time() + reaper.GRACE_S + 5
    found = mine(reaper.orphans(eng, now=later))
    # the gone session's proxy and network; not the live session's, nor its network in use
    assert found == [("container", f"{names}-proxy"), ("network", net)]
    for item in reaper.orphans(eng, now=later):  # the helper first: then its network can go
        if item["name"].startswith(names):
            assert reaper.remove_orphan(engine, item), item
    assert mine(reaper.orphans(eng, now=later)) == []
    assert subprocess.run(["docker", "network", "inspect", net], capture_output=True).returncode
    assert subprocess.run(["docker", "inspect", f"{names}-proxy"],
                          capture_output=True).returncode
    assert not subprocess.run(["docker", "inspect", f"{names}-liveproxy"],
                              capture_output=True).returncode


def test_a_disk_limit_the_driver_cannot_enforce_is_refused_with_the_reason(engine, busybox_image,
                                                                          cubbi, names):
    info = engine.info()
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem")
    r = cubbi("cubbi-create", "--no-mount", "--no-connect", "--image", busybox_image,
              "--name", f"{names}-disk", "--disk", "1g")
    if info["Driver"] == "overlay2" and backing != "xfs" or info["Driver"] in ("vfs", "aufs"):
        one_line_error(r, 1, "disk limit 1g refused", info["Driver"], "cannot enforce")
        assert not engine.containers(all=True, labels=[f"cubbi.session.name={names}-disk"])
    else:  # a driver that can (not this machine's): the option reaches the engine
        assert r.exit_code in (0, 1), r
        if r.exit_code == 0:
            c = engine.containers(all=True, labels=[f"cubbi.session.name={names}-disk"])[0]
            assert engine.inspect_container(c["Id"])["HostConfig"]["StorageOpt"] == {"size": "1g"}
        else:  # xfs without pquota: the engine's refusal, as one line
            one_line_error(r, 1, "disk limit 1g refused")
    one_line_error(cubbi("cubbi-create", "--no-connect", "--disk", "lots"), 2, "--disk", "'lots'")


# -- on a server ------------------------------------------------------------------
BASE = ("server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
        "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n"
        "policy:\n  images:\n    any_local: true\n  idle_timeout:\n    default: 30m\n    max: 1h\n")


@pytest.fixture(scope="module")
def policed(engine, tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("idlepolicy")), config_text=BASE).start()
    srv.alice = Client(srv.url, srv.token("alice"))
    yield srv
    srv.stop()
    srv.cleanup()


def test_the_services_policy_sets_and_caps_the_idle_timeout(policed, engine, busybox_image, names):
    alice = policed.alice
    st, err = alice.call("POST", "/sessions", {"image": busybox_image, "name": f"{names}-big",
                                                "idle_timeout": "2h"})
    assert (st, err["error"]) == (403, "policy.idle_timeout.max is 1h: 2h asked"), err
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={names}-big"])
    for body, want in (({}, "1800"), ({"idle_timeout": "10m"}, "600")):
        st, rec = alice.call("POST", "/sessions", {"image": busybox_image,
                                                   "name": f"{names}-{want}", **body})
        assert st == 201, rec
        labels = engine.inspect_container(rec["container_id"])["Config"]["Labels"]
        assert labels["cubbi.idle_timeout"] == want


def test_parse_duration_and_select():
    from cubbi_tools.errors import UsageError
    from cubbi_tools.reaper import select
    from cubbi_tools.validate import parse_duration

    assert [parse_duration(t) for t in ("5s", "5", "15m", "1h30m", "1d")] == \
        [5, 5, 900, 5400, 86400]
    for bad in ("", "0", "5.5", "x", "-1s", "367d", True):
        with pytest.raises(UsageError):
            parse_duration(bad)
    recs = [{"id": "a", "status": "failed", "created_epoch": 100},
            {"id": "b", "status": "running", "created_epoch": 100},
            {"id": "c", "status": "stopped", "created_epoch": 990}]
    assert select(recs, now=1000) == []  # no criterion: nothing
    assert [r["id"] for r in select(recs, failed=True, now=1000)] == ["a", "c"]
    assert [r["id"] for r in select(recs, failed=True, older_than=60, now=1000)] == ["a"]
    idle = {"b": 7200}
    got = select(recs, idle=3600, idle_of=lambda r: idle.get(r["id"]), now=1000)
    assert [(r["id"], r["idle"]) for r in got] == [("b", 7200)]


def test_a_servers_session_closes_when_idle_unless_its_log_is_followed(policed, engine,
                                                                        busybox_image, names):
    """On a server the same watch closes sessions; a log stream the server
    serves (cubbi-logs -f -r) counts as a use, which the init cannot see."""
    from conftest import cubbi_env

    made = {}
    for key in ("followed", "idle"):  # idle made last: when it closes, both had their 5 s
        st, rec = policed.alice.call("POST", "/sessions", {
            "image": busybox_image, "name": f"{names}-{key}", "idle_timeout": "5s"})
        assert st == 201, rec
        if key == "followed":  # followed from before it is ready: no start-up counts as unused
            follow = subprocess.Popen(
                ["cubbi-logs", "-f", rec["id"]], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=cubbi_env({
                    "CUBBI_REMOTE": "srv", "CUBBI_REMOTE_URL": policed.url,
                    "CUBBI_REMOTE_TOKEN": policed.token("alice")}))
        st, rec = policed.alice.call("GET", f"/sessions/{rec['id']}?wait=60")
        assert st == 200 and rec["status"] == "running", rec
        made[key] = rec
        if key == "followed":
            _wait("the follow touching the session",
                  lambda: _touched(engine, rec["container_id"]))
    try:
        _wait("the idle session closed",
              lambda: _gone(engine, made["idle"]["container_id"]), timeout=60)
        assert not _gone(engine, made["followed"]["container_id"])
        assert follow.poll() is None  # still following
    finally:
        follow.kill()
        follow.wait()


def test_prune_through_a_server_sees_only_the_users_own_sessions(policed, engine, busybox_image,
                                                                 cubbi, names):
    bob = Client(policed.url, policed.token("bob"))
    mine, theirs = [], []
    for client, out in ((policed.alice, mine), (bob, theirs)):
        for i in (1, 2):
            st, rec = client.call("POST", "/sessions", {"image": busybox_image,
                                                        "name": f"{names}-{i}"})
            assert st == 201, rec
            out.append(rec["id"])
    env = {"CUBBI_REMOTE": "srv", "CUBBI_REMOTE_URL": policed.url,
           "CUBBI_REMOTE_TOKEN": policed.token("alice")}
    args = ["--older-than", "0s", "--filter", f"name={names}-*", "--json"]
    dry = cubbi("cubbi-prune", *args, "--dry-run", env=env)
    assert dry.exit_code == 0, dry
    assert sorted(r["id"] for r in dry.json()) == sorted(mine)
    assert {r["owner"] for r in dry.json()} == {"alice"}
    done = cubbi("cubbi-prune", *args, env=env)
    assert done.exit_code == 0, done
    assert [r["id"] for r in done.json()] == [r["id"] for r in dry.json()]
    left = {(c.get("Labels") or {}).get("cubbi.session.id")
            for c in engine.containers(all=True, labels=["cubbi.session=true"])}
    assert not left & set(mine) and set(theirs) <= left
    one_line_error(cubbi("cubbi-prune", "--idle", "1h", env=env), 2, "--idle", "local engine")


def test_the_server_sweeps_a_broken_create_when_it_starts(start_server, engine, busybox_image,
                                                         names):
    """A session container that never started and whose maker is gone (a
    cubbi-create killed half-way) is removed when a server starts, and the
    server says so on stderr.  Any cubbi-create on this shared engine
    removes such debris too (LocalEngine.sweep_unfinished): when one beat
    the server to it, the round proves nothing and is tried again."""
    from cubbi_tools import session as S

    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    me = S.creator().split(":")
    maker = ":".join([me[0], me[1], gone, "1"])  # this boot and namespace, a pid that ended
    for attempt in range(3):
        cname = f"{names}-broken{attempt}"
        subprocess.run(["docker", "create", "--name", cname, "--label", "cubbi.session=true",
                        "--label", f"cubbi.session.id={names[-6:]}0{attempt}", "--label",
                        f"cubbi.session.name={cname}", "--label", f"{S.L_CREATOR}={maker}",
                        busybox_image, "true"], check=True, capture_output=True)
        cid = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", cname], capture_output=True,
                             text=True, check=True).stdout.strip()
        srv = start_server()
        _wait("the broken create removed", lambda: _gone(engine, cid), timeout=30)
        said = f"removed orphan container {cname} ("
        try:
            _wait("the server saying so", lambda: said in open(srv.log).read(), timeout=5)
            return
        except pytest.fail.Exception:
            continue  # another create removed it first
    pytest.fail(f"the server never said {said!r}:\n{open(srv.log).read()}")


@pytest.mark.parametrize("driver, backing, ok", [
    ("overlay2", "xfs", True),        # the engine itself checks pquota at create
    ("overlay2", "extfs", False),
    ("btrfs", "btrfs", True), ("zfs", None, True), ("devicemapper", None, True),
    ("vfs", "extfs", False), ("fuse-overlayfs", None, False),
])
def test_which_storage_drivers_take_a_disk_limit(driver, backing, ok):
    from cubbi_tools import storage
    from cubbi_tools.errors import CubbiError

    info = {"Driver": driver, "DriverStatus": [["Backing Filesystem", backing]] if backing else []}
    if ok:
        assert storage.check(info, "10g") == "10g"
    else:
        with pytest.raises(CubbiError) as exc:
            storage.check(info, "10g")
        assert exc.value.code == 1 and driver in str(exc.value) and "cannot enforce" in str(exc.value)


def test_a_bad_disk_size_is_called_a_disk_size(cubbi):
    """Not "invalid memory size": the CLI's message and the API's ("disk")."""
    from cubbi_tools.errors import UsageError
    from cubbi_tools.validate import CreateRequest

    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "x", "--disk", "0",
              env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    one_line_error(r, 2, "--disk", "invalid disk size '0'")
    assert "memory" not in r.stderr, r
    with pytest.raises(UsageError) as exc:
        CreateRequest(image="x", disk="0").check(api=True)
    assert str(exc.value).startswith('"disk": invalid disk size'), exc.value
    with pytest.raises(UsageError) as exc:
        CreateRequest(image="x", memory="0").check(api=True)
    assert "invalid memory size" in str(exc.value), exc.value

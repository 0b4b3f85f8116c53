"""Documented session behaviours that had no test of their own (issue 9),
against the real engine: --hardened sessions, the defaults.* keys of
config.yaml, and the README's own first command, `cubbi --image base`,
run in a real pseudo-terminal."""

import os
import re
import subprocess

import pytest

from conftest import BIN, cubbi_env
from ptyterm import Terminal


# what --hardened keeps (engine.py: CapDrop ALL, CapAdd these five), as the
# kernel's capability bits: CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, SETGID 6, SETUID 7
KEPT = {0: "CHOWN", 1: "DAC_OVERRIDE", 3: "FOWNER", 6: "SETGID", 7: "SETUID"}
# capabilities Docker gives every container by default, which a hardened one must lack
DROPPED = {4: "FSETID", 5: "KILL", 8: "SETPCAP", 10: "NET_BIND_SERVICE", 13: "NET_RAW",
           18: "SYS_CHROOT", 27: "MKNOD", 29: "AUDIT_WRITE", 31: "SETFCAP"}


def _env(cubbi, extra=None):
    return cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir),
                      "CUBBI_HOME": str(cubbi.cubbi_home), **(extra or {})})


def _create(cubbi, image, name, *extra, env=None):
    r = cubbi("cubbi-create", "--image", image, "--name", name, "--no-mount", "--no-connect",
              "--json", *extra, env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    return rec


def _status(text):
    """{field: value} of the Cap*/NoNewPrivs lines of a /proc/PID/status."""
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())
            if k in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs", "Uid")}


def _caps(hexmask):
    n = int(hexmask, 16)
    return {bit for bit in range(64) if n >> bit & 1}


def _proc_status(cubbi, sid, pid):
    r = cubbi("cubbi-connect", sid, "--", "cat", f"/proc/{pid}/status")
    assert r.exit_code == 0, r
    return _status(r.stdout)


# -- --hardened ------------------------------------------------------------------
@pytest.mark.parametrize("image", ["busybox_image", "debian_image"])
def test_hardened_sessions_become_ready_and_lack_the_capabilities(cubbi, request, engine,
                                                                   prefix, image):
    ref = request.getfixturevalue(image)
    rec = _create(cubbi, ref, f"{prefix}-hard", "--hardened", "--wait")
    assert rec["status"] == "running", rec
    init = _proc_status(cubbi, rec["id"], 1)        # the session's init, root
    user = _proc_status(cubbi, rec["id"], "self")   # what cubbi-connect runs, the user
    assert _caps(init["CapBnd"]) == set(KEPT), (init, "bounding set of pid 1")
    assert _caps(init["CapEff"]) == set(KEPT), (init, "effective set of pid 1")
    assert _caps(user["CapBnd"]) == set(KEPT), user
    # the session user (your uid): a non-root user has none; root no more than the rest
    uid = int(user["Uid"].split()[0])
    assert uid == os.getuid(), user
    assert _caps(user["CapEff"]) == (set(KEPT) if uid == 0 else set()), user
    assert init["NoNewPrivs"] == "1" and user["NoNewPrivs"] == "1", (init, user)
    # what the capabilities guard really fails, even for root in the session
    cid = rec["container_id"]
    # (the final echo shows the script ran: no output at all proves nothing)
    r = subprocess.run(["docker", "exec", "-u", "0", cid, "sh", "-c",
                        "mknod /tmp/null c 1 3 && echo made; chroot / true && echo chrooted;"
                        " echo ran"],
                       capture_output=True, text=True)
    assert r.stdout == "ran\n", r
    assert r.stderr.count("Operation not permitted") == 2, r
    hc = engine.inspect_container(cid)["HostConfig"]
    assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["CapDrop"] == ["ALL"], hc


def test_an_ordinary_session_keeps_dockers_defaults(cubbi, busybox_image, prefix):
    """The same checks tell a session that is not hardened."""
    rec = _create(cubbi, busybox_image, f"{prefix}-soft", "--wait")
    init = _proc_status(cubbi, rec["id"], 1)
    assert _caps(init["CapBnd"]) > set(KEPT) and init["NoNewPrivs"] == "0", init
    assert {27, 18} <= _caps(init["CapBnd"]), init  # MKNOD, SYS_CHROOT
    r = subprocess.run(["docker", "exec", "-u", "0", rec["container_id"], "sh", "-c",
                        "mknod /tmp/null c 1 3 && echo made; chroot / true && echo chrooted"],
                       capture_output=True, text=True)
    assert r.stdout == "made\nchrooted\n", r


def test_defaults_hardened_in_the_config_hardens_a_session(cubbi, busybox_image, prefix):
    (cubbi.config_dir / "config.yaml").write_text("defaults:\n  hardened: true\n")
    rec = _create(cubbi, busybox_image, f"{prefix}-dhard", "--wait")
    init = _proc_status(cubbi, rec["id"], 1)
    assert _caps(init["CapBnd"]) == set(KEPT) and init["NoNewPrivs"] == "1", init


# -- defaults.cpus, defaults.pids_limit, defaults.connect ----------------------------------
def test_default_limits_in_the_config_reach_the_session(cubbi, busybox_image, engine, prefix):
    (cubbi.config_dir / "config.yaml").write_text(
        "defaults:\n  cpus: 0.5\n  pids_limit: 64\n")
    rec = _create(cubbi, busybox_image, f"{prefix}-lim")
    hc = engine.inspect_container(rec["container_id"])["HostConfig"]
    assert (hc["NanoCpus"], hc["PidsLimit"]) == (500_000_000, 64), hc
    # a switch beats the config
    rec = _create(cubbi, busybox_image, f"{prefix}-lim2", "--cpus", "0.25", "--pids-limit", "32")
    hc = engine.inspect_container(rec["container_id"])["HostConfig"]
    assert (hc["NanoCpus"], hc["PidsLimit"]) == (250_000_000, 32), hc
    # and the limit is the kernel's, not just a label: the pids cgroup says 64
    rec = _create(cubbi, busybox_image, f"{prefix}-lim3", "--wait")
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
              "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max")
    assert r.stdout.strip() == "64", r


def _connected(cubbi, busybox_image, name, config):
    """cubbi-create on a terminal with this config.yaml: (connected?, terminal text)."""
    (cubbi.config_dir / "config.yaml").write_text(config)
    (cubbi.config_dir / "config.yaml").chmod(0o600)
    argv = ["cubbi-create", "--image", busybox_image, "--name", name, "--no-mount"]
    with Terminal(argv, _env(cubbi)) as t:
        # either "connecting" then a shell prompt, or the printed record, then the end
        m = t.expect(rb"(connecting\r?\n|" + name.encode() + rb"\s+"
                     + re.escape(busybox_image.encode()) + rb")", timeout=120)
        connected = m.group(0).startswith(b"connecting")
        if connected:
            t.expect(rb"[$#] ")
            t.type('echo "[inside-$CUBBI_SESSION_NAME]"; exit 5\n')
            t.expect(rb"\[inside-" + name.encode() + rb"\]")
            assert t.wait() == 5, t.text()
        else:
            assert t.wait() == 0, t.text()
        return connected, t.text()


def test_defaults_connect_decides_whether_creation_connects(cubbi, busybox_image, prefix):
    connected, text = _connected(cubbi, busybox_image, f"{prefix}-c1", "defaults:\n  connect: true\n")
    assert connected and "connecting" in text, text
    connected, text = _connected(cubbi, busybox_image, f"{prefix}-c2",
                                 "defaults:\n  connect: false\n")
    assert not connected and "connecting" not in text, text
    # not connected, the session was still made, and stays up
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-c2")
    assert [x["status"] for x in r.json()] in (["running"], ["initializing"]), r


# -- the README's first command ------------------------------------------------------
def _base_built(engine):
    from cubbi_tools import images

    return images.image_exists(engine, "cubbi/base:latest")


def test_cubbi_image_base_creates_and_connects_on_a_terminal(cubbi, engine, debian_image,
                                                           tmp_path):
    """`cubbi --image base` on a fresh machine: builds cubbi/base:latest on
    the locally made Debian base when it is not there (saying so), starts
    the session with the current directory at /app and opens a login shell
    in it as you; exiting the shell ends the command with its status."""
    built_before = _base_built(engine)
    work = tmp_path / "work"
    work.mkdir()
    sid = None
    try:
        with Terminal([os.path.join(BIN, "cubbi"), "--image", "base"], _env(cubbi),
                      cwd=str(work)) as t:
            t.expect(rb"[$#] ", timeout=900)  # a first build takes minutes on a busy host
            start = len(t.screen)
            t.type('echo "[$CUBBI_SESSION_ID|$(id -u)|$(pwd)|$(git --version | cut -c1-11)|'
                   '$(sudo -n true 2>/dev/null && echo sudo)]" > /app/seen; '
                   'cat /app/seen; exit 4\n')
            m = t.expect(rb"\[([0-9a-f]{8})\|(\d+)\|(\S+)\|([^|]*)\|([^]]*)\]", start=start)
            sid = m.group(1).decode()
            assert t.wait(60) == 4, t.text()
        assert m.groups()[1:] == (str(os.getuid()).encode(), b"/app", b"git version", b"sudo"), \
            t.text()
        assert (work / "seen").read_text().startswith(f"[{sid}|"), "/app is not the cwd"
        assert "connecting" in t.text()
        if not built_before:
            assert "building cubbi/base:latest" in t.text(), t.text()
        else:
            assert "building" not in t.text(), t.text()
        r = cubbi("cubbi-ls", "--json", "--filter", f"name=base-{sid}")
        assert [(x["image"], x["status"], x["mount"]) for x in r.json()] == \
            [("base", "running", str(work))], r
    finally:
        _close_mounting(cubbi, work)


def test_cubbi_image_base_off_a_terminal_prints_the_record(cubbi, engine, debian_image,
                                                           tmp_path):
    try:
        r = cubbi("cubbi", "--image", "base", "--json", cwd=str(tmp_path), timeout=900)
        assert r.exit_code == 0, r
        (rec,) = r.json()
        assert rec["image"] == "base" and rec["mount"] == str(tmp_path), rec
        assert _base_built(engine)
        # the README's command as it is: a table of the one new session
        r = cubbi("cubbi", "--image", "base", cwd=str(tmp_path), input="")
        assert r.exit_code == 0, r
        rows = r.stdout.splitlines()
        assert len(rows) == 2 and rows[0].split()[:3] == ["ID", "NAME", "IMAGE"], r
        assert rows[1].split()[1] == "base-" + rows[1].split()[0], r
    finally:
        _close_mounting(cubbi, tmp_path)


def _close_mounting(cubbi, folder):
    """Close the sessions with folder at /app (names made by cubbi, not ours)."""
    r = cubbi("cubbi-ls", "--all", "--json", "--filter", "image=base")
    ids = [x["id"] for x in r.json() if x.get("mount") == str(folder)]
    if ids:
        cubbi("cubbi-close", *ids)

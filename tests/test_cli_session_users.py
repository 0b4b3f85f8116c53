"""The session user has the host user's uid/gid: what it makes in /app
belongs to whoever ran cubbi-create -- root in CI, and a real non-root
Linux user made for the run (conftest's host_user and as_user)."""

import os
import shutil
import tempfile
import time

import pytest


@pytest.fixture(params=["busybox", "debian"])
def image(request):
    """Each uid test on a busybox image (no useradd, no /etc/shadow) and on a
    Debian one (shadow files, bash, setpriv)."""
    return request.getfixturevalue(f"{request.param}_image")


def _session_files(cubbi, image, name, workdir, as_user=None):
    """Create a session on workdir, make a file and a directory in /app as
    the session user; return (uid, gid, id -u inside)."""
    runner = as_user or cubbi
    r = runner("cubbi-create", "--image", image, "--name", name, "--mount", str(workdir),
               "-q", "--wait")
    assert r.exit_code == 0, r
    sid = r.stdout.strip()
    r = runner("cubbi-connect", sid, "--", "sh", "-c",
               "touch /app/made-inside && mkdir /app/dir-inside && id -u && id -g && echo $HOME")
    assert r.exit_code == 0, r
    inside_uid, inside_gid, home = r.stdout.split()
    f = os.stat(workdir / "made-inside")
    d = os.stat(workdir / "dir-inside")
    assert (f.st_uid, f.st_gid) == (d.st_uid, d.st_gid)
    return f.st_uid, f.st_gid, int(inside_uid), int(inside_gid), home


def test_files_in_app_belong_to_the_host_user(cubbi, image, prefix, tmp_path):
    uid, gid, in_uid, in_gid, home = _session_files(cubbi, image, f"{prefix}-u", tmp_path)
    assert (uid, gid) == (os.getuid(), os.getgid())
    assert (in_uid, in_gid) == (os.getuid(), os.getgid())


# -- a real non-root host user (host_user, as_user: tests/conftest.py) -----------

def test_files_in_app_belong_to_a_non_root_host_user(as_user, host_user, image, prefix):
    from conftest import _reachable_tmp

    work = tempfile.mkdtemp(prefix="cubbi-user-work-", dir=_reachable_tmp())
    try:
        os.chown(work, host_user.pw_uid, host_user.pw_gid)
        import pathlib

        uid, gid, in_uid, in_gid, home = _session_files(None, image, f"{prefix}-nr",
                                                        pathlib.Path(work), as_user=as_user)
        assert (uid, gid) == (host_user.pw_uid, host_user.pw_gid)
        assert (in_uid, in_gid) == (host_user.pw_uid, host_user.pw_gid)
        assert home != "/root"
        # the user sees and closes its own session like anyone else
        r = as_user("cubbi-ls", "--json", "--filter", f"name={prefix}-nr")
        assert r.exit_code == 0, r
        (rec,) = r.json()
        assert rec["owner"] == host_user.pw_name
        assert as_user("cubbi-close", rec["id"]).exit_code == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- test users outliving a killed run (conftest.stale_test_user) ----------------

def _pw(name, gecos, home=None, shell="/bin/sh", uid=1001):
    import pwd

    return pwd.struct_passwd((name, "x", uid, uid, gecos, home or f"/home/{name}", shell))


def test_a_test_user_is_stale_once_the_pytest_that_made_it_is_gone():
    import subprocess

    from conftest import _owner_comment, stale_test_user

    mine = _owner_comment(os.getpid())
    assert not stale_test_user(_pw("cubbitest-0a1b2c", mine), "cubbitest-0a1b2c")
    child = subprocess.Popen(["true"])
    gone = _owner_comment(child.pid)  # a zombie until waited for: it has a start time
    child.wait()
    assert stale_test_user(_pw("cubbitest-0a1b2c", gone), "cubbitest-0a1b2c")
    # a reused pid (same number, another start time) is not the owner
    reused = mine.rsplit(" ", 1)[0] + " 1"
    assert stale_test_user(_pw("cubbitest-0a1b2c", reused), "cubbitest-0a1b2c")
    # not ours: another name, or no owner recorded
    assert not stale_test_user(_pw("cubbitest-alice", gone), "cubbitest-alice")
    assert not stale_test_user(_pw("cubbitest-0a1b2c", ""), "cubbitest-0a1b2c")


def test_the_legacy_cubbitest_user_is_removed_only_in_its_own_shape():
    from conftest import stale_test_user

    assert stale_test_user(_pw("cubbitest", ""), "cubbitest")
    assert not stale_test_user(_pw("cubbitest", "Carla Ubbi"), "cubbitest")
    assert not stale_test_user(_pw("cubbitest", "", home="/srv/cubbitest"), "cubbitest")
    assert not stale_test_user(_pw("cubbitest", "", shell="/bin/bash"), "cubbitest")
    assert not stale_test_user(_pw("cubbitest", ""), "users")
    assert not stale_test_user(_pw("cubbitest", "", uid=998), "cubbitest")


# -- a / only root may cross (cubbi-init repairs it for a non-root user) ---------

def test_the_init_makes_a_closed_root_searchable_for_a_non_root_user(as_user, host_user,
                                                                     busybox_image, prefix):
    """An image imported from a 0700 directory (older cubbi-image
    bootstrap-base) has a / only root may cross where the storage driver
    keeps it (vfs, btrfs, zfs); overlay2 shows its own 0755 instead, so
    here / is closed inside the session (overlay keeps that in the
    container's upper layer) and the session restarted: its init must
    open / again for the non-root session user."""
    import subprocess

    r = as_user("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-root700",
                "--no-mount", "--json", "--wait")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    sid, cid = rec["id"], rec["container_id"]
    r = subprocess.run(["docker", "exec", "-u", "0", cid, "sh", "-c", "chmod 700 / && stat -c %a /"],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "700\n"), r
    r = subprocess.run(["docker", "restart", "-t", "10", cid], capture_output=True, text=True)
    assert r.returncode == 0, r
    line = "cubbi-init: made / searchable for the session user"
    deadline = time.monotonic() + 30
    while True:
        logs = as_user("cubbi-logs", sid)
        if line in logs.output and logs.output.count("cubbi-init: ready") >= 2:
            break
        assert time.monotonic() < deadline, f"no {line!r} and second ready in 30 s: {logs}"
        time.sleep(0.2)
    r = as_user("cubbi-connect", sid, "--", "sh", "-c", "cat /dev/null && id -u && stat -c %a /")
    assert r.exit_code == 0, r
    assert r.stdout.split() == [str(host_user.pw_uid), "755"], r

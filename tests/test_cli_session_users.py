"""The session user has the host user's uid/gid: what it makes in /app
belongs to whoever ran cubbi-create -- root in CI, and a real non-root
Linux user made here (useradd, the Docker socket's group, runuser)."""

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import BIN, ROOT

pytestmark = pytest.mark.engine

USER = "cubbitest"


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


# -- a real non-root host user ----------------------------------------------

def _docker_socket():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else None


def _sh(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, (argv, r.stderr)
    return r.stdout


@pytest.fixture(scope="session")
def host_user():
    """A non-root Linux user (made once if missing) that may use the Docker
    socket: a member of the socket's group, as `usermod -aG docker` does."""
    if os.getuid() != 0:
        pytest.fail("this test makes a Linux user: run the suite as root (CI does)")
    sock = _docker_socket()
    if not sock:
        pytest.fail("the non-root user test needs the engine on a unix socket")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        _sh("useradd", "--create-home", "--user-group", "--shell", "/bin/sh", USER)
        pw = pwd.getpwnam(USER)
    group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    if group == "root":
        pytest.fail(f"{sock} belongs to group root: start dockerd with its default "
                    "group (docker) so a user can be given access")
    if USER not in grp.getgrnam(group).gr_mem:
        _sh("usermod", "-aG", group, USER)
    assert pw.pw_uid != 0
    return pw


@pytest.fixture(scope="session")
def user_tree(host_user):
    """cubbi's executables and package where that user can read them (the
    checkout or the interpreter may sit under root's 0700 home)."""
    tree = tempfile.mkdtemp(prefix="cubbi-user-tree-")
    os.chmod(tree, 0o755)
    shutil.copytree(os.path.join(ROOT, "cubbi_tools"), os.path.join(tree, "cubbi_tools"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(BIN, os.path.join(tree, "bin"))
    for dirpath, dirs, files in os.walk(tree):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            os.chmod(p, os.stat(p).st_mode | stat.S_IROTH | (stat.S_IXOTH if os.path.isdir(p) or
                                                                 os.access(p, os.X_OK) else 0))
    python_dir = None
    for exe in (sys.executable, "/usr/bin/python3"):
        ok = subprocess.run(["runuser", "-u", host_user.pw_name, "--", exe, "-c",
                             "import sys; assert sys.version_info >= (3, 11)"],
                            capture_output=True).returncode == 0
        if ok:
            python_dir = os.path.dirname(exe)
            break
    if python_dir is None:
        pytest.fail(f"no Python 3.11+ that {host_user.pw_name} may run "
                    f"({sys.executable} nor /usr/bin/python3)")
    yield os.path.join(tree, "bin"), tree, python_dir
    shutil.rmtree(tree, ignore_errors=True)


@pytest.fixture
def as_user(host_user, user_tree, tmp_path):
    """Run a cubbi executable as the non-root user, with PATH and PYTHONPATH
    pointing at cubbi and its own config directory."""
    from conftest import Result

    bindir, tree, python_dir = user_tree
    cfg = tempfile.mkdtemp(prefix="cubbi-user-cfg-")
    os.chown(cfg, host_user.pw_uid, host_user.pw_gid)

    def _run(*argv, input=None):
        env = ["env", "-i", f"PATH={bindir}:{python_dir}:/usr/local/bin:/usr/bin:/bin",
               f"PYTHONPATH={tree}", f"HOME={host_user.pw_dir}", f"USER={host_user.pw_name}",
               f"CUBBI_CONFIG_DIR={cfg}", "NO_COLOR=1"]
        if os.environ.get("DOCKER_HOST"):
            env.append(f"DOCKER_HOST={os.environ['DOCKER_HOST']}")
        proc = subprocess.run(["runuser", "-u", host_user.pw_name, "--"] + env + list(argv),
                              input=input, capture_output=True, text=True, timeout=300,
                              cwd="/")
        return Result(proc)

    yield _run
    shutil.rmtree(cfg, ignore_errors=True)


def test_files_in_app_belong_to_a_non_root_host_user(as_user, host_user, image, prefix):
    work = tempfile.mkdtemp(prefix="cubbi-user-work-")
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

"""Shared fixtures.

Integration tests drive a real Docker engine.  When it is missing they FAIL
(never skip): the `engine` fixture calls pytest.fail.  Base images are made
locally (no registry): a static busybox image in about a second, and a
debootstrap'ed Debian image (cached by tag) for tests that need apt/git.

Every session a test makes is named with the test's own prefix, and only
those are closed afterwards, so parallel runs on one engine do not collide.

The `engine` marker is set here from the fixtures a test uses (never by
hand), and the engine-free tests run first: `pytest -m "not engine"` is a
fast gate that needs no Docker at all.  The shared helpers live here too:
one_line_error (the bad-input contract), the server fixtures (through
tests/serverproc.py), and the non-root host user.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
# this checkout's cubbi_tools and cubbi_server, in the tests and in every
# command they run (see tests/serverproc.py)
PYTHONPATH = [ROOT, os.path.join(ROOT, "tests", "pkgroot")]
for _p in reversed(PYTHONPATH):
    if _p not in sys.path:
        sys.path.insert(0, _p)
BUSYBOX_IMAGE = "cubbi-test/busybox:latest"
# the swarm suite (tests/swarm/, three Docker-in-Docker nodes) runs only when
# asked for: CUBBI_SWARM=1, as tests/run --swarm sets it
collect_ignore = [] if os.environ.get("CUBBI_SWARM") else ["swarm"]
DEBIAN_IMAGE = "cubbi/base-os:bookworm"


def cubbi_env(extra=None):
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(PYTHONPATH + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("CUBBI_DEBUG", None)
    env.setdefault("NO_COLOR", "1")
    for key, value in (extra or {}).items():
        if value is None:  # {"NO_COLOR": None}: unset it for this command
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Result:
    def __init__(self, proc):
        self.exit_code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.output = proc.stdout + proc.stderr

    def json(self):
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def __repr__(self):
        return f"<exit {self.exit_code}\nstdout: {self.stdout}\nstderr: {self.stderr}>"


def run(args, input=None, env=None, timeout=300, cwd=None):
    """Run a cubbi executable as a user would: run(["cubbi-ls", "--json"])."""
    proc = subprocess.run(args, input=input, capture_output=True, text=True,
                          env=cubbi_env(env), timeout=timeout, cwd=cwd)
    return Result(proc)


def one_line(stderr, *words):
    """What a command says on bad input: one stderr line holding each of
    WORDS, and no traceback."""
    assert "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.endswith("\n"), stderr
    for w in words:
        assert w in stderr, (w, stderr)


def one_line_error(r, code, *words):
    """The bad-input contract of a finished command: exit code CODE, and
    one_line(its stderr, *WORDS)."""
    assert r.exit_code == code, r
    one_line(r.stderr, *words)


@pytest.fixture
def cubbi(tmp_path):
    """A runner with an isolated config dir (CUBBI_CONFIG_DIR) and per-project
    state folder (CUBBI_HOME, instead of ~/.cubbi) per test."""
    cfg = tmp_path / "cubbi-config"
    cfg.mkdir()
    home = tmp_path / "cubbi-home"

    def _run(*args, input=None, env=None, **kw):
        e = {"CUBBI_CONFIG_DIR": str(cfg), "CUBBI_HOME": str(home)}
        e.update(env or {})
        return run(list(args), input=input, env=e, **kw)

    _run.config_dir = cfg
    _run.cubbi_home = home
    return _run


@pytest.fixture(scope="session")
def engine():
    """The Docker engine: fails the test (never skips) when unreachable."""
    from cubbi_tools.dockerapi import DockerAPI
    from cubbi_tools.errors import CubbiError

    api = DockerAPI()
    try:
        api.get("/_ping")
    except CubbiError as exc:
        pytest.fail(f"these tests need a running Docker engine: {exc}")
    return api


def _image_exists(ref):
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def busybox_image(engine):
    """A tiny image made from the host's static busybox (Debian busybox-static)."""
    if _image_exists(BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.fail("tests need a static busybox on the host: apt-get install busybox-static")
    root = tempfile.mkdtemp(prefix="cubbi-bb-")
    os.chmod(root, 0o755)  # the image's /: 0700 locks non-root users out on vfs
    try:
        os.makedirs(os.path.join(root, "bin"))
        for d in ("etc", "tmp", "root"):
            os.makedirs(os.path.join(root, d))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc", "passwd"), "w") as fh:
            fh.write("root:x:0:0:root:/root:/bin/sh\n")
        with open(os.path.join(root, "etc", "group"), "w") as fh:
            fh.write("root:x:0:\n")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-", BUSYBOX_IMAGE], stdin=tar.stdout,
                             capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0:
            pytest.fail(f"docker import of the busybox image failed: {imp.stderr}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BUSYBOX_IMAGE


@pytest.fixture(scope="session")
def debian_image(engine):
    """A minimal Debian bookworm image made locally (debootstrap + import, ~35 s,
    no registry), once per host: reused while the tag exists."""
    from cubbi_tools import images
    from cubbi_tools.errors import CubbiError

    try:
        return images.ensure_base_os(engine, DEBIAN_IMAGE,
                                     progress=lambda m: sys.stderr.write(f"debian_image: {m}\n"))
    except CubbiError as exc:
        pytest.fail(f"cannot make the Debian base image {DEBIAN_IMAGE}: {exc}")


@pytest.fixture
def prefix(engine):
    """A unique session-name prefix for this test; its sessions are closed after."""
    p = "t" + secrets.token_hex(3)
    yield p
    for entry in engine.containers(all=True, labels=["cubbi.session=true"]):
        name = (entry.get("Labels") or {}).get("cubbi.session.name", "")
        if name.startswith(p):
            try:
                engine.remove(entry["Id"])
            except Exception:
                pass


# -- a real cubbi-server on loopback (tests/serverproc.py) ----------------------
def _server_starter(mkdir):
    """(start, stop_all): start(env=..., config_text=...) makes a work dir
    with mkdir(name) and returns a started serverproc.ServerProcess there;
    start.started lists them (a failed test prints their logs' tails)."""
    from serverproc import ServerProcess

    started = []

    def _start(env=None, config_text=None):
        srv = ServerProcess(str(mkdir(f"server-{len(started)}")), env=env,
                            config_text=config_text)
        started.append(srv)
        return srv.start()

    _start.started = started

    def _stop_all():
        for srv in started:
            srv.stop()
            srv.cleanup()

    return _start, _stop_all


@pytest.fixture
def start_server(tmp_path):
    """Start a cubbi-server for this test: start_server(env=..., config_text=...)
    -> a started serverproc.ServerProcess, stopped after the test."""
    def mkdir(name):
        d = tmp_path / name
        d.mkdir()
        return d

    start, stop_all = _server_starter(mkdir)
    yield start
    stop_all()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory):
    """start_server for a module-scoped fixture: stopped after the module."""
    start, stop_all = _server_starter(tmp_path_factory.mktemp)
    yield start
    stop_all()



@pytest.fixture(scope="module")
def server(engine, start_module_server):
    """One cubbi-server per test module, on the real engine."""
    return start_module_server()


@pytest.fixture(scope="module")
def alice(server):
    from serverproc import Client

    return Client(server.url, server.token("alice"))


@pytest.fixture(scope="module")
def bob(server):
    from serverproc import Client

    return Client(server.url, server.token("bob"))


@pytest.fixture
def remote_env(server, cubbi):
    """cubbi commands talking to the server as alice, through cubbi-remote add."""
    tok = server.token("alice")
    r = cubbi("cubbi-remote", "add", "srv", server.url, "--token", "-", input=tok,
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    return {"CUBBI_REMOTE": "srv", "CUBBI_SECRETS": "file"}


@pytest.fixture
def recorder():
    """A loopback HTTP server that records what clients send (serverproc.Recorder)."""
    from serverproc import Recorder

    rec = Recorder()
    yield rec
    rec.close()


def served_session(client, image, name, hook=None, server=None, user=None, wait=True):
    """A running session made through the server's API as CLIENT.  With a
    setup HOOK (shell run as root before the session reports ready) it is
    made on the engine as SERVER would make it for USER, since the service
    takes no files from a client.  wait=False: the record as made, not
    waited for (a HOOK that never ends keeps it initializing)."""
    body = {"image": image, "name": name}
    if hook:
        from cubbi_tools.engine import LocalEngine
        from cubbi_tools.serverstate import State
        from cubbi_tools.validate import CreateRequest

        key = State(server.database, server.env["TEST_PROJECT_KEY"]).user_key(user)
        rec = LocalEngine().create(CreateRequest(
            image=image, name=name, owner=user, uid=1000, gid=1000,
            labels={"cubbi.served": key}, files={"/cubbi/hooks/90-test.sh": (hook, 0o755)}))
    else:
        st, rec = client.call("POST", "/sessions", body)
        assert st == 201, rec
    if not wait:
        return rec
    st, rec = client.call("GET", f"/sessions/{rec['id']}?wait=60")
    assert st == 200 and rec["status"] == "running", rec
    return rec


# -- a real non-root host user ---------------------------------------------------
# Tests that run cubbi as a non-root Linux user: a user made for this run
# (useradd, in the Docker socket's group, as `usermod -aG docker` does) and
# deleted after it, and a copy of cubbi installed where that user can read
# it.  The checkout and its .venv may sit under root's 0700 home, and the
# host's python3 may lack cubbi's dependencies, so the copy is a venv of its
# own outside the checkout: cubbi_tools (with the built-in images) and the
# distributions cubbi requires, copied from this interpreter's environment.

def _docker_socket():
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://"):] if host.startswith("unix://") else None


def _sh(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, (argv, r.stderr)
    return r.stdout


@pytest.fixture(scope="session")
def host_user(request):
    """A non-root Linux user that may use the Docker socket, made for this
    run (its own name, so parallel runs do not share it) and deleted after
    it, even when a test failed: membership of the socket's group is
    root-equivalent and must not outlive the run."""
    import grp
    import pwd

    if os.getuid() != 0:
        pytest.fail("this test makes a Linux user: run the suite as root (CI does)")
    sock = _docker_socket()
    if not sock:
        pytest.fail("the non-root user test needs the engine on a unix socket")
    group = grp.getgrgid(os.stat(sock).st_gid).gr_name
    if group == "root":
        pytest.fail(f"{sock} belongs to group root: start dockerd with its default "
                    "group (docker) so a user can be given access")
    name = "cubbitest-" + secrets.token_hex(3)
    _sh("useradd", "--create-home", "--user-group", "--shell", "/bin/sh",
        "--comment", _owner_comment(os.getpid()), "--groups", group, name)
    request.addfinalizer(lambda: _remove_user(name))
    pw = pwd.getpwnam(name)
    assert pw.pw_uid != 0 and name in grp.getgrnam(group).gr_mem
    return pw


# A run that is SIGKILLed never reaches the finalizer, so each test user's
# comment names the pytest that made it (pid and start time: a reused pid
# is not taken for the owner), and every run as root first removes the
# users whose owner is gone.  So does it the fixed-name `cubbitest` that
# older versions of this file made and never removed (kept while it still
# runs something: userdel refuses, an older run may be using it, and it
# is tried again next run).
_OWNER = re.compile(r"^cubbi test user, pytest pid (\d+) start (\d+)$")


def _start_time(pid):
    """The kernel's start time of process PID (in ticks), None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner_comment(pid):
    return f"cubbi test user, pytest pid {pid} start {_start_time(pid)}"  # no colon in passwd


def stale_test_user(pw, group_name):
    """Whether passwd entry PW is a test user this conftest made whose run is
    over: a cubbitest-XXXXXX whose owning pytest is gone, or the legacy
    `cubbitest` (no comment, /home/cubbitest, /bin/sh, its own group)."""
    if pw.pw_name == "cubbitest":
        return (pw.pw_gecos == "" and pw.pw_dir == "/home/cubbitest"
                and pw.pw_shell == "/bin/sh" and group_name == "cubbitest"
                and pw.pw_uid >= 1000)
    if not re.fullmatch(r"cubbitest-[0-9a-f]{6}", pw.pw_name):
        return False
    m = _OWNER.match(pw.pw_gecos)
    if not m:  # not one of ours (or from a version that left no owner): leave it
        return False
    return _start_time(int(m.group(1))) != int(m.group(2))


def pytest_sessionstart(session):
    if os.getuid() != 0 or not shutil.which("userdel"):
        return
    import grp
    import pwd

    for pw in pwd.getpwall():
        try:
            group_name = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            group_name = None
        if stale_test_user(pw, group_name):
            _remove_user(pw.pw_name, in_use_ok=True)


def _remove_user(name, in_use_ok=False):
    """userdel: the user, its home, its own group and its membership of the
    socket's group."""
    r = subprocess.run(["userdel", "--remove", name], capture_output=True, text=True)
    if r.returncode == 8 and in_use_ok:  # 8: logged in (runs processes)
        sys.stderr.write(f"conftest: the old test user {name} is in use; left for now\n")
        return
    if r.returncode not in (0, 6):  # 6: no such user
        raise RuntimeError(f"userdel {name} failed ({r.returncode}): {r.stderr}; remove it "
                           f"by hand (userdel --remove {name}): it is in the Docker socket's group")


def _reachable_tmp():
    """A temp directory every user can reach (TMPDIR may sit under /root)."""
    d = tempfile.gettempdir()
    while True:
        if not os.stat(d).st_mode & 0o001:
            return "/tmp"
        if d == os.path.dirname(d):
            return tempfile.gettempdir()
        d = os.path.dirname(d)


def _requirement_closure(requirements):
    """The installed distributions REQUIREMENTS need here, transitively
    (markers evaluated for this interpreter, extras left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo, dists = set(), list(requirements), []
    while todo:
        req = Requirement(todo.pop())
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-").replace(".", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"cubbi needs {req.name}, which is not installed for {sys.executable}: "
                        "run ./install --dev")
        dists.append(dist)
        todo.extend(dist.requires or [])
    return dists


def _user_python(user):
    """A Python 3.11+ that USER may run: this interpreter's base (when it is
    not under a home USER cannot enter), else the system's python3."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    tried = []
    for exe in dict.fromkeys([base, "/usr/bin/python3", "/usr/local/bin/python3"]):
        if not os.path.exists(exe):
            continue
        tried.append(exe)
        r = subprocess.run(["runuser", "-u", user, "--", exe, "-c",
                            "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True)
        if r.returncode == 0 and tuple(map(int, r.stdout.split("."))) >= (3, 11):
            return exe, r.stdout.strip()
    pytest.fail(f"no Python 3.11+ that {user} may run (tried {', '.join(tried)}): install "
                "python3 where every user can run it")


@pytest.fixture(scope="session")
def user_tree(host_user):
    """cubbi installed for the non-root user outside the checkout: a venv
    (world-readable, under /tmp) holding a copy of cubbi_tools, the built-in
    images and cubbi's dependencies, with cubbi's executables in its bin.
    Yields (bin directory, python version)."""
    import tomllib

    python, version = _user_python(host_user.pw_name)
    tree = tempfile.mkdtemp(prefix="cubbi-user-tree-", dir=_reachable_tmp())
    try:
        os.chmod(tree, 0o755)
        venv = os.path.join(tree, "venv")
        _sh(python, "-m", "venv", "--without-pip", venv)
        site = os.path.join(venv, "lib", f"python{version}", "site-packages")
        assert os.path.isdir(site), site
        no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(os.path.join(ROOT, "cubbi_tools"), os.path.join(site, "cubbi_tools"),
                        ignore=no_cache)
        shutil.copytree(os.path.join(ROOT, "images"),
                        os.path.join(site, "cubbi_tools", "builtin_images"), ignore=no_cache)
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
            requires = tomllib.load(fh)["project"]["dependencies"]
        for dist in _requirement_closure(requires):
            for f in dist.files or ():
                if f.parts[0] == ".." or "__pycache__" in f.parts:
                    continue  # scripts, byte code
                dst = os.path.join(site, *f.parts)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(f.locate(), dst)
        bindir = os.path.join(venv, "bin")
        for n in os.listdir(BIN):
            shutil.copy2(os.path.join(BIN, n), os.path.join(bindir, n))
        subprocess.run(["chmod", "-R", "a+rX", tree], check=True)
        check = subprocess.run(
            ["runuser", "-u", host_user.pw_name, "--", "env", "-i", f"PATH={bindir}:/usr/bin:/bin",
             "python3", "-c", "import cubbi_tools, yaml, dotenv, keyring; print(cubbi_tools.__file__)"],
            capture_output=True, text=True, cwd="/")
        if check.returncode != 0 or not check.stdout.startswith(site):
            pytest.fail(f"cubbi installed for {host_user.pw_name} in {venv} does not import "
                        f"there: {check.stdout}{check.stderr}")
        yield bindir, version
    finally:
        shutil.rmtree(tree, ignore_errors=True)


@pytest.fixture
def as_user(host_user, user_tree):
    """Run a cubbi executable as the non-root user, from its own install
    (user_tree) and with its own config directory; returns a Result."""
    bindir, _ = user_tree
    cfg = tempfile.mkdtemp(prefix="cubbi-user-cfg-", dir=_reachable_tmp())
    os.chown(cfg, host_user.pw_uid, host_user.pw_gid)

    def _run(*argv, input=None):
        env = ["env", "-i", f"PATH={bindir}:/usr/local/bin:/usr/bin:/bin",
               f"HOME={host_user.pw_dir}", f"USER={host_user.pw_name}",
               f"CUBBI_CONFIG_DIR={cfg}", "NO_COLOR=1"]
        if os.environ.get("DOCKER_HOST"):
            env.append(f"DOCKER_HOST={os.environ['DOCKER_HOST']}")
        proc = subprocess.run(["runuser", "-u", host_user.pw_name, "--"] + env + list(argv),
                              input=input, capture_output=True, text=True, timeout=300,
                              cwd="/")
        return Result(proc)

    yield _run
    shutil.rmtree(cfg, ignore_errors=True)


# -- each phase's report on the item (item.rep_setup, rep_call, rep_teardown),
# so a fixture can tell that its test failed; and item.on_failure: (title,
# fn) pairs a fixture adds, whose fn() text goes into a failed test's report
# as a section of its own, taken before any fixture is torn down (the
# browser tests: the page, its console, the servers' logs)
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.when == "call" and rep.failed:
        for title, fn in getattr(item, "on_failure", ()):
            try:
                text = fn()
            except Exception as exc:  # a diagnosis must not hide the failure
                text = f"(failed: {type(exc).__name__}: {exc})"
            rep.sections.append((title, text))


# -- the engine marker: set from the fixtures, engine-free tests first ---------
# A test needs the engine when it uses one of these fixtures, directly or
# through another fixture (item.fixturenames is that closure).  The marker
# is never set by hand: `pytest -m "not engine"` is the fast gate that runs
# with no Docker at all, and it is run first in a full run.
ENGINE_FIXTURES = frozenset({"engine", "busybox_image", "debian_image", "prefix"})


def needs_engine(item):
    return bool(ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marker
def pytest_collection_modifyitems(config, items):
    hand_set = [i.nodeid for i in items if i.get_closest_marker("engine")]
    if hand_set:
        raise pytest.UsageError(
            "the engine marker is set by tests/conftest.py from the fixtures a test uses, "
            "never by hand; remove it from: " + ", ".join(hand_set))
    for item in items:
        if needs_engine(item):
            item.add_marker(pytest.mark.engine)
    # a stable sort: the engine-free tier first, each tier in file order
    items.sort(key=lambda i: i.get_closest_marker("engine") is not None)

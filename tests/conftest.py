"""Shared fixtures.

Integration tests drive a real Docker engine.  When it is missing they FAIL
(never skip): the `engine` fixture calls pytest.fail.  Base images are made
locally (no registry): a static busybox image in about a second, and a
debootstrap'ed Debian image (cached by tag) for tests that need apt/git.

Every session a test makes is named with the test's own prefix, and only
those are closed afterwards, so parallel runs on one engine do not collide.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
BUSYBOX_IMAGE = "cubbi-test/busybox:latest"
DEBIAN_IMAGE = "cubbi/base-os:bookworm"


def cubbi_env(extra=None):
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("CUBBI_DEBUG", None)
    env.setdefault("NO_COLOR", "1")
    if extra:
        env.update(extra)
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

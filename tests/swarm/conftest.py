"""The swarm suite's fixtures: one three-node swarm (tests/swarmharness.py)
and one cubbi-server in swarm mode on its manager, for the whole run.  Opt
in: CUBBI_SWARM=1 (tests/run --swarm); tests/conftest.py leaves this folder
out otherwise."""

import os
import shutil
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from serverproc import Client, ServerProcess  # noqa: E402
from swarmharness import Swarm, service_config  # noqa: E402

TIMINGS = {}


@pytest.fixture(scope="session")
def swarm(engine, busybox_image):
    s = Swarm(tempfile.mkdtemp(prefix="swarm-harness-"))
    t0 = time.monotonic()
    try:
        s.up()
        s.load(busybox_image)
        TIMINGS["harness up (s)"] = round(time.monotonic() - t0, 1)
        TIMINGS.update({f"harness {k} (s)": round(v, 1) for k, v in s.timings.items()})
        yield s
    finally:
        if not os.environ.get("CUBBI_SWARM_KEEP"):  # left up to look into a failure
            s.down()


@pytest.fixture(scope="session")
def swarm_server(swarm):
    work = tempfile.mkdtemp(prefix="swarm-server-")
    server = ServerProcess(work, config_text=service_config(swarm))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if not os.environ.get("CUBBI_SWARM_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def swarm_alice(swarm_server):
    return Client(swarm_server.url, swarm_server.token("alice"))


@pytest.fixture(scope="session")
def tools_image(swarm, debian_image):
    """tests/test_egress.py's tools image (Debian with curl and python3;
    busybox's static wget cannot resolve names), built once per host and
    loaded into the manager, where the service pushes it from."""
    import hashlib
    import subprocess

    fixture = os.path.join(os.path.dirname(HERE), "fixtures", "egress")
    tag = "egress-test/tools:" + hashlib.sha256(
        open(os.path.join(fixture, "Dockerfile"), "rb").read()
        + debian_image.encode()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode:
        subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={debian_image}",
                        "-t", tag, "-f", os.path.join(fixture, "Dockerfile"), fixture],
                       check=True, capture_output=True, timeout=900)
    swarm.load(tag)
    return tag


@pytest.fixture(scope="session")
def egress_proxy_image(swarm, debian_image):
    """cubbi's egress proxy image, built on this host's engine (as
    tests/test_egress.py builds it) and loaded into the manager: the service
    would build it there on first use, which needs the base image there
    (README, Scaling out)."""
    from cubbi_tools import egress
    from cubbi_tools.engine import LocalEngine

    tag = egress.proxy_image(LocalEngine(images={
        "base": debian_image, "ca_certs": ["/etc/ssl/certs/ca-certificates.crt"]}))
    swarm.load(tag)
    return tag


@pytest.fixture(autouse=True)
def _timed(request):
    t0 = time.monotonic()
    yield
    TIMINGS[request.node.name + " (s)"] = round(time.monotonic() - t0, 1)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line("swarm suite timings:")
        for k, v in TIMINGS.items():
            terminalreporter.write_line(f"  {k}: {v}")

"""The service's deployment files, for real: the top-level Dockerfile built
through our own image build (images.build, the code behind cubbi-image
build) on the locally bootstrapped Debian base with the host's CA bundle,
run with the Docker socket mounted and published on 127.0.0.1 only, then
driven from the host by the real commands with CUBBI_REMOTE_URL/TOKEN.
And docker-compose.yml checked by docker-compose itself.

The image is tagged by a hash of its build context and base, and kept: a
rerun with nothing changed reuses it; older tags of ours are removed."""

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "cubbi-test/service"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
IN_SOCKET = "/var/run/docker.sock"  # where the service looks (its default DOCKER_HOST)


def _image_tag(engine, base):
    import hashlib

    from cubbi_tools import images

    h = hashlib.sha256((images.digest(ROOT) + engine.inspect_image(base)["Id"]).encode())
    return f"{REPO}:{h.hexdigest()[:16]}"


@pytest.fixture(scope="module")
def service_image(engine, debian_image):
    from cubbi_tools import images

    tag = _image_tag(engine, debian_image)
    for img in engine.get("/images/json", params={"filters": json.dumps({"reference": [REPO]})}):
        for stale in img.get("RepoTags") or []:
            if stale.startswith(REPO + ":") and stale != tag:
                engine.delete(f"/images/{stale}", params={"noprune": "0"})
    if images.image_exists(engine, tag):
        return {"tag": tag, "built": False}
    log = []
    try:
        info = images.build(engine, {"name": "cubbi-service", "path": ROOT}, base=debian_image,
                            ca_certs=[HOST_CA] if os.path.exists(HOST_CA) else [], tag=tag,
                            log=log.append, progress=lambda m: None)
    except Exception as exc:
        pytest.fail(f"building the service's Dockerfile failed: {exc}\n{''.join(log)[-3000:]}")
    info["built"] = True
    return info


def _health(url):
    with urllib.request.urlopen(url + "/health", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def service(engine, service_image, tmp_path_factory):
    """The image running as the service does in docker-compose.yml: the
    socket mounted, the socket's group added, the config in /app/config."""
    from conftest import _docker_socket

    sock = _docker_socket()  # the engine's socket on this host (DOCKER_HOST, else the default)
    if not sock:
        pytest.fail("the service image test mounts the engine's socket: DOCKER_HOST must be unix://")
    name = "cubbi-test-service-" + os.urandom(3).hex()
    cfg = tmp_path_factory.mktemp("service-config")
    os.chmod(cfg, 0o755)
    # the example config's database path; no key: the server makes one
    # beside the database (0600), so no secret shows in docker inspect
    (cfg / "cubbi-service.yaml").write_text(
        "server:\n  heartbeat: 2\nstate:\n  database: /var/lib/cubbi/server.db\n"
        "policy:\n  images:\n    any_local: true\n")  # the test's busybox image
    os.chmod(cfg / "cubbi-service.yaml", 0o644)
    engine.create_container(name, {
        "Image": service_image["tag"],
        "Labels": {"cubbi-test": "service-image"},
        "ExposedPorts": {"3000/tcp": {}},
        "HostConfig": {
            "Binds": [f"{sock}:{IN_SOCKET}", f"{cfg}:/app/config:ro"],
            "GroupAdd": [str(os.stat(sock).st_gid)],
            "PortBindings": {"3000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
        },
    })
    try:
        engine.start(name)
        info = engine.inspect_container(name)
        (binding,) = info["NetworkSettings"]["Ports"]["3000/tcp"]
        assert binding["HostIp"] == "127.0.0.1", binding
        url = f"http://127.0.0.1:{binding['HostPort']}"
        deadline, last = time.time() + 30, None
        while time.time() < deadline:
            try:
                last = _health(url)
                break
            except OSError as exc:
                last = exc
                time.sleep(0.2)
        else:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            pytest.fail(f"the service container did not answer /health: {last}\n"
                        f"{logs.stdout}{logs.stderr}")
        yield {"name": name, "url": url, "info": info, "started": time.time()}
    finally:
        engine.remove(name)


def _exec(name, *argv):
    return subprocess.run(["docker", "exec", name, *argv], capture_output=True, text=True,
                          timeout=60)


def test_the_service_image_serves_the_commands(service, service_image, cubbi, busybox_image,
                                               prefix, engine):
    name, url = service["name"], service["url"]
    st, health = _health(url)
    assert st == 200 and health == {"status": "up"}, health  # the socket, through its group
    # not root; the Dockerfile's HEALTHCHECK command works as written
    assert _exec(name, "id", "-u").stdout.strip() == "10001"
    check = service["info"]["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD-SHELL", check
    hc = _exec(name, "sh", "-c", check[1])
    assert hc.returncode == 0, hc
    # an admin issues a token inside the container (same config, same database)
    tok = _exec(name, "cubbi-server", "token", "create", "carol")
    assert tok.returncode == 0 and tok.stdout.startswith("cubbi_"), tok
    env = {"CUBBI_REMOTE": "svc", "CUBBI_REMOTE_URL": url,
           "CUBBI_REMOTE_TOKEN": tok.stdout.strip()}
    assert cubbi("cubbi-ls", "-q", "--filter", f"name={prefix}*", env=env).exit_code == 0

    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-svc", "--json",
              "--wait", env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["remote"] == "svc" and rec["owner"] == "carol" and rec["status"] == "running", rec
    # a sibling container on the host's engine, made by the service's engine client
    (c,) = engine.containers(labels=[f"cubbi.session.name={prefix}-svc"])
    assert c["Labels"].get("cubbi.owner") == "carol", c["Labels"]
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*", env=env)
    assert ls.exit_code == 0 and [x["id"] for x in ls.json()] == [rec["id"]], ls
    ex = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 4",
               input="through the image\n", env=env)
    assert (ex.exit_code, ex.stdout, ex.stderr) == (4, "THROUGH THE IMAGE\n", "err\n"), ex
    wrong = cubbi("cubbi-ls", env={**env, "CUBBI_REMOTE_TOKEN": "cubbi_x_y"})
    assert wrong.exit_code == 5, wrong
    c = cubbi("cubbi-close", rec["id"], env=env)
    assert c.exit_code == 0, c
    assert cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", env=env).stdout == ""
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-svc"])


def test_the_service_image_is_small_and_keeps_no_build_leftovers(engine, service_image):
    info = engine.inspect_image(service_image["tag"])
    cfg = info["Config"]
    assert cfg["User"] == "cubbi" and "3000/tcp" in cfg["ExposedPorts"], cfg
    assert "/var/lib/cubbi" in (cfg.get("Volumes") or {}), cfg
    # the base (~117 MB) + python3 + the venv: about 215 MB
    assert info["Size"] < 300 * 1024 * 1024, info["Size"]
    run = subprocess.run(["docker", "run", "--rm", "--entrypoint", "sh", service_image["tag"], "-c",
                          "test ! -e /src && test ! -e /opt/cubbi/bin/pip && "
                          "test -s /opt/cubbi/share/man/man1/cubbi-server.1 && "
                          "cubbi-server --help"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "cubbi-server" in run.stdout, run


# -- docker-compose.yml ------------------------------------------------------------------
def test_docker_compose_file_is_valid_for_docker_compose(tmp_path):
    compose = shutil.which("docker-compose")
    if not compose:
        pytest.fail("docker-compose is needed to check docker-compose.yml: "
                    "apt-get install docker-compose (./install --dev does)")
    env = dict(os.environ, PROJECT_ENCRYPTION_KEY="k" * 44, DOCKER_GID="105")
    env.pop("DOCKER_HOST", None)
    ok = subprocess.run([compose, "-f", os.path.join(ROOT, "docker-compose.yml"), "config"],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0, ok.stderr
    import yaml

    svc = yaml.safe_load(ok.stdout)["services"]["cubbi-service"]
    assert svc["build"]["context"] == ROOT
    assert svc["build"]["args"] == {"BASE_IMAGE": "debian:bookworm-slim"}, svc["build"]
    assert "/var/run/docker.sock:/var/run/docker.sock:rw" in svc["volumes"]
    assert [str(g) for g in svc["group_add"]] == ["105"], svc
    # published on loopback only by default: the API is plain HTTP
    assert svc["ports"] == ["127.0.0.1:3000:3000/tcp"], svc["ports"]
    offline = subprocess.run([compose, "-f", os.path.join(ROOT, "docker-compose.yml"), "config"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env=dict(env, BASE_IMAGE="cubbi/base-os:bookworm"))
    assert "BASE_IMAGE: cubbi/base-os:bookworm" in offline.stdout, offline
    # the variables the file needs are asked for by name, not silently empty
    for var in ("PROJECT_ENCRYPTION_KEY", "DOCKER_GID"):
        bad = subprocess.run([compose, "-f", os.path.join(ROOT, "docker-compose.yml"), "config"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env={k: v for k, v in env.items() if k != var})
        assert bad.returncode != 0 and var in bad.stderr, (var, bad.stderr)

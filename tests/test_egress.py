"""Egress allowlists and --no-network (issue 15), on the real engine.

Two web servers in containers stand in for two internet hosts, web1 and
web2, each reachable by its own name on an outward test network (the
session network the config names).  A session allowed only web1 reaches it
over HTTP and over HTTPS through CONNECT (a self-signed certificate the
session trusts), and nothing else: not web2 by name or by IP, no name
resolution, no UDP; what its proxy refused shows in cubbi-logs --egress.
Then the same through a real cubbi-server whose policy.allow_hosts bounds
the list.  The unit tests at the top need no engine."""

import hashlib
import os
import secrets
import subprocess

import pytest

from conftest import one_line_error
from serverproc import Client, ServerProcess

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "egress")
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


# -- without the engine ----------------------------------------------------------
def test_allow_host_entries_are_checked():
    from cubbi_tools.errors import UsageError
    from cubbi_tools.validate import allow_covers, allow_hosts, parse_allow_host

    assert parse_allow_host("API.example.com:8443") == ("api.example.com", 8443)
    assert parse_allow_host("*.example.com") == ("*.example.com", None)
    assert allow_hosts(["a.io", "a.io", "b.io:80"]) == ["a.io", "b.io:80"]
    for bad in ("", "http://a.io", "a.io:0", "a.io:70000", "a..io", "-a.io", "*.com", "a.io:",
                "a b", "[::1]"):
        with pytest.raises(UsageError):
            parse_allow_host(bad)
    assert allow_covers("*.example.com", "api.example.com:443")
    assert allow_covers("example.com", "example.com:80")
    assert not allow_covers("example.com:443", "example.com")  # 80 too
    assert not allow_covers("*.example.com", "example.com")
    assert allow_covers("*.example.com", "*.example.com")  # the policy's own entry
    assert allow_covers("*.example.com", "*.a.example.com")
    assert not allow_covers("*.a.example.com", "*.example.com")
    assert not allow_covers("example.com", "evil-example.com")


def test_filter_rules_match_only_the_allowed_urls():
    import re

    from cubbi_tools.egress import filter_rules

    rules = [re.compile(r, re.I) for r in filter_rules(["web1", "api.io:8443",
                                                       "*.pkg.org"]).split()]

    def allowed(url):
        return any(r.search(url) for r in rules)

    for url in ("http://web1/", "http://web1:80/x", "web1:443", "api.io:8443",
                "http://api.io:8443/v1", "a.pkg.org:443", "http://b.a.pkg.org/"):
        assert allowed(url), url
    for url in ("http://web2/", "web1:22", "http://web1:8080/", "http://web1.evil.io/",
                "http://web1@evil.io/", "api.io:443", "pkg.org:443", "http://xpkg.org/",
                "http://10.0.0.1/", "web1x:443", "evil.io:443#web1:443"):
        assert not allowed(url), url


def test_refusals_are_read_from_tinyproxy_lines():
    from cubbi_tools.egress import parse_refusal

    assert parse_refusal('NOTICE    Nov 30 16:01:50.920 [1]: Proxying refused on filtered '
                         'url "http://web2/"') == {"host": "web2", "port": 80,
                                                    "url": "http://web2/"}
    assert parse_refusal('Proxying refused on filtered url "web2:443"') == {
        "host": "web2", "port": 443, "url": "web2:443"}
    assert parse_refusal('Proxying refused on filtered url "http://10.1.2.3:8080/x"')["port"] \
        == 8080
    assert parse_refusal("CONNECT   Nov 30 16:01:50.907 [1]: Connect (file descriptor 5)") is None


@pytest.mark.parametrize("argv,words", [
    (["--allow-host", "web1", "--no-network"], ["exclude each other"]),
    (["--allow-host", "web1", "--network", "x"], ["--network", "--allow-host"]),
    (["--no-network", "-p", "8000"], ["--port", "--no-network"]),
    (["--allow-host", "web1", "--mcp", "x"], ["--mcp", "--allow-host"]),
    (["--allow-host", "http://web1/"], ["--allow-host", "HOST:PORT"]),
    (["--no-network", "--project", "https://git.example.com/a/b.git"],
     ["--project", "--no-network"]),
])
def test_create_refuses_what_would_bypass_the_allowlist(cubbi, argv, words):
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "x", *argv,
              env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    one_line_error(r, 2, *words)


def test_default_networks_are_left_out_of_a_fenced_session(cubbi):
    """defaults.networks (cubbi-config network add) joins plain sessions to
    a network; a fenced one is kept off it, not refused (only an explicit
    --network is): past the checks, the create goes on to the engine (4)."""
    r = cubbi("cubbi-config", "network", "add", "extra-net")
    assert r.exit_code == 0, r
    nowhere = {"DOCKER_HOST": "unix:///nonexistent.sock"}
    for argv in (["--allow-host", "web1"], ["--no-network"]):
        r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "x", *argv,
                  env=nowhere)
        one_line_error(r, 4, "Docker engine")
        r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "x", *argv,
                  "--network", "extra-net", env=nowhere)
        one_line_error(r, 2, "--network")


def test_config_default_allow_hosts(cubbi):
    r = cubbi("cubbi-config", "set", "defaults.allow_hosts", "a.io,b.io:8080")
    assert r.exit_code == 0, r
    r = cubbi("cubbi-config", "get", "defaults.allow_hosts", "--json")
    assert r.json()[0]["value"] == ["a.io", "b.io:8080"], r
    one_line_error(cubbi("cubbi-config", "set", "defaults.allow_hosts", "bad host"), 2,
                   "defaults.allow_hosts")


def test_policy_allow_hosts_only_narrows():
    from cubbi_tools.errors import Forbidden, UsageError
    from cubbi_tools.policy import Policy
    from cubbi_tools.validate import CreateRequest

    pol = Policy({"allow_hosts": ["*.example.com", "pypi.org:443"], "images":
                  {"any_local": True}})

    def apply(**kw):
        return pol.apply(CreateRequest(image="x", **kw).check(api=True), True, 0)

    assert apply(allow_hosts=["api.example.com"]).allow_within == pol.allow_hosts
    assert apply(allow_hosts=["pypi.org:443"])
    assert apply(no_network=True)
    for kw, word in (({}, "requires"), ({"allow_hosts": ["pypi.org"]}, "pypi.org"),
                     ({"allow_hosts": ["evil.io"]}, "evil.io")):
        with pytest.raises(Forbidden) as exc:
            apply(**kw)
        assert word in str(exc.value) and "policy.allow_hosts" in str(exc.value)
    assert Policy({}).allow_hosts is None
    with pytest.raises(UsageError):
        Policy({"allow_hosts": ["http://x"]})


# -- on the engine ---------------------------------------------------------------
def _docker(*args, check=True):
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    if check and r.returncode:
        pytest.fail(f"docker {' '.join(args)}: {r.stderr}")
    return r.stdout.strip()


@pytest.fixture(scope="module")
def world(engine, debian_image, tmp_path_factory):
    """The outward network egress-out-X with web1 and web2 on it, the tools
    image, a certificate for both names, the egress proxy image built once."""
    from cubbi_tools import egress
    from cubbi_tools.engine import LocalEngine

    tag = "egress-test/tools:" + hashlib.sha256(
        open(os.path.join(FIXTURE, "Dockerfile"), "rb").read()
        + debian_image.encode()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode:
        _docker("build", "-q", "--build-arg", f"BASE_IMAGE={debian_image}", "-t", tag,
                "-f", os.path.join(FIXTURE, "Dockerfile"), FIXTURE)
    local = LocalEngine(images={"base": debian_image, "ca_certs": [HOST_CA]})
    egress.proxy_image(local)
    certs = tmp_path_factory.mktemp("egress-certs")
    os.chmod(certs, 0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=web1", "-addext", "subjectAltName=DNS:web1,DNS:web2",
                    "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                   check=True, capture_output=True)
    os.chmod(certs / "key.pem", 0o644)  # the test's own throwaway key
    rid = secrets.token_hex(3)
    net = f"egress-out-{rid}"
    made = []
    try:
        _docker("network", "create", "--label", "egress-test=true", net)
        made.append(("network", net))
        ips = {}
        for host in ("web1", "web2"):
            name = f"egress-{host}-{rid}"
            _docker("run", "-d", "--name", name, "--network", net, "--network-alias", host,
                    "-v", f"{FIXTURE}:/fixture:ro", "-v", f"{certs}:/certs:ro", tag,
                    "python3", "-u", "/fixture/web.py", host, "/certs/cert.pem",
                    "/certs/key.pem")
            made.append(("container", name))
            for _, data in engine.logs(name, follow=True, timestamps=False,
                                       deadline=_deadline(30)):
                if b"ready" in data:
                    break
            ips[host] = _docker("inspect", "-f",
                                f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}',
                                name)
        yield {"net": net, "tools": tag, "certs": str(certs), "ips": ips, "rid": rid}
    finally:
        for kind, name in reversed(made):
            _docker(*(["rm", "-f"] if kind == "container" else ["network", "rm"]), name,
                    check=False)


def _deadline(seconds):
    import time

    return time.monotonic() + seconds


@pytest.fixture(scope="module")
def egress_cubbi(world, debian_image, tmp_path_factory):
    """cubbi with the outward test network as its session network."""
    from conftest import run

    cfg = tmp_path_factory.mktemp("egress-config")
    home = tmp_path_factory.mktemp("egress-home")
    (cfg / "config.yaml").write_text(
        f"docker:\n  network: {world['net']}\n"
        f"images:\n  base: {debian_image}\n  ca_cert: {HOST_CA}\n")

    def _run(*args, **kw):
        return run(list(args), env={"CUBBI_CONFIG_DIR": str(cfg), "CUBBI_HOME": str(home)},
                   **kw)
    return _run


def _egress_objects(engine):
    return ({c["Id"] for c in engine.containers(all=True, labels=["cubbi.egress=true"])},
            {n["Name"] for n in engine.get("/networks") if n["Name"].startswith("cubbi-egress-")})


def _leftovers(engine, sid):
    return ([c for c in engine.containers(all=True, labels=[f"cubbi.egress.session={sid}"])],
            [n for n in engine.get("/networks") if n["Name"] == f"cubbi-egress-{sid}"])


@pytest.fixture(scope="module")
def fenced(world, egress_cubbi, engine):
    """A session allowed only web1."""
    r = egress_cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--json",
                     "--image", world["tools"], "--name", f"egress-s-{world['rid']}",
                     "--allow-host", "web1", "-v", f"{world['certs']}:/certs:ro", timeout=300)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    yield rec
    egress_cubbi("cubbi-close", rec["id"])
    assert _leftovers(engine, rec["id"]) == ([], [])


def _in(egress_cubbi, rec, script):
    return egress_cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", script, timeout=120)


CURL = "curl -sS -m 10 --cacert /certs/cert.pem"


def test_allowed_host_over_http_and_https_connect(egress_cubbi, fenced, engine):
    r = _in(egress_cubbi, fenced, f"{CURL} http://web1/ && {CURL} https://web1/ && "
                                  "echo $HTTPS_PROXY $NO_PROXY")
    assert r.exit_code == 0, r
    assert r.stdout.splitlines() == ["hello from web1", "hello from web1",
                                     "http://cubbi-egress:3128 localhost,127.0.0.1,::1"]
    info = engine.get(f"/containers/{fenced['container_id']}/json")
    (net,) = info["NetworkSettings"]["Networks"]
    assert net == f"cubbi-egress-{fenced['id']}" and fenced["networks"] == [net]
    assert fenced["allow_hosts"] == ["web1"] and fenced["idle_timeout"] is None
    assert engine.get(f"/networks/{net}")["Internal"] is True
    # outside names are forwarded nowhere (CVE-2024-29018: a host's loopback resolver)
    assert info["HostConfig"]["Dns"] == ["192.0.2.1"]
    proxy = engine.get(f"/containers/cubbi-egress-{fenced['id']}/json")
    assert proxy["Config"]["User"] == "65534:65534"
    assert not any(w in e.upper() for e in proxy["Config"]["Env"] or []
                   for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))


def test_nothing_else_gets_out(egress_cubbi, fenced, world, engine):
    ip1, ip2 = world["ips"]["web1"], world["ips"]["web2"]
    direct = "curl -sS --connect-timeout 3 --noproxy '*'"
    gateway = engine.get(f"/networks/{fenced['networks'][0]}")["IPAM"]["Config"][0]["Gateway"]
    checks = {
        "web2 by name": f"{CURL} -o /dev/null -w '%{{http_code}}' http://web2/",
        "web2 over https": f"{CURL} https://web2/",
        "web2's IP through the proxy": f"{CURL} -o /dev/null -w '%{{http_code}}' http://{ip2}/",
        "web1's port 8080": f"{CURL} -o /dev/null -w '%{{http_code}}' http://web1:8080/",
        "web2's IP directly": f"{direct} http://{ip2}/",
        "web1's IP directly": f"{direct} http://{ip1}/",
        "web1 without the proxy": f"{direct} http://web1/",
        "the engine's host at the gateway": f"{direct} http://{gateway}:9/",
        "name resolution": "getent hosts web2 || getent hosts web1 || getent hosts debian.org",
    }
    for what, script in checks.items():
        r = _in(egress_cubbi, fenced, script)
        assert "hello from" not in r.stdout, (what, r)
        if "http_code" in script:  # the proxy answered, and refused
            assert r.stdout.strip() == "403", (what, r)
        else:
            assert r.exit_code != 0, (what, r)
            assert "refused" not in r.stderr.lower(), (what, r)  # nothing there answered
    # the proxy serves its session only, not the outward network's containers
    r = subprocess.run(["docker", "exec", f"egress-web2-{world['rid']}", "curl", "-sS", "-o",
                        "/dev/null", "-w", "%{http_code}", "-x",
                        f"http://cubbi-egress-{fenced['id']}:3128", "http://web1/"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout == "403", r
    # UDP: the session's datagram to web2 never arrives; web1's, sent after
    # it, does (the signal that the session's had its chance)
    udp = ("python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
           ".sendto(sys.argv[2].encode(), (sys.argv[1], 5353))' {} {}")
    r = _in(egress_cubbi, fenced, udp.format(ip2, "from-the-session"))
    _docker("exec", f"egress-web1-{world['rid']}", "sh", "-c", udp.format(ip2, "from-web1"))
    seen = b""
    for _, data in engine.logs(f"egress-web2-{world['rid']}", follow=True, timestamps=False,
                               deadline=_deadline(30)):
        seen += data
        if b"udp: from-web1" in seen:
            break
    assert b"udp: from-web1" in seen and b"from-the-session" not in seen, seen


def test_an_outside_name_lookup_fails_fast_inside_the_fence(egress_cubbi, fenced):
    """The engine's DNS does not answer outside names on an internal
    network: glibc would wait 4 x 5 s; the session's DnsOptions say 1 s, once."""
    r = _in(egress_cubbi, fenced, "s=$(date +%s%N); getent hosts example.org; "
                                  "echo rc=$? ms=$(( ($(date +%s%N) - s) / 1000000 ))")
    rc, ms = (w.split("=")[1] for w in r.stdout.split()[-2:])
    assert rc != "0" and int(ms) < 5000, r


def test_refused_requests_show_in_cubbi_logs_egress(egress_cubbi, fenced, world):
    ip2 = world["ips"]["web2"]
    r = _in(egress_cubbi, fenced, f"{CURL} http://web2/x; {CURL} https://web2/; "
                                  f"{CURL} http://{ip2}:8080/; {CURL} http://web1:8080/; "
                                  f"{CURL} http://web1/")
    assert "hello from web1" in r.stdout, r
    r = egress_cubbi("cubbi-logs", "--egress", "--json", fenced["id"])
    assert r.exit_code == 0, r
    got = [(x["host"], x["port"], x["url"]) for x in r.json()]
    for want in (("web2", 80, "http://web2/x"), ("web2", 443, "web2:443"),
                 (ip2, 8080, f"http://{ip2}:8080/")):
        assert want in got, (want, got)
    assert ("web1", 8080, "http://web1:8080/") in got  # the port, not the host, refused
    assert not any(h == "web1" and p in (80, 443) for h, p, _ in got), got
    assert all(x["session"] == fenced["id"] and x["time"].endswith("Z") for x in r.json())
    r = egress_cubbi("cubbi-logs", "--egress", fenced["id"])
    assert r.exit_code == 0 and f"refused web2:443 web2:443" in r.stdout, r


def test_egress_log_of_a_session_without_allowlist_and_no_network(egress_cubbi, world,
                                                                   busybox_image, engine):
    r = egress_cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--json",
                     "--image", busybox_image, "--name", f"egress-n-{world['rid']}",
                     "--no-network", "--allow-host", "ignored.io", timeout=120)
    one_line_error(r, 2, "exclude each other")
    r = egress_cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--json",
                     "--image", busybox_image, "--name", f"egress-n-{world['rid']}",
                     "--no-network", timeout=120)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    try:
        info = engine.get(f"/containers/{rec['container_id']}/json")
        assert info["HostConfig"]["NetworkMode"] == "none"
        r = egress_cubbi("cubbi-connect", rec["id"], "--", "cat", "/proc/net/dev")
        assert r.exit_code == 0, r  # exec works without a network
        assert [ln.split(":")[0].strip() for ln in r.stdout.splitlines()[2:]] == ["lo"], r
        r = egress_cubbi("cubbi-logs", "--egress", rec["id"])
        one_line_error(r, 3, "no egress allowlist")
    finally:
        egress_cubbi("cubbi-close", rec["id"])


# -- through a real cubbi-server -------------------------------------------------
@pytest.fixture(scope="module")
def policed_egress(world, tmp_path_factory):
    """A server whose policy.allow_hosts is web1 and *.example.com."""
    cfg = ("server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
           "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n"
           "policy:\n  images:\n    any_local: true\n"
           "  allow_hosts: [web1, '*.example.com']\n")
    srv = ServerProcess(str(tmp_path_factory.mktemp("egress-server")), config_text=cfg).start()
    srv.alice = Client(srv.url, srv.token("alice"))
    yield srv
    srv.stop()
    srv.cleanup()


def test_server_allowlist_only_narrows_the_policy(policed_egress, busybox_image, engine, cubbi):
    alice = policed_egress.alice
    remote = {"CUBBI_REMOTE_URL": policed_egress.url,
              "CUBBI_REMOTE_TOKEN": policed_egress.token("alice")}
    r = cubbi("cubbi-create", "--no-connect", "--image", busybox_image, "--allow-host", "web2",
              env=remote)
    one_line_error(r, 5, "policy.allow_hosts does not allow 'web2'")
    for body, word in (({}, "requires an egress allowlist"),
                       ({"allow_hosts": ["web2"]}, "'web2'"),
                       ({"allow_hosts": ["web1:8080"]}, "'web1:8080'"),
                       ({"allow_hosts": ["web1"], "networks": ["x"]}, "cannot be used")):
        st, out = alice.call("POST", "/sessions", dict(body, image=busybox_image))
        assert st in (400, 403) and word in out["error"], (body, st, out)
        assert (st == 403) == (body.get("networks") is None), (body, st, out)
    st, rec = alice.call("POST", "/sessions", {"image": busybox_image,
                                               "allow_hosts": ["web1", "api.example.com"]})
    assert st == 201, rec
    try:
        st, rec = alice.call("GET", f"/sessions/{rec['id']}?wait=60")
        assert st == 200 and rec["status"] == "running", rec
        (net,) = rec["networks"]
        assert net == f"cubbi-egress-{rec['id']}" and engine.get(f"/networks/{net}")["Internal"]
        # busybox wget honours http_proxy: the proxy refuses web2, and says so
        st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                             {"command": ["wget", "-q", "-O-", "http://web2/"]})
        assert st == 200 and out["exit_code"] != 0, out
        st, out = alice.call("GET", f"/sessions/{rec['id']}/egress")
        assert st == 200 and [(x["host"], x["port"]) for x in out["refused"]] == [("web2", 80)]
        r = cubbi("cubbi-logs", "--egress", "--json", rec["id"], env=remote)
        assert r.exit_code == 0 and r.json() == out["refused"], r
    finally:
        st, _ = alice.call("DELETE", f"/sessions/{rec['id']}")
        assert st == 200
    assert _leftovers(engine, rec["id"]) == ([], [])
    st, rec = alice.call("POST", "/sessions", {"image": busybox_image, "no_network": True})
    assert st == 201, rec
    alice.call("DELETE", f"/sessions/{rec['id']}")


def test_an_images_hosts_join_an_allowlist_within_the_policy(tmp_path):
    from cubbi_tools import imagedef
    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.errors import UsageError
    from cubbi_tools.validate import CreateRequest

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "cubbi_image.yaml").write_text("name: tool\nallow_hosts: [api.model.io, "
                                               "'cdn.io:8443']\n")
    meta = imagedef.load(str(tmp_path))
    assert meta["allow_hosts"] == ["api.model.io", "cdn.io:8443"]
    local = LocalEngine("unix:///nonexistent.sock")
    said = []
    req = CreateRequest(image="tool", allow_hosts=["pypi.org"])
    assert local._egress_hosts(req, meta, said.append) == ["pypi.org", "api.model.io",
                                                           "cdn.io:8443"]
    assert local._egress_hosts(CreateRequest(image="tool"), meta, said.append) == []
    req.allow_within = ["pypi.org", "*.model.io"]  # a service's policy.allow_hosts
    assert local._egress_hosts(req, meta, said.append) == ["pypi.org", "api.model.io"]
    assert said == ["warning: the image's allow_hosts entry cdn.io:8443 is outside "
                    "policy.allow_hosts; left out"]
    (tmp_path / "cubbi_image.yaml").write_text("name: tool\nallow_hosts: [http://x]\n")
    with pytest.raises(UsageError) as exc:
        imagedef.load(str(tmp_path))
    assert "allow_hosts" in str(exc.value)


def test_sweep_removes_a_proxy_and_network_whose_session_is_gone(world, engine):
    """cubbi-prune's (and the server's) orphan sweep, reaper.py, knows the
    proxy's labels: young ones are left (a create in flight makes its proxy
    beside its session), old ones go."""
    import time

    from cubbi_tools import egress, reaper
    from cubbi_tools.engine import LocalEngine

    local = LocalEngine()
    sid = "e" + secrets.token_hex(3) + "0"  # no such session
    try:
        egress.start(local, sid, ["web1"], world["net"]).wait()  # started, as in a create
        assert [o for o in reaper.orphans(local) if o["session"] == sid] == []  # young
        assert _leftovers(engine, sid) != ([], [])
        found = [o for o in reaper.orphans(local, now=time.time() + 3600) if o["session"] == sid]
        assert sorted(o["kind"] for o in found) == ["container", "network"]  # proxy, its net
        for o in found:  # the proxy first: then its networks have no container
            assert reaper.remove_orphan(engine, o), o
        assert _leftovers(engine, sid) == ([], [])
    finally:
        egress.stop(engine, sid)


def test_a_fenced_session_that_closes_itself_takes_its_proxy_and_network(
        world, egress_cubbi, busybox_image, engine, monkeypatch):
    """--idle-timeout: the engine removes the session; its proxy, watching
    it, ends and is removed too; the next create sweeps the network."""
    import time

    from cubbi_tools import reaper
    from cubbi_tools.dockerapi import APIError
    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.validate import CreateRequest

    r = egress_cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--json",
                     "--image", busybox_image, "--name", f"egress-i-{world['rid']}",
                     "--allow-host", "web1", "--idle-timeout", "5s", timeout=120)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    sid = rec["id"]
    assert rec["allow_hosts"] == ["web1"] and rec["idle_timeout"] == 5, rec
    try:
        for what in (rec["container_id"], f"cubbi-egress-{sid}"):  # the session, then its proxy
            try:
                engine.post(f"/containers/{what}/wait", params={"condition": "removed"},
                            timeout=60)
            except APIError as exc:
                assert exc.status == 404, exc  # gone already
        containers, nets = _leftovers(engine, sid)
        assert containers == [] and len(nets) == 1, (containers, nets)
        # the next create sweeps it (here as if its first minute were over; nothing
        # younger than it is touched)
        import calendar

        created = calendar.timegm(time.strptime(
            engine.get(f"/networks/cubbi-egress-{sid}")["Created"][:19], "%Y-%m-%dT%H:%M:%S"))
        monkeypatch.setattr(reaper, "GRACE_S", max(0, int(time.time() - created)))
        local = LocalEngine(network=world["net"])
        other = local.create(CreateRequest(image=busybox_image, name=f"egress-j-{world['rid']}"))
        local.close(other["id"])
        assert _leftovers(engine, sid) == ([], [])
    finally:
        from cubbi_tools import egress

        egress.stop(engine, sid)


def test_a_proxy_that_fails_to_start_fails_the_create_and_leaves_nothing(world, engine,
                                                                         busybox_image,
                                                                         monkeypatch):
    from cubbi_tools import egress
    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.errors import CubbiError
    from cubbi_tools.validate import CreateRequest

    monkeypatch.setattr(egress, "CONFIG", egress.CONFIG + "NoSuchSetting yes\n")
    name = f"egress-f-{world['rid']}"
    req = CreateRequest(image=busybox_image, name=name, allow_hosts=["web1"])
    before = _egress_objects(engine)
    with pytest.raises(CubbiError) as exc:
        LocalEngine(network=world["net"]).create(req)
    assert "the egress proxy failed to start: it exited" in str(exc.value)
    assert engine.containers(all=True, labels=[f"cubbi.session.name={name}"]) == []
    assert _egress_objects(engine) == before


@pytest.mark.parametrize("ask,networks,fenced", [
    ({"allow_hosts": ["web1"]}, ["cubbi-u-1"], False),
    ({"no_network": True}, ["cubbi-u-1"], False),
    ({"allow_hosts": ["web1"]}, ["cubbi-egress-ab12cd34"], True),
    ({"no_network": True}, ["none"], True),
    # swarm mode: alone on its own internal network (a service cannot use `none`)
    ({"no_network": True}, ["cubbi-egress-ab12cd34"], True),
    ({"no_network": True}, ["cubbi-egress-ffffffff"], False),
    ({"no_network": True}, ["cubbi-egress-ab12cd34", "cubbi-u-1"], False),
    ({}, ["cubbi-u-1"], True),
])
def test_a_service_that_ignores_the_fence_gets_its_session_closed(ask, networks, fenced):
    from cubbi_tools.errors import CubbiError
    from cubbi_tools.remote import RemoteService
    from cubbi_tools.validate import CreateRequest

    calls = []

    def request(method, path, params=None, body=None, **kw):
        calls.append((method, path))
        return {"id": "ab12cd34", "networks": networks}

    srv = RemoteService("old", "http://127.0.0.1:9")
    srv.request = request
    req = CreateRequest(image="x", **ask).check()
    if fenced:
        assert srv.create(req)["id"] == "ab12cd34" and calls == [("POST", "/sessions")]
    else:
        with pytest.raises(CubbiError) as exc:
            srv.create(req)
        assert "does not apply" in str(exc.value) and "was closed" in str(exc.value)
        assert calls == [("POST", "/sessions"), ("DELETE", "/sessions/ab12cd34")]

"""The service's policy (cubbi-service.yaml `policy:`) and the isolation of
users, through a real cubbi-server on the real engine, as two users would
try it: networks, images, labels, files, env keys, ports, limits, the
per-user cap, privileges, one network per user, names per user."""

import os
import subprocess
import threading

import pytest

from conftest import one_line
from serverproc import BIN, Client, ServerProcess, _env

BASE = ("server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
        "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n")
# the tests' busybox image is a local image: allowed here, refused by default
LOCAL = "policy:\n  images:\n    any_local: true\n"


@pytest.fixture(scope="module")
def policed(engine, tmp_path_factory):
    """A server with the default policy but for local images."""
    srv = ServerProcess(str(tmp_path_factory.mktemp("policed")), config_text=BASE + LOCAL).start()
    srv.alice = Client(srv.url, srv.token("alice"))
    srv.bob = Client(srv.url, srv.token("bob"))
    yield srv
    srv.stop()
    srv.cleanup()


# a TCP server on port 8000 that answers "secret", in the background; the
# exec returns once the socket listens (0x1F40 in state 0A of /proc/net/tcp)
LISTEN = ("nc -ll -p 8000 -e echo secret </dev/null >/dev/null 2>&1 & "
          "timeout 10 sh -c 'until grep -q \":1F40 00000000:0000 0A\" /proc/net/tcp; do :; done'; ")


def create(client, body, status=201):
    st, rec = client.call("POST", "/sessions", body)
    assert st == status, (st, rec)
    return rec


def ready(client, rec):
    st, rec = client.call("GET", f"/sessions/{rec['id']}?wait=60")
    assert st == 200 and rec["status"] == "running", rec
    return rec


def run(client, rec, *command):
    st, out = client.call("POST", f"/sessions/{rec['id']}/connect", {"command": list(command)})
    assert st == 200, out
    return out


def inspect(engine, rec):
    return engine.get(f"/containers/{rec['container_id']}/json")


def refused(client, body, status, message):
    st, err = client.call("POST", "/sessions", body)
    assert (st, err["error"]) == (status, message), (st, err)
    return err


# -- the policy is checked at start ----------------------------------------------
@pytest.mark.parametrize("policy, words", [
    ("  networks: bridge\n", ["policy.networks:", "list of network names"]),
    ("  ports:\n    bind: everywhere\n", ["policy.ports.bind:", "'everywhere'"]),
    ("  ports:\n    host_ports: 9000-8000\n", ["policy.ports.host_ports:", "9000-8000"]),
    ("  limits:\n    memory:\n      default: 16g\n", ["policy.limits.memory.default:", "8g"]),
    ("  limits:\n    cpus:\n      max: lots\n", ["policy.limits.cpus.max:"]),
    ("  max_session: 3\n", ["policy.max_session:", "unknown setting", "max_sessions"]),
    ("  sudo: true\n", ["policy.sudo:", "no_new_privileges: false"]),
    ("  user_traffic: yes please\n", ["policy.user_traffic:", "true or false"]),
    ("  logs:\n    max_size: huge\n", ["policy.logs.max_size:", "'huge'", "10m"]),
    ("  logs:\n    max_files: 0\n", ["policy.logs.max_files:", "1 or more"]),
    ("  user_networks:\n    pool: 10.213.0.1/16\n", ["policy.user_networks.pool:", "10.213.0.1/16"]),
    ("  user_networks:\n    size: 30\n", ["policy.user_networks.size:", "16", "29", "30"]),
])
def test_a_bad_policy_value_stops_the_server_with_one_line(tmp_path, policy, words):
    conf = tmp_path / "cubbi-service.yaml"
    conf.write_text(BASE + "policy:\n" + policy)
    r = subprocess.run([os.path.join(BIN, "cubbi-server"), "--config", str(conf), "--port", "0"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                       env=_env({"TEST_PROJECT_KEY": "k"}))
    assert r.returncode == 2, r
    one_line(r.stderr, *words)


# -- networks ------------------------------------------------------------------
def test_users_sessions_cannot_reach_each_other_on_the_network(policed, engine, busybox_image,
                                                               prefix):
    """Each user's sessions are on that user's own bridge, with
    inter-container traffic off: bob's session reaches neither of alice's
    sessions by address or name, nor does alice's second one (the policy's
    default), while alice's first answers itself."""
    alice, bob = policed.alice, policed.bob
    a1 = ready(alice, create(alice, {"image": busybox_image, "name": f"{prefix}-a1"}))
    a2 = ready(alice, create(alice, {"image": busybox_image, "name": f"{prefix}-a2"}))
    b1 = ready(bob, create(bob, {"image": busybox_image, "name": f"{prefix}-b1"}))
    info = {k: inspect(engine, r) for k, r in (("a1", a1), ("a2", a2), ("b1", b1))}
    nets = {k: i["HostConfig"]["NetworkMode"] for k, i in info.items()}
    assert nets["a1"] == nets["a2"] != nets["b1"], nets
    assert all(n.startswith("cubbi-u-") for n in nets.values()), nets
    for k, i in info.items():  # the user's network only: not cubbi-network, not the host's
        assert list(i["NetworkSettings"]["Networks"]) == [nets[k]], (k, i["NetworkSettings"])
    net = engine.get(f"/networks/{nets['a1']}")
    assert net["Options"]["com.docker.network.bridge.enable_icc"] == "false", net
    # the host side is cu-HASH, so one firewall rule (-i cu-+) keeps sessions off the host
    assert net["Options"]["com.docker.network.bridge.name"] == "cu-" + nets["a1"][8:], net
    assert subprocess.run(["ip", "link", "show", "cu-" + nets["a1"][8:]],
                          capture_output=True).returncode == 0
    assert net["Labels"]["cubbi.owner"] == "alice" and net["Labels"]["cubbi.served"], net
    assert {c["Name"] for c in net["Containers"].values()} == {
        info["a1"]["Name"].lstrip("/"), info["a2"]["Name"].lstrip("/")}, net["Containers"]

    ip = info["a1"]["NetworkSettings"]["Networks"][nets["a1"]]["IPAddress"]
    host = info["a1"]["Name"].lstrip("/")
    out = run(alice, a1, "sh", "-c", LISTEN + f"nc -w 5 {ip} 8000 </dev/null")
    assert out["stdout"] == "secret\n", out
    for client, rec in ((bob, b1), (alice, a2)):
        for target in (ip, host):
            out = run(client, rec, "nc", "-w", "3", target, "8000")
            assert out["exit_code"] != 0 and "secret" not in out["stdout"], (rec["name"], target, out)


def test_user_networks_take_small_subnets_from_the_policys_pool(policed, start_server, engine,
                                                               busybox_image, prefix):
    """Per-user bridges took the engine's default address pools (~30 users
    and no more, ATTACK-11 #10): each takes a /26 of 10.213.0.0/16 by
    default; a full pool is 429 naming it, and a user's last close frees
    the subnet."""
    import ipaddress

    def subnet(rec):
        net = inspect(engine, rec)["HostConfig"]["NetworkMode"]
        (conf,) = engine.get(f"/networks/{net}")["IPAM"]["Config"]
        return net, ipaddress.ip_network(conf["Subnet"])

    rec = create(policed.alice, {"image": busybox_image, "name": f"{prefix}-n0"})
    net = subnet(rec)[1]
    assert net.prefixlen == 26 and net.subnet_of(ipaddress.ip_network("10.213.0.0/16")), net
    srv = start_server(config_text=BASE + LOCAL + "  user_networks:\n    pool: 10.213.250.0/28\n"
                                                  "    size: 28\n")
    alice, bob = Client(srv.url, srv.token("alice")), Client(srv.url, srv.token("bob"))
    a1 = create(alice, {"image": busybox_image, "name": f"{prefix}-n1"})
    name, net = subnet(a1)
    assert str(net) == "10.213.250.0/28", net
    refused(bob, {"image": busybox_image, "name": f"{prefix}-n2"}, 429,
            "policy.user_networks.pool 10.213.250.0/28 has no free /28 left for another user's "
            "network; ask the operator to widen it")
    st, _ = alice.call("DELETE", f"/sessions/{a1['id']}")
    assert st == 200
    assert name not in {n["Name"] for n in engine.get("/networks")}  # gone with her last session
    b1 = create(bob, {"image": busybox_image, "name": f"{prefix}-n2"})
    assert str(subnet(b1)[1]) == "10.213.250.0/28"


def test_a_users_sessions_talk_when_the_policy_says_so(start_server, engine, busybox_image,
                                                       prefix):
    srv = start_server(config_text=BASE + LOCAL + "  user_traffic: true\n")
    alice = Client(srv.url, srv.token("alice"))
    a1 = ready(alice, create(alice, {"image": busybox_image, "name": f"{prefix}-a1"}))
    a2 = ready(alice, create(alice, {"image": busybox_image, "name": f"{prefix}-a2"}))
    host = inspect(engine, a1)["Name"].lstrip("/")
    run(alice, a1, "sh", "-c", LISTEN)
    out = run(alice, a2, "nc", "-w", "5", host, "8000")
    assert out["stdout"] == "secret\n", out


def test_a_network_outside_the_policy_is_refused_alike_whether_it_exists_or_not(
        policed, busybox_image, prefix, cubbi, engine):
    for net in ("bridge", "host", "cubbi-network", f"{prefix}-no-such-net"):
        refused(policed.bob, {"image": busybox_image, "name": f"{prefix}-n", "networks": [net]},
                403, f"policy.networks does not allow {net!r}")
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-n"])
    # the command line says the same, with exit 5 (forbidden)
    r = cubbi("cubbi-remote", "add", "pol", policed.url, "--token", "-",
              input=policed.token("carol"), env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    r = cubbi("cubbi-create", "--image", busybox_image, "--network", "bridge", "--no-connect",
              env={"CUBBI_REMOTE": "pol", "CUBBI_SECRETS": "file"})
    assert r.exit_code == 5, r
    one_line(r.stderr, "policy.networks does not allow 'bridge'")


def test_an_allowed_network_is_joined(start_server, engine, busybox_image, prefix):
    net = f"{prefix}-shared"
    engine.create_network(net, labels={"cubbi.network": "true"})
    try:
        srv = start_server(config_text=BASE + LOCAL + f"  networks: [{net}]\n")
        alice = Client(srv.url, srv.token("alice"))
        rec = create(alice, {"image": busybox_image, "name": f"{prefix}-j", "networks": [net]})
        assert net in inspect(engine, rec)["NetworkSettings"]["Networks"]
        engine.remove(rec["container_id"])
    finally:
        engine.remove_network(net)


# -- images ----------------------------------------------------------------------
def test_only_the_services_images_by_default(start_server, engine, busybox_image, prefix):
    """A local image not in the service's images: is refused as an unknown one
    is; listed, it is allowed."""
    srv = start_server(config_text=BASE)
    alice = Client(srv.url, srv.token("alice"))
    for image in (busybox_image, "someprivate/app:latest"):
        refused(alice, {"image": image, "name": f"{prefix}-i"}, 403,
                f"policy.images does not allow {image!r}: use an image the service lists "
                "(cubbi-image list)")
    srv2 = start_server(config_text=BASE + f"images:\n  - name: {busybox_image}\n")
    alice2 = Client(srv2.url, srv2.token("alice"))
    create(alice2, {"image": busybox_image, "name": f"{prefix}-i"})


# -- what a client may not choose ----------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("labels", {"traefik.enable": "true"}, '"labels": the service does not take labels from '
                                           "clients"),
    ("files", {"/cubbi/hooks/99-own.sh": ["touch /tmp/p", 0o755]},
     '"files": the service does not take files from clients'),
    ("env", {"X=1; touch /tmp/p; Y": "v"}, "\"env\": 'X=1; touch /tmp/p; Y' is not a valid "
                                           "variable name (letters, digits and '_', not "
                                           "starting with a digit)"),
    ("env", {"1X": "v"}, "\"env\": '1X' is not a valid variable name (letters, digits and '_', "
                         "not starting with a digit)"),
    # the session's own and what a shell or the loader acts on: CUBBI_UID=0 made root (ATTACK-11 #1)
    ("env", {"CUBBI_UID": "0", "CUBBI_GID": "0"},
     "\"env\": 'CUBBI_GID': CUBBI_* variables are set by cubbi itself"),
    ("env", {"PATH": "/tmp/evil:/bin"}, "\"env\": 'PATH': the service does not take variables "
                                        "that a shell or the dynamic loader acts on (PATH, LD_*, "
                                        "BASH_ENV, ENV, ...)"),
    ("env", {"LD_PRELOAD": "/tmp/x.so"}, "\"env\": 'LD_PRELOAD': the service does not take "
                                         "variables that a shell or the dynamic loader acts on "
                                         "(PATH, LD_*, BASH_ENV, ENV, ...)"),
    ("env", {"BASH_ENV": "/tmp/x"}, "\"env\": 'BASH_ENV': the service does not take variables "
                                    "that a shell or the dynamic loader acts on (PATH, LD_*, "
                                    "BASH_ENV, ENV, ...)"),
])
def test_labels_files_and_bad_env_keys_are_refused(policed, engine, busybox_image, prefix,
                                                   field, value, message):
    refused(policed.alice, {"image": busybox_image, "name": f"{prefix}-c", field: value},
            400, message)
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-c"])


def test_a_valid_env_key_still_goes_through(policed, engine, busybox_image, prefix):
    rec = ready(policed.alice, create(policed.alice, {"image": busybox_image, "name": f"{prefix}-e",
                                                      "env": {"MY_VAR_1": "a b; c"}}))
    out = run(policed.alice, rec, "sh", "-c", ". /cubbi/env; echo \"$MY_VAR_1\"")
    assert out["stdout"] == "a b; c\n", out


def test_an_unbuilt_definition_is_not_built_on_a_clients_request(start_server, engine, tmp_path,
                                                                 prefix):
    """Any user could make the service build any definition (minutes of CPU,
    downloads; ATTACK-11 #10): by default only built images start."""
    import shutil

    name = f"{prefix}-tool"
    conf_dir = tmp_path / "server-config"
    shutil.copytree(os.path.join(os.path.dirname(__file__), "fixtures", "images",
                                 "cubbi-test-tool"), conf_dir / "images" / name)
    yml = conf_dir / "images" / name / "cubbi_image.yaml"
    yml.write_text(yml.read_text().replace("cubbi-test-tool", name))
    srv = start_server(config_text=BASE + LOCAL, env={"CUBBI_CONFIG_DIR": str(conf_dir)})
    alice = Client(srv.url, srv.token("alice"))
    st, rec = alice.call("GET", f"/images/{name}")  # the service offers it, not built
    assert st == 200 and rec["built"] is False, rec
    try:
        refused(alice, {"image": name, "name": f"{prefix}-b"}, 403,
                f"policy.images.build is false: image {name!r} is not built on this service; "
                f"its operator can build it (cubbi-image build {name})")
        assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-b"])
        assert subprocess.run(["docker", "image", "inspect", f"cubbi/{name}:latest"],
                              capture_output=True).returncode != 0
    finally:  # built when the policy failed
        subprocess.run(["docker", "rmi", f"cubbi/{name}:latest"], capture_output=True)


# -- ports ------------------------------------------------------------------------
def test_ports_bind_range_and_count(policed, engine, busybox_image, prefix):
    alice = policed.alice
    body = {"image": busybox_image, "name": f"{prefix}-p"}
    for spec, ip in (("0.0.0.0:8080:8000", "0.0.0.0"), ("[::]:8080:8000", "::"),
                     ("10.1.2.3:8080:8000", "10.1.2.3")):
        refused(alice, {**body, "ports": [spec]}, 403,
                f"policy.ports.bind is 127.0.0.1: cannot publish on {ip}")
    for spec in ("80:8000", "127.0.0.1:1023:8000/udp"):
        port = spec.split(":")[-2]
        refused(alice, {**body, "ports": [spec]}, 403,
                f"policy.ports.host_ports is 1024-65535: host port {port} is outside it")
    refused(alice, {**body, "ports": [str(8000 + i) for i in range(6)]}, 403,
            "policy.ports.max is 5: 6 ports asked")
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-p"])
    rec = create(alice, {**body, "ports": ["8000", "127.0.0.1:0:8001", "8002/udp"]})
    bindings = inspect(engine, rec)["HostConfig"]["PortBindings"]
    assert {k: [b["HostIp"] for b in v] for k, v in bindings.items()} == {
        "8000/tcp": ["127.0.0.1"], "8001/tcp": ["127.0.0.1"], "8002/udp": ["127.0.0.1"]}, bindings


def test_a_named_host_port_is_the_policys_choice(policed, start_server, engine, busybox_image,
                                                 prefix):
    """A client that names a host port learned whether the host or another
    user holds it (ATTACK-11 #10): by default the engine picks, and a named
    one is refused before anything is asked of the engine."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        for port in (taken, 3900):  # taken by the host, or free: the same answer
            refused(policed.alice, {"image": busybox_image, "name": f"{prefix}-h",
                                    "ports": [f"127.0.0.1:{port}:8000"]}, 403,
                    "policy.ports.fixed_host_ports is false: give only the container port (8000) "
                    "and the service picks a free host port")
        srv = start_server(config_text=BASE + LOCAL + "  ports:\n    fixed_host_ports: true\n")
        alice = Client(srv.url, srv.token("alice"))
        st, err = alice.call("POST", "/sessions", {"image": busybox_image, "name": f"{prefix}-h",
                                                   "ports": [f"{taken}:8000"]})
        assert st >= 400 and "already in use" in err["error"], (st, err)
    finally:
        holder.close()
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-h"])


def test_a_host_port_range_and_another_bind_address(start_server, engine, busybox_image, prefix):
    srv = start_server(config_text=BASE + LOCAL + "  ports:\n    bind: 127.0.0.2\n"
                                                  "    host_ports: 41000-41009\n    max: 1\n")
    alice = Client(srv.url, srv.token("alice"))
    body = {"image": busybox_image, "name": f"{prefix}-r"}
    refused(alice, {**body, "ports": ["127.0.0.1:41000:80"]}, 403,
            "policy.ports.bind is 127.0.0.2: cannot publish on 127.0.0.1")
    refused(alice, {**body, "ports": ["41010:80"]}, 403,
            "policy.ports.host_ports is 41000-41009: host port 41010 is outside it")
    refused(alice, {**body, "ports": ["80", "81"]}, 403, "policy.ports.max is 1: 2 ports asked")
    rec = ready(alice, create(alice, {**body, "ports": ["80"]}))
    (bound,) = inspect(engine, rec)["NetworkSettings"]["Ports"]["80/tcp"]
    assert bound["HostIp"] == "127.0.0.2" and 41000 <= int(bound["HostPort"]) <= 41009, bound


# -- limits -------------------------------------------------------------------------
def test_limits_have_defaults_and_maxima(policed, engine, busybox_image, prefix):
    alice = policed.alice
    rec = create(alice, {"image": busybox_image, "name": f"{prefix}-l1"})
    hc = inspect(engine, rec)["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (2 * 1024 ** 3, 10 ** 9, 1024), hc
    body = {"image": busybox_image, "name": f"{prefix}-l2"}
    refused(alice, {**body, "memory": "9g"}, 403, "policy.limits.memory.max is 8g: 9g asked")
    refused(alice, {**body, "cpus": 4.5}, 403, "policy.limits.cpus.max is 4: 4.5 asked")
    refused(alice, {**body, "pids_limit": 8193}, 403, "policy.limits.pids.max is 8192: 8193 asked")
    rec = create(alice, {**body, "memory": "8g", "cpus": "0.5", "pids_limit": 100})
    hc = inspect(engine, rec)["HostConfig"]
    assert (hc["Memory"], hc["NanoCpus"], hc["PidsLimit"]) == (8 * 1024 ** 3, 5 * 10 ** 8, 100), hc


@pytest.mark.parametrize("field, value, message", [
    # 1e-10 was 0 NanoCpus, no limit at all; 0.001 a 502 with runc's host path (ATTACK-11 #3)
    ("cpus", 1e-10, "\"cpus\" 1e-10: expected a number of CPUs from 0.01 (e.g. 0.5 or 2)"),
    ("cpus", 0.001, "\"cpus\" 0.001: expected a number of CPUs from 0.01 (e.g. 0.5 or 2)"),
    ("cpus", "0", "\"cpus\" '0': expected a number of CPUs from 0.01 (e.g. 0.5 or 2)"),
    ("memory", "5m", "\"memory\": invalid memory size '5m': use e.g. 512m or 2g (6m at least)"),
    # the JSON field, not the command line's switch (ATTACK-11 #10)
    ("pids_limit", -1, "\"pids_limit\" -1: expected a number from 1 to 4194304"),
    ("ports", ["nohost:0:81"], "\"ports\": 'nohost' is not an IP address (use e.g. 127.0.0.1, "
                               "0.0.0.0, [::1] or localhost)"),
])
def test_limits_below_the_engines_floor_are_400_naming_the_field(policed, engine, busybox_image,
                                                                 prefix, field, value, message):
    refused(policed.alice, {"image": busybox_image, "name": f"{prefix}-f", field: value}, 400,
            message)
    assert not engine.containers(all=True, labels=[f"cubbi.session.name={prefix}-f"])


def test_the_smallest_cpu_share_is_a_real_limit(policed, engine, busybox_image, prefix):
    rec = ready(policed.alice, create(policed.alice, {"image": busybox_image,
                                                      "name": f"{prefix}-c", "cpus": 0.01}))
    assert inspect(engine, rec)["HostConfig"]["NanoCpus"] == 10 ** 7


def test_session_logs_are_rotated_as_the_policy_says(policed, start_server, engine,
                                                     busybox_image, prefix):
    """A session's log cannot fill the host's disk (ATTACK-11 #4): json-file
    with max-size/max-file, the policy's defaults or its own values."""
    rec = create(policed.alice, {"image": busybox_image, "name": f"{prefix}-g1"})
    assert inspect(engine, rec)["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    srv = start_server(config_text=BASE + LOCAL + "  logs:\n    max_size: 1m\n    max_files: 2\n")
    alice = Client(srv.url, srv.token("alice"))
    rec = ready(alice, create(alice, {"image": busybox_image, "name": f"{prefix}-g2"}))
    assert inspect(engine, rec)["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}


def test_sessions_per_user_cap_is_429_even_for_concurrent_creates(start_server, engine,
                                                                  busybox_image, prefix):
    from cubbi_tools.errors import TooMany, from_wire

    srv = start_server(config_text=BASE + LOCAL + "  max_sessions: 2\n")
    alice, bob = Client(srv.url, srv.token("alice")), Client(srv.url, srv.token("bob"))
    answers = []

    def one(i):
        answers.append(alice.call("POST", "/sessions",
                                  {"image": busybox_image, "name": f"{prefix}-c{i}"}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(st for st, _ in answers) == [201, 201, 429, 429, 429], answers
    err = next(body for st, body in answers if st == 429)
    assert err == {"error": "policy.max_sessions is 2 and you have as many sessions; close one "
                            "(cubbi-close) and try again", "kind": "too_many", "status": 429}, err
    exc = from_wire(err, 429)
    assert isinstance(exc, TooMany) and exc.code == 1
    create(bob, {"image": busybox_image, "name": f"{prefix}-bob"})  # another user's own cap
    made = [body for st, body in answers if st == 201]
    assert alice.call("DELETE", f"/sessions/{made[0]['id']}")[0] == 200
    create(alice, {"image": busybox_image, "name": f"{prefix}-again"})


# -- privileges ---------------------------------------------------------------------
def test_server_sessions_lack_net_raw_and_sudo_and_have_no_new_privs(policed, engine,
                                                                    busybox_image, prefix):
    rec = ready(policed.alice, create(policed.alice, {"image": busybox_image,
                                                      "name": f"{prefix}-priv"}))
    info = inspect(engine, rec)
    assert "NET_RAW" in info["HostConfig"]["CapDrop"], info["HostConfig"]
    assert "no-new-privileges" in info["HostConfig"]["SecurityOpt"], info["HostConfig"]
    assert "CUBBI_SUDO=0" in info["Config"]["Env"]
    status = run(policed.alice, rec, "cat", "/proc/self/status")["stdout"]
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1", status
    net_raw = 1 << 13
    assert not int(fields["CapBnd"], 16) & net_raw, status


# -- names per user -------------------------------------------------------------------
def test_a_name_clash_across_users_is_invisible(policed, engine, busybox_image, prefix):
    alice, bob = policed.alice, policed.bob
    name = f"{prefix}-prod"
    a = create(alice, {"image": busybox_image, "name": name})
    b = create(bob, {"image": busybox_image, "name": name})  # says nothing about alice's
    assert a["id"] != b["id"] and a["name"] == b["name"] == name
    names = {inspect(engine, r)["Name"] for r in (a, b)}
    assert len(names) == 2 and f"/cubbi-{name}" not in names, names
    for client, rec in ((alice, a), (bob, b)):
        st, got = client.call("GET", f"/sessions/{name}")
        assert st == 200 and got["id"] == rec["id"], got
    st, err = alice.call("POST", "/sessions", {"image": busybox_image, "name": name})
    assert st == 409 and name in err["error"], err  # the owner's own clash is told
    st, got = bob.call("DELETE", f"/sessions/{name}")
    assert st == 200 and got["id"] == b["id"]
    assert alice.call("GET", f"/sessions/{name}")[1]["id"] == a["id"]


def test_user_remove_removes_the_users_network(policed, engine, busybox_image, prefix):
    dave = Client(policed.url, policed.token("dave"))
    rec = create(dave, {"image": busybox_image, "name": f"{prefix}-d"})
    net = inspect(engine, rec)["HostConfig"]["NetworkMode"]
    r = subprocess.run([os.path.join(BIN, "cubbi-server"), "user", "remove", "dave", "--yes",
                        "--config", policed.config], capture_output=True, text=True,
                       env=policed.env, cwd=policed.workdir, timeout=60)
    assert r.returncode == 0, r
    assert net not in [n["Name"] for n in engine.get("/networks")]


# -- the documentation says what the code does ------------------------------------------
def _keys(node, where="policy"):
    if isinstance(node, dict) and node:
        return {k for key, v in node.items() for k in _keys(v, f"{where}.{key}")}
    return {where}


def test_the_example_config_holds_every_policy_key_with_its_default():
    import yaml

    from cubbi_tools.policy import DEFAULTS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "server", "cubbi-service.example.yaml")) as fh:
        example = yaml.safe_load(fh)
    assert example["policy"] == DEFAULTS
    from cubbi_tools.service import FORMAT_DOC

    missing = sorted(k for k in _keys(DEFAULTS) if k.rsplit(".", 1)[0] + "." not in FORMAT_DOC
                     and k not in FORMAT_DOC)
    assert missing == [], missing

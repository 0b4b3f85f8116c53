"""docker.mode: swarm without a swarm: the service config's swarm settings,
a session service's status from its task and node, the split of the init's
files into a config and secrets, and the half-closable TLS stream that
carries an exec's stdin EOF to a node's engine.  The swarm itself is
tests/swarm/ (tests/run --swarm)."""

import io
import json
import os
import socket
import ssl
import subprocess
import tarfile
import threading

import pytest

from cubbi_tools import service, swarm
from cubbi_tools.errors import UsageError
from cubbi_tools.validate import CreateRequest


def test_swarm_settings_default_to_engine_and_name_a_bad_mode():
    assert service.swarm_settings({}) is None
    assert service.swarm_settings({"mode": "engine"}) is None
    with pytest.raises(UsageError, match="docker.mode: 'k8s'"):
        service.swarm_settings({"mode": "k8s"})
    got = service.swarm_settings({"mode": "swarm", "registry": "r:5000",
                                  "nodes": {"tls": "/t", "port": 2377},
                                  "constraints": ["node.labels.cubbi==true"]})
    assert got["registry"] == "r:5000" and got["node_port"] == 2377 and got["tls"] == "/t"
    assert got["constraints"] == ["node.labels.cubbi==true"] and got["registry_auth"] == {}
    with pytest.raises(UsageError, match="needs docker.nodes.tls"):  # never in clear
        service.swarm_settings({"mode": "swarm", "registry": "r:5000"})
    auth = service.swarm_settings({"mode": "swarm", "nodes": {"tls": "/t"}, "registry": {
        "address": "r:5000", "username": "u", "password": "p"}})["registry_auth"]
    assert auth == {"username": "u", "password": "p", "serveraddress": "r:5000"}


def test_the_registry_password_may_come_from_the_secret_store(tmp_path, monkeypatch):
    from cubbi_tools import secrets
    from cubbi_tools.errors import CubbiError

    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(tmp_path / "cfg"))  # a store of its own
    monkeypatch.setenv("CUBBI_SECRETS", "file")
    secrets._store.clear()
    monkeypatch.setattr(secrets, "_store", {})  # and no cached one left behind

    conf = {"mode": "swarm", "nodes": {"tls": "/t"},
            "registry": {"address": "r:5000", "username": "u",
                                          "password": "secret:services.registry.password"}}
    with pytest.raises(CubbiError, match="services.registry.password.*not in"):
        service.swarm_settings(conf)
    secrets.put("services.registry.password", "from-the-store")
    assert service.swarm_settings(conf)["registry_auth"]["password"] == "from-the-store"


NODES = {"n1": {"ID": "n1", "Description": {"Hostname": "node-a"},
                "Status": {"State": "ready", "Addr": "10.0.0.1"}},
         "n2": {"ID": "n2", "Description": {"Hostname": "node-b"},
                "Status": {"State": "down", "Addr": "10.0.0.2"}}}


def entry(state, node="n1", err=None):
    svc = {"ID": "svc1", "CreatedAt": "2026-11-30T16:00:00.5Z",
           "Spec": {"Name": "cubbi-x", "Labels": {"cubbi.session": "true", "cubbi.id": "abcd"}}}
    task = {"ServiceID": "svc1", "NodeID": node, "CreatedAt": "1",
            "Status": {"State": state, "Err": err}}
    return swarm.service_entry(svc, [task], NODES)


@pytest.mark.parametrize("state,want", [("pending", ("running", None)),
                                        ("starting", ("running", None)),
                                        ("running", ("running", None)),
                                        ("complete", ("exited", None))])
def test_a_task_state_gives_the_entry_state(state, want):
    e = entry(state)
    assert (e["State"], e["cubbi_reason"]) == want
    assert e["cubbi_node"] == "node-a" and e["Id"] == "svc1" and e["Created"] > 0


def test_a_failed_task_and_a_node_that_left_say_why():
    e = entry("rejected", err="No such image: x")
    assert e["State"] == "dead" and e["cubbi_reason"] == "its task rejected: No such image: x"
    e = entry("running", node="n2")
    assert e["cubbi_reason"] == "its node node-b left the swarm (down)"
    e = entry("running", node="gone")
    assert e["cubbi_reason"] == "its node gone left the swarm (removed)"


def test_the_env_file_and_the_requests_files_are_secrets_the_rest_a_config():
    eng = swarm.SwarmEngine("tcp://127.0.0.1:1", registry="r:5000")  # never contacted
    req = CreateRequest(image="x", env={"TOKEN": "canary-1"},
                        files={"/home/cubbi/.ssh/id": ("key-canary", 0o600)}, uid=1000, gid=1000)
    boot, secrets = eng._parts(req, {})
    assert set(secrets) == {"/cubbi/env", "/home/cubbi/.ssh/id"}
    data, mode, uid, gid = secrets["/cubbi/env"]
    assert b"canary-1" in data and (mode, uid, gid) == (0o600, 1000, 1000)
    assert b"canary" not in boot
    names = tarfile.open(fileobj=io.BytesIO(boot)).getnames()
    assert "cubbi/init.sh" in [n.lstrip("/") for n in names]


def test_the_boot_script_copies_each_secret_with_its_owner_and_mode_then_runs_the_init():
    got = swarm.boot_script([("/run/secrets/cubbi-0", "/cubbi/project/to ken", 0o600, 1000, 1000)])
    assert got.startswith("set -e; tar -xf /cubbi-boot.tar -C /; umask 077; ")
    assert ("mkdir -p /cubbi/project; cat /run/secrets/cubbi-0 > '/cubbi/project/to ken'; "
            "chown 1000:1000 '/cubbi/project/to ken'; chmod 600 '/cubbi/project/to ken'") in got
    assert got.endswith("umask 022; exec /bin/sh /cubbi/init.sh")


def test_the_boot_script_fails_saying_so_where_no_new_privileges_is_not_set():
    """The node's engine sets no-new-privileges (the service spec cannot):
    the task checks its own flag before anything else.  Run here with the
    host's sh, without the flag and under setpriv --no-new-privs."""
    assert "NoNewPrivs" not in swarm.boot_script([])
    check = swarm.boot_script([], no_new_privileges=True).split("; tar -xf")[0] + "; echo passed"
    with open("/proc/self/status") as fh:  # this process's own (a CI runner may set it)
        own = "NoNewPrivs:\t1" in fh.read()
    bare = subprocess.run(["sh", "-c", check], capture_output=True, text=True)
    if own:
        assert bare.returncode == 0 and bare.stdout == "passed\n"
    else:
        assert bare.returncode == 1 and bare.stdout == ""
        assert bare.stderr == f"cubbi-init: failed: {swarm.NNP_MISSING}\n"
    nnp = subprocess.run(["setpriv", "--no-new-privs", "sh", "-c", check], capture_output=True,
                         text=True)
    assert (nnp.returncode, nnp.stdout, nnp.stderr) == (0, "passed\n", "")


def test_the_state_volume_is_per_owner_and_project():
    a = CreateRequest(image="x", project="github.com/o/r")
    a.owner, a.scope = "alice", ["cubbi.owner=alice", "cubbi.served=k1"]
    b = CreateRequest(image="y", project="github.com/o/r")
    b.owner, b.scope = "alice", ["cubbi.owner=alice", "cubbi.served=k1"]
    assert swarm.state_volume(a) == swarm.state_volume(b)
    b.scope = ["cubbi.owner=alice", "cubbi.served=k2"]  # another service's alice
    assert swarm.state_volume(a) != swarm.state_volume(b)
    b.scope, b.project = a.scope, "github.com/o/other"
    assert swarm.state_volume(a) != swarm.state_volume(b)


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = str(tmp_path_factory.mktemp("tls"))

    def ssl_(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True)

    ssl_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ca",
         "-keyout", f"{d}/ca-key.pem", "-out", f"{d}/ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("cert", "extendedKeyUsage=clientAuth")):
        with open(f"{d}/{name}.ext", "w") as fh:
            fh.write(ext + "\n")
        keyname = "key" if name == "cert" else "server-key"
        ssl_("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{d}/{keyname}.pem", "-out", f"{d}/{name}.csr")
        ssl_("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey",
             f"{d}/ca-key.pem", "-CAcreateserial", "-days", "1", "-extfile", f"{d}/{name}.ext",
             "-out", f"{d}/{name}.pem")
    return d


def test_tls_stream_half_closes_and_still_reads_the_answer(tls_pair):
    """The engine's side of an exec: read stdin until EOF (close_notify),
    then answer; ssl.SSLSocket's shutdown would lose the answer."""
    d = tls_pair
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(f"{d}/server.pem", f"{d}/server-key.pem")
    sctx.load_verify_locations(f"{d}/ca.pem")
    sctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS, as --tlsverify
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    seen = {}

    def serve():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except ssl.SSLZeroReturnError:
                    chunk = b""
                if not chunk:
                    break
                data += chunk
            seen["stdin"] = data
            tls.sendall(b"got %d bytes" % len(data))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    from cubbi_tools.dockerapi import TLSStream

    cctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    cctx.load_cert_chain(f"{d}/cert.pem", f"{d}/key.pem")
    stream = TLSStream(socket.create_connection(lsock.getsockname()), cctx, "127.0.0.1")
    payload = os.urandom(200_000)
    stream.sendall(payload)
    stream.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        chunk = stream.recv(65536)
        if not chunk:
            break
        answer += chunk
    stream.close()
    t.join(10)
    assert seen["stdin"] == payload
    assert answer == b"got 200000 bytes"


def test_a_requests_constraints_are_checked_against_policy_constraints():
    from cubbi_tools.errors import Forbidden
    from cubbi_tools.policy import Policy

    policy = Policy({"constraints": ["node.labels.zone"]})
    ok = CreateRequest(image="x", constraints=["node.labels.zone==eu"])
    policy.apply(ok, True, 0)
    assert ok.constraints == ["node.labels.zone==eu"]
    with pytest.raises(Forbidden, match="policy.constraints does not allow .*node.hostname"):
        policy.apply(CreateRequest(image="x", constraints=["node.hostname==a"]), True, 0)
    with pytest.raises(UsageError, match="expected KEY==VALUE"):
        policy.apply(CreateRequest(image="x", constraints=["node.labels.zone"]), True, 0)
    with pytest.raises(Forbidden):  # none allowed by default
        Policy({}).apply(CreateRequest(image="x", constraints=["node.labels.zone==eu"]), True, 0)
    with pytest.raises(UsageError, match="policy.constraints"):
        Policy({"constraints": "node.labels.zone"})


def test_a_disk_limit_is_refused_in_swarm_mode_not_dropped():
    """A service's container spec has no storage options: a --disk limit
    is refused before the engine (nowhere here) is asked anything."""
    eng = swarm.SwarmEngine("unix:///nonexistent/cubbi-swarm-unit.sock", network="n")
    with pytest.raises(UsageError, match="disk limits are not available in swarm mode"):
        eng.create(CreateRequest(image="x", disk="1g"))


def test_a_requested_network_must_span_the_swarm():
    """--network (where policy.networks allows it) joins the session to an
    overlay network; a node's own bridge, or none, is refused by name."""
    from cubbi_tools.dockerapi import APIError
    from cubbi_tools.errors import NotFound

    nets = {"shared": {"Name": "shared", "Scope": "swarm"},
            "bridge-only": {"Name": "bridge-only", "Scope": "local"}}

    class API:
        def network(self, name):
            if name not in nets:
                raise APIError(404, f"network {name} not found")
            return nets[name]

    eng = swarm.SwarmEngine("unix:///nonexistent/cubbi-swarm-unit.sock", network="n")
    eng.api = API()
    eng._check_swarm_network("shared")
    with pytest.raises(UsageError, match="'bridge-only' is local to one engine.*overlay"):
        eng._check_swarm_network("bridge-only")
    with pytest.raises(NotFound, match="no Docker network 'gone' on the swarm"):
        eng._check_swarm_network("gone")


def test_wait_ready_waits_again_when_the_nodes_container_had_not_started():
    """A task is "starting" just before its container starts: the node's
    log follow ends at once and its engine calls the container "created".
    The swarm's record (still initializing) decides: waited on again; a
    failure is still said with its reason."""
    from cubbi_tools.errors import CubbiError

    eng = swarm.SwarmEngine("unix:///nonexistent/cubbi-swarm-unit.sock", network="n")
    node_says = [CubbiError("session ab is created; create a new one with cubbi-create"), None]
    swarm_says = {"status": "initializing"}

    class Node:
        def wait_ready(self, rec, timeout):
            err = node_says.pop(0)
            if err:
                raise err
            swarm_says["status"] = "running"  # the init's marker came

    eng._on_node = lambda rec: (Node(), {**rec, "container_id": "c1"})
    eng.resolve = lambda ref: {"id": ref, "reason": None, **swarm_says}
    got = eng.wait_ready({"id": "ab", "status": "initializing", "container_id": "svc"}, timeout=5)
    assert got["status"] == "running" and node_says == []

    node_says[:] = [CubbiError("session ab failed: boom; see cubbi-logs ab")]
    eng.resolve = lambda ref: {"id": ref, "status": "failed", "reason": "boom"}
    with pytest.raises(CubbiError, match="session ab failed: boom"):
        eng.wait_ready({"id": "ab", "status": "initializing", "container_id": "svc"}, timeout=5)


def test_a_create_in_flight_is_never_an_orphan_in_swarm_mode():
    """A service with no task yet looks like a never-started container: the
    server's sweep (every minute) must not take it.  What it takes is a
    session whose init ended it when idle (engine mode's AutoRemove), which
    list() also hides and removes."""
    from cubbi_tools import session as S

    def entry(ident, task_state, idle="60"):
        return {"Id": ident, "Names": [f"/cubbi-{ident}"], "State": "exited",
                "Labels": {S.LABEL: "true", S.L_ID: ident, **({S.L_IDLE: idle} if idle else {})},
                "cubbi_task_state": task_state}

    entries = [entry("inflight", None), entry("pending", "pending"),
               entry("crashed", "failed"), entry("plain", "complete", idle=None),
               entry("idled", "complete")]
    removed = []

    class API:
        def containers(self, all=False, labels=(), status=None):
            return [e for e in entries if not [
                lab for lab in labels if lab.split("=")[0] not in e["Labels"]]]

        def remove(self, ident):
            removed.append(ident)

    eng = swarm.SwarmEngine("unix:///nonexistent/cubbi-swarm-unit.sock", network="n")
    eng.api = API()
    assert [e["Id"] for e in eng.unfinished()] == ["idled"]
    assert "idle" in eng.unfinished()[0]["cubbi_orphan_reason"]
    assert [swarm.closed_itself(e) for e in entries] == [False, False, False, False, True]


def test_mcp_configs_for_the_tool_are_secrets_and_mcp_json_is_in_the_config():
    """Some tool formats (claude-code) hold the servers' header values
    themselves: every file of /cubbi/mcp/ is a secret, as the env file is."""
    eng = swarm.SwarmEngine("tcp://127.0.0.1:1", registry="r:5000")  # never contacted
    servers = [("docs", {"kind": "remote", "url": "https://mcp.example.com/mcp",
                         "headers": {"Authorization": "Bearer canary-m1"}})]
    boot, secrets = eng._parts(CreateRequest(image="x", uid=1000, gid=1000),
                               {"mcp": {"format": "claude-code"}}, servers)
    assert "/cubbi/mcp/claude-code.fragment" in secrets and "/cubbi/env" in secrets
    assert b"canary-m1" in secrets["/cubbi/mcp/claude-code.fragment"][0]
    assert b"canary-m1" in secrets["/cubbi/env"][0]
    assert b"canary" not in boot
    names = [n.lstrip("/") for n in tarfile.open(fileobj=io.BytesIO(boot)).getnames()]
    assert "cubbi/mcp.json" in names


class FakeSwarm:
    """A SwarmEngine's surface that swarmmcp uses, recording what it makes:
    each service's task is running on node n2 at once; `others` are more
    services (e.g. a session's), `done` what was removed."""

    schedule_timeout = 5
    constraints = ["node.labels.cubbi==true"]

    def __init__(self):
        self.specs, self.parts, self.pushed, self.others, self.done = {}, {}, [], [], []
        self.api = self

    # the engine
    def push(self, ref):
        self.pushed.append(ref)
        return "r:5000/" + ref.split("/")[-1]

    def ensure_user_network(self, name, labels):
        pass

    def make_part(self, kind, name, data, part, labels=None):
        self.parts[name] = (kind, data, part)
        return "id-" + name

    def create_service(self, spec):
        self.specs[spec["Name"]] = spec
        return spec["Name"]

    # the manager's API, and a node's
    def get(self, path):
        from cubbi_tools.dockerapi import APIError

        name = path.rsplit("/", 1)[-1]
        if name not in self.specs:
            raise APIError(404, "no such service")
        return {"ID": name, "Spec": self.specs[name]}

    def services(self, labels=()):
        return [{"ID": k, "Spec": v} for k, v in self.specs.items()] + self.others

    def tasks(self, ids):
        return [{"ID": "t-" + i, "ServiceID": i, "NodeID": "n2", "CreatedAt": "1",
                 "Status": {"State": "running", "ContainerStatus": {"ContainerID": "c-" + i}}}
                for i in ids if i in self.specs]

    def nodes(self):
        return {"n2": {"ID": "n2", "Status": {"State": "ready", "Addr": "10.0.0.2"}}}

    def node_api(self, node):
        return self  # its delete() records what the node removed

    def inspect_image(self, ref):
        return {"Id": "sha256:1", "Config": {"Cmd": ["mcp-server-time"]}}

    def delete(self, path):
        self.done.append(path)
        self.specs.pop(path.rsplit("/", 1)[-1], None)

    def remove_parts(self, part):
        self.done.append(f"parts of {part}")

    def network(self, name):
        return {"Id": "net-id"}

    def remove_network(self, nid):
        self.done.append(f"network {nid}")


def test_a_container_mcp_server_is_two_services_on_one_node_its_env_a_secret(monkeypatch):
    from cubbi_tools import mcpserve, swarmmcp

    waited = []
    monkeypatch.setattr(mcpserve, "proxy_image", lambda engine, progress=None: "cubbi/mcp-proxy:1")
    monkeypatch.setattr(mcpserve, "wait_ready", lambda *a: waited.append(a))
    eng = FakeSwarm()
    servers = swarmmcp.SwarmServers(eng, ["cubbi.owner=alice"], owner="alice")
    st = servers.run("time", {"kind": "container", "image": "t/mcp-time:1", "command": None,
                              "env": {"API_TOKEN": "canary-m2"}})
    assert st["status"] == "running"
    n = mcpserve.names("time", ["cubbi.owner=alice"])
    server, proxy = eng.specs[n["server"]], eng.specs[n["proxy"]]
    assert "canary" not in json.dumps(eng.specs)  # spec, env, labels
    env_part = [d for k, d, _ in eng.parts.values() if b"API_TOKEN" in d]
    assert env_part == [b"API_TOKEN=canary-m2\n"]
    assert {k for k, _, _ in eng.parts.values()} == {"secrets"}
    assert {p for _, _, p in eng.parts.values()} == {n["proxy"]}  # removed with the services
    # the proxy on the server's node, both with the FIFOs' volume, on the server's network
    assert proxy["TaskTemplate"]["Placement"]["Constraints"] == [
        "node.labels.cubbi==true", "node.id==n2"]
    assert server["TaskTemplate"]["Placement"]["Constraints"] == ["node.labels.cubbi==true"]
    for spec in (server, proxy):
        (mount,) = spec["TaskTemplate"]["ContainerSpec"]["Mounts"]
        assert (mount["Source"], mount["Target"]) == (n["proxy"] + "-io", mcpserve.IO)
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        assert spec["EndpointSpec"] == {"Mode": "dnsrr"}
    assert proxy["TaskTemplate"]["Networks"] == [{"Target": n["network"],
                                                  "Aliases": ["cubbi-mcp-time"]}]
    assert eng.pushed == ["t/mcp-time:1", "cubbi/mcp-proxy:1"]
    assert server["TaskTemplate"]["ContainerSpec"]["Image"] == "r:5000/mcp-time:1"
    script = server["TaskTemplate"]["ContainerSpec"]["Command"][2]
    assert ". /run/secrets/cubbi-mcp-env" in script and "/run/secrets/cubbi-mcp-command" in script
    assert waited == [(eng, "time", "c-" + n["server"], "c-" + n["proxy"],
                       mcpserve.START_TIMEOUT)]
    # running: a second use starts nothing
    before = dict(eng.specs)
    assert servers.run("time", {"kind": "container", "image": "t/mcp-time:1"})["status"] == \
        "running"
    assert eng.specs == before


def test_stopping_a_swarm_mcp_server_takes_its_services_secrets_and_volume(monkeypatch):
    """Its network stays while a session's service names it (as on one
    engine, where the engine refuses): that session's close takes it."""
    from cubbi_tools import mcpserve, swarmmcp

    monkeypatch.setattr(mcpserve, "proxy_image", lambda engine, progress=None: "cubbi/mcp-proxy:1")
    monkeypatch.setattr(mcpserve, "wait_ready", lambda *a: None)
    eng = FakeSwarm()
    servers = swarmmcp.SwarmServers(eng, ["cubbi.owner=alice"], owner="alice")
    servers.run("time", {"kind": "container", "image": "t/mcp-time:1", "command": "x"})
    n = mcpserve.names("time", ["cubbi.owner=alice"])
    eng.others = [{"ID": "s1", "Spec": {"TaskTemplate": {"Networks": [{"Target": "net-id"}]}}}]
    assert servers.halt("time") is True
    assert eng.done == [f"/services/{n['proxy']}", f"/services/{n['server']}",
                        f"parts of {n['proxy']}", f"/volumes/{n['proxy']}-io"]
    assert servers.state("time")["status"] == "stopped"
    assert servers.halt("time") is False
    eng.others, eng.done = [], []
    assert servers.drop_network(n["network"]) is True and eng.done == ["network net-id"]


def test_sizes_in_refusals_read_as_memory_is_asked_for():
    assert [swarm._size(n) for n in (30 * 2 ** 30, 512 * 2 ** 20, 3 * 2 ** 29, 100)] == [
        "30g", "512m", "1.5g", "100b"]

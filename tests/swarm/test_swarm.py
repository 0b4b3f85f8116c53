"""cubbi-server on a three-node Docker Swarm (docker.mode: swarm): sessions
are Swarm services placed across the nodes, exec reaches the node that runs
one, secrets are Docker secrets, and faults say what happened.  The tests
share one swarm and one server and run in this order; the last one stops a
worker."""

import json
import os
import subprocess
import time

import pytest

from swarmharness import NODES

from serverproc import BIN, _env

CANARY = "swarm-canary-" + os.urandom(6).hex()


def wait_until(what, probe, timeout=120, show=None):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s" + (f"; {show()}" if show else ""))
        time.sleep(0.5)  # the swarm's state, polled with a deadline


def sessions(client):
    status, body = client.call("GET", "/sessions?all=1")
    assert status == 200, body
    return body["sessions"]


def cli(server, token, *argv, input=None):
    cfg = os.path.join(server.workdir, "client-config")
    os.makedirs(cfg, exist_ok=True)
    env = _env({"CUBBI_CONFIG_DIR": cfg, "CUBBI_REMOTE_URL": server.url,
                "CUBBI_REMOTE_TOKEN": token, "CUBBI_REMOTE": ""})
    env.pop("CUBBI_REMOTE")
    return subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], capture_output=True,
                          text=True, env=env, input=input, timeout=120)


class Events:
    """cubbi-events --json through the server, read as it goes (a thread
    puts each record on a queue)."""

    def __init__(self, server, token, *argv):
        import queue
        import threading

        cfg = os.path.join(server.workdir, "client-config")
        os.makedirs(cfg, exist_ok=True)
        env = _env({"CUBBI_CONFIG_DIR": cfg, "CUBBI_REMOTE_URL": server.url,
                    "CUBBI_REMOTE_TOKEN": token, "CUBBI_REMOTE": ""})
        env.pop("CUBBI_REMOTE")
        self.proc = subprocess.Popen([os.path.join(BIN, "cubbi-events"), "--json", *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.q, self.seen = queue.Queue(), []
        threading.Thread(target=lambda: [self.q.put(json.loads(line))
                                         for line in self.proc.stdout], daemon=True).start()

    def wait(self, what, pred, timeout=120):
        import queue

        deadline = time.monotonic() + timeout
        while not pred(self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                pytest.fail(f"events: {what} not within {timeout} s; saw "
                            f"{[(e['event'], e['name']) for e in self.seen]}; "
                            f"exit {self.proc.poll()}")
            try:
                self.seen.append(self.q.get(timeout=min(left, 1)))
            except queue.Empty:
                pass
        return self.seen

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_the_harness_is_three_ready_nodes_and_a_registry(swarm):
    nodes = swarm.on(NODES[0], "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout
    assert sorted(nodes.split("\n")[:3]) == [f"{n} Ready" for n in NODES]
    # the registry is reachable from a worker, as the nodes pull from it
    got = swarm.on(NODES[1], "pull", f"{swarm.registry}/nothing-here:x", check=False)
    assert "not found" in (got.stderr + got.stdout).lower() or "unknown" in got.stderr.lower()


def test_twelve_sessions_spread_over_the_three_nodes(swarm, swarm_alice):
    made = []
    for i in range(12):
        status, rec = swarm_alice.call("POST", "/sessions",
                                       {"image": "cubbi-test/busybox:latest", "name": f"s{i}"})
        assert status in (200, 201), rec
        assert rec["node"] in NODES
        made.append(rec["id"])

    def all_running():
        recs = [r for r in sessions(swarm_alice) if r["id"] in made]
        return recs if all(r["status"] == "running" for r in recs) and len(recs) == 12 else None

    recs = wait_until("twelve running sessions", all_running, timeout=180)
    per_node = {n: sum(r["node"] == n for r in recs) for n in NODES}
    assert all(per_node[n] >= 2 for n in NODES), per_node
    # one service each: one replica, no restart, the policy's limits as limits
    # and reservations, NET_RAW dropped, on the user's encrypted overlay network
    spec = json.loads(swarm.on(NODES[0], "service", "inspect", recs[0]["container_id"]).stdout
                      )[0]["Spec"]
    task = spec["TaskTemplate"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Resources"]["Limits"]["MemoryBytes"] == 128 * 2 ** 20
    assert task["Resources"]["Reservations"]["NanoCPUs"] == 250_000_000
    assert "CAP_NET_RAW" in task["ContainerSpec"]["CapabilityDrop"]
    assert spec["Labels"]["cubbi.owner"] == "alice"
    (net,) = recs[0]["networks"]
    info = json.loads(swarm.on(NODES[0], "network", "inspect", net).stdout)[0]
    assert (info["Driver"], info["Attachable"], "encrypted" in info["Options"]) == (
        "overlay", True, True)
    for sid in made:
        status, body = swarm_alice.call("DELETE", f"/sessions/{sid}")
        assert status == 200, body
    assert not [r for r in sessions(swarm_alice) if r["id"] in made]


def test_connect_runs_a_command_on_a_worker_with_its_exit_status(swarm, swarm_server,
                                                                 swarm_alice):
    token = swarm_alice.token
    for i in range(6):  # spread placement: a worker has one within three
        status, rec = swarm_alice.call("POST", "/sessions",
                                       {"image": "cubbi-test/busybox:latest", "name": f"w{i}"})
        assert status in (200, 201), rec
        if rec["node"] != NODES[0]:
            break
    assert rec["node"] != NODES[0]
    got = cli(swarm_server, token, "cubbi-connect", rec["id"], "--", "sh", "-c",
              'read x; echo "out $x on $(hostname)"; echo err >&2; exit 7', input="in\n")
    assert got.returncode == 7, got.stderr
    assert got.stdout == f"out in on {rec['name']}\n"
    assert "err" in got.stderr
    # no-new-privileges (the policy's default) from the node's engine: for
    # the init, and for an exec, which does not descend from it
    got = cli(swarm_server, token, "cubbi-connect", rec["id"], "--", "grep", "NoNewPrivs",
              "/proc/1/status", "/proc/self/status")
    assert got.stdout.split() == ["/proc/1/status:NoNewPrivs:", "1",
                                  "/proc/self/status:NoNewPrivs:", "1"], got.stderr
    # the container is on that worker's engine, not the manager's
    assert rec["name"] in swarm.on(rec["node"], "ps", "--format", "{{.Names}}").stdout
    for r in sessions(swarm_alice):
        swarm_alice.call("DELETE", f"/sessions/{r['id']}")


def test_a_requests_constraint_places_it_where_the_policy_allows(swarm_server, swarm_alice):
    status, rec = swarm_alice.call("POST", "/sessions", {
        "image": "cubbi-test/busybox:latest", "constraints": [f"node.hostname=={NODES[1]}"]})
    assert status in (200, 201), rec
    assert rec["node"] == NODES[1]
    got = cli(swarm_server, swarm_alice.token, "cubbi-create", "--image",
              "cubbi-test/busybox:latest", "--constraint", f"node.hostname=={NODES[2]}",
              "--no-connect", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["node"] == NODES[2]
    assert swarm_alice.call("DELETE", f"/sessions/{json.loads(got.stdout)['id']}")[0] == 200
    status, body = swarm_alice.call("POST", "/sessions", {
        "image": "cubbi-test/busybox:latest", "constraints": ["node.role==manager"]})
    assert status == 403 and "policy.constraints" in body["error"], body
    assert swarm_alice.call("DELETE", f"/sessions/{rec['id']}")[0] == 200


def test_the_env_is_a_docker_secret_found_in_no_inspect_log_or_json(swarm, swarm_server,
                                                                    swarm_alice):
    status, rec = swarm_alice.call("POST", "/sessions", {"image": "cubbi-test/busybox:latest",
                                                         "env": {"CANARY": CANARY}})
    assert status in (200, 201), rec
    wait_until("the session ready", lambda: [r for r in sessions(swarm_alice)
                                             if r["id"] == rec["id"] and r["status"] == "running"])
    token = swarm_alice.token
    got = cli(swarm_server, token, "cubbi-connect", rec["id"], "--", "sh", "-c",
              'echo "$CANARY"; stat -c "%a %u" /cubbi/env')
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"{CANARY}\n600 1000\n"
    # the service's logs have the task once its health check passed (15 s)
    logs = wait_until("the service's logs", lambda: (lambda p: p if "cubbi-init: ready" in (
        p.stdout + p.stderr) else None)(swarm.on(NODES[0], "service", "logs",
                                                 rec["container_id"])), timeout=60)
    seen = [swarm.on(NODES[0], "service", "inspect", rec["container_id"]).stdout,
            logs.stdout + logs.stderr,
            swarm.on(rec["node"], "inspect", swarm.on(rec["node"], "ps", "-q").stdout.split()[0]
                     ).stdout,
            cli(swarm_server, token, "cubbi-ls", "--json", "--all").stdout,
            cli(swarm_server, token, "cubbi-logs", rec["id"]).stdout,
            json.dumps(sessions(swarm_alice))]
    assert rec["id"] in seen[0] and "cubbi-init: ready" in seen[1]  # the right things were read
    assert [i for i, s in enumerate(seen) if CANARY in s] == []
    secrets = swarm.on(NODES[0], "secret", "ls", "--filter", f"label=cubbi.part-of={rec['id']}",
                       "-q").stdout.split()
    assert secrets  # the env file is one
    status, _ = swarm_alice.call("DELETE", f"/sessions/{rec['id']}")
    assert status == 200
    left = swarm.on(NODES[0], "secret", "ls", "--filter", f"label=cubbi.part-of={rec['id']}",
                    "-q").stdout.split()
    assert left == []


def test_a_projects_tool_state_is_a_named_volume_per_user_and_project(swarm, swarm_alice):
    """The busybox image has no git, so the clone fails; the volume was made
    on the node when the task started, and is the same for the user's next
    session of that project."""
    url = "https://git.example.invalid/team/repo"
    names = []
    for _ in range(2):
        status, rec = swarm_alice.call("POST", "/sessions", {"image": "cubbi-test/busybox:latest",
                                                             "project": url})
        assert status in (200, 201), rec
        failed = wait_until("the clone to fail", lambda: [
            r for r in sessions(swarm_alice) if r["id"] == rec["id"] and r["status"] == "failed"])
        assert "git" in failed[0]["reason"], failed
        spec = json.loads(swarm.on(NODES[0], "service", "inspect", rec["container_id"]).stdout
                          )[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
        (mount,) = spec["Mounts"]
        assert mount["Type"] == "volume" and mount["Target"] == "/cubbi-config"
        names.append(mount["Source"])
        vols = swarm.on(rec["node"], "volume", "ls", "-q", "--filter", "label=cubbi.state=true")
        assert mount["Source"] in vols.stdout.split()
        assert swarm_alice.call("DELETE", f"/sessions/{rec['id']}")[0] == 200
    assert names[0] == names[1] and names[0].startswith("cubbi-state-")


def test_events_follow_sessions_on_every_node(swarm_server, swarm_alice):
    """cubbi-events in swarm mode: each session's container events come
    from the node that runs it, merged into one stream, as on one engine."""
    events = Events(swarm_server, swarm_alice.token)
    try:
        made = {}
        for node in NODES:
            status, rec = swarm_alice.call("POST", "/sessions", {
                "image": "cubbi-test/busybox:latest", "name": f"ev-{node}",
                "constraints": [f"node.hostname=={node}"]})
            assert status in (200, 201), rec
            assert rec["node"] == node
            made[rec["id"]] = rec

        def told(kind):
            return lambda seen: {e["id"] for e in seen if e["event"] == kind} >= set(made)

        events.wait("created, initializing and running on each node",
                    lambda seen: all(told(k)(seen) for k in
                                     ("created", "initializing", "running")))
        for sid in made:
            assert swarm_alice.call("DELETE", f"/sessions/{sid}")[0] == 200
        seen = events.wait("closed on each node", told("closed"))
        for sid, rec in made.items():
            mine = [e["event"] for e in seen if e["id"] == sid]
            assert mine[:2] == ["created", "initializing"] and mine[-1] == "closed", mine
            assert {e["name"] for e in seen if e["id"] == sid} == {rec["name"]}
            assert {e["owner"] for e in seen if e["id"] == sid} == {"alice"}
    finally:
        events.close()
    # a replay: what happened, then the end (--until in whole seconds: one
    # in the future, as the closes were less than a second ago)
    got = cli(swarm_server, swarm_alice.token, "cubbi-events", "--json", "--since", "10m",
              "--until", str(int(time.time()) + 2))
    assert got.returncode == 0, got.stderr
    replay = [json.loads(line) for line in got.stdout.splitlines()]
    assert {e["id"] for e in replay if e["event"] == "closed"} >= set(made), got.stdout[-2000:]


def test_a_session_unused_past_its_idle_timeout_closes_itself(swarm, swarm_alice):
    """The init ends the task; the service, its secrets and its config go,
    as engine mode's AutoRemove takes the container."""
    status, rec = swarm_alice.call("POST", "/sessions", {"image": "cubbi-test/busybox:latest",
                                                         "idle_timeout": "5s"})
    assert status in (200, 201), rec
    assert rec["idle_timeout"] == 5
    spec = json.loads(swarm.on(NODES[0], "service", "inspect", rec["container_id"]).stdout
                      )[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert "CUBBI_IDLE_TIMEOUT=5" in spec["Env"]
    wait_until("the idle session gone", lambda: rec["id"] not in
               [r["id"] for r in sessions(swarm_alice)], timeout=90)
    wait_until("its service, secrets and config removed", lambda: not any(
        swarm.on(NODES[0], kind, "ls", "-q", "--filter", f"label=cubbi.part-of={rec['id']}"
                 ).stdout.strip() for kind in ("secret", "config")) and rec["container_id"][:12]
        not in swarm.on(NODES[0], "service", "ls", "-q").stdout, timeout=60)


def test_an_allowlisted_session_reaches_its_hosts_and_nothing_else(swarm, swarm_server,
                                                                    swarm_alice, tools_image,
                                                                    egress_proxy_image):
    """--allow-host in swarm mode: the session alone on an internal overlay,
    its proxy a Swarm service on that and on the user's network, where two
    web servers stand in for two internet hosts."""
    token = swarm_alice.token
    # all on the manager: the user's network is an encrypted overlay, and
    # this machine's nested nodes pass no IPsec between them (README)
    here = [f"node.hostname=={NODES[0]}"]
    status, plain = swarm_alice.call("POST", "/sessions", {"image": tools_image,
                                                           "constraints": here})
    assert status in (200, 201), plain
    (outward,) = plain["networks"]  # the user's network: the proxy's way out
    webs = {}
    try:
        for web in ("web1", "web2"):
            swarm.on(NODES[0], "service", "create", "-d", "--no-resolve-image", "--name",
                     f"swt-{web}", "--network", f"name={outward},alias={web}",
                     "--constraint", "node.role==manager", "--restart-condition", "none",
                     # names resolve to the task: these nested nodes have no IPVS for a VIP
                     "--endpoint-mode", "dnsrr",
                     tools_image, "sh", "-c", f"mkdir -p /w && echo hello-{web} > "
                     "/w/index.html && cd /w && exec python3 -m http.server 80")
        for web in ("web1", "web2"):
            info = wait_until(f"{web} running", lambda w=web: (lambda p: p if "Running" in
                              p.stdout else None)(swarm.on(NODES[0], "service", "ps", f"swt-{w}",
                                                           "--format", "{{.CurrentState}}")))
            assert info
            (task,) = json.loads(swarm.on(NODES[0], "inspect", swarm.on(
                NODES[0], "service", "ps", "-q", f"swt-{web}").stdout.split()[0]).stdout)
            webs[web] = task["NetworksAttachments"][0]["Addresses"][0].split("/")[0]
        # the unfenced session reaches both: the stand-ins work
        got = cli(swarm_server, token, "cubbi-connect", plain["id"], "--", "curl", "-sS",
                  "-m", "5", "http://web2/")
        assert got.stdout == "hello-web2\n", got.stderr
        status, rec = swarm_alice.call("POST", "/sessions", {
            "image": tools_image, "allow_hosts": ["web1"], "constraints": here})
        assert status in (200, 201), rec
        assert rec["allow_hosts"] == ["web1"] and rec["networks"] == [f"cubbi-egress-{rec['id']}"]
        wait_until("the fenced session ready", lambda: [
            r for r in sessions(swarm_alice) if r["id"] == rec["id"] and r["status"] == "running"])

        def run(*argv):
            return cli(swarm_server, token, "cubbi-connect", rec["id"], "--", *argv)

        got = run("curl", "-sS", "-m", "10", "http://web1/")
        assert (got.returncode, got.stdout) == (0, "hello-web1\n"), got.stderr
        got = run("curl", "-fsS", "-m", "10", "http://web2/")  # 403 from the proxy
        assert got.returncode != 0 and "hello" not in got.stdout
        for target in ("http://web1/", f"http://{webs['web1']}/", f"http://{webs['web2']}/"):
            # around the proxy: no name resolves, no address routes
            got = run("curl", "-sS", "--noproxy", "*", "-m", "5", target)
            assert got.returncode != 0 and "hello" not in got.stdout, (target, got.stdout)
        got = run("getent", "hosts", "web2")
        assert got.returncode != 0 and webs["web2"] not in got.stdout
        logs = cli(swarm_server, token, "cubbi-logs", "--egress", "--json", rec["id"])
        assert logs.returncode == 0, logs.stderr
        refused = [json.loads(line) for line in logs.stdout.splitlines()]
        assert [r["host"] for r in refused] == ["web2"], logs.stdout
        spec = json.loads(swarm.on(NODES[0], "service", "inspect", rec["container_id"]).stdout
                          )[0]["Spec"]["TaskTemplate"]
        assert spec["ContainerSpec"]["DNSConfig"]["Nameservers"] == ["192.0.2.1"]
        net = json.loads(swarm.on(NODES[0], "network", "inspect", rec["networks"][0]).stdout)[0]
        assert (net["Driver"], net["Internal"]) == ("overlay", True)
        status, body = swarm_alice.call("DELETE", f"/sessions/{rec['id']}")
        assert status == 200, body
        wait_until("its proxy, network and configs removed", lambda: not swarm.on(
            NODES[0], "service", "ls", "-q", "--filter", f"name=cubbi-egress-{rec['id']}"
        ).stdout.strip() and swarm.on(NODES[0], "network", "inspect", rec["networks"][0],
                                      check=False).returncode != 0 and not swarm.on(
            NODES[0], "config", "ls", "-q", "--filter", f"label=cubbi.part-of={rec['id']}"
        ).stdout.strip(), timeout=60)
    finally:
        for web in ("web1", "web2"):
            swarm.on(NODES[0], "service", "rm", f"swt-{web}", check=False)
        swarm_alice.call("DELETE", f"/sessions/{plain['id']}")


def test_a_session_with_no_network_has_no_way_out(swarm, swarm_server, swarm_alice):
    got = cli(swarm_server, swarm_alice.token, "cubbi-create", "--image",
              "cubbi-test/busybox:latest", "--no-network", "--no-connect", "--json")
    assert got.returncode == 0, got.stderr
    rec = json.loads(got.stdout)
    wait_until("the session ready", lambda: [
        r for r in sessions(swarm_alice) if r["id"] == rec["id"] and r["status"] == "running"])
    # a Swarm service cannot use `none`: alone on an internal overlay, no route out
    (net,) = rec["networks"]
    info = json.loads(swarm.on(NODES[0], "network", "inspect", net).stdout)[0]
    assert (net, info["Driver"], info["Internal"]) == (f"cubbi-egress-{rec['id']}", "overlay",
                                                       True)
    got = cli(swarm_server, swarm_alice.token, "cubbi-connect", rec["id"], "--", "cat",
              "/proc/net/route")
    assert got.returncode == 0, got.stderr
    routes = [line.split()[1] for line in got.stdout.splitlines()[1:]]
    assert routes and "00000000" not in routes, got.stdout  # no default route
    assert swarm_alice.call("DELETE", f"/sessions/{rec['id']}")[0] == 200
    wait_until("its network removed", lambda: swarm.on(
        NODES[0], "network", "inspect", net, check=False).returncode != 0, timeout=60)


def test_a_session_too_large_for_any_node_is_refused(swarm_alice):
    status, body = swarm_alice.call("POST", "/sessions", {"image": "cubbi-test/busybox:latest",
                                                          "memory": "4096g"})
    assert 400 <= status < 500, body
    assert "does not fit on any node" in body["error"] and "4096g of memory" in body["error"], body
    assert not sessions(swarm_alice)


def test_a_stopped_worker_turns_its_sessions_failed(swarm, swarm_server, swarm_alice):
    events = Events(swarm_server, swarm_alice.token)
    made = []
    for i in range(6):
        status, rec = swarm_alice.call("POST", "/sessions",
                                       {"image": "cubbi-test/busybox:latest", "name": f"f{i}"})
        assert status in (200, 201), rec
        made.append(rec)
    ids = {r["id"] for r in made}
    wait_until("six running sessions", lambda: sum(
        r["status"] == "running" for r in sessions(swarm_alice) if r["id"] in ids) == 6,
        show=lambda: [(r["name"], r["node"], r["status"], r["reason"])
                      for r in sessions(swarm_alice)])
    victim = NODES[2]
    on_victim = [r["id"] for r in made if r["node"] == victim]
    assert on_victim, [r["node"] for r in made]
    # the stream told them running: it is open before the node goes
    events.wait("the six running", lambda seen: {
        e["id"] for e in seen if e["event"] == "running"} >= ids)
    swarm.stop_node(victim)
    try:
        seen = events.wait("a failed event for each session of the node", lambda seen: {
            e["id"] for e in seen if e["event"] == "failed"} >= set(on_victim))
    except BaseException:
        events.close()
        raise
    for e in seen:
        if e["event"] == "failed":
            assert e["id"] in on_victim and f"its node {victim} left the swarm" in e["reason"], e

    def failed():
        recs = {r["id"]: r for r in sessions(swarm_alice)}
        if all(recs[i]["status"] == "failed" for i in on_victim):
            return recs
        return None

    recs = wait_until(f"the sessions of {victim} failed", failed, timeout=120,
                      show=lambda: [(r["name"], r["node"], r["status"], r["reason"])
                                    for r in sessions(swarm_alice)])
    for sid in on_victim:
        assert f"its node {victim} left the swarm" in recs[sid]["reason"]
    others = [r["id"] for r in made if r["node"] != victim]
    assert all(recs[i]["status"] == "running" for i in others), recs
    # its logs went with the node: said in one line, not the manager's error as output
    got = cli(swarm_server, swarm_alice.token, "cubbi-logs", on_victim[0])
    assert got.returncode == 1 and got.stdout == "", got
    assert got.stderr.count("\n") == 1 and "went with its node" in got.stderr, got.stderr
    try:
        for r in made:  # closing works for both, and each close is told
            status, body = swarm_alice.call("DELETE", f"/sessions/{r['id']}")
            assert status == 200, body
        events.wait("a closed event for each", lambda seen: {
            e["id"] for e in seen if e["event"] == "closed"} >= ids)
    finally:
        events.close()


def test_a_session_on_a_node_without_no_new_privileges_fails_saying_so(swarm, swarm_alice):
    """The policy asks for no-new-privileges, which only the node's engine
    can give in this API: on a node whose dockerd lacks the flag the
    session fails with the reason, never runs without it."""
    node = NODES[1]
    swarm.loosen(node)
    status, rec = swarm_alice.call("POST", "/sessions", {
        "image": "cubbi-test/busybox:latest", "constraints": [f"node.hostname=={node}"]})
    assert status in (200, 201), rec
    assert rec["node"] == node
    failed = wait_until("the session failed", lambda: [
        r for r in sessions(swarm_alice) if r["id"] == rec["id"] and r["status"] == "failed"],
        show=lambda: [(r["name"], r["status"], r["reason"]) for r in sessions(swarm_alice)])
    assert "no-new-privileges is not set" in failed[0]["reason"], failed
    assert swarm_alice.call("DELETE", f"/sessions/{rec['id']}")[0] == 200

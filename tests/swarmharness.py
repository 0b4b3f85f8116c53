#!/usr/bin/env python3
"""A three-node Docker Swarm on this machine, for the swarm suite
(tests/swarm/, `tests/run --swarm`).

Three Docker-in-Docker nodes, swarm-node-1 (the manager) and swarm-node-2/3
(workers), from one node image built FROM the project's offline Debian base
(cubbi/base-os, `cubbi-image bootstrap-base`) with Debian's docker.io and
docker-registry; a fourth container of that image, swarm-registry, runs
Debian's registry (distribution) on port 5000, which every node trusts as an
insecure registry on the harness's own network (swarm-net).  `--privileged`
fails on these machines: the nodes get every capability but SYS_RESOURCE,
no seccomp or AppArmor profile, and the host's cgroup tree; dockerd runs with
the vfs storage driver (no overlay inside overlay), so images stay small,
and --no-new-privileges (every container and exec on a node gets it: the
service spec of Docker 20.10 cannot ask for it; the README's Scaling out).

Each node's dockerd also listens on tcp://NODE:2376 with mutual TLS
(--tlsverify): a CA made here (openssl) signs one server certificate per
node (its IP and name) and one client certificate, the service's.  That is
how the service reaches the manager, and how it execs into a session on
whichever node runs it (docker.nodes in cubbi-service.yaml).

Every object is named swarm-* (CUBBI_SWARM_PREFIX-* when set); down() removes them all, also after a
half-finished up().  As a script: `up` (prints the environment as JSON and
leaves the swarm running), `down`, and `serve COMMAND...` (up, a cubbi-server
in swarm mode on the manager, COMMAND run against it as tests/serverproc.py
runs the bats suite, down: the bats remote pass of `tests/run --swarm`;
it also puts the project tests' git servers on swarm-net and an overlay
cubbi-network on the swarm, and exports CUBBI_TEST_SWARM=1).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

NODE_IMAGE = "swarm-node:bookworm"
BASE_IMAGE = "cubbi/base-os:bookworm"
# CUBBI_SWARM_PREFIX=NAME names everything NAME-* instead of swarm-*: two
# swarms side by side on one machine (e.g. two worktrees' suites)
PREFIX = os.environ.get("CUBBI_SWARM_PREFIX") or "swarm"
NETWORK = f"{PREFIX}-net"
NODES = tuple(f"{PREFIX}-node-{i}" for i in (1, 2, 3))
REGISTRY = f"{PREFIX}-registry"
TLS_PORT = 2376
SHARED_NET = "cubbi-network"  # the bats project tests' sessions name it (--network)
GITSERVER_LABEL = "cubbi.test.gitserver"
LABEL = f"cubbi.swarm-harness={PREFIX}"
DIND_FLAGS = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
              "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
              "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    docker.io docker-registry iptables ca-certificates procps \\
 && rm -rf /var/lib/apt/lists/*
"""
# PID 1 of a node: wait for its certificates (written by the harness once the
# node's address is known), then become dockerd
# (a node restarted with the file /certs/loose runs without --no-new-privileges:
# Swarm.loosen, the check that a session there fails saying so)
NODE_INIT = """set -e
while [ ! -f /certs/ready ]; do sleep 0.1; done
nnp=--no-new-privileges
[ ! -f /certs/loose ] || nnp=
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid  # a restart's (loosen)
exec dockerd --storage-driver=vfs -H unix:///var/run/docker.sock \\
  -H tcp://0.0.0.0:2376 --tlsverify --tlscacert=/certs/ca.pem \\
  --tlscert=/certs/server-cert.pem --tlskey=/certs/server-key.pem \\
  --insecure-registry "$1" --iptables=true $nnp
"""
REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: 0.0.0.0:5000
"""


def run(*argv, check=True, input=None, timeout=600):
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def docker(*args, **kw):
    return run("docker", *args, **kw)


def wait_for(what, probe, timeout=120, interval=0.2):
    """probe() until it returns something true; RuntimeError past timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout} s")
        time.sleep(interval)  # polling an external state: no signal to wait on


def build_node_image():
    """The node image, built once (the base comes from bootstrap-base)."""
    if docker("image", "inspect", NODE_IMAGE, check=False).returncode == 0:
        return NODE_IMAGE
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        raise RuntimeError(f"the swarm suite needs {BASE_IMAGE}: run "
                           "sudo cubbi-image bootstrap-base first")
    ctx = tempfile.mkdtemp(prefix="swarm-ctx-")
    try:
        with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
            fh.write(DOCKERFILE)
        docker("build", "-q", "--label", LABEL, "-t", NODE_IMAGE, ctx, timeout=1800)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return NODE_IMAGE


def make_certs(d, nodes):
    """A CA, one server certificate per node {name: ip}, one client
    certificate (the service's): ca.pem, NAME/server-*.pem, client/*.pem."""
    def ssl(*args):
        run("openssl", *args)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=swarm-harness CA", "-keyout", f"{d}/ca-key.pem", "-out", f"{d}/ca.pem")
    for name, ip, ext in [(n, ip, f"subjectAltName=IP:{ip},DNS:{n}\nextendedKeyUsage=serverAuth")
                          for n, ip in nodes.items()] + [("client", None,
                                                          "extendedKeyUsage=clientAuth")]:
        sub = os.path.join(d, name)
        os.makedirs(sub, exist_ok=True)
        kind = "cert" if name == "client" else "server-cert"
        key = "key" if name == "client" else "server-key"
        with open(f"{sub}/ext.cnf", "w") as fh:
            fh.write(ext + "\n")
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{sub}/{key}.pem", "-out", f"{sub}/req.csr")
        ssl("x509", "-req", "-in", f"{sub}/req.csr", "-CA", f"{d}/ca.pem", "-CAkey",
            f"{d}/ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", f"{sub}/ext.cnf",
            "-out", f"{sub}/{kind}.pem")
        shutil.copy(f"{d}/ca.pem", f"{sub}/ca.pem")
        for f in os.listdir(sub):
            os.chmod(os.path.join(sub, f), 0o644 if f.endswith("cert.pem") or f == "ca.pem"
                     else 0o600)
    os.unlink(f"{d}/ca-key.pem")  # nothing more to sign


class Swarm:
    def __init__(self, workdir=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="swarm-harness-")
        self.ips = {}
        self.registry = None
        self.timings = {}

    # -- the engines' addresses ------------------------------------------
    @property
    def certs(self):
        return os.path.join(self.workdir, "certs", "client")

    def url(self, node):
        return f"tcp://{self.ips[node]}:{TLS_PORT}"

    def env(self, node=NODES[0]):
        """The environment for the docker CLI to talk to NODE over mutual TLS."""
        return {**os.environ, "DOCKER_HOST": self.url(node), "DOCKER_TLS_VERIFY": "1",
                "DOCKER_CERT_PATH": self.certs}

    def on(self, node, *args, check=True, input=None, timeout=600):
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, input=input,
                              env=self.env(node), timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:3])} on {node} failed: "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    # -- up and down -----------------------------------------------------
    def up(self):
        t0 = time.monotonic()
        self.down(quiet=True)  # debris of an earlier run
        build_node_image()
        self.timings["image"] = time.monotonic() - t0
        docker("network", "create", "--label", LABEL, NETWORK)
        certdir = os.path.join(self.workdir, "certs")
        shutil.rmtree(certdir, ignore_errors=True)  # a node starts once its own are ready
        os.makedirs(certdir)
        docker("run", "-d", "--name", REGISTRY, "--label", LABEL, "--network", NETWORK,
               "--entrypoint", "/bin/sh", NODE_IMAGE, "-c",
               f"printf '%s' '{REGISTRY_CONFIG}' > /tmp/registry.yml && "
               "exec docker-registry serve /tmp/registry.yml")
        self.registry = f"{self._ip(REGISTRY)}:5000"
        for node in NODES:
            os.makedirs(os.path.join(certdir, node), exist_ok=True)
            docker("run", "-d", "--name", node, "--hostname", node, "--label", LABEL,
                   "--network", NETWORK, *DIND_FLAGS,
                   "-v", f"{os.path.join(certdir, node)}:/certs:ro",
                   "--entrypoint", "/bin/sh", NODE_IMAGE, "-c", NODE_INIT, "node", self.registry)
            self.ips[node] = self._ip(node)
        make_certs(certdir, self.ips)
        for node in NODES:
            open(os.path.join(certdir, node, "ready"), "w").close()
        for node in NODES:
            wait_for(f"dockerd on {node}",
                     lambda n=node: self.on(n, "version", check=False).returncode == 0)
        self.timings["engines"] = time.monotonic() - t0
        mgr = NODES[0]
        self.on(mgr, "swarm", "init", "--advertise-addr", self.ips[mgr])
        token = self.on(mgr, "swarm", "join-token", "-q", "worker").stdout.strip()
        for node in NODES[1:]:
            self.on(node, "swarm", "join", "--token", token, f"{self.ips[mgr]}:2377")
        wait_for("three ready nodes", lambda: self.on(
            mgr, "node", "ls", "--format", "{{.Status}}").stdout.split().count("Ready") == 3)
        wait_for("the registry", lambda: _http_ok(self.registry))
        self.timings["up"] = time.monotonic() - t0
        return self

    def _ip(self, name):
        out = docker("inspect", "-f",
                     f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}', name)
        return out.stdout.strip()

    def load(self, ref, node=NODES[0]):
        """Copy image REF from the host's engine into NODE's."""
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True,
                              env=self.env(node))
        save.wait()
        if load.returncode or save.returncode:
            raise RuntimeError(f"loading {ref} into {node}: {load.stderr.decode()[-400:]}")

    def stop_node(self, node):
        docker("stop", "-t", "2", node)

    def loosen(self, node):
        """Restart NODE's engine without --no-new-privileges (NODE_INIT),
        and wait until the swarm has it ready again."""
        open(os.path.join(self.workdir, "certs", node, "loose"), "w").close()
        docker("restart", "-t", "2", node)
        if self._ip(node) != self.ips[node]:
            raise RuntimeError(f"{node} came back at another address")
        wait_for(f"dockerd on {node}", lambda: self.on(node, "version", check=False
                                                         ).returncode == 0)
        wait_for(f"{node} ready in the swarm", lambda: f"{node} Ready" in self.on(
            NODES[0], "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout)

    def down(self, quiet=False):
        names = [c for c in docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()]
        # git servers a bats run left on the swarm's network (serve)
        names += docker("ps", "-aq", "--filter", f"label={GITSERVER_LABEL}", "--filter",
                        f"network={NETWORK}").stdout.split()
        if names:
            docker("rm", "-f", "-v", *names, check=not quiet)
        if docker("network", "inspect", NETWORK, check=False).returncode == 0:
            docker("network", "rm", NETWORK, check=not quiet)
        if not quiet:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self):
        return {"workdir": self.workdir, "ips": self.ips, "registry": self.registry,
                "certs": self.certs, "manager": self.url(NODES[0]), "timings": self.timings}


def service_config(s, extra=""):
    """cubbi-service.yaml for a cubbi-server in swarm mode on S's manager."""
    return extra + f"""server:
  heartbeat: 1
state:
  database: server.db
projects:
  storage:
    key: ${{TEST_PROJECT_KEY}}
docker:
  mode: swarm
  socket: {s.url(NODES[0])}
  nodes:
    tls: {s.certs}
    port: {TLS_PORT}
  registry: {s.registry}
  schedule_timeout: 20
policy:
  images:
    any_local: true
    build: true
  # reservations are the limits: small ones, so that twelve fit on three
  # 2-CPU nodes; a maximum above any node, so that the swarm refuses, not the policy
  constraints: [node.hostname]   # a request may pick the node by name
  networks: [{SHARED_NET}]   # an overlay across the nodes (serve makes it)
  limits:
    cpus: {{default: 0.25, max: 64}}
    memory: {{default: 128m, max: 8192g}}
"""


def serve(argv):
    """Up, the busybox test image on the manager, a cubbi-server in swarm
    mode there (tests/serverproc.py's), ARGV run as serverproc runs the bats
    suite (remote `test`, CUBBI_REMOTE set); then everything down."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import serverproc

    sys.path.insert(0, os.path.join(here, "fixtures", "gitservers"))
    import gitservers

    s = Swarm()
    work = tempfile.mkdtemp(prefix="swarm-server-")
    server = None
    try:
        t0 = time.monotonic()
        s.up()
        s.load(os.environ.get("CUBBI_TEST_IMAGE") or "cubbi-test/busybox:latest")
        # the project tests: their session image (with git) on the manager,
        # where the service pushes it from; their git servers on the
        # swarm's network beside the registry (gitservers.py's
        # CUBBI_TEST_GITSERVERS_NETWORK), reached from a session through
        # its node; the overlay network those sessions name with --network
        client, _ = gitservers.build_images(gitservers.api())
        s.load(client)
        s.on(NODES[0], "network", "create", "-d", "overlay", "--attachable",
             "--label", LABEL, SHARED_NET)
        sys.stderr.write(f"swarmharness: swarm up in {time.monotonic() - t0:.1f} s\n")
        # sessions get this user's uid/gid, as serverproc's bats pass does
        server = serverproc.ServerProcess(work, config_text=service_config(
            s, f"sessions:\n  uid: {os.getuid()}\n  gid: {os.getgid()}\n")).start()
        # the bats suite's is_swarm: what swarm mode refuses on purpose (--port)
        os.environ.update({"CUBBI_TEST_SWARM": "1", "CUBBI_TEST_GITSERVERS_NETWORK": NETWORK})
        return serverproc._run(server, argv, None)
    finally:
        if server is not None:
            server.stop()
        s.down()
        shutil.rmtree(work, ignore_errors=True)


def _http_ok(addr):
    import http.client

    try:
        conn = http.client.HTTPConnection(*addr.split(":"), timeout=2)
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except OSError:
        return False


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    if cmd == "up":
        s = Swarm(sys.argv[2] if len(sys.argv) > 2 else None)
        try:
            s.up()
        except BaseException:
            s.down(quiet=True)
            raise
        print(json.dumps(s.describe(), indent=2))
    elif cmd == "down":
        Swarm(sys.argv[2] if len(sys.argv) > 2 else None).down()
    elif cmd == "serve" and len(sys.argv) > 2:
        sys.exit(serve(sys.argv[2:]))
    else:
        sys.exit("usage: swarmharness.py up [WORKDIR] | down [WORKDIR] | serve COMMAND...")

"""Container MCP servers on a Docker Swarm (docker.mode: swarm): what
mcpserve runs as two containers on one engine, run as two Swarm services,
with the same names, labels, scripts and readiness signal.

    cubbi-mcp-NAME[-HASH]-server   the server's IMAGE running its stdio
                                   command on two FIFOs in a volume
    cubbi-mcp-NAME[-HASH]          mcp-proxy (mcpserve.PROXY_COMMAND),
                                   alias cubbi-mcp-NAME on the network

- the FIFOs are in a local volume (cubbi-mcp-NAME[-HASH]-io), which exists
  on one node only: the server's service is placed first (the operator's
  docker.constraints), and the proxy's is then constrained to the node the
  scheduler chose for it (node.id==ID).  The volume is removed from that
  node (its engine, over the same mutual TLS as exec) with the services;
- the network is an overlay of its own (SwarmEngine.ensure_user_network:
  attachable, encrypted), joined by the two services and by each session
  that uses the server; both services answer by DNS round robin (no
  virtual IP, so no IPVS on the nodes);
- the server's environment (-e, secrets included) and its command are two
  Docker secrets, mounted for the server under /run/secrets and read by
  mcpserve.run_server there: never in the service's spec, env, labels or
  logs; removed with the services;
- images: the server's and the proxy's are pushed to docker.registry
  (SwarmEngine.push), as session images are;
- restart condition none: a server that exits shows as failed, and the
  next session (or cubbi-mcp start) that uses it starts it anew;
- readiness: "Uvicorn running on" in the proxy container's log, read on
  the node that runs it (mcpserve.wait_ready);
- lifetime as on one engine: a running server stays for later sessions of
  its user until cubbi-mcp stop or remove; its network goes with the last
  session that uses it once the server is stopped (SwarmEngine.close).
"""

import os
import time

from . import mcpserve
from .dockerapi import APIError
from .errors import CubbiError, NotFound

# Docker's task states of a task on its way to running, or running
LIVE = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
        "starting", "running")
ENV_FILE = "/run/secrets/cubbi-mcp-env"
COMMAND_FILE = "/run/secrets/cubbi-mcp-command"
PULL_TIMEOUT = 600  # a task's image pull on its node, before START_TIMEOUT counts
GONE_TIMEOUT = 30  # a removed service's tasks let go of its volume and network


def volume(name, scope=()):
    """The FIFO volume of server NAME (on the node that runs it)."""
    return mcpserve.names(name, scope)["proxy"] + "-io"


class SwarmServers(mcpserve.Servers):
    """mcpserve.Servers whose containers are a SwarmEngine's services."""

    # -- reading -------------------------------------------------------------
    def _service(self, sname):
        try:
            return self.engine.api.get(f"/services/{sname}")
        except APIError as exc:
            if exc.status == 404:
                return None
            raise

    def _task(self, service_id):
        tasks = self.engine.api.tasks([service_id])
        return max(tasks, key=lambda t: t.get("CreatedAt") or "") if tasks else None

    def _found(self, name):
        """{role: (service or None, its newest task or None)}."""
        n = mcpserve.names(name, self.scope)
        out = {}
        for role in ("server", "proxy"):
            svc = self._service(n[role])
            out[role] = (svc, self._task(svc["ID"]) if svc else None)
        return out

    def state(self, name):
        found = self._found(name)
        nodes = self.engine.api.nodes() if any(t for _, t in found.values()) else {}

        def one(svc, task):
            if svc is None:
                return None
            if task is None:
                return "running"  # just made: its task comes
            node = nodes.get(task.get("NodeID") or "")
            if task.get("NodeID") and (node is None or ((node.get("Status") or {}).get(
                    "State") in ("down", "disconnected"))):
                return "failed"
            return "running" if (task.get("Status") or {}).get("State") in LIVE else "failed"

        states = [one(*found[r]) for r in ("server", "proxy")]
        st = ("stopped" if states == [None, None] else
              "running" if states == ["running", "running"] else "failed")
        proxy, ptask = found["proxy"]
        labels = ((proxy or {}).get("Spec") or {}).get("Labels") or {}
        return {"name": name, "status": st,
                "started": ((ptask or {}).get("Status") or {}).get("Timestamp"),
                "digest": labels.get(mcpserve.L_DIGEST),
                "network": mcpserve.names(name, self.scope)["network"]}

    def log_frames(self, name, follow=False, tail=None, proxy=False):
        sname = mcpserve.names(name, self.scope)["proxy" if proxy else "server"]
        try:
            return self.engine.api.service_logs(sname, follow=follow, tail=tail,
                                                timestamps=False)
        except APIError as exc:
            if exc.status == 404:
                raise NotFound(f"MCP server {name} is not running; start it with "
                               f"cubbi-mcp start {name}") from None
            raise

    # -- stopping --------------------------------------------------------------
    def halt(self, name):
        """Remove the two services, the server's secrets and its volume; the
        network too when no session's service uses it."""
        api, n = self.engine.api, mcpserve.names(name, self.scope)
        removed, node_id = False, None
        for role in ("proxy", "server"):
            svc = self._service(n[role])
            if svc is None:
                continue
            task = self._task(svc["ID"])
            node_id = node_id or (task or {}).get("NodeID")
            try:
                api.delete(f"/services/{svc['ID']}")
                removed = True
            except APIError as exc:
                if exc.status != 404:
                    raise
        api.remove_parts(n["proxy"])
        if node_id:
            self._drop_volume(node_id, volume(name, self.scope))
        self.drop_network(n["network"])
        return removed

    def _drop_volume(self, node_id, vol):
        """Remove VOL from the node once the removed tasks' containers let
        go of it; a node that left keeps it (nothing there runs)."""
        node = self.engine.api.nodes().get(node_id)
        if node is None:
            return
        try:
            napi = self.engine.api.node_api(node)
        except CubbiError:
            return
        deadline = time.monotonic() + GONE_TIMEOUT
        while True:
            try:
                napi.delete(f"/volumes/{vol}")
                return
            except APIError as exc:
                if exc.status == 404:
                    return
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
            except CubbiError:
                return  # the node does not answer: nothing of it to clean now
            time.sleep(0.2)  # the container's removal on the node: no event for it here

    def drop_network(self, net):
        """Remove the overlay network NET unless a service (an MCP server's
        or a session's) still names it; a task that is going may hold it for
        a moment.  True when it is gone."""
        api = self.engine.api
        try:
            nid = api.network(net)["Id"]
        except APIError as exc:
            if exc.status == 404:
                return True
            raise
        for svc in api.services():
            nets = ((svc.get("Spec") or {}).get("TaskTemplate") or {}).get("Networks") or []
            if any(a.get("Target") in (net, nid) for a in nets):
                return False
        deadline = time.monotonic() + GONE_TIMEOUT
        while True:
            try:
                api.remove_network(nid)
                return True
            except APIError as exc:
                if exc.status == 404:
                    return True
                if time.monotonic() > deadline:
                    return False  # still attached: the next close or stop tries again
            time.sleep(0.3)  # the going task's endpoint: no event for it on the manager

    # -- starting --------------------------------------------------------------
    def run(self, name, meta, progress=None):
        with mcpserve.one_start(mcpserve.names(name, self.scope)["proxy"]):
            return self._start(name, meta, progress)

    def _start(self, name, meta, progress):
        st = self.state(name)
        if st["status"] == "running":
            return st
        if st["status"] == "failed":
            self.halt(name)
        engine, api = self.engine, self.engine.api
        n = mcpserve.names(name, self.scope)
        mcpserve.image_exists(api, meta)
        command = mcpserve.server_command(api, meta)
        proxy_tag = mcpserve.proxy_image(engine, progress)
        if progress:
            progress(f"starting MCP server {name} on the swarm")
        server_image, proxy_image = engine.push(meta["image"]), engine.push(proxy_tag)
        engine.ensure_user_network(n["network"], mcpserve.labels_of(
            name, "network", self.scope, self.owner))
        labels = mcpserve.labels_of(name, "server", self.scope, self.owner)
        labels[mcpserve.L_DIGEST] = mcpserve.digest(meta)
        plabels = dict(mcpserve.labels_of(name, "proxy", self.scope, self.owner),
                       **{mcpserve.L_DIGEST: labels[mcpserve.L_DIGEST]})
        try:
            secrets = []
            for path, what, data in (
                    (ENV_FILE, "env", mcpserve.env_file(meta.get("env")).encode()),
                    (COMMAND_FILE, "command", command.encode() + b"\n")):
                sname = f"{n['server']}-{what}-{os.urandom(4).hex()}"
                # a secret is never empty (the engine refuses one)
                ident = engine.make_part("secrets", sname, data or b"\n", n["proxy"], labels)
                # readable by the image's user, as the file mcpserve writes (0644)
                secrets.append({"File": {"Name": os.path.basename(path), "UID": "0",
                                         "GID": "0", "Mode": 0o444},
                                "SecretID": ident, "SecretName": sname})
            server = engine.create_service(self._spec(
                n["server"], server_image, labels,
                ["/bin/sh", "-c", mcpserve.run_server(ENV_FILE, COMMAND_FILE)],
                list(engine.constraints), n["network"], [], secrets))
            node_id = self._placed(server, name)
            proxy = engine.create_service(self._spec(
                n["proxy"], proxy_image, plabels, mcpserve.PROXY_COMMAND,
                [*engine.constraints, f"node.id=={node_id}"], n["network"], [n["host"]], []))
            napi, (server_cid, proxy_cid) = self._containers(name, (server, proxy))
            mcpserve.wait_ready(napi, name, server_cid, proxy_cid, mcpserve.START_TIMEOUT)
        except BaseException:
            self.halt(name)
            raise
        return self.state(name)

    def _spec(self, sname, image, labels, command, constraints, network, aliases, secrets):
        return {
            "Name": sname, "Labels": labels,
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": image, "Labels": labels, "Command": command, "Args": [],
                    "Secrets": secrets, "StopGracePeriod": 10 ** 9,
                    "Mounts": [{"Type": "volume", "Source": volume(labels[mcpserve.L_NAME],
                                                                   self.scope),
                                "Target": mcpserve.IO,
                                "VolumeOptions": {"Labels": {mcpserve.LABEL: "true"}}}]},
                "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
                "Placement": {"Constraints": constraints},
                "Networks": [{"Target": network, "Aliases": aliases}],
                "LogDriver": {"Name": "json-file",
                              "Options": {"max-size": "10m", "max-file": "3"}}},
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": "dnsrr"},
        }

    def _placed(self, service_id, name):
        """The node the scheduler chose for the server's task; CubbiError
        when it chooses none within docker.schedule_timeout."""
        deadline = time.monotonic() + self.engine.schedule_timeout
        err = None
        while time.monotonic() < deadline:
            task = self._task(service_id)
            st = (task or {}).get("Status") or {}
            if task and task.get("NodeID") and st.get("State") not in ("new", "pending"):
                return task["NodeID"]
            err = st.get("Err") or err
            time.sleep(0.2)  # the scheduler's decision: polled with a deadline
        raise CubbiError(f"MCP server {name} cannot be placed on any node of the swarm "
                         f"({err or 'no node was chosen'} after "
                         f"{self.engine.schedule_timeout:g} s); check docker.constraints")

    def _containers(self, name, service_ids):
        """(the node's API, (container id of each)) once both tasks run; a
        task that ends first fails the start with its container's last lines."""
        api = self.engine.api
        deadline = time.monotonic() + PULL_TIMEOUT
        while True:
            tasks = [self._task(s) for s in service_ids]
            ids = [((t or {}).get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")
                   for t in tasks]
            states = [((t or {}).get("Status") or {}).get("State") for t in tasks]
            ended = [t for t, s in zip(tasks, states) if s and s not in LIVE]
            if ended or (all(ids) and all(s == "running" for s in states)):
                node = api.nodes().get(tasks[0].get("NodeID") or "")
                napi = api.node_api(node)
                if not ended:
                    return napi, ids
                t = ended[0]
                lines = next((mcpserve.last_lines(napi, c) for c in ids if c), "") or \
                    (t.get("Status") or {}).get("Err") or "no output"
                raise CubbiError(f"MCP server {name} failed to start: it exited (its task "
                                 f"{(t.get('Status') or {}).get('State')}); its last log "
                                 f"lines: {lines}")
            if time.monotonic() > deadline:
                raise CubbiError(f"MCP server {name} failed to start: its tasks did not run "
                                 f"within {PULL_TIMEOUT} s (states: {', '.join(map(str, states))})")
            time.sleep(0.3)  # the node's pull and start: polled with a deadline

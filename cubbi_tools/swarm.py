"""SwarmEngine: a service's sessions on a Docker Swarm (docker.mode: swarm
in cubbi-service.yaml), the same interface.Backend as engine.LocalEngine.

(Over 500 lines: one class and the API it reads, the session's life as a
Swarm service: listing from tasks, create with its secrets, config and
placement, its egress fence, images pushed, exec and events on the task's
node.)

The service talks to a manager's engine.  A session is a Swarm service with
one replica and restart condition none, labelled as a session container is.
What LocalEngine reads from containers it reads here from services and
their tasks (SwarmAPI presents each session service as a container-list
entry whose Id is the service's id), so listing, names, the per-user cap
and closing are the same code:

- status: the task's state (before its container: initializing;
  starting, i.e. its health check, the init's ready file, has not passed:
  the init's ready/failed marker in the container's log on its node;
  running: running; complete: stopped; failed, rejected or on a node that
  is down or gone: failed with the reason); each record says which `node`
  runs it;
- logs: the service's logs (the manager gathers them from the node); those
  leave a task out until its health check passes, so a starting task's
  come from its container on the node;
- files: the init's files come as one Docker config (a tar the entrypoint
  unpacks), the secrets (the env file and the request's files, i.e. the
  project's credentials) as Docker secrets mounted 0600 for the session
  user under /run/secrets, copied by the entrypoint to where the init reads
  them (as engine mode's archive writes them: the init adds to /cubbi/env):
  never in the service's spec, env, labels or logs; both are removed with
  the session;
- tool state: a project's session mounts the named volume cubbi-state-HASH
  (of the owner and the project) at /cubbi-config, made on the node by the
  local driver;
- exec: the container is on the node that runs the task; the service
  reaches that node's engine over mutual TLS (docker.nodes.tls: a CA, the
  service's client certificate and key; the node's address from the
  swarm, port docker.nodes.port), never through an agent of its own;
- no-new-privileges: the node's engine's default (dockerd
  --no-new-privileges), which the task checks before anything else
  (boot_script): the service spec cannot ask for it before API 1.46;
- images: built or found on the manager, pushed to docker.registry, and
  pulled from there by the node that runs the task;
- events: every node's engine's, merged (events.follow on each, over the
  same mutual TLS as exec); a node that leaves: a `failed` event for each
  of its sessions, from the manager's node events;
- idle timeout: the init ends the task (complete); list() removes such a
  service as the engine's AutoRemove takes a container, and the orphan
  sweep any it missed;
- egress (--allow-host): an internal encrypted overlay of the session's
  own, and its tinyproxy as a Swarm service on the session's node (their
  traffic never crosses nodes; endpoint mode dnsrr: no IPVS needed), its
  files as configs; --no-network: that network without a proxy (a service
  cannot use the engine's `none`); both removed with the session;
- MCP servers: a container server is two services on one node, on an
  overlay of its own that its sessions join (swarmmcp); the tool configs
  written from them are secrets, as the env file is;
- placement: docker.constraints (the operator's) plus a request's
  constraints where policy.constraints allows them; a session whose
  reservations no node can hold is refused at once, one that stays
  unschedulable past docker.schedule_timeout is removed and refused.
"""

import base64
import io
import json
import os
import tarfile
import time

from . import session as S
from .dockerapi import APIError, DockerAPI, json_stream
from .engine import INIT_DIR, HEALTH_INTERVAL_S, LocalEngine
from .errors import CubbiError, EngineUnreachable, NotFound, UsageError
from .validate import (parse_cpus, parse_duration, parse_memory, parse_pids_limit, short_name,
                       valid_session_name)

BOOT = "/cubbi-boot.tar"
L_PART = "cubbi.part-of"  # a secret's or config's session id
# before the container runs; "starting" is a container whose health check has
# not passed yet: the init's marker in its log decides, as for "running"
PENDING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready")
RUNNING = ("starting", "running")
FAILED = ("failed", "rejected", "orphaned", "remove")


class SwarmAPI(DockerAPI):
    """The manager's Engine API, where a session is a service: containers()
    lists the session services as container entries (Id the service's id),
    logs() and remove() act on the service; an exec's follow-up calls
    (exit code, resize) go to the node it was started on."""

    def __init__(self, host=None, verbose=False, tls=None, node_port=2376):
        super().__init__(host, verbose=verbose, tls=tls)
        self.node_port = node_port
        self.exec_nodes = {}  # exec id -> that node's DockerAPI
        self.node_apis = {}

    # -- services as containers ----------------------------------------
    def services(self, labels=()):
        filters = {"label": list(labels)} if labels else {}
        return self.get("/services", params={"filters": json.dumps(filters) if filters else None})

    def tasks(self, service_ids=None):
        filters = {"service": list(service_ids)} if service_ids else {}
        return self.get("/tasks", params={"filters": json.dumps(filters) if filters else None})

    def nodes(self):
        return {n["ID"]: n for n in self.get("/nodes")}

    def containers(self, all=False, labels=(), status=None):
        services = self.services(labels)
        if not services:
            return []
        tasks, nodes = self.tasks([s["ID"] for s in services]), self.nodes()
        out = []
        for svc in services:
            entry = service_entry(svc, [t for t in tasks if t.get("ServiceID") == svc["ID"]],
                                  nodes)
            if status and entry["State"] != status:
                continue
            if not all and entry["State"] != "running":
                continue
            out.append(entry)
        return out

    def logs(self, cid, follow=False, tail=None, since=None, timestamps=True, deadline=None):
        return self.service_logs(cid, follow=follow, tail=tail, since=since,
                                 timestamps=timestamps, deadline=deadline)

    def remove(self, cid, force=True):
        """Remove the session service CID, then its secrets and config."""
        try:
            svc = self.get(f"/services/{cid}")
        except APIError as exc:
            if exc.status == 404:
                return
            raise
        sid = (svc["Spec"].get("Labels") or {}).get(S.L_ID)
        self.delete(f"/services/{cid}")
        if sid:
            from . import egress

            nets = ((svc["Spec"].get("Labels") or {}).get(S.L_NETWORKS) or "").split(",")
            if egress.names(sid)["network"] in nets:  # --allow-host, --no-network
                self.remove_egress(sid)
            self.remove_parts(sid)

    def remove_egress(self, sid):
        """Session SID's egress proxy service, then its network (in use until
        the tasks on it are gone: retried with a deadline); the proxy's
        configs go with the session's (remove_parts)."""
        from . import egress

        n = egress.names(sid)
        try:
            self.delete(f"/services/{n['proxy']}")
        except APIError as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 30
        while True:
            try:
                self.remove_network(n["network"])
                return
            except APIError as exc:
                if exc.status == 404 or "not found" in str(exc):  # gone meanwhile
                    return
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the engine sends no event when a task lets go

    def remove_parts(self, sid):
        """The secrets and config of session SID.  A secret is in use until
        the service's task is gone: retried with a deadline."""
        flt = json.dumps({"label": [f"{L_PART}={sid}"]})
        deadline = time.monotonic() + 30
        for kind in ("secrets", "configs"):
            for obj in self.get(f"/{kind}", params={"filters": flt}) or []:
                while True:
                    try:
                        self.delete(f"/{kind}/{obj['ID']}")
                        break
                    except APIError as exc:
                        if exc.status == 404:
                            break
                        if exc.status != 400 or time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)  # the engine sends no event when a task lets go

    # -- the node that runs a session --------------------------------------
    def task_of(self, service_id):
        """(task, node) of the session service's newest task."""
        tasks = self.tasks([service_id])
        if not tasks:
            raise CubbiError(f"the session's service {service_id[:12]} has no task")
        task = max(tasks, key=lambda t: t.get("CreatedAt") or "")
        node = self.nodes().get(task.get("NodeID") or "")
        return task, node

    def node_api(self, node):
        addr = ((node or {}).get("Status") or {}).get("Addr")
        if not addr:
            raise CubbiError("the session's node has no address in the swarm")
        if addr not in self.node_apis:
            # a node that left answers nothing: a short wait, not the client's 60 s
            self.node_apis[addr] = DockerAPI(f"tcp://{addr}:{self.node_port}", timeout=5,
                                             verbose=self.verbose, tls=self.tls)
        return self.node_apis[addr]

    def exec_exit_code(self, exec_id, timeout=5):
        api = self.exec_nodes.pop(exec_id, None)
        return (api or super()).exec_exit_code(exec_id, timeout=timeout)

    def exec_resize(self, exec_id, rows, cols):
        api = self.exec_nodes.get(exec_id)
        return (api or super()).exec_resize(exec_id, rows, cols)

    def exec_inspect(self, exec_id):
        api = self.exec_nodes.get(exec_id)
        return (api or super()).exec_inspect(exec_id)


def service_entry(svc, tasks, nodes):
    """A container-list entry (session.from_entry) for a session service:
    State/Status from its newest task, and the node's name."""
    spec = svc.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    task = max(tasks, key=lambda t: t.get("CreatedAt") or "") if tasks else None
    state, status, reason, node_name = "created", "", None, None
    if task:
        tstate = (task.get("Status") or {}).get("State") or "new"
        node = nodes.get(task.get("NodeID") or "")
        node_name = ((node or {}).get("Description") or {}).get("Hostname")
        node_state = ((node or {}).get("Status") or {}).get("State")
        err = (task.get("Status") or {}).get("Err") or (task.get("Status") or {}).get("Message")
        if task.get("NodeID") and (node is None or node_state in ("down", "disconnected")):
            state, reason = "dead", (f"its node {node_name or task['NodeID'][:12]} left the "
                                     f"swarm ({node_state or 'removed'})")
        elif tstate in PENDING:
            state, status = "running", "Up (health: starting)"
        elif tstate == "running":  # its health check (the init's ready file) has passed
            state, status = "running", "Up (healthy)"
        elif tstate == "starting":
            state, status = "running", "Up (health: starting)"  # the marker decides
        elif tstate in ("complete", "shutdown"):
            state = "exited"
        else:
            state, reason = "dead", f"its task {tstate}: {err or 'no reason given'}"
    created = svc.get("CreatedAt") or ""
    try:
        import datetime

        epoch = int(datetime.datetime.strptime(created[:19], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        epoch = 0
    nets = (task or {}).get("NetworksAttachments") or []
    return {"Id": svc["ID"], "Names": ["/" + spec.get("Name", "")], "Labels": labels,
            "State": state, "Status": status, "Created": epoch, "Image": labels.get(S.L_IMAGE),
            "NetworkSettings": {"Networks": {(n.get("Network") or {}).get("Spec", {}).get(
                "Name", ""): {} for n in nets}},
            "Ports": [], "cubbi_node": node_name, "cubbi_reason": reason,
            "cubbi_task_state": (task.get("Status") or {}).get("State") if task else None}


def _size(n):
    """Bytes as --memory writes them: 30g, 512m, 1.5g."""
    for unit, scale in (("g", 2 ** 30), ("m", 2 ** 20), ("k", 2 ** 10)):
        if n >= scale:
            return f"{round(n / scale, 1):g}{unit}"
    return f"{n}b"


def closed_itself(entry):
    """True for a session service whose init ended it when unused past its
    idle timeout (its task complete, exit 0): engine mode's AutoRemove
    removes such a container; here list() and the orphan sweep do."""
    return bool((entry.get("Labels") or {}).get(S.L_IDLE)) and \
        entry.get("cubbi_task_state") == "complete"


NNP_MISSING = ("no-new-privileges is not set: in swarm mode it comes from the node's engine "
               "(dockerd --no-new-privileges, or \"no-new-privileges\": true in daemon.json), "
               "which this node's does not set")


def boot_script(copies, no_new_privileges=False):
    """The task's command: the init's files from the boot config, the
    secrets (mounted 0600 for the session user under /run/secrets) copied
    where the init reads them, as engine mode's archive puts them (the init
    and the image's hooks add to /cubbi/env, which a secret's read-only
    mount would refuse), then the init.

    no_new_privileges: a service spec cannot ask for it before API 1.46
    (Docker 20.10 speaks 1.41), so it comes from the node's engine
    (dockerd --no-new-privileges: every container it runs, and each exec
    into one, which takes the container's process settings).  The task
    checks its own flag first and fails, saying so, on a node that does not
    set it: never a session that runs without what the policy asked."""
    import shlex

    q = shlex.quote
    lines = ["set -e"]
    if no_new_privileges:
        lines.append("grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || "
                     f"{{ echo {q(S.FAILED_MARK + NNP_MISSING)} >&2; exit 1; }}")
    lines += [f"tar -xf {BOOT} -C /", "umask 077"]
    for src, path, mode, uid, gid in copies:
        lines += [f"mkdir -p {q(os.path.dirname(path))}", f"cat {q(src)} > {q(path)}",
                  f"chown {int(uid)}:{int(gid)} {q(path)}", f"chmod {mode:o} {q(path)}"]
    return "; ".join(lines + ["umask 022", f"exec /bin/sh {INIT_DIR}/init.sh"])


def state_volume(req):
    """The tool-state volume of req's owner (scope) and project: a local
    volume stays on the node that made it (README, Scaling out)."""
    import hashlib

    key = "\n".join([*req.scope, req.owner or "", req.project or ""])
    return "cubbi-state-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class SwarmEngine(LocalEngine):
    """Sessions as Swarm services (see the module's text).  Settings come
    from service.Service: host the manager, tls the client certificates'
    folder, registry where session images are pushed, constraints the
    operator's placement constraints, schedule_timeout how long a task may
    wait for a node."""

    def __init__(self, host=None, network=None, images=None, verbose=False, logging=None,
                 tls=None, node_port=2376, registry=None, registry_auth=None, constraints=(),
                 schedule_timeout=30):
        super().__init__(host, network=network, images=images, image_paths=False,
                         verbose=verbose, logging=logging)
        self.api = SwarmAPI(host, verbose=verbose, tls=tls, node_port=node_port)
        self.registry = registry
        self.registry_auth = registry_auth or {}
        self.constraints = list(constraints or ())
        self.schedule_timeout = schedule_timeout
        self._pushed = {}
        self._removing = set()  # service ids being removed (_remove_later)

    # -- listing -----------------------------------------------------------
    def list(self, all=False, filters=None, labels=(), status=True):
        entries = self.api.containers(all=all, labels=[f"{S.LABEL}=true", *labels])
        entries.sort(key=S.order_key)
        records = []
        ended = [e for e in entries if closed_itself(e)]
        if ended:  # as the engine's AutoRemove: gone once its init ended it
            self._remove_later(ended)
        for entry in entries:
            if closed_itself(entry):
                continue
            rec = S.from_entry(entry, self.remote)
            rec["node"] = entry.get("cubbi_node")
            if entry.get("cubbi_reason"):
                rec["status"], rec["reason"] = "failed", entry["cubbi_reason"]
            elif entry.get("cubbi_task_state") in PENDING:
                rec["status"] = "initializing"
            records.append((rec, entry))
        if status:
            self._init_states([r for r, e in records if e.get("cubbi_task_state") == "starting"
                               and not e.get("cubbi_reason")])
        return [r for r, _ in records if S.matches(r, filters)]

    def _init_state(self, service_id):
        """The init's markers, read from the container's log on its node: a
        Swarm service's logs include a task only once its health check has
        passed (the task is "starting" until then), so they cannot tell
        initializing from failed."""
        try:
            engine, rec = self._on_node({"id": service_id[:12], "container_id": service_id})
            lines = [data.decode(errors="replace") for _, data in
                     engine.api.logs(rec["container_id"], tail=200, timestamps=False)]
        except CubbiError:
            return "initializing", None
        return S.init_state("".join(lines).splitlines())

    def wait_ready(self, rec, timeout=600):
        """Wait for the task to have a container, then follow that
        container's log on its node for the init's marker (LocalEngine's
        wait on the node's engine).  When that wait ends without the
        marker, the swarm's record decides: a task is "starting" from just
        before its container starts, whose log then ends at once (the node
        would call it "created"), so a session still initializing is
        waited on again, within the deadline."""
        if rec["status"] != "initializing":
            return super().wait_ready(rec, timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                engine, node_rec = self._on_node(rec)
                engine.wait_ready({**node_rec, "status": "initializing"},
                                  timeout=max(1, deadline - time.monotonic()))
                return self.resolve(rec["id"])
            except CubbiError as exc:
                now = self.resolve(rec["id"])
                if now["status"] != "initializing":
                    return super().wait_ready(now, timeout)  # running, or why it is not
                if time.monotonic() > deadline:
                    if "still initializing" in str(exc):
                        raise
                    raise CubbiError(f"session {rec['id']} is still initializing after "
                                     f"{timeout:g} s; see cubbi-logs {rec['id']}") from None
                time.sleep(0.3)  # the scheduler, the image pull, the start: polled with a deadline

    def unfinished(self):
        """What the orphan sweep removes of the sessions: only those whose
        init ended them when idle (closed_itself), which list() removes too
        when it sees them.  A service with no task yet is a create in
        flight, not debris: never taken."""
        return [{**e, "cubbi_orphan_reason": "a session that closed itself when idle"}
                for e in self.api.containers(all=True, labels=[f"{S.LABEL}=true", S.L_IDLE])
                if closed_itself(e)]

    def _remove_later(self, entries):
        """Remove the services of entries (and their secrets and config,
        which wait for the task to let go) in a thread, off the caller's way."""
        import threading

        def run():
            for entry in entries:
                if entry["Id"] in self._removing:
                    continue
                self._removing.add(entry["Id"])
                try:
                    self.api.remove(entry["Id"])
                except CubbiError:
                    pass  # removed meanwhile, or the manager is going: the sweep tries again
                finally:
                    self._removing.discard(entry["Id"])

        threading.Thread(target=run, daemon=True, name="cubbi-swarm-remove").start()

    def keep_active(self, rec):
        """LocalEngine.keep_active on the engine of the session's node."""
        try:
            engine, node_rec = self._on_node(rec)
        except CubbiError:
            return None
        return engine.keep_active(node_rec)

    def sweep_unfinished(self):
        """Nothing half-made lingers in swarm mode: create() removes what it
        made when it fails."""

    # -- creating ----------------------------------------------------------
    def create(self, req, progress=None):
        from . import images

        req.check()
        if req.ports:
            # a swarm publishes on every interface of a node: policy.ports.bind cannot hold
            raise UsageError("ports are not published in swarm mode (docker.mode: swarm); "
                             "reach the session through cubbi-connect")
        if req.volumes or req.mount or req.state_dir:
            raise UsageError("host paths mean nothing on a swarm's nodes")
        if req.disk:  # a service's container spec has no storage options
            raise UsageError("disk limits are not available in swarm mode (docker.mode: "
                             "swarm): a Swarm service cannot ask its node's engine for one")
        servers = self.mcp_definitions(req)  # an unknown name: NotFound before anything starts
        image_ref, image_meta = images.ensure_image(self, req.image, progress=progress)
        pushed = self.push(image_ref)
        image = req.image
        sid = os.urandom(4).hex()
        name = req.name or f"{short_name(req.image)}-{sid}"
        if not valid_session_name(name):
            raise UsageError(f"invalid session name {name!r}: use letters, digits, '_', '.', '-'")
        if self.api.services([f"{S.LABEL}=true", f"{S.L_NAME}={name}", *req.scope]):
            raise CubbiError(f"a session named {name!r} exists; choose another --name "
                             "or close it first")
        network = req.network or self.network
        mcp_nets, mcp_failed = self._mcp_start(req, servers, progress)  # swarmmcp's services
        extra_nets = [n for n in dict.fromkeys(req.networks + mcp_nets) if n != network]
        for net in extra_nets:
            self._check_swarm_network(net)
        hosts = self._egress_hosts(req, image_meta, progress)
        egress_env, outward = {}, network
        if req.no_network:
            # a Swarm service cannot use the engine's `none` network: alone on an
            # internal overlay of its own, with no proxy (connect and exec go
            # through the node's engine)
            from . import egress

            network, extra_nets = egress.names(sid)["network"], []
        elif hosts:  # alone on an internal overlay whose way out is the proxy (made below)
            from . import egress

            network = egress.names(sid)["network"]
            egress_env = egress.session_env()
        labels = {
            S.LABEL: "true", S.L_ID: sid, S.L_NAME: name, S.L_IMAGE: image,
            S.L_UID: str(req.uid), S.L_GID: str(req.gid), S.L_CREATED: str(time.time_ns()),
            S.L_CREATOR: S.creator(), S.L_NETWORKS: ",".join([network] + extra_nets),
        }
        if req.project:
            labels[S.L_PROJECT] = req.project
        if req.owner:
            labels[S.L_OWNER] = req.owner
        if hosts and not req.no_network:
            labels[S.L_ALLOW] = ",".join(hosts)
        if servers:
            labels[S.L_MCP] = ",".join(n for n, _ in servers)
        labels.update(req.labels)
        idle = parse_duration(req.idle_timeout) if req.idle_timeout else 0
        if idle:  # the init ends the task when unused that long; list() removes it then
            labels[S.L_IDLE] = str(idle)
        resources = self._resources(req)
        constraints = list(self.constraints) + list(req.constraints)  # policy.apply checked these
        self._check_fits(resources, name)
        cname = f"cubbi-{name}"
        if req.scope:
            import hashlib

            cname += "-" + hashlib.sha256("\n".join(req.scope).encode()).hexdigest()[:12]
        made = []
        try:
            fenced = bool(hosts) and not req.no_network
            if fenced or req.no_network:
                made.append(("egress", sid))
                proxy_image = self._egress_network(sid, outward, req.owner, progress,
                                                   proxy=fenced)
            boot, secret_files = self._parts(req, image_meta, servers, mcp_failed, egress_env)
            cfg = self._make("configs", f"{cname}-{sid}-boot", boot, sid)
            made.append(("configs", cfg))
            secrets, copies = [], []
            for i, (path, (data, mode, uid, gid)) in enumerate(sorted(secret_files.items())):
                # a secret is never empty (the engine refuses one): an empty env file is a newline
                ident = self._make("secrets", f"{cname}-{sid}-s{i}", data or b"\n", sid)
                made.append(("secrets", ident))
                secrets.append({"File": {"Name": f"cubbi-{i}", "UID": str(uid), "GID": str(gid),
                                         "Mode": mode},
                                "SecretID": ident, "SecretName": f"{cname}-{sid}-s{i}"})
                copies.append((f"/run/secrets/cubbi-{i}", path, mode, uid, gid))
            public_env = {"CUBBI_SESSION_ID": sid, "CUBBI_SESSION_NAME": name,
                          "CUBBI_UID": str(req.uid), "CUBBI_GID": str(req.gid),
                          "CUBBI_IMAGE": image, "CUBBI_SUDO": "1" if req.sudo else "0",
                          **egress_env}
            if idle:
                public_env["CUBBI_IDLE_TIMEOUT"] = str(idle)
            container = {
                "Image": pushed,
                "Labels": labels,
                "Command": ["/bin/sh", "-c", boot_script(copies, req.no_new_privileges)],
                "Env": [f"{k}={v}" for k, v in public_env.items()],
                "User": "0:0",
                "Hostname": name,
                # closed as a container is (removed with force): no 10 s grace for the init
                "StopGracePeriod": 10 ** 9,
                "Secrets": secrets,
                "Configs": [{"File": {"Name": BOOT, "UID": "0", "GID": "0", "Mode": 0o400},
                             "ConfigID": cfg, "ConfigName": f"{cname}-{sid}-boot"}],
                "Healthcheck": {"Test": ["CMD", "/bin/sh", "-c", f"test -f {INIT_DIR}/ready"],
                                "Interval": HEALTH_INTERVAL_S * 10 ** 9,
                                "Timeout": 10 * 10 ** 9, "Retries": 1000000},
            }
            if fenced or req.no_network:
                # the engine's DNS answers no outside name on an internal network:
                # fail a lookup at once, and forward none to an address with a route
                # (engines before 26.0 sent an internal network's queries to a
                # resolver on the node's loopback, CVE-2024-29018)
                container["DNSConfig"] = {"Nameservers": ["192.0.2.1"],
                                          "Options": ["timeout:1", "attempts:1"]}
            if req.project:  # tool state: a named volume per user and project, on the node
                container["Mounts"] = [{"Type": "volume", "Source": state_volume(req),
                                        "Target": "/cubbi-config",
                                        "VolumeOptions": {"Labels": {
                                            "cubbi.state": "true", L_PART: sid,
                                            S.L_OWNER: req.owner or ""}}}]
            if req.hardened:
                # the capabilities are in the service API (1.41); no-new-privileges
                # is not before 1.46: the node's engine sets it (boot_script checks)
                container["CapabilityDrop"] = ["ALL"]
                container["CapabilityAdd"] = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER",
                                              "CAP_SETUID", "CAP_SETGID"]
            elif req.cap_drop:
                container["CapabilityDrop"] = ["CAP_" + c.upper().removeprefix("CAP_")
                                               for c in req.cap_drop]
            spec = {
                "Name": cname,
                "Labels": labels,
                "TaskTemplate": {
                    "ContainerSpec": container,
                    "Resources": resources,
                    "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
                    "Placement": {"Constraints": constraints},
                    "Networks": self._task_networks(network, extra_nets, fenced),
                    "LogDriver": {"Name": "json-file",
                                  "Options": {"max-size": str(req.log_max_size),
                                              "max-file": str(req.log_max_files)}},
                },
                "Mode": {"Replicated": {"Replicas": 1}},
            }
            headers = self._auth_header()
            created = self.api.post("/services/create", body=spec, headers=headers)
            made.append(("services", created["ID"]))
            node_id = self._wait_scheduled(created["ID"], name)
            if fenced:  # its proxy on its node: see _egress_proxy
                self._egress_wait(self._egress_proxy(sid, hosts, outward, req.owner, node_id,
                                                     proxy_image))
        except BaseException:
            for kind, ident in reversed(made):
                try:
                    if kind == "services":
                        self.api.delete(f"/services/{ident}")
                    elif kind == "egress":
                        self.api.remove_egress(sid)
                        self.api.remove_parts(sid)  # its configs
                    else:
                        self.api.remove_parts(sid)
                except CubbiError:
                    pass
            raise
        (rec,) = self.list(all=True, labels=[f"{S.L_ID}={sid}"], status=False) or [None]
        if rec is None:
            raise NotFound(f"session {sid} was removed as it started; see cubbi-ls --all")
        return rec

    def _check_swarm_network(self, name):
        """A network a request names (--network, where policy.networks allows
        it) must span the swarm: a task on another node could not join a
        node's own bridge."""
        try:
            net = self.api.network(name)
        except APIError as exc:
            if exc.status != 404:
                raise
            raise NotFound(f"no Docker network {name!r} on the swarm; create it on a manager "
                           f"with 'docker network create -d overlay --attachable {name}'") from None
        if net.get("Scope") != "swarm":
            raise UsageError(f"the Docker network {name!r} is {net.get('Scope') or 'local'} to "
                             "one engine: a swarm session joins only overlay networks "
                             f"('docker network create -d overlay --attachable {name}')")

    def _task_networks(self, network, extra_nets, fenced):
        """The session task's networks: its own internal overlay (under the
        alias its proxy watches it by), or the user's network and those the
        request names."""
        if fenced:
            from . import egress

            return [{"Target": network, "Aliases": [egress.SESSION_ALIAS]}]
        return [{"Target": n} for n in [network] + extra_nets]

    def _egress_network(self, sid, outward, owner, progress, proxy=True):
        """Session SID's egress network, as egress.start makes it on one
        engine: an internal overlay (no node has an address on an overlay,
        and an internal one has no way out), encrypted.  The proxy image is
        pushed first (returned: _egress_proxy starts it once the session has
        a node).
        SwarmAPI.remove_egress removes both (the caller, on failure)."""
        from . import egress

        image = None
        if proxy:  # else --no-network: the network alone
            image = self.push(egress.proxy_image(self, progress))
            self._check_swarm_network(outward)
        self.api.post("/networks/create", body={
            "Name": egress.names(sid)["network"], "CheckDuplicate": True, "Driver": "overlay",
            "Internal": True, "Attachable": False, "Options": {"encrypted": ""},
            "Labels": dict(self._egress_labels(sid, owner), **{egress.L_ROLE: "network"})})
        return image

    @staticmethod
    def _egress_labels(sid, owner):
        from . import egress

        labels = {egress.LABEL: "true", egress.L_SESSION: sid, L_PART: sid}
        if owner:
            labels[egress.L_OWNER] = owner
        return labels

    def _egress_proxy(self, sid, hosts, outward, owner, node_id, image):
        """Session SID's egress proxy: a Swarm service on the session's
        internal network (alias cubbi-egress) and on OUTWARD, its files as
        Docker configs (host names only).  It runs on the session's node
        (NODE_ID): their traffic never crosses between nodes (no IPsec
        needed), and the session's name resolves to its task (endpoint mode
        dnsrr: no IPVS needed on the nodes).  Returns the service's id."""
        from . import egress

        n = egress.names(sid)
        labels = self._egress_labels(sid, owner)
        # only the session's network may use it (not the outward one's tasks)
        subnets = [c.get("Subnet") for c in
                   (self.api.network(n["network"]).get("IPAM") or {}).get("Config") or []]
        files = {"tinyproxy.conf": egress.CONFIG + "".join(f"Allow {s}\n" for s in subnets if s),
                 "run.sh": egress.WATCH, "filter": egress.filter_rules(hosts)}
        configs = []
        for i, (fname, text) in enumerate(sorted(files.items())):
            cname = f"{n['proxy']}-{i}"
            configs.append({"File": {"Name": f"{egress.DIR}/{fname}", "UID": "0", "GID": "0",
                                     "Mode": 0o444},
                            "ConfigID": self._make("configs", cname, text.encode(), sid),
                            "ConfigName": cname})
        spec = {
            "Name": n["proxy"], "Labels": dict(labels, **{egress.L_ROLE: "proxy"}),
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "User": "65534:65534",
                                  "Command": ["/bin/sh", f"{egress.DIR}/run.sh"],
                                  "Labels": dict(labels, **{egress.L_ROLE: "proxy"}),
                                  "CapabilityDrop": ["ALL"], "Configs": configs,
                                  "StopGracePeriod": 10 ** 9},
                "Resources": {"Limits": {"MemoryBytes": 128 * 1024 ** 2, "Pids": 256}},
                "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
                "Placement": {"Constraints": [f"node.id=={node_id}"]},
                "Networks": [{"Target": n["network"], "Aliases": [egress.ALIAS]},
                             {"Target": outward}],
                "LogDriver": {"Name": "json-file",
                              "Options": {"max-size": "10m", "max-file": "2"}},
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": "dnsrr"},
        }
        created = self.api.post("/services/create", body=spec, headers=self._auth_header())
        return created["ID"]

    def _egress_wait(self, proxy_id, timeout=None):
        """Wait until the proxy's task runs, then for its readiness line in
        its container's log on its node (egress._wait)."""
        from . import egress

        timeout = timeout or egress.START_TIMEOUT
        deadline = time.monotonic() + timeout
        self._wait_scheduled(proxy_id, "its egress proxy")
        while True:
            try:
                engine, rec = self._on_node({"id": proxy_id[:12], "container_id": proxy_id})
                break
            except CubbiError:
                task, _ = self.api.task_of(proxy_id)
                st = task.get("Status") or {}
                if st.get("State") in FAILED + ("complete", "shutdown") or \
                        time.monotonic() > deadline:
                    raise CubbiError("the egress proxy failed to start: its task is "
                                     f"{st.get('State')}: {st.get('Err') or 'no reason given'}"
                                     ) from None
                time.sleep(0.2)  # the task's start on its node: polled with a deadline
        egress.wait_ready(engine.api, rec["container_id"],
                          max(1.0, deadline - time.monotonic()))

    def _resources(self, req):
        limits, reserve = {}, {}
        if req.cpus:
            limits["NanoCPUs"] = reserve["NanoCPUs"] = int(parse_cpus(req.cpus) * 1e9)
        if req.memory:
            limits["MemoryBytes"] = reserve["MemoryBytes"] = parse_memory(req.memory)
        if req.pids_limit:
            limits["Pids"] = parse_pids_limit(req.pids_limit)
        return {"Limits": limits, "Reservations": reserve}

    def _check_fits(self, resources, name):
        """Refuse at once what no node could hold (its whole capacity)."""
        want = resources["Reservations"]
        if not want:
            return
        nodes = [n for n in self.api.nodes().values()
                 if (n.get("Status") or {}).get("State") == "ready"
                 and (n.get("Spec") or {}).get("Availability") == "active"]
        for node in nodes:
            have = (node.get("Description") or {}).get("Resources") or {}
            if all(want.get(k, 0) <= (have.get(k) or 0) for k in ("NanoCPUs", "MemoryBytes")):
                return
        biggest = max((((n.get("Description") or {}).get("Resources") or {}) for n in nodes),
                      key=lambda r: r.get("MemoryBytes") or 0, default={})
        raise UsageError(
            f"session {name!r} does not fit on any node of the swarm: it asks for "
            f"{want.get('NanoCPUs', 0) / 1e9:g} CPUs and {_size(want.get('MemoryBytes', 0))} of "
            f"memory, the largest node has {(biggest.get('NanoCPUs') or 0) / 1e9:g} CPUs and "
            f"{_size(biggest.get('MemoryBytes') or 0)}; ask for less (--cpus, --memory)")

    def _wait_scheduled(self, service_id, name):
        """Wait until the task has a node, or refuse: a task the scheduler
        cannot place (no node fits, constraints match none) stays pending
        with the reason, which is what the refusal says."""
        deadline = time.monotonic() + self.schedule_timeout
        err = None
        while time.monotonic() < deadline:
            tasks = self.api.tasks([service_id])
            for task in tasks:
                st = task.get("Status") or {}
                if task.get("NodeID") and st.get("State") not in ("new", "pending"):
                    return task["NodeID"]
                err = st.get("Err") or err
            time.sleep(0.2)  # the scheduler's decision: polled with a deadline
        raise CubbiError(f"session {name!r} cannot be placed on any node of the swarm "
                         f"({err or 'no node was chosen'} after {self.schedule_timeout:g} s); "
                         "ask for less, or check the placement constraints")

    def _parts(self, req, image_meta, servers=(), mcp_failed=None, egress_env=None):
        """(the boot tar without secrets, {path: (bytes, mode, uid, gid)} of
        the secret files): the env file, the request's files and the MCP
        configs written for the image's tool (mcptools.DIR: some formats
        hold the servers' header and env values themselves)."""
        from .mcptools import DIR as MCP_DIR

        whole = tarfile.open(fileobj=io.BytesIO(self._archive(req, image_meta, servers,
                                                              mcp_failed, egress_env)))
        secret_paths = {f"{INIT_DIR}/env"} | {p for p in req.files}
        secrets, out = {}, io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as boot:
            for member in whole.getmembers():
                path = "/" + member.name.lstrip("/")
                data = whole.extractfile(member).read() if member.isfile() else None
                if data is not None and (path in secret_paths or
                                         path.startswith(MCP_DIR + "/")):
                    secrets[path] = (data, member.mode, member.uid, member.gid)
                    continue
                boot.addfile(member, io.BytesIO(data) if data is not None else None)
        return out.getvalue(), secrets

    def _make(self, kind, name, data, sid):
        body = {"Name": name, "Labels": {L_PART: sid, S.LABEL: "true"},
                "Data": base64.b64encode(data).decode()}
        return self.api.post(f"/{kind}/create", body=body)["ID"]

    # -- MCP servers: swarmmcp's services ---------------------------------------
    def mcp_servers(self, scope=(), owner=None, store=None):
        """The MCP servers of a scope, run as Swarm services (swarmmcp)."""
        from .swarmmcp import SwarmServers

        return SwarmServers(self, scope, owner=owner, store=store)

    def close(self, ref, records=None):
        """LocalEngine.close; then the networks of the session's MCP servers
        that nothing else names (their servers stopped), once its task has
        let go of them: the engine refuses while it has not."""
        rec = super().close(ref, records)
        mcp_nets = [n for n in rec.get("networks") or [] if n.startswith("cubbi-mcp-")]
        if mcp_nets:
            servers = self.mcp_servers()
            for net in mcp_nets:
                servers.drop_network(net)
        return rec

    def make_part(self, kind, name, data, part, labels=None):
        """A Docker secret or config (KIND secrets|configs) of a session or
        an MCP server (PART: SwarmAPI.remove_parts removes it)."""
        body = {"Name": name, "Labels": {**(labels or {}), L_PART: part},
                "Data": base64.b64encode(data).decode()}
        return self.api.post(f"/{kind}/create", body=body)["ID"]

    def create_service(self, spec):
        """A service made from SPEC, its image pulled with the registry's
        credentials; its id."""
        return self.api.post("/services/create", body=spec, headers=self._auth_header())["ID"]

    # -- images: pushed to the registry the nodes pull from -------------------
    def _auth_header(self):
        auth = base64.urlsafe_b64encode(json.dumps(self.registry_auth).encode()).decode()
        return {"X-Registry-Auth": auth}

    def push(self, image_ref):
        """The registry's name for image_ref, pushed there once per image id."""
        if not self.registry:
            return image_ref
        ident = self.api.inspect_image(image_ref)["Id"]
        if ident in self._pushed:
            return self._pushed[ident]
        repo = f"{self.registry}/{image_ref.rsplit(':', 1)[0].split('/', 1)[-1] if '/' in image_ref else image_ref.rsplit(':', 1)[0]}"
        tag = ident.split(":")[-1][:16]
        self.api.post(f"/images/{image_ref}/tag", params={"repo": repo, "tag": tag})
        resp = self.api.request("POST", f"/images/{repo}/push", params={"tag": tag},
                                headers=self._auth_header(), stream=True, timeout=None)
        for item in json_stream(resp):
            if item.get("error"):
                raise CubbiError(f"pushing {image_ref} to {self.registry}: {item['error']}")
        self._pushed[ident] = f"{repo}:{tag}"
        return self._pushed[ident]

    # -- exec on the session's node ------------------------------------------
    def _on_node(self, rec):
        """A LocalEngine on the engine of the node that runs rec's task, and
        rec with the container's id there."""
        task, node = self.api.task_of(rec["container_id"])
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid or (task.get("Status") or {}).get("State") not in RUNNING:
            raise CubbiError(f"session {rec['id']} is not running on any node")
        engine = LocalEngine(None)  # its api replaced before any request
        engine.api = self.api.node_api(node)
        return engine, {**rec, "container_id": cid,
                        "task_state": (task.get("Status") or {}).get("State")}

    def logs(self, rec, follow=False, tail=None, since=None, deadline=None):
        """The service's logs; while the task is "starting" (its health
        check has not passed, and the service's logs leave it out) the
        container's log on its node."""
        if "left the swarm" in (rec.get("reason") or ""):  # its log was on that node
            raise CubbiError(f"the logs of session {rec['id']} went with its node: "
                             f"{rec['reason']}")
        try:
            engine, node_rec = self._on_node(rec)
        except CubbiError:
            engine = None
        if engine is not None and node_rec["task_state"] == "starting":
            return engine.logs(node_rec, follow=follow, tail=tail, since=since,
                               deadline=deadline)
        return self._service_logs(rec, follow, tail, since, deadline)

    def _service_logs(self, rec, follow, tail, since, deadline):
        """LocalEngine.logs on the service's logs, where the manager's own
        failure to reach a node comes as a line of the stream: said as an
        error, not passed on as the session's output."""
        for item in super().logs(rec, follow=follow, tail=tail, since=since, deadline=deadline):
            if item["line"].startswith("Error grabbing logs: "):
                raise CubbiError(f"cannot read all the logs of session {rec['id']}: "
                                 f"{item['line'][len('Error grabbing logs: '):]}")
            yield item

    def exec_open(self, rec, command=None, tty=False, env=None, prefix=()):
        engine, rec = self._on_node(rec)
        eid, conn = engine.exec_open(rec, command, tty=tty, env=env, prefix=prefix)
        self.api.exec_nodes[eid] = engine.api
        return eid, conn

    def exec_marked(self, rec, command=None, tty=False, env=None):
        engine, node_rec = self._on_node(rec)
        eid, conn, (cid, mark) = engine.exec_marked(node_rec, command, tty=tty, env=env)
        self.api.exec_nodes[eid] = engine.api
        return eid, conn, (rec["container_id"], mark)

    def exec_stop(self, handle):
        service_id, mark = handle
        engine, rec = self._on_node({"id": service_id[:12], "container_id": service_id})
        engine.exec_stop((rec["container_id"], mark))

    def connect(self, rec, command=None, tty=False, use_stdin=True, stdout=None):
        if tty:
            raise UsageError("a terminal into a swarm session goes through cubbi-server")
        return super().connect(rec, command, tty=False, use_stdin=use_stdin, stdout=stdout)

    def events(self, since=None, until=None, filters=None, labels=()):
        """Lifecycle event records as LocalEngine.events gives them: a
        session's container events happen on the node that runs its task,
        so each node's engine is followed (events.follow, over the same
        mutual TLS as exec) and the streams are merged; a node that joins
        is followed from then on.  A node that leaves tells nothing more:
        the manager's node events say so, and each of the sessions it ran
        gets a `failed` event with the reason cubbi-ls gives."""
        import queue
        import threading

        from . import events

        q = queue.Queue()
        followed = {}  # node id -> its reader thread
        resp = self.api.events(since=since, until=until, filters={"type": ["node", "service"]})

        def read_node(node):
            try:
                for ev in events.follow(self.api.node_api(node), since=since, until=until,
                                        filters=filters, labels=labels, remote=self.remote):
                    q.put(("event", ev))
            except CubbiError:
                pass  # the node left, or its engine went: the manager's node events tell
            finally:
                q.put(("node done", node["ID"]))

        def follow_node(node):
            if node["ID"] in followed or (node.get("Status") or {}).get("State") != "ready":
                return
            followed[node["ID"]] = t = threading.Thread(target=read_node, args=(node,),
                                                        daemon=True, name="cubbi-node-events")
            t.start()

        def read_manager():
            from .dockerapi import json_stream

            try:
                for ev in json_stream(resp):
                    q.put(("manager", ev))
            except (CubbiError, OSError, ValueError) as exc:
                q.put(("error", exc))
            finally:
                q.put(("manager done", None))

        for node in self.api.nodes().values():
            follow_node(node)
        threading.Thread(target=read_manager, daemon=True, name="cubbi-swarm-events").start()
        told_failed = {}  # session id -> its service id: failed, told here or by its node
        left = {}  # service id -> event attributes of a session whose node left
        manager_done = False
        try:
            while True:
                if manager_done and until is not None and not any(
                        t.is_alive() for t in followed.values()) and q.empty():
                    return
                try:
                    kind, item = q.get(timeout=1.0)
                except queue.Empty:
                    continue
                if kind == "event":
                    if item["event"] == "failed":
                        told_failed[item["id"]] = None
                    yield item
                elif kind == "error":
                    if isinstance(item, CubbiError):
                        raise item
                    raise EngineUnreachable(f"lost the swarm manager's event stream: {item}")
                elif kind == "manager done":
                    manager_done = True
                    if until is None:
                        raise EngineUnreachable("lost the swarm manager's event stream; "
                                                "is its engine running?")
                elif kind == "manager" and item.get("Type") == "service":
                    # a session whose node left is closed: its container's destroy
                    # would come from that node, which tells nothing more
                    gone = left.pop((item.get("Actor") or {}).get("ID") or "", None)
                    if gone and item.get("Action") == "remove":
                        nano = item.get("timeNano") or int(item.get("time", 0)) * 10 ** 9
                        ev = S.event_record("closed", gone, nano, remote=self.remote)
                        if S.event_matches(ev, filters):
                            yield ev
                elif kind == "manager":  # a node's
                    attrs = (item.get("Actor") or {}).get("Attributes") or {}
                    node_id = (item.get("Actor") or {}).get("ID") or ""
                    if until is None and item.get("Action") in ("create", "update") and \
                            attrs.get("state.new", "ready") == "ready":
                        node = self.api.nodes().get(node_id)
                        if node and not (node_id in followed and followed[node_id].is_alive()):
                            followed.pop(node_id, None)  # back, or new: followed from now
                            follow_node(node)
                    if attrs.get("state.new") in ("down", "disconnected") or \
                            item.get("Action") == "remove":
                        nano = item.get("timeNano") or int(item.get("time", 0)) * 10 ** 9
                        for ev in self._node_left(labels, filters, nano, told_failed, left):
                            yield ev
        finally:
            resp.close()
            conn = getattr(resp, "_cubbi_conn", None)
            if conn is not None:
                conn.close()

    def _node_left(self, labels, filters, nano, told, left):
        """`failed` event records of the sessions that a node's leaving has
        failed (list() gives each the reason), each told once; left (service
        id -> attributes) is where their `closed` comes from."""
        for rec in self.list(all=True, labels=labels, status=False):
            if rec["status"] != "failed" or rec["id"] in told or "left the swarm" not in \
                    (rec.get("reason") or ""):
                continue
            told[rec["id"]] = rec["container_id"]
            attrs = {S.L_ID: rec["id"], S.L_NAME: rec["name"], S.L_IMAGE: rec.get("image"),
                     S.L_PROJECT: rec.get("project"), S.L_OWNER: rec.get("owner")}
            left[rec["container_id"]] = attrs
            ev = S.event_record("failed", attrs, nano, remote=self.remote,
                                reason=rec["reason"])
            if S.event_matches(ev, filters):
                yield ev

    def ensure_user_network(self, name, labels):
        """The user's overlay network: attachable, encrypted (IPsec between
        nodes).  Returns name."""
        try:
            self.api.network(name)
            return name
        except APIError as exc:
            if exc.status != 404:
                raise
        try:
            self.api.post("/networks/create", body={
                "Name": name, "CheckDuplicate": True, "Driver": "overlay", "Attachable": True,
                "Labels": labels, "Options": {"encrypted": ""}})
        except APIError as exc:
            if exc.status != 409:
                raise
        return name

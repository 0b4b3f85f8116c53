"""LocalEngine: sessions on a Docker engine.  The remote client implements
the same interface (interface.Backend).

(Over 500 lines: one class, the session's life on the engine: list,
create with its container spec and init files, logs, readiness, exec.
The non-interactive exec is localexec.py, the request checks validate.py.)"""

import json
import os
import time

from . import session as S, storage
from .dockerapi import APIError, DockerAPI
from .errors import CubbiError, EngineUnreachable, NotFound, UsageError
from .validate import (CreateRequest, check_image_ref, looks_like_path, parse_cpus, parse_memory,  # noqa: F401
                       parse_duration, parse_pids_limit, parse_port, short_name, valid_session_name)

NETWORK = "cubbi-network"
L_ALLOW = S.L_ALLOW  # a session's egress allowlist (host names, nothing secret)
INIT_DIR = "/cubbi"
HEALTH_INTERVAL_S = 15
# the ids of the sessions this process is making now (create() to its start):
# sweep_unfinished() leaves their containers alone
_CREATING = set()


def _data(name):
    """A file of cubbi_tools/data (shell that runs in the session)."""
    with open(os.path.join(os.path.dirname(__file__), "data", name), "rb") as fh:
        return fh.read()


def _hooks():
    """The init's setup steps, cubbi_tools/data/hooks/NN-name.sh: (name, bytes),
    sourced by the init in name order (each a no-op when not relevant)."""
    here = os.path.join(os.path.dirname(__file__), "data", "hooks")
    try:
        names = sorted(n for n in os.listdir(here) if n.endswith(".sh"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        with open(os.path.join(here, name), "rb") as fh:
            out.append((name, fh.read()))
    return out


def env_file(env):
    """The session's environment as a POSIX sh file of export lines."""
    import shlex

    lines = []
    for key in sorted(env):
        lines.append(f"export {key}={shlex.quote(str(env[key]))}\n")
    return "".join(lines).encode()


def _tar(files):
    """A tar archive of {path: (bytes, mode, uid, gid)} (files.tar_bytes)."""
    from .files import tar_bytes

    return tar_bytes(files)


class LocalEngine:
    """Sessions on a Docker engine (interface.Backend).  Its settings are
    parameters, read by the caller (backend.local, service.Service):
    host the engine's address (None: $DOCKER_HOST, else the default);
    network the network every session joins (default cubbi-network);
    images {base, ca_certs, mirror} for building image definitions;
    image_paths whether an --image may be a directory on this host;
    verbose (ui.verbose) one line per engine request on stderr.
    network and images may be callables, asked when first needed."""

    remote = None
    _info = None  # the engine's /info, once asked (disk_limit)

    def __init__(self, host=None, network=None, images=None, image_paths=True, verbose=False,
                 logging=None):
        self.api = DockerAPI(host, verbose=verbose)
        # logging: the parsed logging.providers (logfwd.parse), or a callable
        self._settings = {"network": network, "images": images, "logging": logging}
        self.image_paths = image_paths

    def _setting(self, name, default):
        value = self._settings[name]
        if callable(value):
            value = self._settings[name] = value()
        return value or default

    @property
    def network(self):
        """The network every session joins."""
        return self._setting("network", NETWORK)

    @property
    def image_settings(self):
        """{base, ca_certs, mirror} for images.build and bootstrap_base."""
        return self._setting("images", {})

    # -- listing ---------------------------------------------------------
    def list(self, all=False, filters=None, labels=(), status=True):
        """Session records; labels (KEY=VALUE) narrow the engine's answer
        first (the server lists one owner's sessions with cubbi.owner=USER).
        One request, plus one log tail per session whose health check has
        not passed yet (initializing or failed), read concurrently; with
        status=False (resolving ids) those stay "initializing"."""
        entries = self.api.containers(all=all, labels=[f"{S.LABEL}=true", *labels])
        entries.sort(key=S.order_key)
        records = [S.from_entry(entry, self.remote) for entry in entries]
        if status:
            self._init_states([r for r, e in zip(records, entries) if S.status_of(e)[1]])
        return [r for r in records if S.matches(r, filters)]

    def _init_states(self, records):
        """Set status/reason from the init's markers in each log tail."""
        def one(rec):
            rec["status"], rec["reason"] = self._init_state(rec["container_id"])

        if len(records) <= 1:
            for rec in records:
                one(rec)
            return
        import threading

        errors = []

        def guarded(rec):
            try:
                one(rec)
            except Exception as exc:  # re-raised in this thread
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(r,), daemon=True) for r in records]
        for i in range(0, len(threads), 8):
            batch = threads[i:i + 8]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        if errors:
            raise errors[0]

    def _init_state(self, cid):
        try:
            lines = [data.decode(errors="replace") for _, data in
                     self.api.logs(cid, tail=200, timestamps=False)]
        except APIError:
            return "initializing", None
        text = "".join(lines).splitlines()
        return S.init_state(text)

    def resolve(self, ref, records=None):
        """The session a reference names: id, name, or a unique id prefix."""
        ref = (ref or "").strip()
        if not ref:
            raise UsageError("empty session id")
        if records is None:
            records = self.list(all=True, status=False)
        for r in records:
            if r["id"] == ref or r["name"] == ref or r["container_id"] == ref:
                return self._settled(r)
        hits = [r for r in records if r["id"].startswith(ref) or r["container_id"].startswith(ref)]
        if len(hits) == 1:
            return self._settled(hits[0])
        if not hits:
            raise NotFound(f"no session {ref!r}; see cubbi-ls --all")
        names = ", ".join(sorted(r["id"] for r in hits))
        raise UsageError(f"session id {ref!r} is ambiguous ({names}); give more characters")

    def index(self):
        """Every session, for resolving many references with one request
        (each_session); a backend without it resolves each on its side."""
        return self.list(all=True, status=False)

    def _settled(self, rec):
        """rec with its init state read, when its health check has not passed."""
        if rec.get("status") == "initializing":
            rec = dict(rec)
            self._init_states([rec])
        return rec

    # -- creating --------------------------------------------------------
    def _ensure_network(self, name, create=False):
        try:
            self.api.network(name)
        except APIError as exc:
            if exc.status != 404:
                raise
            if not create:
                raise NotFound(f"no Docker network {name!r}; create it with "
                               f"'docker network create {name}'") from None
            try:
                self.api.create_network(name, labels={"cubbi.network": "true"})
            except APIError as exc2:
                if exc2.status != 409:  # created meanwhile by a concurrent run
                    raise

    def _with_network(self, call):
        """call(), making the session network first when the engine says it
        is missing (made on demand: one round trip less on every other
        create).  Newer engines refuse a missing network at create, 20.10
        only at start: both go through here."""
        try:
            return call()
        except APIError as exc:
            if exc.status != 404 or self.network not in str(exc):
                raise
        self._ensure_network(self.network, create=True)
        return call()

    def create(self, req, progress=None):
        from . import images

        req.check()
        disk = self.disk_limit(req.disk)  # a limit this engine cannot enforce: refused first
        servers = self.mcp_definitions(req)  # an unknown name: NotFound before anything starts
        image_ref, image_meta = images.ensure_image(self, req.image, progress=progress)
        # the record's image is a definition name or a Docker reference (cubbi-ls(1)):
        # a definition given as a directory is recorded by the tag built from it
        image = image_ref if self.image_paths and looks_like_path(req.image) else req.image
        sid = os.urandom(4).hex()
        name = req.name or f"{short_name(req.image)}-{sid}"
        if not valid_session_name(name):
            raise UsageError(f"invalid session name {name!r}: use letters, digits, '_', '.', '-'")
        self.sweep_unfinished()  # before the name check: debris may hold this very name
        from . import reaper

        try:  # what sessions that ended by themselves left (a fenced one's network)
            reaper.sweep(self, helpers_only=True)
        except CubbiError:
            pass  # the next create tries again
        if self.api.containers(all=True, labels=[f"{S.LABEL}=true", f"{S.L_NAME}={name}",
                                                 *req.scope]):
            raise CubbiError(f"a session named {name!r} exists; choose another --name "
                             "or close it first")
        network = req.network or self.network
        for net in req.networks:
            if net != network:
                self._ensure_network(net)

        labels = {
            S.LABEL: "true", S.L_ID: sid, S.L_NAME: name, S.L_IMAGE: image,
            S.L_UID: str(req.uid), S.L_GID: str(req.gid), S.L_CREATED: str(time.time_ns()),
            S.L_CREATOR: S.creator(),
        }
        if req.project:
            labels[S.L_PROJECT] = req.project
        if req.owner:
            labels[S.L_OWNER] = req.owner
        if req.mount:
            labels[S.L_MOUNT] = req.mount
        if req.state_dir:
            labels[S.L_STATE] = req.state_dir
        mcp_nets, mcp_failed = self._mcp_start(req, servers, progress)
        extra_nets = [n for n in dict.fromkeys(req.networks + mcp_nets) if n != network]
        if servers:
            labels[S.L_MCP] = ",".join(n for n, _ in servers)
        hosts = self._egress_hosts(req, image_meta, progress)
        egress_env, outward, starting = {}, network, None
        if req.no_network:  # no network at all: connect and exec go through the engine
            network = "none"
        elif hosts:  # alone on an internal network whose way out is the proxy (started below)
            from . import egress

            network = egress.names(sid)["network"]
            egress_env = egress.session_env()
            labels[L_ALLOW] = ",".join(hosts)
        labels[S.L_NETWORKS] = ",".join([network] + extra_nets)
        labels.update(req.labels)

        binds = []
        if req.mount:
            binds.append(f"{req.mount}:/app")
        if req.state_dir:
            binds.append(f"{req.state_dir}:/cubbi-config")
        for vol in req.volumes:
            binds.append(vol)
        exposed, bindings = {}, {}
        for spec in req.ports:
            ip, host, cport, proto = parse_port(spec)
            key = f"{cport}/{proto}"
            exposed[key] = {}
            bindings.setdefault(key, []).append({"HostIp": ip, "HostPort": str(host)})
        host_config = {
            "Binds": binds,
            "NetworkMode": network,
            "PortBindings": bindings,
            "RestartPolicy": {"Name": "no"},
            "Init": False,
            # a session's output never fills the host's disk: rotated, whatever the
            # daemon's default log driver
            "LogConfig": {"Type": "json-file",
                          "Config": {"max-size": str(req.log_max_size),
                                     "max-file": str(req.log_max_files)}},
        }
        from . import logfwd

        providers = self._setting("logging", [])
        log_config, warnings = logfwd.log_config(providers, sid, image, req.owner)
        if log_config:  # the engine's own copy (dual logging) rotated the same way
            log_config["Config"].update({"cache-max-size": str(req.log_max_size),
                                         "cache-max-file": str(req.log_max_files)})
            host_config["LogConfig"] = log_config
        for text in warnings:
            if progress:
                progress(text)
        if req.cpus:
            host_config["NanoCpus"] = int(parse_cpus(req.cpus) * 1e9)
        if req.memory:
            host_config["Memory"] = parse_memory(req.memory)
        if req.pids_limit:
            host_config["PidsLimit"] = parse_pids_limit(req.pids_limit)
        if disk:
            host_config["StorageOpt"] = {"size": disk}
        idle = parse_duration(req.idle_timeout) if req.idle_timeout else 0
        if hosts and not req.no_network:
            # the engine's DNS answers no outside name on an internal network: fail a
            # lookup in about a second instead of glibc's 4 x 5 s
            host_config["DnsOptions"] = ["timeout:1", "attempts:1"]
            # the engine's DNS forwards no outside name to an address with no route
            # from here: engines before 26.0/25.0.5/23.0.11 forwarded an internal
            # network's queries to a loopback resolver on the host (CVE-2024-29018)
            host_config["Dns"] = ["192.0.2.1"]
        if idle:  # the init ends it when unused that long; the engine removes it then
            host_config["AutoRemove"] = True
            labels[S.L_IDLE] = str(idle)
        if req.hardened:
            host_config["SecurityOpt"] = ["no-new-privileges"]
            host_config["CapDrop"] = ["ALL"]
            host_config["CapAdd"] = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]
        elif req.cap_drop:
            host_config["CapDrop"] = list(req.cap_drop)
        if req.no_new_privileges:
            host_config["SecurityOpt"] = ["no-new-privileges"]

        public_env = {
            "CUBBI_SESSION_ID": sid, "CUBBI_SESSION_NAME": name,
            "CUBBI_UID": str(req.uid), "CUBBI_GID": str(req.gid),
            "CUBBI_IMAGE": image, "CUBBI_SUDO": "1" if req.sudo else "0",
            **egress_env,
        }
        if idle:
            public_env["CUBBI_IDLE_TIMEOUT"] = str(idle)
        config = {
            "Image": image_ref,
            "Entrypoint": ["/bin/sh", f"{INIT_DIR}/init.sh"],
            "Cmd": [],
            "User": "0:0",
            "Env": [f"{k}={v}" for k, v in public_env.items()],
            "Labels": labels,
            "ExposedPorts": exposed,
            "Tty": False,
            "OpenStdin": False,
            "Healthcheck": {
                "Test": ["CMD", "/bin/sh", "-c", f"test -f {INIT_DIR}/ready"],
                "Interval": HEALTH_INTERVAL_S * 10 ** 9,
                "Timeout": 10 * 10 ** 9,
                "Retries": 1000000,
            },
            "HostConfig": host_config,
        }
        if hosts and not req.no_network:  # the name its proxy watches it by (egress.WATCH)
            from . import egress

            config["NetworkingConfig"] = {"EndpointsConfig": {
                network: {"Aliases": [egress.SESSION_ALIAS]}}}
        cname = f"cubbi-{name}"
        if req.scope:  # unique within the scope only: another scope's name must not clash
            import hashlib

            cname += "-" + hashlib.sha256("\n".join(req.scope).encode()).hexdigest()[:12]
        if hosts and not req.no_network:
            if outward == self.network:
                self._ensure_network(outward, create=True)
            from . import egress

            # its proxy starts while the session's container is made and started
            starting = egress.start(self, sid, hosts, outward, owner=req.owner,
                                    progress=progress)
        _CREATING.add(sid)  # until it is started, or given up
        try:
            created = self._with_network(lambda: self.api.create_container(cname, config))
        except BaseException as exc:
            _CREATING.discard(sid)
            self._egress_stop(sid, starting)
            if not isinstance(exc, APIError):
                raise
            if exc.status == 409:
                raise CubbiError(f"a session named {name!r} exists; choose another --name") from None
            if exc.status == 400 and "bind source path does not exist" in str(exc):
                raise NotFound(f"cannot mount: {exc}") from None
            if disk and exc.status in (400, 500) and storage.is_refusal(exc):
                raise storage.engine_refusal(req.disk, self._info, exc) from None
            raise
        cid = created["Id"]
        try:
            self.api.put_archive(cid, "/", self._archive(req, image_meta, servers, mcp_failed,
                                                         egress_env))
            for net in extra_nets:
                self.api.connect_network(net, cid)
            self._with_network(lambda: self.api.start(cid))
            if starting:
                starting.wait()
            _CREATING.discard(sid)
        except BaseException as exc:
            _CREATING.discard(sid)
            # no half-created container left behind: remove it, or say how
            try:
                self.api.remove(cid)
                self._egress_stop(sid, starting)
            except CubbiError:
                if isinstance(exc, CubbiError):
                    exc = _start_error(exc) if isinstance(exc, APIError) else exc
                    # the engine's going away stays EngineUnreachable (503 on a server)
                    cls = EngineUnreachable if isinstance(exc, EngineUnreachable) else CubbiError
                    err = cls(f"{exc}; the unfinished session's container {cid[:12]} "
                              f"could not be removed: the next cubbi-create removes it, or run "
                              f"'cubbi-close {sid}' when the engine answers again")
                    err.code = exc.code
                    raise err from None
            if isinstance(exc, APIError):
                raise _start_error(exc) from None
            raise
        (rec,) = self.list(all=True, labels=[f"{S.L_ID}={sid}"], status=False) or [None]
        if rec is None:
            raise NotFound(f"session {sid} was removed as it started; see cubbi-ls --all")
        return rec

    def disk_limit(self, size):
        """The StorageOpt size for --disk SIZE, or CubbiError when this
        engine's storage driver cannot enforce one (storage.py)."""
        if not size:
            return None
        self._info = self.api.info()
        return storage.check(self._info, size)
    def _egress_hosts(self, req, image_meta, progress):
        """The session's egress allowlist: the request's, with the hosts its
        image declares (cubbi_image.yaml allow_hosts) once it has one; on a
        service, an image's host outside the policy (req.allow_within) is
        left out, with a warning."""
        if not req.allow_hosts:
            return []
        from .validate import allow_covers

        hosts = list(req.allow_hosts)
        for host in (image_meta or {}).get("allow_hosts") or []:
            if req.allow_within is not None and not any(allow_covers(o, host)
                                                        for o in req.allow_within):
                if progress:
                    progress(f"warning: the image's allow_hosts entry {host} is outside "
                             "policy.allow_hosts; left out")
                continue
            hosts.append(host)
        return list(dict.fromkeys(hosts))

    def _egress_stop(self, sid, starting):
        if starting:
            from . import egress

            starting.join()
            try:
                egress.stop(self.api, sid)
            except CubbiError:
                pass  # the engine is going: its orphans are swept later (cubbi-prune)

    def egress_log(self, rec):
        """The requests the session's egress proxy refused (egress.egress_log)."""
        from . import egress

        return egress.egress_log(self.api, rec)

    def sweep_unfinished(self):
        """Remove the debris of creates that broke off: session containers
        never started (state "created") whose maker is gone (a cubbi-create
        that exited, a server killed), or is this process but no longer
        making them (a server whose engine went away as it started one, and
        could not remove it then).  Another live process's container is
        left alone: it is being made."""
        for entry in self.unfinished():
            try:
                self.api.remove(entry["Id"])
            except CubbiError:
                pass  # removed meanwhile, or the engine is going: the next create tries again

    def unfinished(self):
        """The list entries of the containers sweep_unfinished removes."""
        me = S.creator()
        out = []
        for entry in self.api.containers(all=True, labels=[f"{S.LABEL}=true", S.L_CREATOR],
                                         status="created"):
            labels = entry.get("Labels") or {}
            maker = labels.get(S.L_CREATOR)
            if maker and (labels.get(S.L_ID) not in _CREATING if maker == me
                          else S.creator_gone(maker)):
                out.append(entry)
        return out

    def mcp_definitions(self, req):
        """[(name, definition with its secrets)] of the request's MCP
        servers: as the caller resolved them (the service, from its
        database), else from this machine's store (cubbi_tools.mcp)."""
        if req.mcp_defs is not None:
            return req.mcp_defs
        if not req.mcp:
            return []
        from . import mcp

        return [(name, mcp.resolved(name)) for name in dict.fromkeys(req.mcp)]

    def _mcp_start(self, req, servers, progress):
        """Start the container servers a session uses (on demand; a running
        one is reused) and try each remote one.  ([networks to join],
        the first failure or None): a server that fails makes the session
        fail, naming it; a remote that does not answer is only a warning."""
        from . import mcpserve

        nets, failed = [], None
        for name, meta in servers:
            if meta["kind"] == "container":
                try:
                    self.mcp_servers(req.scope, owner=req.owner).run(name, meta, progress)
                    nets.append(mcpserve.names(name, req.scope)["network"])
                except NotFound:
                    raise
                except CubbiError as exc:
                    failed = failed or str(exc)
            elif meta["kind"] == "remote":
                problem = mcpserve.probe(meta["url"])
                if problem and progress:
                    progress(f"warning: MCP server {name} ({meta['url']}) does not answer "
                             f"({problem}); the session starts anyway")
        return nets, failed

    def _archive(self, req, image_meta, servers=(), mcp_failed=None, egress_env=None):
        from .logfwd import session_env

        # a langfuse provider's variables, unless the request sets its own
        env = {**session_env(self._setting("logging", [])), **req.env, **(egress_env or {})}
        mcp_doc = mcp_env = None
        if servers:
            from . import mcp, mcpserve

            mcp_doc, mcp_env = mcp.session_setup(
                [(n, m, {"host": mcpserve.names(n, req.scope)["host"]}) for n, m in servers])
            for key, value in mcp_env.items():
                env.setdefault(key, value)
        files = {
            f"{INIT_DIR}/init.sh": (_data("cubbi-init.sh"), 0o755, 0, 0),
            f"{INIT_DIR}/env": (env_file(env), 0o600, req.uid, req.gid),
            f"{INIT_DIR}/image.json": (json.dumps(image_meta or {}).encode(), 0o644, 0, 0),
        }
        for name, data in _hooks():
            files[f"{INIT_DIR}/hooks/{name}"] = (data, 0o644, 0, 0)
        if req.ssh_keys:  # the owner's keys, for the sshd of hooks/40-ssh.sh (cubbi-ssh)
            files[f"{INIT_DIR}/ssh/authorized_keys"] = (
                "".join(k + "\n" for k in req.ssh_keys).encode(), 0o644, 0, 0)
        from .imagehooks import session_files  # env checks, persistent configs, command

        files.update(session_files(image_meta, req.image,
                                   None if mcp_doc is None else (mcp_doc, env)))
        if mcp_doc is not None:
            files[mcp.JSON_PATH] = (json.dumps(mcp_doc, indent=2).encode() + b"\n", 0o644, 0, 0)
        if mcp_failed:
            import shlex

            files[f"{INIT_DIR}/hooks/05-mcp-failed.sh"] = (
                f"fail {shlex.quote(mcp_failed)}\n".encode(), 0o644, 0, 0)
        for path, (text, mode) in req.files.items():
            data = text.encode() if isinstance(text, str) else text
            files[path] = (data, mode, req.uid, req.gid)
        return _tar(files)

    # -- images and projects ---------------------------------------------
    def images(self, errors=None, offline=False):
        """The records of every image definition (a broken one is skipped and
        its error appended to ERRORS); offline: without asking the engine
        whether each is built."""
        from . import images

        return [images.record(d, None if offline else images.inspect(self.api, images.tag_for(d)))
                for d in images.definitions(errors=errors)]

    def image(self, name):
        from . import images

        defn = images.definition(name)
        return images.record(defn, images.inspect(self.api, images.tag_for(defn)))

    @property
    def projects(self):
        """The projects stored on this machine (cubbi_tools.projects)."""
        from . import projects

        return projects

    @property
    def mcp(self):
        """The MCP servers defined on this machine, run on this engine
        (mcpserve.Servers)."""
        return self.mcp_servers()

    def mcp_servers(self, scope=(), owner=None, store=None):
        """The MCP servers of a scope (a service's user) on this engine:
        mcpserve.Servers (a swarm's: swarmmcp.SwarmServers)."""
        from .mcpserve import Servers

        return Servers(self, scope, owner=owner, store=store)

    def project_setup(self, url):
        """A project's clone URL, id, env and files, with the credential
        stored on this machine."""
        from . import projects

        return projects.session_setup(url)

    # -- using -----------------------------------------------------------
    def close(self, ref, records=None):
        rec = self.resolve(ref, records)
        try:
            self.api.remove(rec["container_id"])
        except APIError as exc:
            if exc.status != 404:
                raise
        for net in rec.get("networks") or []:
            if net.startswith("cubbi-egress-"):  # its own proxy and network go with it
                from . import egress

                egress.stop(self.api, rec["id"])
            if net.startswith("cubbi-mcp-"):  # an MCP server's: gone with its last user
                try:  # once its server is stopped or removed (the engine refuses otherwise)
                    self.api.remove_network(net)
                except APIError:
                    pass  # its server still runs, or another session still uses it
        return rec

    def logs(self, rec, follow=False, tail=None, since=None, deadline=None):
        """Yield {session, stream, time, line} for each log line; with a
        deadline (time.monotonic()) a stream silent until then raises
        dockerapi.Deadline.  A follow without a deadline (someone watching,
        not wait_ready) keeps the session in use for its idle watch while it
        lasts (keep_active)."""
        pending = {"stdout": "", "stderr": ""}
        done = self.keep_active(rec) if follow and deadline is None else None
        try:
            for stream, data in self.api.logs(rec["container_id"], follow=follow, tail=tail,
                                              since=since, timestamps=True, deadline=deadline):
                text = pending[stream] + data.decode(errors="replace")
                *lines, pending[stream] = text.split("\n")
                for line in lines:
                    yield _log_record(rec, stream, line)
        finally:
            if done:
                done()
        for stream, rest in pending.items():
            if rest:
                yield _log_record(rec, stream, rest)

    def keep_active(self, rec):
        """Touch /cubbi/active in the session at each tick of its idle watch
        (cubbi-init.sh), from a thread, until the returned callable is
        called: what a log follow does, which the init cannot see itself.
        Written over the archive API, so no process starts in the session."""
        import threading

        cid = rec["container_id"]
        stop = threading.Event()

        def run():
            try:
                labels = self.api.inspect_container(cid)["Config"].get("Labels") or {}
                tick = max(1, min(int(labels.get(S.L_IDLE) or 150) // 5, 30))
                data = _tar({f"{INIT_DIR}/active": (b"", 0o644, 0, 0)})
                while True:
                    self.api.put_archive(cid, "/", data)
                    if stop.wait(max(tick / 2, 0.5)):
                        return
            except (CubbiError, ValueError, KeyError):
                return  # the session is gone, or the engine: the follow ends too

        threading.Thread(target=run, daemon=True, name="cubbi-keep-active").start()
        return stop.set

    def events(self, since=None, until=None, filters=None, labels=()):
        """Lifecycle event records (events.follow), from the engine's event
        stream; labels (KEY=VALUE) narrow it as in list()."""
        from . import events

        return events.follow(self.api, since=since, until=until, filters=filters,
                             labels=labels, remote=self.remote)

    def wait_ready(self, rec, timeout=600):
        """Block until the session's init reports ready; raise if it failed."""
        if rec["status"] == "running":
            return rec
        if rec["status"] not in ("initializing",):
            raise CubbiError(_not_running(rec))
        from .dockerapi import Deadline

        deadline = time.monotonic() + timeout
        try:
            for item in self.logs(rec, follow=True, deadline=deadline):
                status, reason = S.init_state([item["line"]])
                if status == "running":
                    return self.resolve(rec["id"])
                if status == "failed":
                    raise CubbiError(f"session {rec['id']} failed: {reason}; "
                                     f"see cubbi-logs {rec['id']}")
                if time.monotonic() > deadline:
                    raise Deadline("past the deadline")
        except Deadline:
            raise CubbiError(f"session {rec['id']} is still initializing after {timeout:g} s; "
                             f"see cubbi-logs {rec['id']}") from None
        rec = self.resolve(rec["id"])
        if rec["status"] == "running":
            return rec
        raise CubbiError(_not_running(rec))

    def exec_argv(self, rec, command=None):
        """The docker CLI argv (exec -it) that runs command, or a login shell,
        in the session as its user, with the session's environment loaded:
        the interactive path of connect().  Without a TTY, commands go over
        the Engine API instead (localexec.run_exec)."""
        user, workdir, cmd = self.exec_spec(rec, command)
        argv = ["docker", "exec", "-i", "-t", "-u", user, "-w", workdir]
        term = os.environ.get("TERM")
        if term:
            argv += ["-e", f"TERM={term}"]
        return argv + [rec["container_id"]] + cmd

    def exec_spec(self, rec, command=None):
        """(user, workdir, cmd) running command (or a login shell) in the
        session as its user, with the session's environment loaded."""
        info = self.api.inspect_container(rec["container_id"])
        labels = info["Config"].get("Labels") or {}
        uid, gid = labels.get(S.L_UID, "0"), labels.get(S.L_GID, "0")
        if command:
            cmd = ["/bin/sh", "-c", f'. {INIT_DIR}/env 2>/dev/null; exec "$@"', "cubbi"] + list(command)
        else:
            cmd = ["/bin/sh", "-c", f"[ -x {INIT_DIR}/login ] && exec {INIT_DIR}/login; exec /bin/sh -l"]
        return f"{uid}:{gid}", "/app", cmd

    def exec_open(self, rec, command=None, tty=False, env=None, prefix=()):
        """Start command (or a login shell) in the session over the API:
        (exec id, dockerapi.Hijacked).  The server's terminal and exec mode.
        prefix: argv put before the command (a wrapper that runs "$@")."""
        user, workdir, cmd = self.exec_spec(rec, command)
        eid = self.api.exec_create(rec["container_id"], list(prefix) + cmd, user=user,
                                   workdir=workdir,
                                   env=env, tty=tty, stdin=True)
        return eid, self.api.exec_start(eid, tty=tty)

    def exec_marked(self, rec, command=None, tty=False, env=None):
        """exec_open under a small sh whose name carries a random mark:
        (exec id, connection, handle for exec_stop).  `; exit $?` keeps that
        sh alive as the parent instead of exec'ing the command."""
        import secrets

        mark = "cubbi-exec-" + secrets.token_hex(8)
        eid, conn = self.exec_open(rec, command, tty=tty, env=env,
                                   prefix=["/bin/sh", "-c", '"$@"; exit $?', mark])
        return eid, conn, (rec["container_id"], mark)

    def exec_stop(self, handle):
        """Hang up an exec_marked process, its session and its descendants
        (as root in the container), then kill what is left a second later:
        Docker has no call that stops an exec when its client goes away."""
        cid, mark = handle
        eid = self.api.exec_create(cid, ["/bin/sh", "-c", _data("stop-exec.sh").decode(), "stop",
                                         mark],
                                   user="0:0", stdin=False)
        conn = self.api.exec_start(eid)
        try:
            conn.sock.settimeout(30)  # the script ends within seconds; an engine that hangs
            for _ in conn.frames():
                pass
        except CubbiError:
            pass
        finally:
            conn.close()

    def connect(self, rec, command=None, tty=False, use_stdin=True, stdout=None):
        """Run command (or a login shell) in the session; the remote client
        has the same call.  With a TTY: the docker CLI's exec -it replaces
        this process.  Without: over the Engine API, stdin (unless
        use_stdin=False), stdout (or the binary stream given) and stderr
        pass through and the command's exit status is returned; SIGINT,
        SIGTERM or SIGHUP stop the command's process tree in the container
        (exit 128+signal), and so does a reader closing stdout (exit 141, as
        SIGPIPE ends a shell pipeline's writer)."""
        import sys

        if tty:
            argv = self.exec_argv(rec, command)
            sys.stdout.flush()
            os.execvpe(argv[0], argv, self.docker_env())
        from .localexec import run_exec

        return run_exec(self, rec, command, use_stdin, stdout or sys.stdout)

    def docker_env(self):
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.api.host
        return env


def _log_record(rec, stream, line):
    ts, sep, rest = line.partition(" ")
    if sep and len(ts) >= 20 and ts[4:5] == "-" and "T" in ts:
        when, text = ts, rest
    else:
        when, text = None, line
    return {"session": rec["id"], "stream": stream, "time": _trim_ts(when), "line": text}


def _trim_ts(ts):
    if not ts:
        return None
    # 2026-11-27T08:01:02.123456789Z -> 2026-11-27T08:01:02.123456Z
    if "." in ts:
        head, frac = ts.rstrip("Z").split(".", 1)
        return f"{head}.{frac[:6]}Z"
    return ts


def _not_running(rec):
    if rec["status"] == "failed":
        return f"session {rec['id']} failed: {rec.get('reason') or 'see its logs'}; see cubbi-logs {rec['id']}"
    return f"session {rec['id']} is {rec['status']}; create a new one with cubbi-create"


def _start_error(exc):
    msg = str(exc)
    low = msg.lower()
    if "port is already allocated" in low or "address already in use" in low:
        import re

        m = re.search(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]*\]):(\d+)", msg)
        where = f"host port {m.group(1)}:{m.group(2)}" if m else "a published host port"
        return CubbiError(f"{where} is already in use; choose another with --port "
                          "HOST:CONTAINER, or give only the container port for a free one")
    if "no such file" in low or "not found" in low and "exec" in low:
        return CubbiError(f"the image cannot run cubbi's init, it needs /bin/sh ({msg})")
    return exc

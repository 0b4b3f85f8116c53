"""The Cubbi Service's behaviour, below the HTTP layer (server/app.py).

(Over 500 lines: the one place the server reads its settings and applies
them to every request, policy included (the checks themselves are
policy.py); split further, a route's behaviour would be read in pieces.)

`load_config` reads cubbi-service.yaml (the spec's sections: server, docker,
auth, logging, images, projects; plus `state.database`), resolving
`${ENV_VAR}` references.  `Service` is what every route calls: the same
LocalEngine the commands use, scoped to the authenticated user (a session is
its creator's: another user's is "not found"), and the SQLite state.

Requests from remote clients are sanitised here, once: no host paths (a
client's directories mean nothing on the server, and a bind mount of the
server's own disk would be a hole; an image that is a path is refused by
its form, and no image name is looked up as a path on the server's disk),
the session uid/gid of the service config (sessions.uid/gid, default 1000),
the owner from the authenticated user, no labels or files from the client,
env keys checked as `-e`'s.  Then the `policy:` section (policy.Policy,
checked at start) decides networks, images, ports, limits, the per-user cap
and privileges, here in create() and nowhere else.

Each user's sessions join that user's own bridge, cubbi-u-HASH (made on
demand, inter-container traffic off unless policy.user_traffic), never the
service's or another user's; a session name is unique among its owner's
sessions only (the container name carries a hash of the owner's scope).

A session is a user's when it carries both cubbi.owner=USER and
cubbi.served=KEY, the random key of the user's row in this service's
database (serverstate): a local session whose owner is the same account
name, another service's, or a removed user's of the same name is "not
found".  Every lookup (list, get, close, logs, connect, exec) goes
through sessions(), so none can skip either label.
"""

import copy
import os
import sys

from .errors import CubbiError, UsageError

SESSION_UID = 1000  # sessions.uid / sessions.gid in the service config
SESSION_GID = 1000

DEFAULTS = {
    "server": {"host": "127.0.0.1", "port": 3000, "max_body": 4 * 1024 * 1024,
               "heartbeat": 15, "max_message": 1024 * 1024,
               "max_exec_output": 16 * 1024 * 1024, "max_exec_time": 3600, "max_wait": 600,
               "max_streams_per_user": 16, "max_terminals_per_user": 8,
               "base_path": "", "origins": [], "browser_lifetime": 12 * 3600,
               "header_timeout": 10, "idle_timeout": 60, "body_timeout": 60,
               "max_connections": 1000, "max_fragments": 1024, "max_execs_per_user": 8},
    "docker": {"socket": None, "network": "cubbi-network", "mode": "engine"},
    "auth": {"provider": "token"},
    "logging": {"providers": []},
    "images": [],
    "projects": {"storage": {"type": "encrypted", "key": None}, "default_ssh_scan": []},
    "state": {"database": "cubbi-server.db"},
    "sessions": {"uid": SESSION_UID, "gid": SESSION_GID},
}

L_SERVED = "cubbi.served"  # set only here: the key of the user the service made a session for
L_REQUEST = "cubbi.served.request"  # the create request that made it (policy.max_sessions)


def resolve_refs(node, where="", environ=None):
    """A copy of node with ${VAR} references replaced from the environment
    ($${VAR} is a literal ${VAR}, as in the user config); an unset one is an
    error naming the key that holds it."""
    environ = os.environ if environ is None else environ
    if isinstance(node, dict):
        return {k: resolve_refs(v, f"{where}.{k}" if where else str(k), environ)
                for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_refs(v, f"{where}[{i}]", environ) for i, v in enumerate(node)]
    if isinstance(node, str):
        from .expand import env

        return env(node, lambda var: f"{where}: ${{{var}}} is not set in the environment; "
                                     "export it or change the service config", environ)
    return node


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path=None, environ=None):
    """The service config: DEFAULTS, then the file (when given), resolved."""
    data = {}
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise CubbiError(f"cannot read the service config {path}: {exc.strerror}") from None
        from .files import parse_yaml

        data = parse_yaml(text, path, advice=None) or {}
        if not isinstance(data, dict):
            raise CubbiError(f"{path}: the top level must be a mapping of sections")
        base = os.path.dirname(os.path.abspath(path))
    else:
        base = os.getcwd()
    conf = _merge(DEFAULTS, resolve_refs(data, environ=environ))
    from .policy import Policy

    conf["policy"] = Policy(conf.get("policy"))  # UsageError (exit 2) naming the key
    from . import logfwd

    try:
        section = conf.get("logging") or {}
        if not isinstance(section, dict):
            raise ValueError("logging: expected a mapping with providers")
        conf["logging"] = {**section, "providers": logfwd.parse(section.get("providers"))}
    except ValueError as exc:
        raise UsageError(f"{path or 'the service config'}: {exc}") from None
    db = conf["state"].get("database") or DEFAULTS["state"]["database"]
    conf["state"]["database"] = os.path.join(base, os.path.expanduser(db))
    return conf


class Service:
    """Every route's library call, scoped to a user."""

    def __init__(self, conf):
        from .engine import LocalEngine
        from .serverstate import State

        self.conf = conf
        self.max_wait = float(conf["server"].get("max_wait") or DEFAULTS["server"]["max_wait"])
        sock = conf["docker"].get("socket")
        if sock and "://" not in sock:
            sock = "unix://" + sock
        self.swarm = swarm_settings(conf["docker"])
        # the service config only: never the personal config of the account running it
        if self.swarm is not None:
            from .swarm import SwarmEngine

            self.engine = SwarmEngine(sock or None, network=conf["docker"].get("network") or None,
                                      images={}, logging=conf["logging"]["providers"],
                                      **self.swarm)
        else:
            self.engine = LocalEngine(sock or None, network=conf["docker"].get("network") or None,
                                      images={}, image_paths=False,  # an image is never a path
                                      logging=conf["logging"]["providers"])
        self.engine.api.keep_alive = 64  # GETs reuse idle engine connections (dockerapi)
        self.engine.api.coalesce = True  # concurrent identical lists share one request
        self.state = State(conf["state"]["database"], conf["projects"]["storage"].get("key"))
        self.images_conf = {i["name"]: i for i in conf.get("images") or []
                            if isinstance(i, dict) and i.get("name")}
        from .policy import Policy

        policy = conf.get("policy")
        self.policy = policy if isinstance(policy, Policy) else Policy(policy)
        import threading

        self._lock = threading.Lock()  # never held across I/O
        # held across the engine's answers: the server runs under gevent's
        # monkey-patching, so it waits for a greenlet, not the whole thread
        self._network_lock = threading.Lock()
        self._pending = {}  # user -> nonces of the creates in flight (policy.max_sessions)
        from .dockerapi import Flights

        self._flights = Flights()

    # -- sessions --------------------------------------------------------
    def _scope(self, user):
        """The labels every session of user's carries (AuthError when the
        user was removed since their token was checked)."""
        from .errors import AuthError
        from .session import L_OWNER

        key = self.state.user_key(user)
        if not key:
            raise AuthError("invalid token")
        return key, [f"{L_OWNER}={user}", f"{L_SERVED}={key}"]

    def sessions(self, user, all=False, filters=None, status=True):
        """user's session records.  Concurrent lists of one user share one
        engine list and its records (dockerapi.Flights: never a list that
        started before the request); each caller gets its own copies."""
        from .session import FILTER_KEYS, matches

        filters = {k: v for k, v in (filters or {}).items() if k in FILTER_KEYS}
        filters["owner"] = user
        labels = self._scope(user)[1]
        records = self._flights.run(
            (user, bool(all), bool(status), *labels),
            lambda: self.engine.list(all=all, filters={"owner": user}, labels=labels,
                                     status=status))
        return [dict(r) for r in records if matches(r, filters)]

    def sweep(self, log=None):
        """At server start and every minute: remove the orphans that
        nothing uses (reaper.sweep: sessions whose create broke off, helper
        containers of closed sessions, cubbi's networks without containers,
        e.g. the bridge of a user whose last session closed itself when
        idle).  A failure is one line on log; the server serves anyway."""
        from . import reaper

        try:
            done = reaper.sweep(self.engine)
        except CubbiError as exc:
            done, text = [], f"cubbi-server: sweeping orphans failed: {exc}\n"
            if log:
                log.write(text)
        if log:
            for item in done:
                log.write(f"cubbi-server: removed orphan {item['kind']} {item['name']} "
                          f"({item['reason']})\n")
        return done

    def logging_health(self):
        """[{type, url, status}] of the log collectors (logging.providers)."""
        from .logfwd import health

        return health(self.conf["logging"]["providers"])

    def events(self, user, since=None, until=None, filters=None):
        """The user's sessions' lifecycle events (GET /events): the engine
        stream narrowed to the user's labels, as sessions() is."""
        from .session import EVENTS, FILTER_KEYS, parse_filters

        filters = parse_filters([f"{k}={v}" for k, v in (filters or {}).items()
                                 if k in FILTER_KEYS], statuses=EVENTS)
        if since is not None and until is not None and until < since:
            raise UsageError("until is before since")
        return self.engine.events(since=since, until=until, filters=filters,
                                  labels=self._scope(user)[1])

    def session(self, user, ref):
        return self.engine.resolve(ref, records=self.sessions(user, all=True))

    def create(self, user, payload):
        """The one place a client's create request is checked against the
        policy and given what the service decides (owner, uid, network,
        limits, privileges)."""
        from .engine import CreateRequest
        from .session import LABEL

        req = CreateRequest(**check_create(payload)).check(api=True)  # names the JSON fields
        if req.constraints and self.swarm is None:
            raise UsageError('"constraints" place sessions on a swarm\'s nodes: this service '
                             "runs them on one engine (docker.mode: engine)")
        key, scope = self._scope(user)
        if req.mcp:  # the user's own servers; an unknown name: 404 before anything starts
            store = self._mcp_store(user)
            req.mcp_defs = [(n, store.resolved(n)) for n in dict.fromkeys(req.mcp)]
        req.owner = user
        req.uid, req.gid = int(self.conf["sessions"]["uid"]), int(self.conf["sessions"]["gid"])
        req.labels[L_SERVED] = key  # check_create refused the client's labels
        req.scope = scope
        # policy.max_sessions counts the user's containers and the creates in
        # flight (each marked with a nonce, so one that has its container
        # already is not counted twice); the lock is never held across I/O
        nonce = os.urandom(8).hex()
        req.labels[L_REQUEST] = nonce
        with self._lock:
            self._pending.setdefault(user, set()).add(nonce)
        try:
            have = self.engine.api.containers(all=True, labels=[f"{LABEL}=true", *scope])
            made = {(c.get("Labels") or {}).get(L_REQUEST) for c in have}
            with self._lock:
                in_flight = len(self._pending[user] - made - {nonce})
            self.policy.apply(req, self._image_known(req.image), len(have) + in_flight)
            req.network = self._user_network(user, key)
            if req.project:
                self._project_setup(user, req)
            conf_image = self.images_conf.get(req.image)
            if conf_image and conf_image.get("image"):
                from .images import image_exists

                if image_exists(self.engine.api, conf_image["image"]):
                    req.image = conf_image["image"]  # else the definition of that name
            self.policy.check_build(req.image, self._unbuilt(req.image))

            def warn(text):  # e.g. a log collector that is down: the operator's to know
                sys.stderr.write(f"cubbi-server: {user}: {text}\n")

            try:
                return self.engine.create(req, progress=warn)
            except CubbiError as exc:
                if req.network not in str(exc):
                    raise
                # removed by a concurrent close of the user's last session: once more
                self._user_network(user, key)
                return self.engine.create(req, progress=warn)
        finally:
            with self._lock:
                self._pending[user].discard(nonce)
                if not self._pending[user]:
                    del self._pending[user]

    def _image_known(self, name):
        """Whether NAME is an image the service offers: a definition, an
        images: entry, or the image an entry names."""
        from .images import find_definition

        if name in self.images_conf or any(i.get("image") == name
                                          for i in self.images_conf.values()):
            return True
        try:
            return find_definition(name, paths=False) is not None
        except CubbiError:
            return False

    def _unbuilt(self, name):
        """Whether NAME is an image definition whose image is not built yet
        (a create would build it)."""
        from . import images

        defn = images.find_definition(name, paths=False)
        return defn is not None and images.inspect(self.engine.api, images.tag_for(defn)) is None

    def _user_network(self, user, key):
        """The user's own bridge, made on demand: cubbi-u-HASH, labelled as
        this service's, inter-container traffic as policy.user_traffic says.
        One made under another policy is made again when no session uses it.
        One at a time: the engine makes two networks of one name when asked
        twice at once."""
        with self._network_lock:
            return self._ensure_user_network(user, key)

    def _ensure_user_network(self, user, key):
        from .dockerapi import APIError
        from .session import L_OWNER

        name = user_network(key)
        icc = "true" if self.policy.user_traffic else "false"
        labels = {"cubbi.network": "true", L_OWNER: user, L_SERVED: key}
        if self.swarm is not None:  # an overlay network across the nodes (swarm.py)
            return self.engine.ensure_user_network(name, labels)
        # the host interface is cu-HASH: one firewall rule (-i cu-+) covers every user's
        options = {"com.docker.network.bridge.enable_icc": icc,
                   "com.docker.network.bridge.name": "cu-" + name[len("cubbi-u-"):]}
        try:
            net = self.engine.api.network(name)
        except APIError as exc:
            if exc.status != 404:
                raise
            net = None
        if net is not None:
            if (net.get("Labels") or {}).get(L_SERVED) != key:
                raise CubbiError(f"the Docker network {name} exists but is not this service's "
                                 f"for {user}; remove it (docker network rm {name})")
            if (net.get("Options") or {}).get("com.docker.network.bridge.enable_icc") == icc:
                return name
            try:
                self.engine.api.remove_network(name)
            except APIError:
                raise CubbiError(f"policy.user_traffic changed: {user}'s sessions still use the "
                                 f"network {name}; close them first") from None
        used = []
        for _ in range(8):  # another process may take the same subnet meanwhile
            used += [c.get("Subnet") or "" for n in self.engine.api.networks()
                     for c in ((n.get("IPAM") or {}).get("Config") or [])]
            subnet = self.policy.user_subnet(used)
            try:
                self.engine.api.create_network(name, labels=labels, options=options,
                                               subnet=subnet)
                return name
            except APIError as exc:
                if exc.status == 409:  # made meanwhile by a concurrent create
                    return name
                if "overlap" not in str(exc).lower():
                    raise
                used.append(subnet)
        raise CubbiError(f"cannot find a free subnet for {name} in policy.user_networks.pool")

    def _project_setup(self, user, req):
        """A project the user stored on the service: its credential goes into
        the session as the local cubbi-project's would (a 0600 file)."""
        from . import projects
        from .errors import NotFound

        try:
            stored = self.state.project(user, project_id(req.project), with_secret=True)
        except NotFound:  # not stored: a clone without a credential
            stored = None
        lent = (({"url": stored["url"], "auth": stored["auth"]}, stored["secret"]) if stored
                else (None, None))
        req.project, _, env, files = projects.session_setup(req.project, lent)
        req.env.update(env)
        req.files.update(files)

    def close(self, user, ref):
        """Close a session; the user's network goes with their last one (each
        bridge holds a subnet of policy.user_networks.pool)."""
        from .session import LABEL

        rec = self.session(user, ref)
        out = self.engine.close(rec["id"], records=[rec])
        key, scope = self._scope(user)
        # an overlay network stays (the swarm's pool holds thousands, and its
        # removal is not done when the call returns): removed with the user
        if self.swarm is None and not self.engine.api.containers(
                all=True, labels=[f"{LABEL}=true", *scope]):
            self._drop_network(key)
        return out

    def _drop_network(self, key):
        """Remove the network of the user whose key is KEY, when no container uses it."""
        from .dockerapi import APIError

        try:
            self.engine.api.remove_network(user_network(key))
        except APIError:  # gone already, or a create just put a session on it
            pass

    def remove_user(self, user, confirm=False):
        """Remove user: their tokens, projects (with the credentials) and
        sessions.  Without confirm a user who has sessions or projects is
        refused.  The database goes first, so no token of theirs works while
        the sessions close; the sessions are listed again after it, to
        catch one made in the meantime."""
        from .errors import NotFound

        from .output import plural

        if not self.state.user_key(user):
            raise NotFound(f"no user {user!r}; see cubbi-server user list")
        sessions = self.sessions(user, all=True, status=False)
        projects = self.state.projects(user)
        if (sessions or projects) and not confirm:
            raise UsageError(f"user {user} has {plural(len(sessions), 'session')} and "
                             f"{plural(len(projects), 'project')}; to close and delete them with "
                             f"the user, confirm with --yes: cubbi-server user remove {user} --yes")
        key, scope = self._scope(user)
        mcp_names = self.state.mcp_names(user)
        rec = self.state.remove_user(user)
        rec["sessions"] = [self.engine.close(sess["id"], records=[sess])["id"] for sess in
                           self.engine.list(all=True, labels=scope, status=False)]
        servers = self.engine.mcp_servers(scope, owner=user)
        for name in mcp_names:  # their MCP servers' containers and networks
            servers.halt(name)
        self._drop_network(key)
        return rec

    def logs(self, user, ref, follow=False, tail=None, since=None):
        return self.engine.logs(self.session(user, ref), follow=follow, tail=tail, since=since)

    def egress_log(self, user, ref):
        return self.engine.egress_log(self.session(user, ref))

    def wait_ready(self, user, ref, timeout):
        """Wait for the session to be ready, never past server.max_wait."""
        return self.engine.wait_ready(self.session(user, ref),
                                      timeout=min(timeout, self.max_wait))

    def exec_open(self, user, ref, command=None, tty=False, env=None):
        """(exec id, connection, handle): the command started in the session
        under a marked sh (LocalEngine.exec_marked), so exec_stop(handle)
        stops it and what runs below it when the client goes away."""
        rec = self.engine.wait_ready(self.session(user, ref), timeout=self.max_wait)
        return self.engine.exec_marked(rec, command, tty=tty, env=env)

    def exec_stop(self, handle):
        self.engine.exec_stop(handle)

    def run(self, user, ref, command, stdin=b"", max_output=None, watch=None, size=len):
        """Run command without a TTY: {exit_code, stdout, stderr}.  Past
        max_output bytes of output the command is stopped (exec_stop) and the
        record says so: exit_code None, error and kind "output_limit".
        watch(conn), when given, is called once the command runs and returns
        a callable that ends the watch and says why it cut the connection
        short (e.g. "client_gone", "time_limit") or None: the command is
        stopped then too.  size(data) is what a piece of output counts
        against max_output (the server counts it as its JSON answer sends it)."""
        rec = self.engine.wait_ready(self.session(user, ref), timeout=self.max_wait)
        eid, conn, handle = self.engine.exec_marked(rec, command)
        out = {"stdout": [], "stderr": []}
        used, cut = 0, None
        unwatch = watch(conn) if watch else (lambda: None)
        failure = why = None
        try:
            if stdin:
                conn.sendall(stdin)
            conn.shutdown_write()
            for stream, data in conn.frames():
                if stream in out:
                    cost = size(data)
                    if max_output is not None and used + cost > max_output:
                        out[stream].append(_fit(data, max_output - used, size))
                        cut = "output_limit"
                        break
                    used += cost
                    out[stream].append(data)
        except (CubbiError, OSError) as exc:
            failure = exc
        finally:
            why = unwatch()
            conn.close()
        if failure is not None and not why:
            raise failure
        cut = why or cut
        res = {"stdout": b"".join(out["stdout"]), "stderr": b"".join(out["stderr"])}
        if cut:
            self.exec_stop(handle)
            what = {"output_limit": f"the output passed {max_output} bytes "
                                    "(server.max_exec_output)",
                    "time_limit": f"it ran longer than {self.conf['server'].get('max_exec_time')}"
                                  " s (server.max_exec_time)",
                    "client_gone": "the client went away"}.get(cut, cut)
            return {"exit_code": None, **res, "kind": cut,
                    "error": f"{what}: the command was stopped"}
        return {"exit_code": self.engine.api.exec_exit_code(eid), **res}

    # -- images ------------------------------------------------------------
    def images(self):
        """The records of cubbi-image list --json: the image definitions the
        server knows, then the service config's images: entries."""
        from . import images

        out = [_public(images.record(d, images.inspect(self.engine.api, images.tag_for(d))))
               for d in images.definitions()]
        have = {r["name"] for r in out}
        return out + [self._conf_image(n) for n in sorted(self.images_conf) if n not in have]

    def image(self, name):
        from . import images
        from .errors import NotFound

        defn = images.find_definition(name, paths=False)
        if defn is not None:
            return _public(images.record(defn, images.inspect(self.engine.api,
                                                              images.tag_for(defn))))
        if name in self.images_conf:
            return self._conf_image(name)
        raise NotFound(f"no image definition {name!r}; see cubbi-image list")

    def _conf_image(self, name):
        from .images import image_exists

        entry = self.images_conf[name]
        built = image_exists(self.engine.api, entry.get("image") or name)
        return {"name": name, "source": "service", "tag": entry.get("image"),
                "description": entry.get("description"), "built": built}

    # -- MCP servers: each user's own, as projects ------------------------------
    def _mcp_store(self, user):
        return _MCPStore(self, user)

    def mcp(self, user):
        """The user's MCP servers on this engine (mcpserve.Servers; on a
        swarm swarmmcp.SwarmServers), named and networked within the user's
        scope."""
        return self.engine.mcp_servers(self._scope(user)[1], owner=user,
                                       store=self._mcp_store(user))

    def mcp_add(self, user, payload):
        """POST /mcp: a definition of the user's (check_mcp), refused when
        the name exists unless "force"."""
        name, meta, force = check_mcp(payload)
        return self.mcp(user).add(name, meta, force=force)[0]

    def mcp_action(self, user, name, action):
        """POST /mcp/NAME/start|stop|restart."""
        servers = self.mcp(user)
        if action not in ("start", "stop", "restart"):
            from .errors import NotFound

            raise NotFound(f"no action {action!r}: start, stop or restart")
        return getattr(servers, action)(name)

    def mcp_logs(self, user, name, tail=None, proxy=False):
        return list(self.mcp(user).logs(name, tail=tail, proxy=proxy))

    # -- projects ----------------------------------------------------------
    def projects(self, user):
        return self.state.projects(user)

    def project(self, user, pid):
        """The record of cubbi-project show --json: which kind of credential,
        never its value."""
        from .projects import CREDENTIAL_TEXT

        rec = self.state.project(user, project_id(pid))
        rec["credential"] = CREDENTIAL_TEXT[rec["auth"]]
        rec["credential_store"] = ("the service's database (encrypted)"
                                   if rec["auth"] != "none" else None)
        return rec

    def put_project(self, user, payload, pid=None):
        url = payload.get("url") or pid
        if not isinstance(url, str) or not url:
            raise UsageError('a project needs a "url"')
        new_id = project_id(url)
        if pid is not None and project_id(pid) != new_id:
            raise UsageError(f"the url {url!r} names project {new_id!r}, not {pid!r}")
        kind = payload.get("auth") or "none"
        if kind not in ("none", "ssh_key", "token"):
            raise UsageError(f'"auth" {kind!r}: expected "ssh_key", "token" or "none"')
        secret = payload.get(kind) if kind != "none" else None
        if kind != "none" and (not isinstance(secret, str) or not secret):
            raise UsageError(f'"auth": "{kind}" needs the credential in "{kind}"')
        from .projects import clone_url

        url = clone_url(url, kind)[1]  # as cubbi-project add stores it: ssh for a key
        return self.state.put_project(user, new_id, url, type=payload.get("type") or "git",
                                      auth_type=kind, secret=secret,
                                      replace=pid is not None)

    def delete_project(self, user, pid):
        return self.state.delete_project(user, project_id(pid))


def _fit(data, room, size):
    """The longest start of data whose size() is at most room."""
    lo, hi = 0, min(len(data), room)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(data[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return data[:lo]


def _public(rec):
    """An image record without the server's file paths (a definition's
    folder on the server's disk means nothing to a client)."""
    return {k: v for k, v in rec.items() if k != "path"}


def __getattr__(name):
    """FORMAT_DOC: the text of man page cubbi-service.yaml(5), read from
    data/cubbi-service.yaml.5.txt when asked for (docs.py renders it)."""
    if name == "FORMAT_DOC":
        with open(os.path.join(os.path.dirname(__file__), "data", "cubbi-service.yaml.5.txt"),
                  encoding="utf-8") as fh:
            return fh.read()
    raise AttributeError(name)


def swarm_settings(docker):
    """The SwarmEngine settings of the docker: section when docker.mode is
    swarm; None for engine (the default)."""
    mode = docker.get("mode") or "engine"
    if mode not in ("engine", "swarm"):
        raise UsageError(f"docker.mode: {mode!r}: expected engine or swarm")
    if mode == "engine":
        return None
    nodes = docker.get("nodes") or {}
    constraints = docker.get("constraints") or []
    if not isinstance(nodes, dict) or not isinstance(constraints, list):
        raise UsageError("docker.nodes must be a mapping and docker.constraints a list")
    if not (nodes.get("tls") or docker.get("tls")):
        # exec and terminals reach the nodes' engines: never in clear, never
        # to an engine that takes anyone (a node's API is root on it)
        raise UsageError("docker.mode: swarm needs docker.nodes.tls (a folder with ca.pem, "
                         "cert.pem and key.pem for the nodes' engines on TLS; see "
                         "cubbi-service.yaml(5))")
    registry = docker.get("registry") or {}
    if isinstance(registry, str):
        registry = {"address": registry}
    auth = {}
    if registry.get("username"):
        from .expand import resolve, secret_ref

        password = registry.get("password") or ""
        if secret_ref("docker.registry.password", password) is not None:
            # secret:NAME: from the secret store of the account the service runs
            # as (cubbi-config set services.registry.password -), not the file
            password = resolve("docker.registry.password", password)
        auth = {"username": registry["username"], "password": password,
                "serveraddress": registry.get("address")}
    return {"tls": nodes.get("tls") or docker.get("tls"), "node_port": int(nodes.get("port") or 2376),
            "registry": registry.get("address"), "registry_auth": auth,
            "constraints": [str(c) for c in constraints],
            "schedule_timeout": float(docker.get("schedule_timeout") or 30)}


def user_network(key):
    """The name of the session network of the user whose key (in this
    service's database) is KEY: another service's user of the same name has
    another."""
    import hashlib

    return "cubbi-u-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def project_id(url):
    """The normalised project id, as cubbi-project computes it locally."""
    from .projects import normalise

    return normalise(url)[0]


_TYPES = {"image": str, "name": str, "env": dict, "networks": list, "ports": list,
          "project": str, "hardened": bool, "files": dict, "labels": dict,
          "pids_limit": int, "mcp": list, "ssh_keys": list, "idle_timeout": str, "disk": str,
          "allow_hosts": list, "no_network": bool, "constraints": list}


def check_mcp(payload):
    """(name, definition, force) from POST /mcp's body: {name, kind,
    image, command, env, url, headers, argv, force}, type-checked."""
    from . import mcp

    if not isinstance(payload, dict):
        raise UsageError("the request body must be a JSON object (an MCP server)")
    types = {"name": str, "kind": str, "image": str, "command": str, "url": str, "env": dict,
             "headers": dict, "argv": list, "force": bool}
    for key, kind in types.items():
        if payload.get(key) is not None and not isinstance(payload[key], kind):
            raise UsageError(f'"{key}" must be a {kind.__name__}')
    for key in ("env", "headers"):
        if not all(isinstance(k, str) and isinstance(v, str)
                   for k, v in (payload.get(key) or {}).items()):
            raise UsageError(f'"{key}" must map strings to strings')
    if not all(isinstance(a, str) for a in payload.get("argv") or []):
        raise UsageError('"argv" must be a list of strings')
    kind = payload.get("kind")
    if kind not in mcp.KINDS:
        raise UsageError(f'"kind" must be one of {", ".join(mcp.KINDS)}')
    name = mcp.check_name(payload.get("name"))
    env, headers = payload.get("env") or {}, payload.get("headers") or {}
    mcp.parse_pairs([f"{k}={v}" for k, v in env.items()], '"env"')
    mcp.parse_pairs([f"{k}={v}" for k, v in headers.items()], '"headers"', header=True)
    meta = mcp.definition(kind, image=payload.get("image"), command=payload.get("command"),
                          env=env, url=payload.get("url"), headers=headers,
                          argv=payload.get("argv"))
    return name, meta, bool(payload.get("force"))


class _MCPStore:
    """A user's MCP server definitions in the service's database, with the
    interface of cubbi_tools.mcp (what mcpserve.Servers calls).  A container
    server's image is one the policy allows, as a session's is."""

    def __init__(self, service, user):
        self.service, self.user, self.state = service, user, service.state

    def all_servers(self):
        from .mcp import record

        return [record(n, self.state.mcp(self.user, n)[0]) for n in self.state.mcp_names(self.user)]

    def find(self, name):
        return self.state.mcp(self.user, str(name or "").strip())[0]

    def get(self, name):
        from .mcp import record

        return record(name, self.find(name))

    def add(self, name, meta, force=False):
        import datetime

        from .errors import Forbidden
        from .mcp import check_name, record, split_secrets

        name = check_name(name)
        if meta.get("kind") == "container" and not (
                self.service._image_known(meta["image"]) or self.service.policy.any_local):
            raise Forbidden(f"policy.images does not allow {meta['image']!r} for an MCP "
                            "server: use an image the service lists (cubbi-image list)")
        meta, found = split_secrets(name, meta)
        meta["added"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        replaced = self.state.put_mcp(self.user, name, meta, found, replace=force)
        return record(name, meta), replaced

    def remove(self, name):
        from .mcp import record

        return record(name, self.state.delete_mcp(self.user, name))

    def resolved(self, name, meta=None):
        from .mcp import resolved

        stored, secrets = self.state.mcp(self.user, name, with_secrets=True)
        return resolved(name, meta if meta is not None else stored, secret=secrets.get)


def check_create(payload):
    """The CreateRequest fields of a client's JSON body, type-checked, with
    everything that names a path on the client's machine refused."""
    if not isinstance(payload, dict):
        raise UsageError("the request body must be a JSON object (a CreateRequest)")
    from .validate import refuse_host_paths

    refuse_host_paths(payload.get("volumes"), payload.get("mount"))
    out = {}
    for key, kind in _TYPES.items():
        value = payload.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f'"{key}" must be a {kind.__name__}')
        out[key] = value
    for key in ("cpus", "memory"):
        value = payload.get(key)
        if value is not None:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise UsageError(f'"{key}" must be a string or a number')
            out[key] = value
    if not out.get("image"):
        raise UsageError('"image" is required')
    refuse_host_paths(image=out["image"], disk=False)  # by its form only: the disk is never read
    for key in ("networks", "ports", "allow_hosts", "constraints"):
        if not all(isinstance(v, str) for v in out.get(key, [])):
            raise UsageError(f'"{key}" must be a list of strings')
    for key in ("env", "labels"):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in out.get(key, {}).items()):
            raise UsageError(f'"{key}" must map strings to strings')
    # the container's labels and files are the service's: a client's could
    # steer a proxy (traefik.*) or write the init's hooks, which run as root
    for key in ("labels", "files"):
        if out.pop(key, None):
            raise UsageError(f'"{key}": the service does not take {key} from clients')
    from .envs import reserved_key, valid_key

    env = out.get("env", {})
    if out.get("project"):  # older clients send the project's variables; the service sets them
        for key in PROJECT_ENV:
            env.pop(key, None)
    bad = sorted(k for k in env if not valid_key(k))
    if bad:
        raise UsageError(f'"env": {bad[0]!r} is not a valid variable name (letters, digits '
                         "and '_', not starting with a digit)")
    for key in sorted(env):
        why = reserved_key(key, service=True)
        if why:
            raise UsageError(f'"env": {key!r}: {why}')
    return out


PROJECT_ENV = ("CUBBI_PROJECT_URL", "CUBBI_PROJECT_TYPE")  # projects.session_setup's

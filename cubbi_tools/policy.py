"""The service's policy: what a signed-in client may ask of the server's
Docker engine (the `policy:` section of cubbi-service.yaml, documented in
cubbi-service.yaml(5)).  Reads no settings: service.load_config hands the
section to parse() at server start (a bad value is one UsageError naming
the key), and service.Service.create calls Policy.apply on every create
request, the one place it is enforced.

A refusal is Forbidden (403) and names the setting; a cap reached is
TooMany (429).  An image or network the policy does not allow is refused
the same way whether it exists on the host or not, so the answer tells
nothing about the host.
"""

from .errors import Forbidden, TooMany, UsageError

DEFAULTS = {
    "networks": [],               # networks a client may name (besides the user's own)
    # definitions and images: only, unless any_local; a definition not built yet
    # is built on a client's request only with build (minutes of CPU, downloads)
    "images": {"any_local": False, "build": False},
    # fixed_host_ports: whether a client may name the host port; by default the
    # engine picks a free one, so a refusal tells nothing of what holds a port
    "ports": {"bind": "127.0.0.1", "host_ports": "1024-65535", "max": 5,
              "fixed_host_ports": False},
    "limits": {"memory": {"default": "2g", "max": "8g"},
               "cpus": {"default": 1, "max": 4},
               "pids": {"default": 1024, "max": 8192}},
    "logs": {"max_size": "10m", "max_files": 3},  # a session's log, rotated (json-file)
    # a session unused this long is closed (cubbi-create --idle-timeout); max caps a
    # client's request and is the default when default is null
    "idle_timeout": {"default": None, "max": None},
    # each user's bridge gets a subnet of this size from this pool (the engine's
    # default pools hold ~30 bridges)
    "user_networks": {"pool": "10.213.0.0/16", "size": 26},
    "max_sessions": 20,            # per user, running or stopped
    "sudo": False,                 # password-less sudo for the session user
    "user_traffic": False,         # a user's own sessions may talk to each other
    "net_raw": False,              # keep the NET_RAW capability
    "no_new_privileges": True,
    # an egress allowlist (HOST[:PORT]) bounding every session's: a session must
    # then have one within it (or no network); null: sessions reach anything
    "allow_hosts": None,
    # swarm mode: the keys a request's placement constraints may name
    # (e.g. node.labels.zone); the operator's own are docker.constraints
    "constraints": [],
}

EPHEMERAL = (32768, 60999)  # the engine's own choice of a free host port (Linux default)


def _fail(key, message):
    raise UsageError(f"policy.{key}: {message} (cubbi-service.yaml(5))")


def _bool(key, value):
    if not isinstance(value, bool):
        _fail(key, f"expected true or false, got {value!r}")
    return value


def _count(key, value, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, f"expected a whole number of {low} or more, got {value!r}")
    return value


def port_range(text, key="ports.host_ports"):
    """'LOW-HIGH' or 'PORT' -> (low, high), 1 <= low <= high <= 65535."""
    low, sep, high = str(text).partition("-")
    try:
        lo, hi = int(low), int(high if sep else low)
        if not 1 <= lo <= hi <= 65535:
            raise ValueError
    except ValueError:
        _fail(key, f"expected LOW-HIGH with ports 1-65535, got {text!r}")
    return lo, hi


def _limit(kind, value, where):
    from .validate import parse_cpus, parse_memory, parse_pids_limit

    if value is None:
        return None
    try:
        return {"memory": parse_memory, "cpus": parse_cpus,
                "pids": parse_pids_limit}[kind](value, "value")
    except UsageError as exc:
        _fail(where, str(exc))


def _known(section, defaults, where):
    if not isinstance(section, dict):
        name = "policy." + where.rstrip(".") if where else "policy"
        raise UsageError(f"{name}: expected a mapping of settings (cubbi-service.yaml(5))")
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        _fail(where + str(unknown[0]), f"unknown setting; known: {', '.join(sorted(defaults))}")


def _merged(over, base):
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merged(v, base[k]) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _pool(section):
    """(IPv4Network, prefix length) of policy.user_networks."""
    import ipaddress

    try:
        pool = ipaddress.IPv4Network(str(section["pool"]), strict=True)
    except ValueError:
        _fail("user_networks.pool", f"expected an IPv4 network such as 10.213.0.0/16, "
                                    f"got {section['pool']!r}")
    size = section["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not pool.prefixlen <= size <= 29:
        _fail("user_networks.size", f"expected a prefix length from {pool.prefixlen} (the "
                                    f"pool's) to 29, got {size!r}")
    return pool, size


def _duration(key, value):
    from .validate import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value, "value")
    except UsageError as exc:
        _fail(key, str(exc))


class Policy:
    """The checked policy; apply() enforces it on a CreateRequest."""

    def __init__(self, section=None):
        if section is None:
            section = {}
        _known(section, DEFAULTS, "")
        for key in ("images", "ports", "limits", "logs", "user_networks", "idle_timeout"):
            if section.get(key) is not None:
                _known(section[key], DEFAULTS[key], key + ".")
        for kind in DEFAULTS["limits"]:
            sub = (section.get("limits") or {}).get(kind)
            if sub is not None:
                _known(sub, DEFAULTS["limits"][kind], f"limits.{kind}.")
        p = _merged(section, DEFAULTS)
        self.raw = p
        nets = p["networks"]
        if not isinstance(nets, list) or not all(isinstance(n, str) and n for n in nets):
            _fail("networks", "expected a list of network names")
        self.networks = set(nets)
        keys = p["constraints"]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            _fail("constraints", "expected a list of constraint keys (e.g. node.labels.zone)")
        self.constraint_keys = set(keys)
        self.any_local = _bool("images.any_local", p["images"]["any_local"])
        self.build = _bool("images.build", p["images"]["build"])
        from .validate import parse_host_ip

        try:
            self.bind = parse_host_ip(p["ports"]["bind"])
        except UsageError:
            _fail("ports.bind", f"{p['ports']['bind']!r} is not an IP address")
        self.host_ports = port_range(p["ports"]["host_ports"])
        self.max_ports = _count("ports.max", p["ports"]["max"], low=0)
        self.fixed_host_ports = _bool("ports.fixed_host_ports", p["ports"]["fixed_host_ports"])
        self.limits = {}
        for kind in ("memory", "cpus", "pids"):
            spec = p["limits"][kind]
            if not isinstance(spec, dict):
                _fail(f"limits.{kind}", "expected a mapping with default and max")
            default = _limit(kind, spec.get("default"), f"limits.{kind}.default")
            top = _limit(kind, spec.get("max"), f"limits.{kind}.max")
            if default is not None and top is not None and default > top:
                _fail(f"limits.{kind}.default", f"{spec['default']} is above "
                      f"policy.limits.{kind}.max ({spec['max']})")
            self.limits[kind] = (default, top, spec.get("max"))
        from .validate import parse_log_size

        try:
            self.log_max_size = parse_log_size(p["logs"]["max_size"], "value")
        except UsageError as exc:
            _fail("logs.max_size", str(exc))
        self.log_max_files = _count("logs.max_files", p["logs"]["max_files"])
        if self.log_max_files > 100:
            _fail("logs.max_files", f"expected at most 100, got {self.log_max_files}")
        self.idle_default, self.idle_max = (
            _duration(f"idle_timeout.{k}", p["idle_timeout"][k]) for k in ("default", "max"))
        if self.idle_default and self.idle_max and self.idle_default > self.idle_max:
            _fail("idle_timeout.default", f"{p['idle_timeout']['default']} is above "
                                          f"policy.idle_timeout.max ({p['idle_timeout']['max']})")
        self.idle_max_text = p["idle_timeout"]["max"]
        self.pool, self.subnet_size = _pool(p["user_networks"])
        self.max_sessions = _count("max_sessions", p["max_sessions"])
        self.sudo = _bool("sudo", p["sudo"])
        self.user_traffic = _bool("user_traffic", p["user_traffic"])
        self.net_raw = _bool("net_raw", p["net_raw"])
        self.no_new_privileges = _bool("no_new_privileges", p["no_new_privileges"])
        self.allow_hosts = None
        if p["allow_hosts"] is not None:
            from .validate import allow_hosts

            try:
                self.allow_hosts = allow_hosts(p["allow_hosts"], "value")
            except UsageError as exc:
                _fail("allow_hosts", str(exc).split(": ", 1)[-1])
        if self.sudo and self.no_new_privileges:
            _fail("sudo", "true needs policy.no_new_privileges: false (sudo is setuid, "
                          "which no-new-privileges stops)")

    # -- enforcement -------------------------------------------------------
    def apply(self, req, image_allowed, sessions):
        """Check req (a validate.CreateRequest from a client) and fill in what
        the policy decides: limits, port bindings, privileges.
        image_allowed: whether req.image is a definition or an images: entry;
        sessions: how many sessions the user has now (with creates in flight)."""
        if sessions >= self.max_sessions:
            raise TooMany(f"policy.max_sessions is {self.max_sessions} and you have as many "
                          "sessions; close one (cubbi-close) and try again")
        if not (image_allowed or self.any_local):
            raise Forbidden(f"policy.images does not allow {req.image!r}: use an image the "
                            "service lists (cubbi-image list)")
        for net in req.networks:
            if net not in self.networks:
                raise Forbidden(f"policy.networks does not allow {net!r}")
        self._egress(req)
        for c in req.constraints:
            import re

            m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(==|!=)\s*([A-Za-z0-9_.:-]+)\s*", c)
            if not m:
                raise UsageError(f'"constraints": {c!r}: expected KEY==VALUE or KEY!=VALUE')
            if m.group(1) not in self.constraint_keys:
                raise Forbidden(f"policy.constraints does not allow a constraint on "
                                f"{m.group(1)!r}")
        req.ports = self._ports(req.ports)
        self._limits(req)
        req.log_max_size, req.log_max_files = self.log_max_size, self.log_max_files
        req.idle_timeout = self._idle(req.idle_timeout)
        req.sudo = self.sudo
        req.cap_drop = [] if self.net_raw else ["NET_RAW"]
        req.no_new_privileges = self.no_new_privileges or req.hardened
        return req

    def _idle(self, asked):
        """The session's idle timeout in seconds: the client's, within
        idle_timeout.max; else the default (else the max); else none."""
        from .validate import parse_duration

        if asked is None:
            return self.idle_default or self.idle_max
        secs = parse_duration(asked, '"idle_timeout"')
        if self.idle_max and secs > self.idle_max:
            raise Forbidden(f"policy.idle_timeout.max is {self.idle_max_text}: {asked} asked")
        return secs

    def _egress(self, req):
        """With policy.allow_hosts a session has an allowlist within it, or
        no network: a request's list can only narrow the policy's."""
        from .validate import allow_covers

        req.allow_within = self.allow_hosts
        if self.allow_hosts is None or req.no_network:
            return
        if not req.allow_hosts:
            raise Forbidden("policy.allow_hosts requires an egress allowlist: give "
                            "--allow-host HOST (\"allow_hosts\") within it, or --no-network")
        for host in req.allow_hosts:
            if not any(allow_covers(o, host) for o in self.allow_hosts):
                raise Forbidden(f"policy.allow_hosts does not allow {host!r}")

    def check_build(self, name, unbuilt):
        """Forbidden when NAME is a definition not built yet (unbuilt) and
        the policy does not let a client's request build it."""
        if unbuilt and not self.build:
            raise Forbidden(f"policy.images.build is false: image {name!r} is not built on this "
                            f"service; its operator can build it (cubbi-image build {name})")

    def user_subnet(self, used):
        """The first subnet of the pool that overlaps none of USED (network
        strings of the engine's networks), or TooMany when the pool is full."""
        import ipaddress

        taken = []
        for text in used:
            try:
                taken.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                pass
        taken = [n for n in taken if n.version == 4 and n.overlaps(self.pool)]
        for net in self.pool.subnets(new_prefix=self.subnet_size):
            if not any(net.overlaps(t) for t in taken):
                return str(net)
        raise TooMany(f"policy.user_networks.pool {self.pool} has no free /{self.subnet_size} "
                      "left for another user's network; ask the operator to widen it")

    def _ports(self, specs):
        from .validate import parse_port

        if len(specs) > self.max_ports:
            raise Forbidden(f"policy.ports.max is {self.max_ports}: {len(specs)} ports asked")
        lo, hi = self.host_ports
        out = []
        for spec in specs:
            ip, host, cport, proto = parse_port(spec, '"ports"')
            if str(spec).partition("/")[0].count(":") >= 2 and ip != self.bind:
                raise Forbidden(f"policy.ports.bind is {self.bind}: cannot publish on {ip}")
            first, _, last = host.partition("-")
            if host and host != "0":
                if not lo <= int(first) <= int(last or first) <= hi:
                    raise Forbidden(f"policy.ports.host_ports is {lo}-{hi}: host port {host} "
                                    "is outside it")
                if not self.fixed_host_ports:
                    raise Forbidden(f"policy.ports.fixed_host_ports is false: give only the "
                                    f"container port ({cport}) and the service picks a free "
                                    "host port")
            elif lo > EPHEMERAL[0] or hi < EPHEMERAL[1]:
                host = f"{lo}-{hi}"  # the engine picks a free one in the range
            else:
                host = ""
            addr = f"[{self.bind}]" if ":" in self.bind else self.bind
            out.append(f"{addr}:{host}:{cport}/{proto}")
        return out

    def _limits(self, req):
        from .validate import parse_cpus, parse_memory, parse_pids_limit

        for kind, attr, parse in (("memory", "memory", parse_memory), ("cpus", "cpus", parse_cpus),
                                  ("pids", "pids_limit", parse_pids_limit)):
            default, top, top_text = self.limits[kind]
            value = getattr(req, attr)
            if value is None:
                setattr(req, attr, default)
                continue
            if top is not None and parse(value, f'"{attr}"') > top:
                raise Forbidden(f"policy.limits.{kind}.max is {top_text}: {value} asked")

"""Request validation: what a session request may hold, checked before it
goes anywhere (on the client, and again where it runs).  Reads no settings
and imports nothing of cubbi's but errors.

CreateRequest (everything needed to create a session), the parse_* helpers
of its switches, image references, session names, and the refusals of what
names a path on the client's machine when the session runs elsewhere (a
remote service).
"""

import os

from .errors import UsageError

IMAGE_PATH_REFUSED = ("image directories are built where they are; build it with cubbi-image "
                      "build and push, or use a name the server knows")
VOLUME_REFUSED = ("-v/--volume is not available with a remote: paths on this machine do not "
                  "exist on the server")
MOUNT_REFUSED = ("--mount is not available with a remote: this directory is not on the "
                 "server; use --project URL to clone a repository")


MIN_MEMORY = 6 * 1024 ** 2  # the engine refuses less
MAX_PIDS = 4194304  # Linux's largest pid_max
MIN_CPUS = 0.01  # as the docker CLI: less is 0 NanoCpus (no limit at all) or a runc error

# The name of each switch in a create request sent to a service: its errors
# name the JSON field there, not the command line's switch (CreateRequest.check)
API_NAMES = {"--memory": '"memory"', "--cpus": '"cpus"', "--pids-limit": '"pids_limit"',
             "--port": '"ports"', "--image": '"image"', "--idle-timeout": '"idle_timeout"',
             "--disk": '"disk"'}

MAX_DURATION = 366 * 86400  # a year: --idle-timeout, cubbi-prune --older-than/--idle


def parse_duration(text, what="--idle-timeout", zero=False):
    """'90', '90s', '15m', '2h', '1d' (or combined: '1h30m') -> whole
    seconds, 1 s (0 with zero=True) up to a year, or UsageError."""
    import re

    t = str(text).strip().lower()
    m = re.fullmatch(r"(?:(\d{1,8})d)?(?:(\d{1,8})h)?(?:(\d{1,8})m)?(?:(\d{1,8})s?)?", t)
    n = None
    if m and t and not isinstance(text, (bool, float)):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        n = ((d * 24 + h) * 60 + mi) * 60 + s
    if n is None or not (0 if zero else 1) <= n <= MAX_DURATION:
        raise UsageError(f"{what} {text!r}: expected a duration such as 30s, 15m, 2h or 1d "
                         f"({'0' if zero else '1s'} to 366d)")
    return n


def parse_memory(text, what="--memory", kind="memory"):
    """A size in bytes: N, Nk, Nm, Ng or Nt (6m at least); KIND names it in
    the error (memory, disk)."""
    if text is None:
        return None
    units = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
    t = str(text).strip().lower().rstrip("b") or "0"
    try:
        size = float(t[:-1]) * units[t[-1]] if t[-1] in units else int(t)
        if not MIN_MEMORY <= size < 1 << 60:  # also refuses nan and inf
            raise ValueError
        return int(size)
    except (ValueError, IndexError):
        raise UsageError(f"{what}: invalid {kind} size {text!r}: use e.g. "
                         f"{'10g' if kind == 'disk' else '512m or 2g'} (6m at least)") from None


LOG_MAX_SIZE, LOG_MAX_FILES = "10m", 3  # a session's log: json-file, rotated at this size


def parse_log_size(text, what="log max size"):
    """A log file's size for Docker's max-size: N, Nk, Nm or Ng (bytes
    up to 1 TiB) -> the text Docker takes, e.g. '10m'."""
    import re

    t = str(text).strip().lower()
    m = re.fullmatch(r"([0-9]{1,13})([kmg]?)b?", t)
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2)] if m else 0
    if isinstance(text, bool) or not 1024 <= n <= 1 << 40:
        raise UsageError(f"{what} {text!r}: expected a size from 1k to 1024g such as 10m")
    return m.group(1) + m.group(2)


def parse_host_ip(text, what="--port"):
    """An IPv4 or IPv6 literal ([::1] too; localhost is 127.0.0.1) ->
    the address the engine binds, or UsageError."""
    import ipaddress

    t = str(text).strip()
    if t.lower() == "localhost":
        return "127.0.0.1"
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an IP address (use e.g. 127.0.0.1, "
                         "0.0.0.0, [::1] or localhost)") from None


def parse_port(text, what="--port"):
    """'8000', '8080:8000', '127.0.0.1:8080:8000', with optional /tcp or
    /udp -> (host_ip, host_port or '', container_port, proto); the host
    port may be a range LOW-HIGH (the engine picks a free one in it)."""
    spec, _, proto = str(text).partition("/")
    proto = proto or "tcp"
    parts = spec.rsplit(":", 2)
    ip = "127.0.0.1"
    try:
        if len(parts) == 1:
            host, cont = "", parts[0]
        elif len(parts) == 2:
            host, cont = parts
        else:
            ip, host, cont = parts
        low, dash, high = host.partition("-")  # a host range LOW-HIGH: the engine picks
        if not cont.isdigit() or host and not (low.isdigit() and (not dash or high.isdigit())):
            raise ValueError
        cport = int(cont)
        if proto not in ("tcp", "udp") or not 0 < cport < 65536 or host and (
                int(low) > int(high or low) or int(high or low) > 65535):
            raise ValueError
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected PORT, HOST:PORT or IP:HOST:PORT "
                         "(ports 1-65535, HOST 0 for a free one; optionally /tcp or /udp)") from None
    if len(parts) == 3:
        ip = parse_host_ip(ip, what)
    return ip, host, cport, proto


def parse_pids_limit(value, what="--pids-limit"):
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_PIDS:
        raise UsageError(f"{what} {value}: expected a number from 1 to {MAX_PIDS}")
    return n


def parse_cpus(value, what="--cpus"):
    try:
        n = float(value)
        if not MIN_CPUS <= n < 1e6:  # also refuses nan and inf
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"{what} {value!r}: expected a number of CPUs from {MIN_CPUS} "
                         "(e.g. 0.5 or 2)") from None
    return n


MAX_ALLOW_HOSTS = 64
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


def parse_allow_host(text, what="--allow-host"):
    """An egress allowlist entry HOST[:PORT] -> (host, port or None), the
    host lowercased: a DNS name (a leading '*.' stands for any name under
    it), or an IPv4 address.  No port means HTTP on 80 and HTTPS on 443."""
    import re

    t = str(text if not isinstance(text, bool) else "").strip().lower()
    host, sep, port = t.rpartition(":") if ":" in t else (t, "", "")
    bad = not host or len(host) > 253
    if not bad:
        bare = host[2:] if host.startswith("*.") else host
        bad = not re.fullmatch(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*", bare) or \
            (host.startswith("*.") and "." not in bare)  # not every name of a top-level domain
    if sep and not bad:
        bad = not port.isdigit() or not 0 < int(port) < 65536
    if bad:
        raise UsageError(f"{what} {text!r}: expected HOST or HOST:PORT, HOST a DNS name "
                         "(*.example.com for any name under it) or an IPv4 address, PORT 1-65535")
    return host, int(port) if sep else None


def allow_hosts(values, what="--allow-host"):
    """The checked allowlist: ['host' or 'host:port', ...] without repeats."""
    if not isinstance(values, (list, tuple)) or len(values) > MAX_ALLOW_HOSTS:
        raise UsageError(f"{what}: expected a list of at most {MAX_ALLOW_HOSTS} HOST[:PORT]")
    out = []
    for v in values:
        host, port = parse_allow_host(v, what)
        out.append(host if port is None else f"{host}:{port}")
    return list(dict.fromkeys(out))


def allow_covers(outer, inner):
    """Whether allowlist entry OUTER lets through everything entry INNER
    does (both HOST[:PORT]): the same host or a '*.' parent of it, and the
    same ports (no port: 80 and 443)."""
    oh, op = parse_allow_host(outer)
    ih, ip = parse_allow_host(inner)
    if oh.startswith("*."):
        # '*.a.b' covers 'x.a.b' and '*.x.a.b', and '*.a.b' itself ('.a.b' ends
        # with '.a.b'); never the bare 'a.b'
        host_ok = (ih[1:] if ih.startswith("*.") else ih).endswith(oh[1:])
    else:
        host_ok = oh == ih
    oports = {80, 443} if op is None else {op}
    iports = {80, 443} if ip is None else {ip}
    return host_ok and iports <= oports


def check_image_ref(ref, what="--image"):
    """A Docker image reference: lowercase repository path, optional :tag
    and @digest; UsageError otherwise (the engine's own message is Go's)."""
    import re

    name = str(ref or "")
    if not name.strip():
        raise UsageError(f"{what}: give an image name (or leave the switch out for the default)")
    ok = re.fullmatch(
        r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?"          # registry[:port]/
        r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"       # path components
        r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
        r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"       # :tag
        r"(?:@[a-z0-9]+:[a-fA-F0-9]{32,})?", name)
    if not ok:
        raise UsageError(f"{what} {name!r}: not a valid image name (lowercase letters, digits, "
                         "'.', '_', '-' and '/', then an optional :TAG)")
    return name


class CreateRequest:
    """Everything needed to create a session, resolved on the client side
    (config, env files and paths already applied).  JSON-serialisable, so
    the remote client sends exactly this to the server."""

    FIELDS = ("image", "name", "env", "networks", "mount", "volumes", "ports", "cpus",
              "memory", "pids_limit", "project", "uid", "gid", "owner", "hardened",
              "files", "labels", "state_dir", "mount_explicit", "mcp", "ssh_keys",
              "idle_timeout", "disk", "allow_hosts", "no_network", "constraints")
    # set on the service only (service.Service.create, from its policy), never sent
    SERVICE_FIELDS = ("network", "scope", "sudo", "cap_drop", "no_new_privileges",
                      "allow_within")

    def __init__(self, **kw):
        self.image = kw.get("image")
        self.name = kw.get("name")
        self.env = dict(kw.get("env") or {})
        self.networks = list(kw.get("networks") or [])
        self.mount = kw.get("mount")
        self.mount_explicit = bool(kw.get("mount_explicit"))  # --mount given, not the default cwd
        self.volumes = list(kw.get("volumes") or [])
        self.ports = list(kw.get("ports") or [])
        self.cpus = kw.get("cpus")
        self.memory = kw.get("memory")
        self.pids_limit = kw.get("pids_limit")
        self.project = kw.get("project")
        self.uid = kw.get("uid", os.getuid())
        self.gid = kw.get("gid", os.getgid())
        self.owner = kw.get("owner")
        self.hardened = bool(kw.get("hardened"))
        self.files = dict(kw.get("files") or {})   # extra files: path -> (text, mode)
        self.labels = dict(kw.get("labels") or {})
        self.state_dir = kw.get("state_dir")
        self.mcp = [str(n) for n in kw.get("mcp") or []]  # MCP server names (cubbi-mcp)
        self.mcp_defs = None        # [(name, definition)] resolved where the session is made
        self.ssh_keys = list(kw.get("ssh_keys") or [])  # the owner's public keys (cubbi-ssh)
        self.idle_timeout = kw.get("idle_timeout")  # a duration: closed when unused that long
        self.disk = kw.get("disk")  # the writable layer's size limit (--storage-opt size)
        # egress: HOST[:PORT] the session may reach through its proxy (none: no
        # allowlist), or no network at all
        self.allow_hosts = list(kw.get("allow_hosts") or [])
        self.no_network = bool(kw.get("no_network"))
        # Swarm placement constraints (KEY==VALUE, KEY!=VALUE): a service in
        # swarm mode applies them where policy.constraints allows the key
        self.constraints = [str(c) for c in kw.get("constraints") or []]
        # the session's log, rotated: the local config's or the service's policy
        self.log_max_size = kw.get("log_max_size") or LOG_MAX_SIZE
        self.log_max_files = kw.get("log_max_files") or LOG_MAX_FILES
        self.network = None         # the session's network instead of the engine's
        self.scope = []             # labels a name is unique within (the owner's)
        self.sudo = True            # password-less sudo for the session user
        self.cap_drop = []          # capabilities dropped besides --hardened's
        self.no_new_privileges = False
        self.allow_within = None    # the policy's allow_hosts: an image's own hosts within it

    def to_dict(self):
        return {k: getattr(self, k) for k in self.FIELDS}

    def check(self, api=False):
        """UsageError for a value the engine would refuse (or misread): the
        one validation of a request, on the client and again where it runs
        (api=True: a service's, whose errors name the JSON fields)."""
        def name(flag):
            return API_NAMES[flag] if api else flag

        if not str(self.image or "").strip():
            raise UsageError(f"{name('--image')}: give an image name (or leave the switch out "
                             "for the default)")
        for spec in self.ports:
            parse_port(spec, name("--port"))
        if self.memory is not None:
            parse_memory(self.memory, name("--memory"))
        if self.cpus is not None:
            parse_cpus(self.cpus, name("--cpus"))
        if self.pids_limit is not None:
            parse_pids_limit(self.pids_limit, name("--pids-limit"))
        if self.idle_timeout is not None:
            parse_duration(self.idle_timeout, name("--idle-timeout"))
        if self.disk is not None:
            parse_memory(self.disk, name("--disk"), kind="disk")
        check_ssh_keys(self.ssh_keys)
        self.check_egress(api)
        if self.mount and ":" in self.mount:
            raise UsageError(f"--mount {self.mount}: a directory whose path holds ':' "
                             "cannot be mounted; rename it or mount a parent")
        return self


    def check_egress(self, api=False):
        """An allowlist or --no-network takes the session off the shared
        networks: what would join it to one (another network, a container MCP
        server's, a published port) is refused rather than silently dropped."""
        what = '"allow_hosts"' if api else "--allow-host"
        self.allow_hosts = allow_hosts(self.allow_hosts, what)
        if not (self.allow_hosts or self.no_network):
            return
        mode = "--no-network" if self.no_network else "an egress allowlist (--allow-host)"
        if self.allow_hosts and self.no_network:
            raise UsageError("--allow-host and --no-network exclude each other")
        if self.no_network and self.project:
            raise UsageError("--project cannot be used with --no-network: the repository "
                             "is cloned inside the session, over the network")
        for items, name in ((self.networks, "--network"),
                            (self.ports, "--port"), (self.mcp, "--mcp (or defaults.mcp; "
                                                              "--no-mcp leaves them out)")):
            if items:
                raise UsageError(f"{name} cannot be used with {mode}: the session sits on "
                                 "no shared network")


_SSH_KEY = (r"(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|"
            r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)"
            r" [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]{0,256})?\Z")
MAX_SSH_KEYS = 32


def check_ssh_keys(keys, what="ssh_keys"):
    """UsageError unless KEYS is a short list of OpenSSH public key lines
    (TYPE BASE64 [COMMENT], one line each, no options): what goes into a
    session's authorized_keys (cubbi-ssh(1))."""
    if not keys:
        return []
    import re

    if not isinstance(keys, (list, tuple)) or len(keys) > MAX_SSH_KEYS:
        raise UsageError(f"{what}: expected a list of at most {MAX_SSH_KEYS} SSH public keys")
    for key in keys:
        if not isinstance(key, str) or len(key) > 16384 or not re.match(_SSH_KEY, key):
            shown = key[:40] if isinstance(key, str) else type(key).__name__
            raise UsageError(f"{what}: {shown!r} is not an OpenSSH public key line "
                             "(TYPE BASE64 [COMMENT], e.g. the text of ~/.ssh/id_ed25519.pub)")
    return list(keys)


def short_name(ref, fallback="session"):
    """The last path part of an image reference, without tag or digest, as
    a name part (letters, digits, '_', '.', '-'): registry/team/aider:1.2
    is aider."""
    base = str(ref or "").rstrip("/").split("/")[-1].split("@")[0].split(":")[0]
    out = "".join(c if c.isalnum() or c in "_.-" else "-" for c in base).strip("-.")
    return out or fallback


def valid_session_name(name):
    import re

    return bool(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}", name))


def looks_like_path(name, disk=True):
    """An --image that names a directory rather than an image: ./x, /x, ~/x,
    or (disk=True) a relative path with a slash that is a directory here.
    With disk=False only the form decides (the service never reads its own
    disk for a client)."""
    name = str(name or "")
    if name.startswith((".", "/", "~")):
        return True
    return disk and os.sep in name and os.path.isdir(name)


def refuse_host_paths(volumes=(), mount=None, image=None, disk=True):
    """UsageError for anything in a request that names a path on the
    client's machine, which a remote service cannot reach: volumes, a
    mount, an image directory.  The client checks before sending (disk=True),
    the service again on what it receives (disk=False)."""
    if volumes:
        raise UsageError(VOLUME_REFUSED)
    if mount:
        raise UsageError(MOUNT_REFUSED)
    if image and looks_like_path(image, disk):
        raise UsageError(f"{'--image ' + image if disk else 'image ' + repr(image)}: "
                         f"{IMAGE_PATH_REFUSED}")

"""The session record: its labels on the container and its JSON schema.

Docker is the source of truth: a session is a container labelled
`cubbi.session=true`; every field below comes from the container list entry
(no per-container inspect).  The schema is a promise (man/cubbi-ls.1):

  id            short session id (8 hex digits)            string
  name          session name (unique)                       string
  image         image definition name or Docker reference   string
  status        initializing | running | failed | stopped | created | paused | restarting | dead
  reason        why a session failed, else null             string|null
  created       creation time, ISO-8601 UTC                 string
  created_epoch the same, seconds since the epoch           integer
  container_id  the full Docker container id                string
  project       project URL, or null                        string|null
  mount         host directory mounted at /app, or null     string|null
  networks      Docker networks joined                      [string]
  ports         published ports                             [{container, host, host_ip, protocol}]
  owner         user who created it                         string|null
  remote        the remote serving it, null when local      string|null
  allow_hosts   its egress allowlist (HOST[:PORT]), or null  [string]|null
  idle_timeout  seconds unused after which it closes itself, or null   integer|null
"""

import functools
import time

LABEL = "cubbi.session"
L_ID = "cubbi.session.id"
L_NAME = "cubbi.session.name"
L_IMAGE = "cubbi.image"
L_PROJECT = "cubbi.project"
L_OWNER = "cubbi.owner"
L_MOUNT = "cubbi.mount"
L_NETWORKS = "cubbi.networks"
L_MCP = "cubbi.session.mcp"  # the names of its MCP servers
L_UID = "cubbi.uid"
L_GID = "cubbi.gid"
L_STATE = "cubbi.state"  # host directory of the project's persistent tool state
L_IDLE = "cubbi.idle_timeout"  # seconds: the init closes the session when unused that long
L_ALLOW = "cubbi.egress.allow"  # its egress allowlist, comma-separated (host names, nothing secret)
L_CREATED = "cubbi.created"  # creation time in nanoseconds: orders sessions made in one second
# the process that made the container, BOOT:PIDNS:PID:START (see creator()): a
# container never started whose maker has ended is debris of a broken create
L_CREATOR = "cubbi.creator"

FIELDS = ["id", "name", "image", "status", "reason", "created", "created_epoch",
          "container_id", "project", "mount", "networks", "ports", "owner", "remote",
          "allow_hosts", "idle_timeout"]

TABLE_COLUMNS = [("id", "ID"), ("name", "NAME"), ("image", "IMAGE"), ("status", "STATUS"),
                 ("created_short", "CREATED"), ("ports_short", "PORTS"), ("project", "PROJECT")]

STATUSES = ("initializing", "running", "failed", "stopped", "created", "paused",
            "restarting", "dead")
FILTER_KEYS = ("image", "name", "status", "project")


# lifecycle events (cubbi-events): what happened to a session
EVENTS = ("created", "initializing", "running", "failed", "closed", "oom", "died")


def parse_filters(items, statuses=STATUSES):
    """{key: value} of cubbi-ls --filter KEY=VALUE items, or UsageError
    (cubbi-events takes the event names as statuses)."""
    from .errors import UsageError

    filters = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in FILTER_KEYS:
            raise UsageError(f"--filter {item!r}: expected KEY=VALUE with KEY one of "
                             + ", ".join(FILTER_KEYS))
        if key == "status" and value not in statuses:
            raise UsageError(f"--filter {item!r}: status is one of " + ", ".join(statuses))
        filters[key] = value
    return filters


def _image_key(ref):
    """An image reference with its implicit :latest made explicit."""
    ref = str(ref or "")
    if "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
        return ref + ":latest" if ref else ref
    return ref


def _project_key(url):
    from . import projects
    from .errors import CubbiError

    try:
        return projects.normalise(url)[0]
    except (CubbiError, ValueError):
        return str(url or "")


def matches(rec, filters):
    """Whether a record passes every filter: name=PREFIX* is a prefix,
    image ignores an implicit :latest, project compares project ids (any
    URL form of the same repository), the rest compare exactly."""
    for key, value in (filters or {}).items():
        have = rec.get(key)
        if key == "name" and value.endswith("*"):
            ok = str(have or "").startswith(value[:-1])
        elif key == "image":
            ok = _image_key(have) == _image_key(value)
        elif key == "project":
            ok = have is not None and _project_key(have) == _project_key(value)
        else:
            ok = str(have or "") == value
        if not ok:
            return False
    return True


READY_MARK = "cubbi-init: ready"
FAILED_MARK = "cubbi-init: failed: "


@functools.lru_cache(maxsize=4096)  # a list formats the same few creation times again and again
def iso(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))  # no datetime: ~3 ms


def status_of(entry):
    """(status, needs_log_check) from a /containers/json entry."""
    state = entry.get("State", "")
    text = entry.get("Status", "")
    if state == "running":
        if "(healthy)" in text:
            return "running", False
        if "(health: starting)" in text or "(unhealthy)" in text:
            return "initializing", True
        return "running", False  # no health check: a session made elsewhere
    if state == "exited":
        return "stopped", False
    return state or "unknown", False


def ports_of(entry):
    seen = set()
    ports = []
    for p in entry.get("Ports") or []:
        if not p.get("PublicPort"):
            continue
        key = (p.get("PrivatePort"), p.get("PublicPort"), p.get("Type"))
        if key in seen:
            continue
        seen.add(key)
        ports.append({"container": p.get("PrivatePort"), "host": p.get("PublicPort"),
                      "host_ip": p.get("IP") or None, "protocol": p.get("Type", "tcp")})
    ports.sort(key=lambda p: (p["container"] or 0, p["protocol"]))
    return ports


def order_key(entry):
    """Creation order of list entries: the engine's Created has whole seconds
    only, so our nanosecond label breaks ties (then the id)."""
    labels = entry.get("Labels") or {}
    try:
        ns = int(labels.get(L_CREATED) or 0)
    except ValueError:
        ns = 0
    return (int(entry.get("Created") or 0), ns, labels.get(L_ID) or entry.get("Id", ""))


def from_entry(entry, remote=None):
    """A session record from a container list entry."""
    labels = entry.get("Labels") or {}
    cid = entry.get("Id", "")
    sid = labels.get(L_ID) or cid[:8]
    name = labels.get(L_NAME) or ((entry.get("Names") or ["/" + sid])[0].lstrip("/"))
    status, _ = status_of(entry)
    nets = sorted(((entry.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    created = int(entry.get("Created") or 0)
    idle = labels.get(L_IDLE) or ""
    return {
        "id": sid,
        "name": name,
        "image": labels.get(L_IMAGE) or entry.get("Image"),
        "status": status,
        "reason": None,
        "created": iso(created),
        "created_epoch": created,
        "container_id": cid,
        "project": labels.get(L_PROJECT) or None,
        "mount": labels.get(L_MOUNT) or None,
        "networks": nets,
        "ports": ports_of(entry),
        "owner": labels.get(L_OWNER) or None,
        "remote": remote,
        "allow_hosts": [h for h in (labels.get(L_ALLOW) or "").split(",") if h] or None,
        "idle_timeout": int(idle) if idle.isdigit() else None,
    }


def init_state(lines):
    """(status, reason) from the init's marker lines in a log tail."""
    for line in reversed(lines):
        line = line.rstrip()
        if line.endswith(READY_MARK) or line == READY_MARK:
            return "running", None
        idx = line.find(FAILED_MARK)
        if idx != -1:
            return "failed", line[idx + len(FAILED_MARK):].strip() or "init failed"
    return "initializing", None


def event_record(kind, attrs, time_nano, remote=None, **extra):
    """A lifecycle event (cubbi-events --json) from the engine event's actor
    attributes, which carry the container's labels."""
    secs, nanos = divmod(int(time_nano), 10 ** 9)
    ev = {"event": kind,
          "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos // 1000:06d}Z",
          "id": attrs.get(L_ID) or "", "name": attrs.get(L_NAME) or attrs.get("name") or "",
          "image": attrs.get(L_IMAGE) or attrs.get("image"),
          "project": attrs.get(L_PROJECT) or None, "owner": attrs.get(L_OWNER) or None,
          "remote": remote}
    ev.update(extra)
    return ev


def event_matches(ev, filters):
    """cubbi-ls's filters on an event; status is the event's name."""
    return matches({**ev, "status": ev["event"]}, filters)


def human(record):
    """Extra columns for the table view."""
    r = dict(record)
    r["created_short"] = _ago(record.get("created_epoch"))
    r["ports_short"] = ",".join(f"{p['host']}->{p['container']}" for p in record.get("ports") or []) or None
    if record.get("status") == "failed" and record.get("reason"):
        r["status"] = "failed"
    return r


def _ago(epoch):
    if not epoch:
        return None
    secs = int(time.time() - epoch)
    if secs < 60:
        return f"{max(secs, 0)}s ago"
    if secs < 3600:
        return f"{secs // 60}m ago"
    if secs < 86400:
        return f"{secs // 3600}h ago"
    return f"{secs // 86400}d ago"


# -- who made a container --------------------------------------------------------
def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _proc_start(pid):
    """The start time of process PID (clock ticks since boot), or None."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return stat.rsplit(")", 1)[1].split()[19]
    except (AttributeError, IndexError):
        return None


def _pid_ns():
    import os

    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return None


def creator():
    """This process, as L_CREATOR names it: BOOT:PIDNS:PID:START ("" where
    /proc cannot tell)."""
    import os

    parts = [_read("/proc/sys/kernel/random/boot_id"), _pid_ns(), str(os.getpid()),
             _proc_start(os.getpid())]
    return ":".join(parts) if all(parts) else ""


def creator_gone(value):
    """Whether the process an L_CREATOR value names is known to have ended:
    it ran on this boot of this machine, in this pid namespace, and its pid
    is gone or now another process.  Anything else (another machine, a
    container's namespace, no /proc): not known, False."""
    parts = (value or "").split(":")
    if len(parts) != 4 or not all(parts) or not parts[2].isdigit():
        return False
    boot, ns, pid, start = parts
    if boot != _read("/proc/sys/kernel/random/boot_id") or ns != _pid_ns():
        return False
    return _proc_start(int(pid)) != start

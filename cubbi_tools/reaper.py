"""cubbi-prune and the server's sweep at start: which sessions to close,
and the orphans that nothing uses.

Sessions: select() keeps the records that match every criterion given
(--failed, --older-than, --idle).  How long a session has been unused is
what its init's idle watch wrote in /cubbi/idle (cubbi-init.sh), read over
the archive API so that reading it starts no process in the session (a
process there would count as a use).

Orphans, coordinated through labels only (no other module's names):
  - a session container whose init never started (state "created") and
    whose maker is gone: LocalEngine.unfinished();
  - a helper container of a session, labelled cubbi.session.of=SESSION_ID
    or cubbi.egress.session=SESSION_ID (an egress proxy), whose session no
    longer exists;
  - a network carrying one of cubbi's labels (cubbi.network: the session
    network and a service's per-user bridges; cubbi.mcp: an MCP server's;
    cubbi.egress, cubbi.session.of: a session's own) that no container uses
    but such orphan helpers (they are removed first); the engine's session
    network (cubbi-network) is shared and kept.
A helper container or network younger than GRACE_S is left alone: it may
be the first step of a create running now.  Every create on an engine
sweeps the helpers of sessions that no longer exist (helpers_only: e.g. the
network of a fenced session that closed itself when idle, whose proxy ended
itself), cubbi-prune and a server (at start and every minute) all orphans.
"""

import calendar
import time

from . import session as S
from .dockerapi import APIError
from .errors import CubbiError

L_OF = "cubbi.session.of"  # a session's helper container or network: the session's id
# the labels that name the session a helper belongs to (the egress proxy's own too)
HELPER_LABELS = (L_OF, "cubbi.egress.session")
NETWORK_LABELS = ("cubbi.network", "cubbi.mcp", "cubbi.egress", L_OF)
GRACE_S = 60
IDLE_FILE = "/cubbi/idle"


def idle_seconds(api, rec):
    """How many seconds the session has been unused, or None when that is
    not known (not running, or made before cubbi watched idleness)."""
    if rec.get("status") != "running":
        return None
    try:
        data = api.get_archive(rec["container_id"], IDLE_FILE)
    except CubbiError:
        return None
    import io
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            text = tar.extractfile(member).read().decode().strip() if member else ""
        return int(text)
    except (tarfile.TarError, ValueError, AttributeError, UnicodeDecodeError):
        return None


def select(records, failed=False, older_than=None, idle=None, idle_of=None, now=None):
    """The records matching every criterion given: failed (status failed,
    stopped or dead: a session that no longer runs), older_than (seconds
    since its creation), idle (seconds unused, asked of idle_of(rec)).  No
    criterion: none."""
    if not (failed or older_than is not None or idle is not None):
        return []
    now = time.time() if now is None else now
    out = []
    for rec in records:
        if failed and rec.get("status") not in ("failed", "stopped", "dead"):
            continue
        if older_than is not None and now - (rec.get("created_epoch") or now) < older_than:
            continue
        if idle is not None:
            unused = idle_of(rec) if idle_of else None
            if unused is None or unused < idle:
                continue
            rec = {**rec, "idle": unused}
        out.append(rec)
    return out


def _epoch(text):
    """An engine timestamp (RFC 3339) as epoch seconds, or None."""
    try:
        return calendar.timegm(time.strptime(str(text)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def orphans(engine, now=None, helpers_only=False):
    """[{kind, id, name, reason}] of what no session uses (see the module
    docstring), found with a few list requests.  helpers_only: only the
    helper containers and networks of sessions that no longer exist (what
    every create sweeps: sweep_helpers)."""
    api = engine.api
    now = time.time() if now is None else now
    out = []
    for entry in [] if helpers_only else engine.unfinished():
        labels = entry.get("Labels") or {}
        out.append({"kind": "container", "id": entry["Id"][:12],
                    "name": (entry.get("Names") or ["/?"])[0].lstrip("/"),
                    "session": labels.get(S.L_ID),
                    "reason": entry.get("cubbi_orphan_reason") or
                    "a session container whose init never started; its maker is gone"})
    every = api.containers(all=True)
    sessions = {(c.get("Labels") or {}).get(S.L_ID) for c in every
                if (c.get("Labels") or {}).get(S.LABEL) == "true"}
    used = set()
    for c in every:
        labels = c.get("Labels") or {}
        of = next((labels[k] for k in HELPER_LABELS if labels.get(k)), None)
        if of and of not in sessions and now - int(c.get("Created") or now) >= GRACE_S:
            out.append({"kind": "container", "id": c["Id"][:12],
                        "name": (c.get("Names") or ["/?"])[0].lstrip("/"), "session": of,
                        "reason": f"a helper of session {of}, which no longer exists"})
            continue  # removed first (sweep's order), so its networks count as unused
        used.update(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    seen = set()
    for label in HELPER_LABELS if helpers_only else NETWORK_LABELS:
        for net in api.networks(labels=[label]) or []:
            name = net.get("Name")
            if not name or name in used or name in seen or net.get("Containers") \
                    or name == engine.network:  # the session network: shared, kept
                continue
            created = _epoch(net.get("Created"))
            if created is None or now - created < GRACE_S:
                continue
            labels = net.get("Labels") or {}
            of = next((labels[k] for k in HELPER_LABELS if labels.get(k)), None)
            if helpers_only and (not of or of in sessions):
                continue
            seen.add(name)
            out.append({"kind": "network", "id": (net.get("Id") or "")[:12], "name": name,
                        "session": of, "reason": "a network of cubbi's that no container uses"})
    return out


def remove_orphan(api, item):
    """Remove one orphan; False when it went meanwhile or is in use again
    (the engine refuses a network with endpoints)."""
    try:
        if item["kind"] == "network":
            api.remove_network(item["name"])
        else:
            api.remove(item["id"])
        return True
    except APIError:
        return False


def sweep(engine, dry_run=False, helpers_only=False):
    """The orphans found, each removed unless dry_run: [item, ...] of what
    was (or would be) removed.  What the server runs at start and every
    minute; helpers_only (orphans()) is what LocalEngine.create runs."""
    done = []
    for item in orphans(engine, helpers_only=helpers_only):
        if dry_run or remove_orphan(engine.api, item):
            done.append(item)
    return done

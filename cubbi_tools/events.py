"""Session lifecycle events, from the engine's event stream (no polling).

One reader follows GET /events, narrowed by the engine to containers with
cubbi's session label (and, on the service, the owner's label); the events
carry the container's labels, so each becomes a record at once:

  create                      created
  start                       initializing
  health_status: healthy      running
  oom                         oom
  die                         died (exit_code), unless the container is
                              removed within DIE_GRACE seconds: a closed
                              session is then only `closed`; told after
                              the session's init markers are read
  destroy                     closed

`running` and `failed` come first from the init's own marker lines
(session.READY_MARK / FAILED_MARK): a session that starts is followed in
its log until one of them appears (its health check passes up to 15 s
later, and a failed init never fails the health check).  Each is told
once per session.  Readers are threads feeding one queue; under the
service's gevent they are greenlets.
"""

import queue
import threading
import time

from . import session as S
from .dockerapi import json_stream
from .errors import CubbiError, EngineUnreachable

DIE_GRACE = 1.0  # seconds a `die` waits for the `destroy` of a close
_END = object()


def follow(api, since=None, until=None, filters=None, labels=(), remote=None):
    """Yield event records (session.event_record) as the engine reports
    them, from since (epoch seconds, replayed first) until until (epoch
    seconds) or without end.  filters: cubbi-ls's, status being the event."""
    q = queue.Queue()
    resp = api.events(since=since, until=until, filters={
        "type": ["container"], "label": [f"{S.LABEL}=true", *labels]})
    told = set()          # (container id, event) told once: running, failed
    pending = {}          # container id -> (deadline, died record)
    attrs_of = {}         # container id -> the labels of its last event
    followers = []
    following = set()     # container ids whose log is still being read

    def read_engine():
        try:
            for ev in json_stream(resp):
                q.put(("engine", ev))
        except (CubbiError, OSError, ValueError) as exc:
            q.put(("error", exc))
        finally:
            q.put(("end", None))

    def read_init(cid):
        """The init's first marker in the session's log, as an event."""
        try:
            frames = api.logs(cid, follow=until is None, timestamps=True)
            pending_text = ""
            for _, data in frames:
                pending_text += data.decode(errors="replace")
                *lines, pending_text = pending_text.split("\n")
                for line in lines:
                    ts, _, text = line.partition(" ")
                    status, reason = S.init_state([text])
                    if status != "initializing":
                        q.put(("init", (cid, status, reason, _nanos(ts))))
                        frames.close()
                        return
        except (CubbiError, OSError, ValueError):
            pass  # the session is gone, or the engine: the engine reader says so
        finally:
            q.put(("followed", cid))

    threading.Thread(target=read_engine, daemon=True).start()

    def emit(kind, cid, time_nano, **extra):
        if kind in ("running", "failed"):
            if (cid, "running") in told or (cid, "failed") in told:
                return None
            told.add((cid, kind))
        ev = S.event_record(kind, attrs_of.get(cid, {}), time_nano, remote=remote, **extra)
        return ev if S.event_matches(ev, filters) else None

    ended = joined = False
    try:
        while True:
            now = time.monotonic()
            for cid, (deadline, ev) in list(pending.items()):
                if deadline <= now and cid not in following:
                    del pending[cid]
                    if S.event_matches(ev, filters):
                        yield ev
            if ended and q.empty():
                if not joined and any(t.is_alive() for t in followers):
                    joined = True  # their last markers, once (a replay reads no further)
                    for t in followers:
                        t.join(timeout=5)
                    continue
                for _, ev in sorted(pending.values(), key=lambda p: p[1]["time"]):
                    if S.event_matches(ev, filters):
                        yield ev
                pending.clear()
                if until is None:
                    raise EngineUnreachable("lost the Docker engine's event stream; "
                                            "is the engine running?")
                return
            wait = max(0.05, min(d for d, _ in pending.values()) - now) if pending else 1.0
            try:
                kind, item = q.get(timeout=wait)
            except queue.Empty:
                continue
            if kind == "end":
                ended = True
                continue
            if kind == "error":
                if isinstance(item, CubbiError):
                    raise item
                raise EngineUnreachable(f"lost the Docker engine's event stream: {item}")
            if kind == "followed":
                following.discard(item)
                continue
            if kind == "init":
                cid, status, reason, nano = item
                ev = emit(status, cid, nano, **({"reason": reason} if status == "failed" else {}))
                if ev:
                    yield ev
                continue
            action = item.get("Action") or item.get("status") or ""
            cid = item.get("id") or (item.get("Actor") or {}).get("ID") or ""
            attrs = (item.get("Actor") or {}).get("Attributes") or {}
            if attrs:
                attrs_of[cid] = attrs
            nano = item.get("timeNano") or int(item.get("time", 0)) * 10 ** 9
            ev = None
            if action == "create":
                ev = emit("created", cid, nano)
            elif action == "start":
                ev = emit("initializing", cid, nano)
                following.add(cid)
                t = threading.Thread(target=read_init, args=(cid,), daemon=True)
                t.start()
                followers.append(t)
            elif action == "health_status: healthy":
                ev = emit("running", cid, nano)
            elif action == "oom":
                ev = emit("oom", cid, nano)
            elif action == "die":
                code = attrs.get("exitCode")
                died = S.event_record("died", attrs_of.get(cid, {}), nano, remote=remote,
                                      exit_code=int(code) if code and code.isdigit() else None)
                pending[cid] = (time.monotonic() + DIE_GRACE, died)
            elif action == "destroy":
                pending.pop(cid, None)  # a close: the session did not die on its own
                ev = emit("closed", cid, nano)
                told.add((cid, "failed"))  # nothing more of it
                attrs_of.pop(cid, None)
            if ev:
                yield ev
    finally:
        resp.close()
        conn = getattr(resp, "_cubbi_conn", None)
        if conn is not None:
            conn.close()


def _nanos(ts):
    """Epoch nanoseconds of the engine's RFC 3339 log timestamp."""
    import calendar

    try:
        whole, _, frac = ts.rstrip("Z").partition(".")
        secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return secs * 10 ** 9 + int((frac + "000000000")[:9])
    except ValueError:
        return time.time_ns()


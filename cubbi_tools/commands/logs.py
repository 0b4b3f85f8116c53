import sys
import time

from .. import backend, cli
from ..errors import UsageError
from ..output import json_line


MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z


def parse_since(text, option="--since"):
    """Durations (30s, 10m, 2h, 1d), epoch seconds, or ISO-8601 -> epoch
    (a duration longer than the epoch's age is everything)."""
    if text is None:
        return None
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
            return max(0, int(time.time() - float(t[:-1]) * units[t[-1]]))
        if t.replace(".", "", 1).isdigit():
            when = int(float(t))
        else:
            import datetime

            dt = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=datetime.timezone.utc)
            when = int(dt.timestamp())
        if not 0 <= when <= MAX_EPOCH:
            raise ValueError
        return when
    except (ValueError, OverflowError):
        raise UsageError(f"{option} {text!r}: expected a duration (10m), epoch seconds "
                         "or an ISO-8601 time, from 1970 to 9999") from None


class _Out:
    """Prints log records: JSON lines, or the bare line on stdout/stderr
    (prefixed with the session's name when several sessions are shown)."""

    def __init__(self, as_json, prefixed):
        self.as_json = as_json
        self.prefixed = prefixed

    def __call__(self, rec, item):
        if self.as_json:
            json_line(item)
            return
        stream = sys.stdout if item["stream"] == "stdout" else sys.stderr
        prefix = f"{rec['name']} | " if self.prefixed else ""
        stream.write(prefix + item["line"] + "\n")
        stream.flush()


def _follow_many(engine, recs, kw, out, failed):
    """Interleave the followed streams of several sessions as lines arrive:
    one reader thread per session, one writer (this thread)."""
    import queue
    import threading

    from ..errors import CubbiError

    q = queue.Queue(maxsize=1000)
    done = object()

    def reader(rec):
        try:
            for item in engine.logs(rec, **kw):
                q.put((rec, item))
        except CubbiError as exc:
            q.put((rec, exc))
        except Exception as exc:  # a bug: report it in the writer
            q.put((rec, exc))
        finally:
            q.put((rec, done))

    for rec in recs:
        threading.Thread(target=reader, args=(rec,), daemon=True).start()
    left = len(recs)
    while left:
        try:
            rec, item = q.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
        except queue.Empty:
            continue
        if item is done:
            left -= 1
        elif isinstance(item, BaseException):
            failed(rec["id"], item)
        else:
            out(rec, item)


def run(args):
    from ..errors import CubbiError
    from ..refs import each_session

    if args.tail is not None and args.tail < 0:
        raise UsageError("--tail must be 0 or more")
    since = parse_since(args.since)
    engine = backend.get(args)
    if args.egress:
        return _egress(engine, args)
    kw = {"follow": args.follow, "tail": args.tail, "since": since}
    tally = cli.Tally("cubbi-logs")
    recs = list(each_session(engine, args.ids, tally))
    out = _Out(args.json, prefixed=len(recs) > 1)
    if args.follow and len(recs) > 1:
        _follow_many(engine, recs, kw, out, tally.failed)
    else:
        for rec in recs:
            try:
                for item in engine.logs(rec, **kw):
                    out(rec, item)
            except CubbiError as exc:
                tally.failed(rec["id"], exc)
    return tally.code()


def _egress(engine, args):
    """What each session's egress proxy refused: one line per refusal
    (TIME HOST:PORT URL), or {session, time, host, port, url} with --json."""
    from ..errors import CubbiError
    from ..refs import each_session

    if args.follow or args.tail is not None or args.since:
        raise UsageError("--egress takes no --follow, --tail or --since")
    tally = cli.Tally("cubbi-logs")
    for rec in each_session(engine, args.ids, tally):
        try:
            for item in engine.egress_log(rec):
                if args.json:
                    json_line(item)
                else:
                    where = f"{item['host']}:{item['port']}" if item["host"] else \
                        f"port {item['port']}"
                    sys.stdout.write(f"{item['time']} {rec['name']} refused {where}"
                                     f"{' ' + item['url'] if item['url'] else ''}\n")
        except CubbiError as exc:
            tally.failed(rec["id"], exc)
    sys.stdout.flush()
    return tally.code()


COMMAND = cli.Command(
    "cubbi-logs", "show sessions' logs", run,
    description="Prints what the session's init and main process wrote: stdout lines to "
                "stdout, stderr lines to stderr. With --json, one object per line on "
                "stdout: {session, stream, time, line}, flushed per line. Several sessions "
                "can be named, or piped on stdin like cubbi-close takes them (bare ids or "
                "JSON lines with an \"id\" field); their lines are prefixed with the "
                "session name (the \"session\" field with --json), and with --follow they "
                "are interleaved as they arrive. A session that cannot be shown is "
                "reported on stderr and the others carry on; the exit status is then "
                "non-zero (3 when every failure was an unknown session). A --follow that "
                "loses the Docker engine, or the Cubbi Service (-r), before its sessions end "
                "stops with one line saying so and exit status 4.",
    options=[
        cli.REMOTE,
        cli.Opt("-f", "--follow", help="keep printing new lines until the sessions end"),
        cli.Opt("-n", "--tail", kind="value", metavar="N", type=int,
                help="only the last N lines of each session"),
        cli.Opt("--since", kind="value", metavar="WHEN",
                help="only lines since WHEN: a duration (10m), epoch seconds or ISO-8601"),
        cli.Opt("--egress", help="instead, the requests the session's egress proxy refused "
                                 "(cubbi-create --allow-host), oldest first: TIME NAME refused "
                                 "HOST:PORT URL; with --json {session, time, host, port, url}. "
                                 "It takes no -f, -n/--tail or --since (exit 2); a session "
                                 "without an egress proxy is exit 3"),
        cli.Opt("--json", help="one JSON object per log line: {session, stream, time, line}"),
    ],
    args=[cli.Arg("ids", "sessions (id, prefix or name); none: read them from stdin",
                  nargs="*", complete="session", metavar="ID")],
    examples=[("cubbi-logs -f 3fa1", "follow a session's log"),
              ("cubbi-logs --json 3fa1 | jq -r .line", "the lines alone"),
              ("cubbi-ls -q --filter image=aider | cubbi-logs -f --json",
               "follow every aider session, one JSON line per log line"),
              ("cubbi-logs --egress 3fa1", "what a session's allowlist refused")],
    sections=[
        ("EXIT STATUS",
         "3 also when a session named with --egress has no egress proxy (it was made "
         "without --allow-host): nothing of it is filtered. 2 when --egress is given with "
         "-f, --tail or --since."),
    ],
    see_also=["cubbi-ls", "cubbi-connect"],
)


def main():
    COMMAND.main()

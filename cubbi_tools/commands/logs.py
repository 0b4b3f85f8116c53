import sys
import time

from .. import backend, cli
from ..errors import UsageError
from ..output import json_line


def parse_since(text):
    """Durations (30s, 10m, 2h, 1d), epoch seconds, or ISO-8601 -> epoch."""
    if text is None:
        return None
    t = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if t and t[-1] in units and t[:-1].replace(".", "", 1).isdigit():
            return int(time.time() - float(t[:-1]) * units[t[-1]])
        if t.replace(".", "", 1).isdigit():
            return int(float(t))
        import datetime

        dt = datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return int(dt.timestamp())
    except ValueError:
        raise UsageError(f"--since {text!r}: expected a duration (10m), epoch seconds "
                         "or an ISO-8601 time") from None


def run(args):
    if args.tail is not None and args.tail < 0:
        raise UsageError("--tail must be 0 or more")
    engine = backend.get(args)
    rec = engine.resolve(args.id)
    since = parse_since(args.since)
    for item in engine.logs(rec, follow=args.follow, tail=args.tail, since=since):
        if args.json:
            json_line(item)
        else:
            stream = sys.stdout if item["stream"] == "stdout" else sys.stderr
            stream.write(item["line"] + "\n")
            stream.flush()
    return 0


COMMAND = cli.Command(
    "cubbi-logs", "show a session's log", run,
    description="Prints what the session's init and main process wrote: stdout lines to "
                "stdout, stderr lines to stderr. With --json, one object per line on "
                "stdout: {session, stream, time, line}, flushed per line.",
    options=[
        cli.Opt("-f", "--follow", help="keep printing new lines until the session ends"),
        cli.Opt("-n", "--tail", kind="value", metavar="N", type=int,
                help="only the last N lines"),
        cli.Opt("--since", kind="value", metavar="WHEN",
                help="only lines since WHEN: a duration (10m), epoch seconds or ISO-8601"),
        cli.Opt("--json", help="one JSON object per log line: {session, stream, time, line}"),
    ],
    args=[cli.Arg("id", "the session (id, prefix or name)", complete="session", metavar="ID")],
    examples=[("cubbi-logs -f 3fa1", "follow a session's log"),
              ("cubbi-logs --json 3fa1 | jq -r .line", "the lines alone")],
    see_also=["cubbi-ls", "cubbi-connect"],
)


def main():
    COMMAND.main()

import sys

from .. import backend, cli, session as S
from ..output import json_line


def line(ev):
    """The human form of an event: TIME EVENT NAME (ID) [IMAGE] and its detail."""
    detail = ""
    if ev.get("reason"):
        detail = f": {ev['reason']}"
    elif ev["event"] == "died":
        detail = f": exit code {ev.get('exit_code')}"
    return f"{ev['time']} {ev['event']:<12} {ev['name']} ({ev['id']}) {ev.get('image') or ''}{detail}"


def run(args):
    from .logs import parse_since

    filters = S.parse_filters(args.filter, statuses=S.EVENTS)
    since, until = parse_since(args.since), parse_since(args.until, "--until")
    if since is not None and until is not None and until < since:
        from ..errors import UsageError

        raise UsageError("--until is before --since")
    for ev in backend.get(args).events(since=since, until=until, filters=filters):
        if args.json:
            json_line(ev)
        else:
            sys.stdout.write(line(ev) + "\n")
            sys.stdout.flush()
    return 0


COMMAND = cli.Command(
    "cubbi-events", "stream session lifecycle events", run,
    description="Prints what happens to sessions as it happens, one line per event: "
                "created, initializing, running, failed (with its reason), closed, oom "
                "(a process was killed for exceeding --memory) and died (the session's "
                "main process ended by itself, with its exit code; a closed session is "
                "only closed). It reads the Docker engine's event stream, not a poll: "
                "running and failed come from the session's init as soon as it reports. "
                "With --json, one object per line: {event, time, id, name, image, project, "
                "owner, remote}, plus reason (failed) or exit_code (died), flushed per line. "
                "Without --until it runs until interrupted; --since replays the engine's "
                "recent events first, but the engine keeps only its last few hundred events "
                "of every kind (health checks included), which on a busy host is seconds, "
                "not hours. --until alone replays what the engine still has up to then and "
                "stops; a duration is always in the past, so to watch until a later time give "
                "it as ISO-8601. Each event carries the engine's time (running and failed: "
                "the init's log line), and events print as they are learned, so two events of "
                "one session can print a few milliseconds out of time order. Through a service "
                "(-r) it shows your own sessions only. Losing the engine, or the service, "
                "ends it with one line on stderr and exit status 4.",
    options=[
        cli.REMOTE,
        cli.Opt("--json", help="one JSON object per event (JSON Lines), nothing else on stdout"),
        cli.Opt("--since", kind="value", metavar="WHEN",
                help="replay events since WHEN first: a duration (10m), epoch seconds or "
                     "ISO-8601"),
        cli.Opt("--until", kind="value", metavar="WHEN",
                help="stop at WHEN (same forms): with --since, a window of past events"),
        cli.Opt("-f", "--filter", kind="multi", metavar="KEY=VALUE",
                help="only events whose KEY (image, name, status, project) equals VALUE, as "
                     "in cubbi-ls; status is the event (created, initializing, running, "
                     "failed, closed, oom, died); repeatable, all must match"),
    ],
    examples=[
        ("cubbi-events", "watch sessions come and go"),
        ("cubbi-events --filter status=failed --json | jq --unbuffered -r .id | xargs -r -n1 cubbi-logs --tail 20",
         "the last lines of every session that fails, as it fails"),
        ("cubbi-events --since 1h --until 0s --json", "what happened in the last hour"),
    ],
    see_also=["cubbi-ls", "cubbi-logs"],
)


def main():
    COMMAND.main()

import sys

from .. import backend, cli, session as S
from ..errors import CubbiError, UsageError
from ..output import Printer

PROG = "cubbi-prune"
COLUMNS = [("kind", "KIND"), ("id", "ID"), ("name", "NAME"), ("status", "STATUS"),
           ("reason", "WHY")]


def run(args):
    from .. import reaper
    from ..validate import parse_duration

    older = parse_duration(args.older_than, "--older-than", zero=True) \
        if args.older_than is not None else None
    idle = parse_duration(args.idle, "--idle", zero=True) if args.idle is not None else None
    filters = S.parse_filters(args.filter)
    engine = backend.get(args)
    local = engine.remote is None
    if idle is not None and not local:
        raise UsageError("--idle works on the local engine only; a service closes idle "
                         "sessions itself under its policy.idle_timeout")
    records = engine.list(all=True, filters=filters)
    chosen = reaper.select(records, failed=args.failed, older_than=older, idle=idle,
                           idle_of=(lambda rec: reaper.idle_seconds(engine.api, rec)) if local else None)
    orphans = reaper.orphans(engine) if local and not filters else []
    out = Printer(cli.output_format(args), COLUMNS, colors=backend.colors)
    tally = cli.Tally(PROG)
    why = {"failed": args.failed, "older": older, "idle": idle}
    for rec in chosen:
        if not args.dry_run:
            try:
                engine.close(rec["id"], [rec])
            except CubbiError as exc:
                tally.failed(rec["id"], exc)
                continue
        out.add({"kind": "session", **rec, "reason": rec.get("reason") or _why(rec, why)})
    for item in orphans:
        if args.dry_run or reaper.remove_orphan(engine.api, item):
            out.add({**item, "status": "orphan"})
    out.close()
    sys.stdout.flush()
    return tally.code()


def _why(rec, why):
    parts = []
    if why["failed"]:
        parts.append(rec["status"])
    if why["older"] is not None:
        parts.append(f"older than {why['older']}s")
    if why["idle"] is not None:
        parts.append(f"unused for {rec.get('idle')}s")
    return ", ".join(parts)


COMMAND = cli.Command(
    PROG, "close failed, old or idle sessions and sweep orphans", run,
    description="Closes the sessions that match every criterion given (--failed, "
                "--older-than, --idle; none given: no session) and removes the orphans "
                "nothing uses: session containers whose init never started and whose "
                "cubbi-create is gone, helper containers (labelled cubbi.session.of or "
                "cubbi.egress.session: a session's egress proxy) of sessions that no longer "
                "exist, and networks carrying cubbi's labels that no other container uses (left alone in their first minute: a create may be "
                "making them). Orphans belong to no one: every orphan of cubbi's on the engine "
                "is removed, whoever made it; every cubbi-create also removes the helpers "
                "and networks of sessions that no longer exist. Prints what it closed or removed: one JSON object per line "
                "with --json (a session's record as cubbi-ls --json prints it, plus kind "
                "\"session\", reason, and idle, its seconds unused, with --idle; an orphan "
                "as {kind, id, name, session, reason, status \"orphan\"}). With --dry-run it "
                "closes and removes nothing and prints what it would, the same lines. With a "
                "remote only your own sessions are considered and no orphan is (the service "
                "sweeps its engine's orphans itself, when it starts and every minute).",
    options=[
        cli.REMOTE,
        cli.Opt("--failed", help="sessions that no longer run: status failed (the init "
                                 "failed), stopped or dead"),
        cli.Opt("--older-than", kind="value", metavar="DURATION",
                help="sessions created at least DURATION ago (30s, 15m, 2h, 1d)"),
        cli.Opt("--idle", kind="value", metavar="DURATION",
                help="running sessions unused for at least DURATION, as their idle watch "
                     "counts it (see cubbi-create(1) IDLE SESSIONS; measured every 30 s "
                     "or a fifth of the session's --idle-timeout); local engine only"),
        cli.Opt("-f", "--filter", kind="multi", metavar="KEY=VALUE",
                help="only sessions matching, as cubbi-ls --filter (image, name, status, "
                     "project; name=PREFIX* a prefix); repeatable; with a filter no orphan "
                     "is swept"),
        cli.Opt("-n", "--dry-run", help="close and remove nothing; print what would be"),
        cli.JSON,
        cli.Opt("-q", "--quiet", help="print the ids closed or removed, one per line"),
    ],
    examples=[
        ("cubbi-prune --failed", "close every session that failed or stopped"),
        ("cubbi-prune --idle 2h --dry-run", "which sessions have been unused for two hours"),
        ("cubbi-prune --older-than 1d --json | jq -r .name", "close day-old sessions, name them"),
        ("cubbi-prune", "only sweep the orphans"),
    ],
    see_also=["cubbi-close", "cubbi-ls", "cubbi-create"],
)


def main():
    COMMAND.main()

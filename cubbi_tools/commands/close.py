import sys

from .. import backend, cli
from ..errors import CubbiError, UsageError
from ..output import json_line, message


def run(args):
    if args.all and args.ids:
        raise UsageError("give session ids or --all, not both")
    engine = backend.get(args)

    names = {}  # id -> name of the sessions resolved, for their result lines

    def result(ref, closed, error=None):
        json_line({"id": ref, "name": names.get(ref), "closed": closed,
                   "error": None if error is None else str(error)})

    def json_failure(ref, exc):
        if args.json:
            result(ref, False, exc)

    tally = cli.Tally("cubbi-close", on_fail=json_failure)
    if args.all:
        recs = engine.list(all=True)
    else:
        from ..refs import each_session

        recs = each_session(engine, args.ids, tally)
    for rec in recs:
        names[rec["id"]] = rec["name"]
        try:
            engine.close(rec["id"], [rec])
        except CubbiError as exc:
            tally.failed(rec["id"], exc)
            continue
        if args.json:
            result(rec["id"], True)
        elif args.quiet:
            sys.stdout.write(rec["id"] + "\n")
            sys.stdout.flush()
        else:
            message(f"closed {rec['id']} ({rec['name']})", "cubbi-close")
    return tally.code()


COMMAND = cli.Command(
    "cubbi-close", "close sessions: stop and remove their containers", run,
    description="Removes the containers of the sessions named by ID (an id, a unique "
                "prefix, or a name). With no ID and stdin not a terminal, reads one "
                "session per line: a bare id or a JSON object with an \"id\" field. "
                "Carries on after a failure and exits non-zero at the end: 3 when every "
                "failure was an unknown session, else 1.",
    options=[
        cli.REMOTE,
        cli.Opt("-a", "--all", help="close every session"),
        cli.Opt("--json", help="print one result object per input line: {id, name, closed, "
                               "error}, every key always there (null when unknown or none)"),
        cli.Opt("-q", "--quiet", help="print the ids closed, one per line"),
    ],
    args=[cli.Arg("ids", "sessions to close (id, prefix or name)", nargs="*", complete="session",
                  metavar="ID")],
    examples=[
        ("cubbi-close 3fa1", "close one session"),
        ("cubbi-ls --json | jq -c 'select(.image==\"aider\")' | cubbi-close",
         "close the aider sessions"),
    ],
    see_also=["cubbi-ls"],
)


def main():
    COMMAND.main()

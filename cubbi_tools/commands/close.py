import sys

from .. import backend, cli
from ..errors import FAILURE, CubbiError
from ..output import json_line, message
from ..refs import BadLine, refs_from


def run(args):
    engine = backend.get(args)
    records = engine.list(all=True)
    if args.all:
        refs = [r["id"] for r in records]
    else:
        refs = refs_from(args.ids)
    codes = set()
    for ref in refs:
        try:
            if isinstance(ref, BadLine):
                raise CubbiError(str(ref))
            rec = engine.close(ref, records)
        except CubbiError as exc:
            codes.add(exc.code)
            if args.json:
                json_line({"id": ref if isinstance(ref, str) else None, "closed": False,
                           "error": str(exc)})
            message(str(exc), "cubbi-close")
            continue
        if args.json:
            json_line({"id": rec["id"], "name": rec["name"], "closed": True})
        elif args.quiet:
            sys.stdout.write(rec["id"] + "\n")
            sys.stdout.flush()
        else:
            message(f"closed {rec['id']} ({rec['name']})", "cubbi-close")
    if not codes:
        return 0
    return codes.pop() if len(codes) == 1 else FAILURE


COMMAND = cli.Command(
    "cubbi-close", "close sessions: stop and remove their containers", run,
    description="Removes the containers of the sessions named by ID (an id, a unique "
                "prefix, or a name). With no ID and stdin not a terminal, reads one "
                "session per line: a bare id or a JSON object with an \"id\" field. "
                "Carries on after a failure and exits non-zero at the end: 3 when every "
                "failure was an unknown session, else 1.",
    options=[
        cli.Opt("-a", "--all", help="close every session"),
        cli.Opt("--json", help="print one result object per input line: {id, name, closed, error}"),
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

from .. import backend, cli, session as S
from ..output import Printer


def run(args):
    filters = S.parse_filters(args.filter)
    show_all = args.all or filters.get("status") in ("stopped", "created", "dead")
    records = backend.get(args).list(all=show_all, filters=filters)
    out = Printer(cli.output_format(args), S.TABLE_COLUMNS, colors=backend.colors)
    for rec in records:
        out.add(S.human(rec) if out.fmt == "table" else rec)
    out.close()
    return 0


COMMAND = cli.Command(
    "cubbi-ls", "list sessions", run,
    description="Lists the sessions on the engine: a table on a terminal, one JSON "
                "object per session per line with --json, ids only with -q. Sessions "
                "are read from container labels; nothing else is stored.",
    options=[
        cli.REMOTE,
        cli.JSON, cli.QUIET,
        cli.Opt("-a", "--all", help="include stopped sessions"),
        cli.Opt("-f", "--filter", kind="multi", metavar="KEY=VALUE",
                help="only sessions whose KEY (image, name, status, project) equals VALUE; "
                     "repeatable, all must match; name=PREFIX* matches a prefix, image "
                     "ignores an implicit :latest, project takes any URL form of the "
                     "repository"),
    ],
    examples=[
        ("cubbi-ls", "a table of running sessions"),
        ("cubbi-ls --json | jq -r 'select(.status==\"failed\") | .id'", "ids of failed sessions"),
        ("cubbi-ls -q --filter image=aider | cubbi-close", "close every aider session"),
    ],
    sections=[("SESSION RECORD", S.__doc__.split("\n\n", 2)[2] if S.__doc__ else "")],
    see_also=["cubbi-create", "cubbi-close"],
)


def main():
    COMMAND.main()

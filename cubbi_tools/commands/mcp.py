import sys

from .. import cli
from ..output import Printer, message

PROG = "cubbi-mcp"
COLUMNS = [("name", "NAME"), ("kind", "KIND"), ("status", "STATUS"), ("default", "DEFAULT"),
           ("where", "IMAGE/URL/COMMAND")]


def _servers(args):
    """The MCP servers of the selected backend (local: this machine's)."""
    from .. import backend

    return backend.get(args).mcp


def _where(rec):
    if rec.get("kind") == "container":
        return rec.get("image", "") + (f" ({rec['command']})" if rec.get("command") else "")
    if rec.get("kind") == "remote":
        return rec.get("url", "")
    return " ".join([rec.get("command") or ""] + list(rec.get("args") or []))


def _defaults():
    """defaults.mcp of the config (the client's, with -r too)."""
    from .. import config

    return list(config.peek("defaults.mcp", []) or [])


def _set_default(name, on):
    """NAME in or out of defaults.mcp."""
    from .. import config

    with config.edit() as data:
        names = [n for n in config.value(data, "defaults.mcp") if n != name]
        if on:
            names.append(name)
        if names:
            config.set_in(data, "defaults.mcp", names)
        elif config.lookup(data, "defaults.mcp") is not None:
            config.unset_in(data, "defaults.mcp")


def _print(args, recs):
    fmt = cli.output_format(args)
    defaults = _defaults()
    recs = [dict(r, default=r["name"] in defaults) for r in recs]
    out = Printer(fmt, COLUMNS, key="name")
    for rec in recs:
        out.add(dict(rec, where=_where(rec), default="yes" if rec.get("default") else "")
                if fmt == "table" else rec)
    out.close()


def _default(args):
    if args.default and args.no_default:
        from ..errors import UsageError

        raise UsageError("--default and --no-default exclude each other")
    return True if args.default else False if args.no_default else None


def _add(args, kind):
    from .. import mcp
    from ..errors import UsageError

    if kind == "container":
        meta = mcp.definition(kind, image=args.image, command=args.command,
                              env=mcp.parse_pairs(args.env, "-e"))
    elif kind == "remote":
        meta = mcp.definition(kind, url=args.url,
                              headers=mcp.parse_pairs(args.header, "--header", header=True))
    else:
        argv = _local_options(args, list(args.argv))
        meta = mcp.definition(kind, argv=argv, env=mcp.parse_pairs(args.env, "-e"))
    name = mcp.check_name(args.name)
    if kind == "remote" and args.url.startswith("http://") and any(
            mcp.is_secret(k) for k in (meta.get("headers") or {})):
        message(f"warning: {args.url} is plain http: the {name} headers travel unencrypted", PROG)
    if not name:
        raise UsageError("give the server a name")
    default = _default(args)
    rec, replaced = _servers(args).add(name, meta, force=args.force)
    if default is not None:
        _set_default(name, default)
    if not args.json and not args.quiet:
        message(f"{'replaced' if replaced else 'added'} MCP server {name} ({kind})", PROG)
    _print(args, [rec])
    return 0


def _local_options(args, argv):
    """add-local NAME [OPTIONS] -- CMD ARGS: the options between NAME and --
    (argparse hands them over with the command), applied to ARGS; the command."""
    from ..errors import UsageError

    if "--" not in argv:
        if argv and argv[0].startswith("-"):
            raise UsageError(f"add-local: put the server's command after --, "
                             f"e.g. cubbi-mcp add-local {args.name} -- CMD ARGS")
        return argv
    cut = argv.index("--")
    opts, argv = argv[:cut], argv[cut + 1:]
    flags = {"-f": "force", "--force": "force", "--default": "default",
             "--no-default": "no_default", "--json": "json", "-q": "quiet", "--quiet": "quiet"}
    while opts:
        word = opts.pop(0)
        if word in flags:
            setattr(args, flags[word], True)
        elif word in ("-e", "--env") and opts:
            args.env.append(opts.pop(0))
        elif word.startswith("--env="):
            args.env.append(word.split("=", 1)[1])
        else:
            raise UsageError(f"add-local: unknown option {word!r} before --")
    return argv


def _list(args):
    _print(args, _servers(args).all_servers())
    return 0


def _show(args):
    _print(args, [_servers(args).get(args.name)])
    return 0


def _each(args, what, action):
    """ACTION(name) for NAMES (arguments, --all, or stdin lines); one
    record per name, failures tallied."""
    from ..errors import CubbiError, UsageError
    from ..refs import BadLine, refs_from

    tally = cli.Tally(PROG)
    if getattr(args, "all", False):
        if args.names:
            raise UsageError("give names or --all, not both")
        names = [r["name"] for r in _servers(args).all_servers() if r.get("kind") == "container"]
    else:
        names = refs_from(args.names, what="MCP server names")
    for name in names:
        try:
            if isinstance(name, BadLine):
                raise UsageError(str(name))
            rec = action(name)
        except CubbiError as exc:
            tally.failed(None, exc)
            continue
        if not args.json and not args.quiet:
            message(f"{what} MCP server {rec['name']}", PROG)
        _print(args, [rec])
    return tally.code()


def _progress(args):
    return None if args.json or args.quiet else (lambda m: message(m, PROG))


def _remove(args):
    def one(name):
        rec = _servers(args).remove(name)
        if rec["name"] in _defaults():
            _set_default(rec["name"], False)
        return rec

    return _each(args, "removed", one)


def _start(args):
    return _each(args, "started", lambda n: _servers(args).start(n, progress=_progress(args)))


def _stop(args):
    return _each(args, "stopped", lambda n: _servers(args).stop(n))


def _restart(args):
    return _each(args, "restarted", lambda n: _servers(args).restart(n, progress=_progress(args)))


def _logs(args):
    out = sys.stdout
    for line in _servers(args).logs(args.name, follow=args.follow, tail=args.tail,
                                    proxy=args.proxy):
        out.write(line + "\n")
        if args.follow:
            out.flush()
    return 0


def run(args):
    return {"add": lambda a: _add(a, "container"), "add-remote": lambda a: _add(a, "remote"),
            "add-local": lambda a: _add(a, "local"), "list": _list, "ls": _list, "show": _show,
            "remove": _remove, "rm": _remove, "start": _start, "stop": _stop,
            "restart": _restart, "logs": _logs}[args.subcommand](args)


_OUT = [cli.JSON, cli.Opt("-q", "--quiet", help="print server names only, one per line")]
_NAME = cli.Arg("name", "the server's name (lowercase letters, digits, '_', '-')",
                complete="sh:cubbi-mcp list -q", metavar="NAME")
_NAMES = cli.Arg("names", "server names; read from stdin, one per line, when none is given",
                 nargs="*", complete="sh:cubbi-mcp list -q", metavar="NAME")
_ADD = [
    cli.Opt("-f", "--force", help="replace a server of that name (a running one is stopped; "
                                  "the next session starts the new one)"),
    cli.Opt("--default", help="also give it to every session without --mcp (defaults.mcp)"),
    cli.Opt("--no-default", help="take it out of defaults.mcp"),
]
_ENV = cli.Opt("-e", "--env", kind="multi", metavar="KEY=VALUE",
               help="an environment variable of the server; a KEY saying key, token, secret, "
                    "password or auth goes to the secret store only; repeatable")
_ALL = cli.Opt("--all", help="every server added with cubbi-mcp add")

COMMAND = cli.Command(
    PROG, "manage MCP servers: define them, run them, attach them to sessions", run,
    description="An MCP server gives a session's AI tool more tools. Three kinds: 'add' runs "
                "a stdio server from a Docker IMAGE in a container of its own, behind "
                "mcp-proxy, which serves it over streamable HTTP (http://cubbi-mcp-NAME:8080/mcp) "
                "and SSE (/sse) on a network that only the sessions using it join; "
                "'add-remote' names a server elsewhere by URL; 'add-local' is a stdio "
                "command that runs inside each session (its image must have it). "
                "cubbi-create --mcp NAME (repeatable) attaches servers to a session, "
                "else the defaults (defaults.mcp, see --default), none with --no-mcp; a "
                "container server starts on demand and keeps running until cubbi-mcp stop. "
                "Definitions live in mcp.yaml in the config directory (0600); a header or "
                "-e value whose name says key, token, secret, password or auth lives only "
                "in the secret store and shows as ******** here. On a Cubbi Service (-r) "
                "the definitions and servers belong to the user who made them.",
    options=[cli.REMOTE],
    subcommands={
        "add": ("add a stdio MCP server run from a Docker image", _ADD + [
            _ENV,
            cli.Opt("--command", kind="value", metavar="CMD",
                    help="the server's command line (sh -c) instead of the image's own "
                         "entrypoint and command"),
        ] + _OUT, [_NAME, cli.Arg("image", "a local Docker image holding the server",
                                  complete="image", metavar="IMAGE")]),
        "add-remote": ("add an MCP server reached by URL", _ADD + [
            cli.Opt("--header", kind="multi", metavar="NAME=VALUE",
                    help="an HTTP header sent to the server (e.g. 'Authorization=Bearer "
                         "...'); repeatable"),
        ] + _OUT, [_NAME, cli.Arg("url", "the server's URL: streamable HTTP, or SSE when "
                                         "it ends in /sse", metavar="URL")]),
        "add-local": ("add a stdio MCP server that runs inside each session", _ADD + [_ENV]
                      + _OUT, [_NAME, cli.Arg("argv", "-- then the command and its arguments",
                                              nargs="...", metavar="-- CMD ARG")]),
        "list": ("list MCP servers and whether each runs", _OUT, []),
        "show": ("show an MCP server (secret values masked)", [cli.JSON], [_NAME]),
        "remove": ("stop and remove MCP servers and their secrets; names from arguments "
                   "or stdin", _OUT, [_NAMES]),
        "start": ("start container MCP servers (sessions start them on demand)",
                  [_ALL] + _OUT, [_NAMES]),
        "stop": ("stop container MCP servers", [_ALL] + _OUT, [_NAMES]),
        "restart": ("restart container MCP servers", [_ALL] + _OUT, [_NAMES]),
        "logs": ("print a container MCP server's log", [
            cli.Opt("-f", "--follow", help="keep printing new lines until the server stops"),
            cli.Opt("--tail", kind="value", metavar="N", type=int, help="the last N lines only"),
            cli.Opt("--proxy", help="the log of its mcp-proxy (requests, errors) instead"),
        ], [_NAME]),
    },
    sections=[
        ("IN A SESSION", "A session made with MCP servers has /cubbi/mcp.json, describing "
         "each (name, kind, transport, url or command, headers and env by reference to "
         "session variables), MCP_HOST (the URL of the first server that has one) and "
         "CUBBI_MCP_FILE=/cubbi/mcp.json. The image's tool is configured from it as its "
         "cubbi_image.yaml says (mcp: format): goose, claude-code, opencode and codex are "
         "written by cubbi; aider has no MCP support. The format of /cubbi/mcp.json is in "
         "images/custom/README.md."),
        ("FAILURES", "An unknown --mcp name stops cubbi-create before anything starts "
         "(exit 3). A container server that exits or does not answer MCP's initialize "
         "(within $CUBBI_MCP_START_TIMEOUT seconds, default 90) makes the session fail, "
         "its reason holding the server's last log lines. A remote URL that does not "
         "answer is a warning; the session starts."),
        ("FILES", "$CUBBI_CONFIG_DIR/mcp.yaml (default ~/.config/cubbi/mcp.yaml): the "
         "definitions; defaults.mcp in config.yaml: the default list."),
    ],
    examples=[
        ("cubbi-mcp add time mcp/time --default", "a stdio server from an image, for every session"),
        ("cubbi-mcp add-remote docs https://mcp.example.com/mcp --header 'Authorization=Bearer '\"$TOKEN\"",
         "a remote server; the header goes to the secret store"),
        ("cubbi-mcp add-local clock -- mcp-server-time --local-timezone UTC",
         "a stdio server run inside each session"),
        ("cubbi-create --mcp time --mcp docs", "a session with two servers"),
        ("cubbi-mcp stop --all", "stop every running container server"),
    ],
    see_also=["cubbi-create", "cubbi-config"],
)


def main():
    COMMAND.main()

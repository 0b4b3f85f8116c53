import os
import sys

from .. import cli
from ..errors import CubbiError, UsageError
from ..output import Printer, json_line, message

PROG = "cubbi-server"
SUBS = ("serve", "token", "user")

CONFIG = cli.Opt("-c", "--config", kind="value", metavar="FILE", complete="file",
                 default=os.environ.get("CUBBI_SERVER_CONFIG"),
                 help="the service config, cubbi-service.yaml (default: $CUBBI_SERVER_CONFIG, "
                      "else built-in defaults with the database in the current directory)")
DATABASE = cli.Opt("--database", kind="value", metavar="FILE", complete="file",
                   help="the SQLite database (overrides state.database)")


def _conf(args):
    from ..service import load_config

    conf = load_config(args.config)
    if args.database:
        conf["state"]["database"] = os.path.abspath(args.database)
    return conf


SWEEP_EVERY = 60  # e.g. the bridge of a user whose last session closed itself when idle


def serve(args, conf):
    try:
        from gevent import monkey

        monkey.patch_all()
        import signal

        import gevent
        from gevent import pywsgi
        from cubbi_server.app import make_app, serving
    except ModuleNotFoundError as exc:
        raise CubbiError(f"{sys.executable} lacks {exc.name}, which the server needs: install "
                         "cubbi with its server extras (pip install '.[server]')") from None

    from ..service import Service

    host = args.host or conf["server"]["host"]
    port = conf["server"]["port"] if args.port is None else args.port
    _file_limit(conf["server"])
    service = Service(conf)

    def sweeper():  # orphans: once the server is up, then every SWEEP_EVERY s
        while True:
            service.sweep(sys.stderr)
            gevent.sleep(SWEEP_EVERY)

    app, handler = serving(make_app(service, conf), conf)
    log = None if args.quiet else sys.stderr
    server = pywsgi.WSGIServer((host, int(port)), app, handler_class=handler,
                               log=log, error_log=sys.stderr)
    try:
        server.init_socket()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    gevent.signal_handler(signal.SIGUSR1, _print_stacks)
    bound = server.socket.getsockname()
    message(f"listening on http://{bound[0]}:{bound[1]} (database {conf['state']['database']})",
            PROG)
    from ..remote import is_loopback

    if not is_loopback(bound[0]):
        message(f"warning: {bound[0]} is not loopback: sessions may reach this port "
                "through their bridge's gateway, as any host service on it "
                "(cubbi-service.yaml(5), THE HOST)", PROG)
    gevent.spawn(sweeper)  # after every check that may stop the start (its one line)
    server.serve_forever()
    return 0


STACKS_END = "cubbi-server: end of the stacks"


def _print_stacks():
    """SIGUSR1: where each greenlet waits (a request that hangs, and on
    what), on the server's log: file, line and function of each frame,
    never a variable's value."""
    import gc
    import traceback

    from greenlet import greenlet

    out = ["cubbi-server: the stacks of the waiting greenlets (SIGUSR1):"]
    for g in gc.get_objects():
        if isinstance(g, greenlet) and g.gr_frame is not None:
            out.append(f"- {type(g).__name__}")
            out += [f"  {f.filename}:{f.lineno} in {f.name}"
                    for f in traceback.extract_stack(g.gr_frame)]
    out.append(STACKS_END)
    sys.stderr.write("\n".join(out) + "\n")
    sys.stderr.flush()


FDS_PER_CONNECTION = 2  # a client's socket, and a stream's or terminal's engine connection
FDS_SPARE = 256  # the listener, the database, the engine's idle connections, logs


def _file_limit(srv):
    """Open files enough for server.max_connections: the soft limit raised
    toward the hard one, else the cap lowered to fit (said once), so the
    server refuses connections with 503 and never runs out of descriptors."""
    import resource

    want = int(srv["max_connections"]) * FDS_PER_CONNECTION + FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fit = max(1, (soft - FDS_SPARE) // FDS_PER_CONNECTION)
        message(f"server.max_connections {srv['max_connections']} needs {want} open files; "
                f"the limit is {soft} (ulimit -n): at most {fit} connections", PROG)
        srv["max_connections"] = fit


def _report(args, rec, text):
    if args.json:
        json_line(rec)
    else:
        message(text, PROG)
    return 0


def _table(args, rows, columns, key="id"):
    out = Printer(cli.output_format(args), columns, key=key)
    for row in rows:
        out.add(row)
    out.close()
    return 0


def _need(args, what):
    if not args.user:
        raise UsageError(f"{args.subcommand} {args.action} needs {what}")
    return args.user


def _remove_user(args, conf):
    from ..output import plural
    from ..service import Service

    rec = Service(conf).remove_user(_need(args, "a USER"), confirm=args.yes)
    parts = [plural(rec["tokens"], "token")]
    parts.append(f"closed {plural(len(rec['sessions']), 'session')}"
                 + (f" ({', '.join(rec['sessions'])})" if rec["sessions"] else ""))
    parts.append(f"deleted {plural(len(rec['projects']), 'project')}"
                 + (f" ({', '.join(rec['projects'])}) with their credentials"
                    if rec["projects"] else ""))
    return _report(args, rec, f"removed user {rec['user']}: " + "; ".join(parts))


def run(args):
    conf = _conf(args)
    if args.subcommand == "serve":
        return serve(args, conf)
    from ..serverstate import State

    state = State(conf["state"]["database"], conf["projects"]["storage"].get("key"))
    action = (args.subcommand, args.action)
    if action == ("token", "create"):
        tok = state.create_token(_need(args, "a USER"), label=args.label)
        if not args.json:
            sys.stdout.write(tok["token"] + "\n")
        return _report(args, tok, f"token {tok['id']} for {tok['user']}: shown once, keep it safe")
    if action == ("token", "list"):
        return _table(args, state.tokens(args.user), [("id", "ID"), ("user", "USER"),
                                                      ("label", "LABEL"), ("created", "CREATED")])
    if action == ("token", "revoke"):
        rec = state.revoke_token(_need(args, "a token ID (see cubbi-server token list)"))
        return _report(args, rec, f"revoked token {rec['id']}")
    if action == ("user", "list"):
        return _table(args, state.users(), [("user", "USER"), ("tokens", "TOKENS"),
                                            ("created", "CREATED")], key="user")
    if action == ("user", "remove"):
        return _remove_user(args, conf)
    known = "create, list or revoke" if args.subcommand == "token" else "list or remove"
    raise UsageError(f"unknown {args.subcommand} action {args.action!r}: use {known}")


_HOST = cli.Opt("--host", kind="value", metavar="ADDR",
                help="address to listen on (default: server.host, else 127.0.0.1)")
_PORT = cli.Opt("-p", "--port", kind="value", metavar="PORT", type=int,
                help="port to listen on, 0 for any free port (default: server.port, else 3000)")
_QUIET = cli.Opt("-q", "--quiet", help="no access log on stderr")

COMMAND = cli.Command(
    PROG, "run the Cubbi Service, and manage its users and API tokens", run,
    description="Without a subcommand, or with serve: runs the REST service (Bottle on gevent, "
                "with WebSocket terminals) that lets cubbi commands work with -r REMOTE. "
                "Sessions stay in Docker labels; users, tokens (stored hashed) and projects "
                "(credentials encrypted) live in a SQLite database, so a restart loses "
                "nothing. token create USER prints a new API token once; give it to the user, "
                "who runs cubbi-remote add NAME URL --token -. A user reaches only the "
                "sessions the service made for them (labels cubbi.owner and cubbi.served, "
                "the latter a random key of the user's row), never a local session of the "
                "same owner name. user remove USER refuses a user who still has sessions or "
                "projects unless --yes, then closes the sessions and deletes the projects "
                "and their credentials with the user and their tokens. The service also "
                "serves a web page at / for the signed-in user's sessions, logs and "
                "terminals (cubbi-service.yaml(5): WEB PAGE). When it starts, and every "
                "minute, it removes the orphans nothing uses on its engine, whoever made "
                "them, one stderr line each (see "
                "cubbi-prune(1)); policy.idle_timeout decides the sessions' idle timeout. "
                "SIGUSR1 prints where each request waits (every greenlet's stack: files, "
                "lines and functions) on the server's log.",
    subcommands={
        "serve": ("run the service (the default)", [CONFIG, DATABASE, _HOST, _PORT, _QUIET], []),
        "token": ("token create USER [--label L] | token list [USER] | token revoke ID",
                  [CONFIG, DATABASE, cli.Opt("--label", kind="value", help="a note on the token"),
                   cli.JSON, cli.Opt("-q", "--quiet", help="print token ids only, one per line")],
                  [cli.Arg("action", "create, list or revoke", metavar="ACTION"),
                   cli.Arg("user", "the user (create, list) or token id (revoke)", nargs="?",
                           metavar="USER|ID")]),
        "user": ("user list | user remove USER [--yes] (with their tokens, sessions and "
                 "projects)",
                 [CONFIG, DATABASE, cli.Opt("-y", "--yes", help="remove a user who has sessions "
                                            "or projects: close and delete them too"),
                  cli.JSON, cli.Opt("-q", "--quiet", help="print user names only, one per line")],
                 [cli.Arg("action", "list or remove", metavar="ACTION"),
                  cli.Arg("user", "the user", nargs="?", metavar="USER")]),
    },
    examples=[
        ("cubbi-server --config cubbi-service.yaml --port 3000", "run the service"),
        ("cubbi-server token create alice --config cubbi-service.yaml", "issue a token for alice"),
        ("cubbi-server token list --json", "the tokens (ids, never secrets)"),
    ],
    see_also=["cubbi-service.yaml(5)", "cubbi-remote", "cubbi-connect"],
)


def main():
    argv = sys.argv[1:]
    if not argv or (argv[0] not in SUBS and argv[0] not in ("-h", "--help")):
        argv = ["serve"] + argv
    sys.exit(cli.run_main(COMMAND, argv))

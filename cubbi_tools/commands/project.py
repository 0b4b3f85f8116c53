import os
import sys

from .. import cli
from ..output import Printer, message

PROG = "cubbi-project"
COLUMNS = [("id", "ID"), ("auth", "AUTH"), ("url", "URL")]
SHOW_COLUMNS = [("id", "ID"), ("auth", "AUTH"), ("url", "URL"), ("credential_store", "STORE")]


def _token(args):
    from ..errors import UsageError
    from ..projects import check_token

    if args.token is not None and args.token_env:
        raise UsageError("give --token or --token-env, not both")
    if args.token_env:
        value = os.environ.get(args.token_env)
        if value is None:
            raise UsageError(f"--token-env {args.token_env}: no such environment variable")
        return check_token(value, f"--token-env {args.token_env}")
    if args.token == "-":
        if sys.stdin is None or sys.stdin.isatty():
            message("reading the token from stdin (one line)", PROG)
        line = sys.stdin.readline() if sys.stdin else ""
        return check_token(line, "--token - (stdin)")
    if args.token is not None:
        return check_token(args.token)
    return None


def _add(args):
    from .. import projects
    from ..errors import UsageError

    if not args.force:  # before reading a token from stdin
        _refuse_existing(args)
    token = _token(args)
    if args.ssh_key and token:
        raise UsageError("give one credential: --ssh-key or --token")
    key = projects.read_ssh_key(args.ssh_key) if args.ssh_key else None
    rec, replaced = _projects(args).add(args.url, ssh_key=key, token=token, force=args.force)
    if token and rec["url"].startswith("http://"):
        message(f"warning: {rec['url']} is plain http: the token travels unencrypted", PROG)
    if not args.json and not args.quiet:
        message(f"{'replaced' if replaced else 'added'} project {rec['id']} "
                f"({_auth_text(rec['auth'])})", PROG)
    _print(args, [rec])
    return 0


def _refuse_existing(args):
    """Adding a stored project again would drop its credential: only with --force."""
    from ..errors import NotFound
    from ..projects import exists_error

    try:
        rec = _projects(args).get(args.url)
    except NotFound:
        return
    raise exists_error(rec["id"])


def _auth_text(auth):
    return {"ssh_key": "SSH key", "token": "token", "none": "no credential"}[auth]


def _print(args, recs, columns=COLUMNS):
    out = Printer(cli.output_format(args), columns)
    for rec in recs:
        out.add(rec)
    out.close()


def _projects(args):
    """cubbi_tools.projects, or the same interface on a remote service (-r)."""
    from .. import backend

    return backend.get(args).projects


def _list(args):
    _print(args, _projects(args).all_projects())
    return 0


def _show(args):
    _print(args, [_projects(args).get(args.id, detail=True)], SHOW_COLUMNS)
    return 0


def _remove(args):
    from ..errors import CubbiError, UsageError
    from ..refs import BadLine, refs_from

    tally = cli.Tally(PROG)
    for ref in refs_from(args.ids, what="project ids"):
        try:
            if isinstance(ref, BadLine):
                raise UsageError(str(ref))
            rec = _projects(args).remove(ref)
        except CubbiError as exc:
            tally.failed(None, exc)
            if args.json:  # one result per input line, as cubbi-close prints them
                _print(args, [{"id": None if isinstance(ref, BadLine) else ref,
                               "removed": False, "error": str(exc)}])
            continue
        if args.json:
            _print(args, [dict(rec, removed=True, error=None)])
        elif args.quiet:
            _print(args, [rec])
        else:
            message(f"removed project {rec['id']} and its credential", PROG)
    return tally.code()


def run(args):
    return {"add": _add, "list": _list, "ls": _list, "show": _show,
            "remove": _remove, "rm": _remove}[args.subcommand](args)


_OUT = [cli.JSON, cli.Opt("-q", "--quiet", help="print project ids only, one per line")]
_ID = cli.Arg("id", "a project id or any form of its URL", complete="project", metavar="ID")

COMMAND = cli.Command(
    PROG, "manage projects: git repositories and their credentials", run,
    description="A project is a git repository that sessions clone into /app "
                "(cubbi-create --project URL, or cubbi URL). Every form of a URL names the "
                "same project: github.com/hello/private, git@github.com:hello/private.git, "
                "https://github.com/hello/private and ssh://git@github.com/hello/private "
                "are all github.com/hello/private (host[:port]/path). The project's "
                "metadata is kept in projects.yaml in the config directory (mode 0600); its "
                "credential, an SSH private key or an access token, only in the secret "
                "store (keyring, or a 0600 file) and never printed. A URL with no stored "
                "project is cloned anonymously.",
    options=[cli.REMOTE],
    subcommands={
        "add": ("add a project; --force replaces a stored one and its credential", [
            cli.Opt("-f", "--force", help="replace the project if it is stored already (its stored "
                                    "credential goes; give the new one with this add)"),
            cli.Opt("--ssh-key", kind="value", metavar="FILE", complete="file",
                    help="an SSH private key without passphrase (a deploy key); the clone "
                         "uses ssh with the server's host key scanned at session start"),
            cli.Opt("--token", kind="value", metavar="TOKEN",
                    help="an access token for https; '-' reads it from stdin, which keeps "
                         "it out of your shell history and of ps"),
            cli.Opt("--token-env", kind="value", metavar="VAR",
                    help="read the access token from environment variable VAR"),
        ] + _OUT, [cli.Arg("url", "the repository URL, in any form", metavar="URL")]),
        "list": ("list projects", _OUT, []),
        "show": ("show a project and the kind of credential it has", [cli.JSON], [_ID]),
        "remove": ("remove projects and their credentials; ids from arguments or stdin",
                   _OUT, [cli.Arg("ids", "project ids or URLs", nargs="*",
                                  complete="project", metavar="ID")]),
    },
    sections=[
        ("CREDENTIALS", "Into a session the credential travels as a 0600 file owned by the "
         "session user under /cubbi/project/, never as an environment variable or a "
         "label. An SSH key is used with the host key that ssh-keyscan reads from the "
         "project's own host and port at session start (then StrictHostKeyChecking=yes); "
         "a token is answered to git by a credential helper scoped to the project's "
         "scheme://host[:port] only. Both stay configured in /app/.git/config for pull "
         "and push. A token given as --token TOKEN lands in your shell history: prefer "
         "--token - (stdin) or --token-env VAR."),
        ("FILES", "$CUBBI_CONFIG_DIR/projects.yaml (default ~/.config/cubbi/projects.yaml): "
         "id, clone URL and kind of credential of each project."),
    ],
    examples=[
        ("cubbi-project add git@github.com:hello/private.git --ssh-key ~/.ssh/deploy_key",
         "a private repository cloned over SSH"),
        ("pass show gitlab | cubbi-project add https://gitlab.example.com/team/app --token -",
         "a repository cloned over https with a token read from stdin"),
        ("cubbi git@github.com:hello/private", "a session with the repository in /app"),
        ("cubbi-project list -q | cubbi-project remove", "remove every project"),
    ],
    see_also=["cubbi-create", "cubbi-config"],
)


def main():
    COMMAND.main()

import sys

from .. import backend, cli


def run(args):
    engine = backend.get(args)
    rec = engine.wait_ready(engine.resolve(args.id))
    command = args.command
    tty = not command and sys.stdin.isatty() and sys.stdout.isatty()
    sys.stdout.flush()
    return engine.connect(rec, command or None, tty=tty)


COMMAND = cli.Command(
    "cubbi-connect", "open a shell in a session, or run a command in it", run,
    description="With only ID: the image's tool (init.command in its cubbi_image.yaml, "
                "e.g. aider) in /app as the session user, once the session is ready, or an "
                "interactive login shell when the image names no command. "
                "With -- CMD ARGS: runs CMD without a TTY (-- bash -l for a shell), "
                "passing stdin, stdout, stderr and the exit status through, locally and "
                "on a remote alike. Ctrl-C (SIGINT) or SIGTERM stops CMD and what it "
                "started in the session, and cubbi-connect exits 130 or 143; when the "
                "reader of its stdout goes away (| head -1) CMD is stopped too and the "
                "status is 141, as for a writer in a shell pipeline.",
    options=[cli.REMOTE],
    args=[
        cli.Arg("id", "the session (id, prefix or name)", complete="session", metavar="ID"),
        cli.Arg("command", "command and arguments to run instead of a shell (after --)",
                nargs="*", metavar="CMD"),
    ],
    examples=[
        ("cubbi-connect 3fa1", "a shell in session 3fa1"),
        ("cubbi-connect 3fa1 -- git status", "run one command and get its exit status"),
    ],
    see_also=["cubbi-create", "cubbi-logs"],
)


def main():
    COMMAND.main()

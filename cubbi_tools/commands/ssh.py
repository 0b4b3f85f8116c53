import os
import sys

from .. import backend, cli
from ..errors import CubbiError, UsageError


def identity():
    """The private key beside ssh.public_key, when it names a file."""
    from .. import config, sshaccess

    return sshaccess.identity_file(config.peek("ssh.public_key"))


def run(args):
    from .. import sshaccess

    engine = backend.get(args)
    rec = engine.wait_ready(engine.resolve(args.id))
    if args.proxy:
        if args.command:
            raise UsageError("--proxy takes no command: it is ssh's ProxyCommand")
        return sshaccess.proxy(engine, rec)
    user, _ = sshaccess.ensure(engine, rec)
    argv = sshaccess.ssh_argv(rec, user, engine.remote, args.command, identity())
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise CubbiError(f"cannot run ssh (the OpenSSH client): {exc.strerror}; "
                         "install openssh-client") from None


COMMAND = cli.Command(
    "cubbi-ssh", "log in to a session with the OpenSSH client", run,
    description="Runs ssh(1) into the session: a login shell with only ID, CMD with -- CMD "
                "(ssh joins its words, the session user's shell runs them). No port is "
                "published and nothing listens on any host: ssh's ProxyCommand is cubbi-ssh "
                "--proxy, which runs `sshd -i` in the session over cubbi's own exec stream "
                "(the Docker Engine API locally, the service's WebSocket with -r), so it "
                "works alike for local and remote sessions. "
                "The session allows the public keys its owner had at create: ssh.public_key "
                "(cubbi-config(5)) else every ~/.ssh/*.pub; password login is off. Its host "
                "key is made when the session starts; cubbi-ssh fetches the public half once "
                "over cubbi's authenticated channel and records it in cubbi's known_hosts "
                "($CUBBI_CONFIG_DIR/ssh/known_hosts, alias cubbi-ID), and ssh checks it "
                "(StrictHostKeyChecking yes): a session whose host key changed is refused. "
                "A session whose image has no sshd is an error (exit 1): the built-in images "
                "carry openssh-server. ssh's own exit status (255 for its failures) is "
                "cubbi-ssh's. For scp, sftp, rsync, git and editors (VS Code Remote-SSH), "
                "see cubbi-ssh-config.",
    options=[
        cli.REMOTE,
        cli.Opt("--proxy", help="be ssh's ProxyCommand: the session's sshd on stdin and stdout "
                                "(what cubbi-ssh-config writes)"),
    ],
    args=[
        cli.Arg("id", "the session (id, prefix or name)", complete="session", metavar="ID"),
        cli.Arg("command", "command and arguments to run instead of a login shell (after --)",
                nargs="*", metavar="CMD"),
    ],
    examples=[
        ("cubbi-ssh 3fa1", "a login shell in session 3fa1, over SSH"),
        ("cubbi-ssh -r team 3fa1 -- uname -a", "one command in a session of remote team"),
    ],
    see_also=["cubbi-ssh-config", "cubbi-connect", "ssh"],
)


def main():
    COMMAND.main()

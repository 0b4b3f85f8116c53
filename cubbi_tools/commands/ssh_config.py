import sys

from .. import backend, cli
from ..errors import NOT_FOUND


def run(args):
    from .. import sshaccess
    from ..output import message
    from .ssh import identity

    engine = backend.get(args)
    tally = cli.Tally("cubbi-ssh-config")
    if args.ids:
        from ..refs import each_session

        recs = list(each_session(engine, args.ids, tally))
    else:
        recs = [r for r in engine.list() if r.get("status") == "running"]
    key = identity()
    blocks = []
    for rec in recs:
        try:
            if args.ids:
                rec = engine.wait_ready(rec)
            user, _ = sshaccess.ensure(engine, rec)
        except Exception as exc:  # noqa: BLE001 - reported (Tally), the others carry on
            if not args.ids and (isinstance(exc, (sshaccess.NoSshd, sshaccess.NoKey))
                                 or getattr(exc, "code", None) == NOT_FOUND):
                continue  # without IDs: no sshd, no key, or closed meanwhile: left out
            tally.failed(rec["id"], exc)
            continue
        blocks.append(sshaccess.config_block(rec, user, engine.remote, key))
    where = f"remote {engine.remote}" if engine.remote else "the local engine"
    text = (f"# cubbi sessions of {where}, written by cubbi-ssh-config; "
            "regenerate rather than edit\n" + "\n".join(blocks))
    if args.install:
        path, added = sshaccess.install(text, engine.remote)
        message(f"wrote {len(blocks)} session(s) to {path}"
                + ("; added its Include to ~/.ssh/config" if added else ""), "cubbi-ssh-config")
    else:
        sys.stdout.write(text)
    return tally.code()


COMMAND = cli.Command(
    "cubbi-ssh-config", "print ssh_config Host blocks for sessions (ssh cubbi-NAME)", run,
    description="Prints a `Host cubbi-NAME` block for each session named (default: every "
                "running session of the backend that has sshd), for ~/.ssh/config: then "
                "`ssh cubbi-NAME`, `scp FILE cubbi-NAME:/app/`, sftp, rsync, git over ssh "
                "and editors' remote modes (VS Code Remote-SSH, JetBrains Gateway, Zed) "
                "reach the session with no published port. Each block's ProxyCommand is "
                "cubbi-ssh --proxy ID (see cubbi-ssh(1)); its HostKeyAlias cubbi-ID and "
                "UserKnownHostsFile point at the session's host key, which this command "
                "records on first use; StrictHostKeyChecking is yes. "
                "With --install the blocks go to $CUBBI_CONFIG_DIR/ssh/config.d/BACKEND "
                "(local, or the remote's name) instead, and ~/.ssh/config gets an Include "
                "of that folder at its top once; run it again after creating or closing "
                "sessions to keep the file current. A named session without sshd, or made "
                "without an SSH key, is an error (exit 1); with no ID such sessions are "
                "left out.",
    options=[
        cli.REMOTE,
        cli.Opt("--install", help="write the blocks to cubbi's Include'd ssh config file "
                                  "(replacing this backend's) instead of stdout"),
    ],
    args=[cli.Arg("ids", "sessions (id, prefix or name); default: every running one",
                  nargs="*", complete="session", metavar="ID")],
    examples=[
        ("cubbi-ssh-config --install", "keep ~/.ssh/config's Include of the local sessions current"),
        ("cubbi-ssh-config 3fa1 >> ~/.ssh/config", "add one session's block by hand"),
    ],
    see_also=["cubbi-ssh", "ssh_config"],
)


def main():
    COMMAND.main()

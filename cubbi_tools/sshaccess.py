"""SSH into sessions (cubbi-ssh, cubbi-ssh-config): the real OpenSSH client
on this side, `sshd -i` in the session, and cubbi itself as the
ProxyCommand between them, over the backend's own exec stream (the Engine
API locally, the service's WebSocket for a remote), so nothing listens on
any host and SSH works alike for local and remote sessions.

The session's init (data/hooks/40-ssh.sh) makes a host key for that session
and an sshd_config (the session user only, public keys only); the keys
allowed are the ones its owner gave at create (CreateRequest.ssh_keys, from
ssh.public_key or ~/.ssh/*.pub).  Its host key's public half is fetched
once over the authenticated cubbi channel and recorded in cubbi's own
known_hosts (alias cubbi-ID), so StrictHostKeyChecking stays on: a session
whose key changes is refused by ssh.
"""

import os

from .errors import CubbiError, NotFound, UsageError

SSH_DIR = "/cubbi/ssh"
NO_SSHD = 97  # the exit status of SSHD_CMD in a session whose image has no sshd
SSHD_CMD = ["/bin/sh", "-c",
            f'[ -r {SSH_DIR}/sshd_config ] && [ -s {SSH_DIR}/sshd ] || exit {NO_SSHD}; '
            f'exec "$(cat {SSH_DIR}/sshd)" -i -f {SSH_DIR}/sshd_config']
INFO_CMD = ["/bin/sh", "-c",
            f'[ -s {SSH_DIR}/user ] && [ -s {SSH_DIR}/host_ed25519_key.pub ] || exit {NO_SSHD}; '
            f'cat {SSH_DIR}/user {SSH_DIR}/host_ed25519_key.pub; '
            f'grep -c "^[a-z]" {SSH_DIR}/authorized_keys 2>/dev/null || true']
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-", "sk-ssh-ed25519@",
             "sk-ecdsa-sha2-")


class NoSshd(CubbiError):
    pass


class NoKey(CubbiError):
    """The session was made without an SSH key: nobody can sign in."""


def no_sshd(rec):
    return NoSshd(f"session {rec['name']} ({rec['id']}): this image has no sshd "
                  "(install openssh-server in it, or use a built-in image; a built-in image "
                  "built before cubbi-ssh existed has none: rebuild it with cubbi-image build "
                  f"{rec.get('image') or 'NAME'}, and make the session again)")


# -- the user's keys -------------------------------------------------------
def public_keys(configured=None):
    """The public key lines to authorise in a new session: ssh.public_key
    (a key's text, or the path of a .pub file) when set, else every
    ~/.ssh/*.pub that holds a key (none: [])."""
    from .validate import check_ssh_keys

    if configured:
        configured = str(configured).strip()
        if configured.startswith(KEY_TYPES):
            return check_ssh_keys([configured], "ssh.public_key")
        path = os.path.expanduser(configured)
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise NotFound(f"ssh.public_key: cannot read {path}: {exc.strerror}") from None
        return check_ssh_keys(lines, f"ssh.public_key ({path})")
    home = os.path.join(os.path.expanduser("~"), ".ssh")
    out = []
    try:
        names = sorted(n for n in os.listdir(home) if n.endswith(".pub"))
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(home, name), encoding="utf-8") as fh:
                line = fh.readline().strip()
            check_ssh_keys([line])
        except (OSError, UnicodeDecodeError, UsageError):
            continue  # not a key we can pass on: skipped
        if line not in out:
            out.append(line)
    return out[:32]


def identity_file(configured=None):
    """The private key beside ssh.public_key when it names a .pub file
    (IdentityFile), else None (ssh's own defaults and agent)."""
    if not configured or str(configured).strip().startswith(KEY_TYPES):
        return None
    path = os.path.abspath(os.path.expanduser(str(configured).strip()))
    return path[:-4] if path.endswith(".pub") and os.path.exists(path[:-4]) else None


# -- the host key, recorded on this side -----------------------------------
def known_hosts_path():
    from .files import config_dir

    return os.path.join(config_dir(), "ssh", "known_hosts")


def alias(rec):
    return f"cubbi-{rec['id']}"


def recorded(rec):
    """(user, key line) recorded for the session, or None.  The user is kept
    in the line's comment: `cubbi-ID TYPE BASE64 cubbi-user=NAME`."""
    try:
        with open(known_hosts_path(), encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == alias(rec) and \
                        parts[3].startswith("cubbi-user="):
                    return parts[3][len("cubbi-user="):], f"{parts[1]} {parts[2]}"
    except OSError:
        pass
    return None


def record(rec, user, key):
    """Record the session's host key (replacing a line of the same alias)."""
    from .files import atomic_write

    path = known_hosts_path()
    try:
        with open(path, encoding="utf-8") as fh:
            keep = [ln for ln in fh if ln.split()[:1] != [alias(rec)]]
    except OSError:
        keep = []
    keep.append(f"{alias(rec)} {key} cubbi-user={user}\n")
    atomic_write(path, "".join(keep).encode(), mode=0o600)


def fetch(backend, rec):
    """(user, host key line) of the session, over the backend's exec
    (authenticated by cubbi: the Engine API, or the service with the
    user's token); NoSshd when its image has none."""
    import tempfile

    with tempfile.TemporaryFile() as out:
        code = backend.connect(rec, INFO_CMD, tty=False, use_stdin=False, stdout=out)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if code == NO_SSHD:
        raise no_sshd(rec)
    lines = text.split("\n")
    if code != 0 or len(lines) < 2:
        raise CubbiError(f"session {rec['id']}: cannot read its SSH host key (exit {code})")
    user, key = lines[0].strip(), lines[1].split()
    if not user or len(key) < 2 or not key[0].startswith(KEY_TYPES):
        raise CubbiError(f"session {rec['id']}: its SSH host key is malformed")
    if len(lines) > 2 and lines[2].strip() == "0":
        raise NoKey(f"session {rec['name']} ({rec['id']}) allows no SSH key: it was created "
                         "without one (set ssh.public_key, or make one with ssh-keygen, then "
                         "create the session again)")
    return user, f"{key[0]} {key[1]}"


def ensure(backend, rec):
    """(user, key) of the session, recorded here on first use."""
    have = recorded(rec)
    if have:
        return have
    user, key = fetch(backend, rec)
    record(rec, user, key)
    return user, key


# -- ssh's configuration ---------------------------------------------------
def proxy_command(rec, remote):
    """The ProxyCommand that reaches the session: this cubbi's cubbi-ssh
    --proxy, by absolute path (ssh runs it without cubbi's PATH): the
    multi-call binary itself when frozen, else the cubbi-ssh beside this
    command, else the one on PATH."""
    import shlex
    import shutil
    import sys

    if getattr(sys, "frozen", False):
        argv = [sys.executable, "ssh"]
    else:
        here = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "cubbi-ssh")
        exe = here if os.access(here, os.X_OK) else shutil.which("cubbi-ssh")
        if not exe:
            raise NotFound("cubbi-ssh is not on PATH (install cubbi, or put its bin on PATH)")
        argv = [os.path.abspath(exe)]
    argv += ["--proxy"] + (["-r", remote] if remote else []) + [rec["id"]]
    return " ".join(shlex.quote(a) for a in argv).replace("%", "%%")


def options(rec, user, remote, identity=None):
    """ssh -o options (in ssh_config form) that reach the session."""
    opts = [("User", user), ("HostKeyAlias", alias(rec)),
            ("ProxyCommand", proxy_command(rec, remote)),
            ("UserKnownHostsFile", _quote(known_hosts_path())),
            ("StrictHostKeyChecking", "yes"), ("CheckHostIP", "no"),
            ("PasswordAuthentication", "no"), ("KbdInteractiveAuthentication", "no")]
    if identity:
        opts.append(("IdentityFile", _quote(identity)))
    return opts


def host_name(rec):
    return f"cubbi-{rec['name']}"


def config_block(rec, user, remote, identity=None):
    lines = [f"Host {host_name(rec)}"]
    lines += [f"    {k} {v}" for k, v in options(rec, user, remote, identity)]
    return "\n".join(lines) + "\n"


def ssh_argv(rec, user, remote, command=(), identity=None):
    argv = ["ssh"]
    for k, v in options(rec, user, remote, identity):
        argv += ["-o", f"{k}={v}"]
    argv += ["--", host_name(rec)] + list(command)
    return argv


def _quote(path):
    return '"' + path + '"' if " " in path else path


# -- the Include'd file ----------------------------------------------------
def install(text, remote):
    """Write TEXT as cubbi's ssh config for this backend (one file per
    backend in ssh/config.d, all Include'd), and make sure ~/.ssh/config
    includes them (an Include line at its top).  Returns (file, added)."""
    from .files import atomic_write, config_dir

    name = remote or "local"
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    folder = os.path.join(config_dir(), "ssh", "config.d")
    path = os.path.join(folder, name)
    atomic_write(path, text.encode(), mode=0o600)
    user_config = os.path.join(os.path.expanduser("~"), ".ssh", "config")
    include = f"Include {_quote(os.path.join(folder, '*'))}"
    try:
        with open(user_config, encoding="utf-8") as fh:
            current = fh.read()
    except FileNotFoundError:
        current = ""
    except OSError as exc:
        raise CubbiError(f"cannot read {user_config}: {exc.strerror}") from None
    if include in current.splitlines():
        return path, False
    os.makedirs(os.path.dirname(user_config), mode=0o700, exist_ok=True)
    atomic_write(user_config, (f"# cubbi's sessions (cubbi-ssh-config --install)\n{include}\n\n"
                               + current).encode(), mode=0o600)
    return path, True


# -- the proxy ---------------------------------------------------------------
def proxy(backend, rec):
    """Be ssh's ProxyCommand: the session's `sshd -i` on stdin and stdout."""
    import sys

    sys.stdout.flush()
    code = backend.connect(rec, SSHD_CMD, tty=False, stdout=sys.stdout.buffer)
    if code == NO_SSHD:
        raise no_sshd(rec)
    return code

import sys

from .. import cli
from ..errors import CubbiError, NotFound, UsageError
from ..output import Printer, json_line, message

PROG = "cubbi-config"
COLUMNS = [("key", "KEY"), ("value", "VALUE"), ("stored", "STORED")]


def _text(value):
    """A value as the human output and `get` print it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        import json  # structured (logging.providers): JSON, which cubbi-config set takes back

        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _row(key, raw, reveal, is_set=True):
    """{key, value, secret, stored} for one key; CubbiError when --reveal
    cannot resolve a reference."""
    from .. import config, secrets

    secret = config.is_secret(key)
    value = raw
    name = config.secret_ref(key, raw) if is_set else None
    if not is_set:
        stored = "default"
    elif name is not None:
        found = secrets.get(name)
        stored = secrets.kind() if found is not None else "missing"
        value = None if found is None else (found if reveal else config.MASK)
    elif config.has_env_ref(raw):
        stored = "env"
        value = config.resolve(key, raw) if reveal else raw
    else:
        stored = "config"
        if secret and not reveal and raw not in (None, ""):
            value = config.MASK
    return {"key": key, "value": value, "secret": secret, "stored": stored}


def _rows(data, prefix, reveal):
    from .. import config

    rows, failed = {}, False
    for key, raw in config.flatten(data):
        if prefix and not (key == prefix or key.startswith(prefix + ".")):
            continue
        try:
            rows[key] = _row(key, raw, reveal)
        except CubbiError as exc:
            message(str(exc), PROG)
            rows[key] = {"key": key, "value": None, "secret": config.is_secret(key),
                         "stored": "env"}
            failed = True
    for key, (kind, default) in config.SCHEMA.items():
        if "*" in key or default is None or key in rows:
            continue
        if prefix and not (key == prefix or key.startswith(prefix + ".")):
            continue
        if config.lookup(data, key.rsplit(".", 1)[0]) is not None and \
                not isinstance(config.lookup(data, key.rsplit(".", 1)[0]), dict):
            continue
        rows[key] = _row(key, config.default_of(key), reveal, is_set=False)
    return [rows[k] for k in sorted(rows)], failed


def _print_rows(args, rows):
    fmt = "json" if args.json else "table"
    out = Printer(fmt, COLUMNS)
    for row in rows:
        out.add(row if fmt == "json" else dict(row, value=_text(row["value"])))
    out.close()


def do_list(args):
    from .. import config

    rows, failed = _rows(config.load(), None, args.reveal)
    _print_rows(args, rows)
    return 1 if failed else 0


def do_get(args):
    from .. import config

    key = config.canonical(args.key)
    data = config.load()
    raw = config.lookup(data, key)
    if isinstance(raw, dict) or (raw is None and key in config.SECTIONS):
        rows, failed = _rows(data, key, args.reveal)
        _print_rows(args, rows)
        return 1 if failed else 0
    if raw is None:
        config.check_key(key, data)
        default = config.default_of(key)
        if default is None:
            raise NotFound(f"{key} is not set")
        row = _row(key, default, args.reveal, is_set=False)
    else:
        row = _row(key, raw, args.reveal)
    if args.json:
        json_line(row)
    elif isinstance(row["value"], list) and not any(isinstance(v, (dict, list))
                                                    for v in row["value"]):
        sys.stdout.write("".join(f"{_text(v)}\n" for v in row["value"]))
    elif row["value"] is None:
        raise CubbiError(f"{key}: its secret is missing from the secret store; "
                         f"set it again with: cubbi-config set {key} -")
    else:
        sys.stdout.write(_text(row["value"]) + "\n")
    return 0


def _read_value(key):
    """The value from stdin: a hidden prompt on a terminal, else one line."""
    if sys.stdin is None:
        raise UsageError(f"no value for {key}: give VALUE, or - to read it from stdin")
    if sys.stdin.isatty():
        import getpass

        try:
            text = getpass.getpass(f"{key}: ")
        except EOFError:
            text = ""
    else:
        text = sys.stdin.readline().rstrip("\r\n")
    if not text:
        raise UsageError(f"no value for {key} on stdin")
    return text


def _forget(before, after):
    """Delete the stored secrets of the settings BEFORE had and AFTER has
    not (each key's own secret, removed endpoints' tokens); how many."""
    from .. import config, secrets

    return sum(1 for name in config.owned_secrets(before, after) if secrets.delete(name))


def _confirm(yes, question, refusal):
    """True to go on: --yes, or `y` typed on a terminal; off a terminal
    without --yes a UsageError (REFUSAL)."""
    if yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(refusal)
    sys.stderr.write(f"{PROG}: {question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    message("nothing changed", PROG)
    return False


def do_set(args):
    from .. import config, secrets

    key = config.canonical(args.key)
    text = args.value if args.value not in (None, "-") else _read_value(key)
    ref = config.SECRET_REF + key
    with config.edit() as data:
        config.check_key(key, data)
        old = config.lookup(data, key)
        if isinstance(old, dict):
            raise CubbiError(f"{key} is a section; set the keys inside it")
        if config.has_env_ref(text) or (text == ref and config.is_secret(key)):
            new, where = text, None
        elif config.is_secret(key):
            if text.startswith(config.SECRET_REF):
                raise UsageError(f"{key}: give the secret itself; cubbi writes the secret:... "
                                 "reference (a secret belongs to one key)")
            config.parse(key, text, data)
            new, where = ref, secrets.where()
        else:
            new, where = config.parse(key, text, data), None
        config.set_in(data, key, new)
        if where:
            secrets.put(key, text)
    if old == ref and new != ref:
        secrets.delete(key)
    if where:
        message(f"{key} stored in {where}; {config.config_path()} refers to it", PROG)
    return 0


def do_unset(args):
    import copy

    from .. import config

    key = config.canonical(args.key)
    old = config.lookup(config.load(), key)
    count = sum(1 for _ in config.flatten(old)) if isinstance(old, dict) else 0
    what = f"{count} setting{'s' if count != 1 else ''}"
    if count and not _confirm(
            args.yes, f"remove {key} ({what}) and the stored secrets in it?",
            f"{key} holds {what}; to remove {'them' if count != 1 else 'it'} with the stored "
            f"secrets, confirm with --yes: cubbi-config unset {key} --yes"):
        return 1
    with config.edit() as data:
        if config.lookup(data, key) is None and key not in config.SECTIONS:
            config.check_key(key, data)
        before = copy.deepcopy(data)
        config.unset_in(data, key)
        default = config.lookup(data, "remote.default")
        if default in (config.lookup(before, "remote.endpoints") or {}) and \
                default not in (config.lookup(data, "remote.endpoints") or {}):
            config.unset_in(data, "remote.default")
            message(f"remote.default was {default}, which is gone; unset it too", PROG)
    gone = _forget(before, data)
    if count:
        message(f"removed {key} ({what}, {gone} stored secret{'s' if gone != 1 else ''})", PROG)
    return 0


def _backup_path(path):
    """Where a malformed PATH is kept: PATH.bak, else PATH.bak.1, .bak.2, ...
    (the first free one: an older backup is never replaced)."""
    import os

    backup, n = path + ".bak", 0
    while os.path.lexists(backup):
        n += 1
        backup = f"{path}.bak.{n}"
    return backup


def _forget_orphans():
    """Delete the config's secrets left in secrets.yaml that no setting
    names any more (a config.yaml removed or moved away); how many."""
    from .. import config, secrets

    return sum(1 for name in secrets.file_names()
               if config.config_secret(name) and secrets.delete(name))


def _secrets_said(n):
    return f"{n} stored secret{'s' if n != 1 else ''}"


def do_reset(args):
    import os

    from .. import config, secrets

    path = config.config_path()
    try:
        data = config.load()
    except CubbiError as exc:  # malformed: exactly when a reset is needed
        if not os.path.isfile(path):
            raise
        backup = _backup_path(path)
        if not _confirm(args.yes, f"{exc}; move it to {backup}, forget the secrets it "
                                  "stored and start from the defaults?",
                        f"{exc}; reset moves it to {backup}: confirm with --yes"):
            return 1
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            text = ""
        try:
            os.replace(path, backup)
        except OSError as err:
            raise CubbiError(f"cannot move {path} to {backup}: {err.strerror}") from None
        gone = sum(1 for name in config.scan_secret_names(text) if secrets.delete(name))
        gone += _forget_orphans()
        message(f"{path} was malformed; kept it as {backup} and reset to the defaults "
                f"({_secrets_said(gone)} removed)", PROG)
        return 0
    count = sum(1 for _ in config.flatten(data))
    if not count:
        gone = _forget_orphans()
        message(f"{path} holds no settings; nothing to reset"
                + (f" ({_secrets_said(gone)} left behind removed)" if gone else ""), PROG)
        return 0
    if not _confirm(args.yes, f"forget all {count} settings in {path} and their stored secrets?",
                    "reset forgets every setting and stored secret; confirm with --yes"):
        return 1
    with config.edit() as data:
        old = dict(data)
        data.clear()
    gone = _forget(old, data) + _forget_orphans()
    message(f"{path} reset to the defaults ({count} settings, {_secrets_said(gone)} "
            "removed)", PROG)
    return 0


def do_network(args):
    from .. import config

    action, name = args.action, args.name
    if action not in ("list", "add", "remove"):
        raise UsageError(f"network {action!r}: expected list, add NAME or remove NAME")
    if action == "list":
        if name:
            raise UsageError("network list takes no NAME")
        nets = config.value(config.load(), "defaults.networks")
        for net in nets:
            if args.json:
                json_line({"name": net})
            else:
                sys.stdout.write(net + "\n")
        return 0
    if not name:
        raise UsageError(f"network {action} needs a network NAME")
    try:
        name = config.network_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with config.edit() as data:
        nets = config.value(data, "defaults.networks")
        if action == "add":
            if name in nets:
                message(f"{name} is already a default network", PROG)
                return 0
            nets.append(name)
        else:
            if name not in nets:
                raise NotFound(f"{name} is not a default network; see cubbi-config network list")
            nets.remove(name)
        if nets:
            config.set_in(data, "defaults.networks", nets)
        elif config.lookup(data, "defaults.networks") is not None:
            config.unset_in(data, "defaults.networks")
    return 0


def do_path(args):
    from .. import config, secrets

    if args.json:
        json_line({"config": config.config_path(), "secrets": secrets.where(),
                   "secrets_kind": secrets.kind()})
    else:
        sys.stdout.write(config.config_path() + "\n")
    return 0


def do_keys(args):
    """Every key cubbi knows, and every key the file sets: one per line (the
    completions of get, set and unset ask this)."""
    from .. import config

    try:
        data = config.load()
    except CubbiError:  # a broken file: the known keys still help
        data = {}
    keys = set(config.known_keys(data)) | {k for k, _ in config.flatten(data)}
    sys.stdout.write("".join(f"{k}\n" for k in sorted(keys)))
    return 0


SUBS = {"keys": do_keys, "list": do_list, "get": do_get, "set": do_set, "unset": do_unset, "reset": do_reset,
        "network": do_network, "path": do_path}


def run(args):
    return SUBS[args.subcommand](args)


JSON = cli.Opt("--json", help="one JSON object per line: {key, value, secret, stored}")
REVEAL = cli.Opt("--reveal", help="show secret values instead of ********")
YES = cli.Opt("-y", "--yes", help="do not ask for confirmation (required off a terminal)")
KEY = cli.Arg("key", "dotted key, e.g. defaults.image; openai.api_key is short for "
                     "services.openai.api_key", metavar="KEY",
              complete="sh:cubbi-config keys")

COMMAND = cli.Command(
    "cubbi-config", "read and change the cubbi configuration and secrets", run,
    description="Reads and changes ~/.config/cubbi/config.yaml ($CUBBI_CONFIG_DIR/config.yaml), "
                "described in cubbi-config(5). Every key and value is checked before the "
                "file is written (atomically, mode 0600); a failed command leaves the file "
                "as it was. Secrets (keys whose name contains key, token, secret or password) "
                "are stored in the system keyring when one is usable, else in secrets.yaml "
                "(0600) beside the config, which then holds a reference secret:KEY; list and "
                "get mask them unless --reveal. With --json, list and get print one object "
                "per key: {key, value, secret, stored}, where stored is config, keyring, "
                "file, env (a ${VAR} reference), default or missing.",
    subcommands={
        "list": ("show every setting, with the built-in defaults", [JSON, REVEAL], []),
        "keys": ("print every key cubbi knows and every key set, one per line "
                 "(what completion offers)", [], []),
        "get": ("show one setting (or every setting of a section)", [JSON, REVEAL], [KEY]),
        "set": ("set KEY to VALUE; VALUE - reads it from stdin, and with no VALUE a "
                "terminal prompts for it without echo", [], [
            KEY,
            cli.Arg("value", "the value; - reads one line from stdin (keeps a secret out "
                             "of shell history); '${VAR}' stores a reference", nargs="?",
                    metavar="VALUE"),
        ]),
        "unset": ("remove KEY (and its own stored secret); the default applies again. A key "
                  "holding settings (a section such as services or remote) asks "
                  "first, and removes their secrets and the removed remotes' tokens too",
                  [YES], [KEY]),
        "reset": ("forget every setting and the secrets they stored (a project's "
                  "stay: cubbi-project owns them). A malformed config.yaml is kept as "
                  "config.yaml.bak (config.yaml.bak.1, .2, ... when that exists: an older "
                  "backup is never replaced), and the secrets its text names are forgotten "
                  "with those left in secrets.yaml", [YES], []),
        "network": ("list, add or remove the default networks (defaults.networks)", [
            cli.Opt("--json", help="list: one JSON object per network: {name}"),
        ], [
            cli.Arg("action", "list, add or remove", metavar="list|add|remove"),
            cli.Arg("name", "a Docker network name", nargs="?", complete="network",
                    metavar="NAME"),
        ]),
        "path": ("print the config file's path", [
            cli.Opt("--json", help="one JSON object: {config, secrets, secrets_kind}, "
                                   "secrets_kind being keyring or file"),
        ], []),
    },
    examples=[
        ("cubbi-config set defaults.image aider", "create aider sessions by default"),
        ("cubbi-config set openai.api_key -", "store the OpenAI key, typed or piped on stdin"),
        ("cubbi-config set anthropic.api_key '${ANTHROPIC_KEY}'",
         "take the key from the environment each time it is used"),
        ("cubbi-config set mistral.api_key -", "a provider of your own: MISTRAL_API_KEY"),
        ("cubbi-config network add teamnet", "every session also joins teamnet"),
        ("cubbi-config list --json | jq -r 'select(.secret) | .key'", "which secrets are set"),
    ],
    sections=[
        ("EXIT STATUS", "0 ok; 1 failure (malformed or unreadable file, unresolvable "
                        "reference, keyring refused); 2 usage (unknown key, wrong type, bad "
                        "network name); 3 not found (get or unset of a key that is not set, "
                        "network remove of a network not in the defaults)."),
        ("ENVIRONMENT", "CUBBI_CONFIG_DIR: the directory of config.yaml and secrets.yaml. "
                        "CUBBI_SECRETS: auto (default), keyring or file: where secrets go."),
    ],
    see_also=["cubbi-config(5)", "cubbi-create", "cubbi-remote"],
)


def main():
    COMMAND.main()

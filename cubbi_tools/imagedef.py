"""cubbi_image.yaml: load and validate an image definition.

An image definition is a directory with a Dockerfile and a cubbi_image.yaml:

    name: aider                      # [a-z0-9][a-z0-9._-]*, the image is cubbi/<name>:latest
                                     # (cubbi/<name>-HASH:latest when given as a directory)
    description: Aider coding assistant
    version: 1.0.0
    maintainer: team@example.com
    init:
      pre_command: aider --version   # optional, run once by the init as the session user
      command: aider                 # optional, what cubbi-connect starts (else a shell)
    environment:
      - name: OPENAI_API_KEY
        description: key for the model API
        required: false              # true: the session fails, naming it, when unset
        default: ""                  # applied when the session does not set it
        sensitive: true              # never shown (cubbi-image show masks the default)
    ports: [8000]
    volumes:
      - mountPath: /app
        description: the project
    persistent_configs:
      - source: ~/.aider             # path in the container (~ is the session user's home)
        target: /cubbi-config/aider  # path in the project's persistent storage
        type: directory              # directory | file
        description: aider history
    mcp:                             # how the session's MCP servers reach the tool
      format: none                   # claude-code | goose | opencode | codex (cubbi's
                                     # writers), template (target + template text),
                                     # hook (a command run as the session user), none
      note: aider has no MCP support # format none: said in the session's log
    allow_hosts: [api.openai.com]    # HOST[:PORT] the tool needs, added to the session's
                                     # egress allowlist when it has one (--allow-host)

Every problem is reported, each naming the file and the field, as one
UsageError (exit 2).
"""

import os
import re

from .errors import NotFound, UsageError

FILENAME = "cubbi_image.yaml"
CONFIG_MOUNT = "/cubbi-config"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOP = ("name", "description", "version", "maintainer", "init", "environment", "ports",
        "volumes", "persistent_configs", "mcp", "allow_hosts")
_ENV_KEYS = ("name", "description", "required", "default", "sensitive")
_PC_KEYS = ("source", "target", "type", "description")
# how a session's MCP servers (/cubbi/mcp.json) are written for the tool
MCP_FORMATS = ("claude-code", "goose", "opencode", "codex", "template", "hook", "none")
_MCP_KEYS = ("format", "target", "template", "hook", "note")


class Problem(str):
    """One problem of a definition: the line shown (FILE[WHERE]: [FIELD: ]
    MESSAGE) with its parts, for `cubbi-image validate --json`."""

    def __new__(cls, file, field, message, where=""):
        self = super().__new__(cls, f"{file}{where}: " + (f"{field}: " if field else "") + message)
        self.file, self.field, self.message, self.where = file, field, message, where
        return self

    def record(self):
        return {"file": self.file, "field": self.field,
                "message": (f"{self.where[1:]}: " if self.where else "") + self.message}


class InvalidDefinition(UsageError):
    """A cubbi_image.yaml (or its folder) that cannot be used; exit 2.
    str() is every problem, one per line; .problems the list."""

    def __init__(self, message, problems=None, name=None, path=None):
        super().__init__(message)
        self.problems = problems or [message]
        self.name = name  # the definition's name when known, for validate --json
        self.path = path


def valid_name(name):
    return bool(_NAME_RE.fullmatch(str(name)))


def is_definition_dir(path):
    return os.path.isfile(os.path.join(path, FILENAME))


def load(directory, expect_name=None):
    """The normalised definition in DIRECTORY (a dict), or InvalidDefinition
    listing every problem: the YAML's, the fields', the folder name's and
    the Dockerfile's together.  NotFound when DIRECTORY holds no
    cubbi_image.yaml (no such definition, exit 3)."""
    directory = os.path.abspath(directory)
    path = os.path.join(directory, FILENAME)
    shown = _shown(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise NotFound(f"{_shown(directory)}: no {FILENAME} in this directory") from None
    except OSError as exc:
        raise InvalidDefinition(Problem(shown, None, f"cannot read: {exc.strerror}")) from None
    import yaml

    from .files import yaml_where

    problems, defn, data = [], None, None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where, problem = yaml_where(exc)
        problems.append(Problem(shown, None, f"invalid YAML: {problem}", where))
    else:
        try:
            defn = validate(data, shown)
        except InvalidDefinition as exc:
            problems += exc.problems
    name = data.get("name") if isinstance(data, dict) else None
    if expect_name is not None and isinstance(name, str) and name != expect_name:
        problems.append(Problem(shown, "name", f"{name!r} differs from its folder name "
                                               f"{expect_name!r}; make them the same"))
    dockerfile = os.path.join(directory, "Dockerfile")
    if not os.path.isfile(dockerfile):
        problems.append(Problem(_shown(dockerfile), None, f"no Dockerfile beside {FILENAME}"))
    if problems:
        raise InvalidDefinition("\n".join(problems), problems,
                                name=name if isinstance(name, str) else expect_name,
                                path=directory)
    defn["path"] = directory
    return defn


class _Stop(Exception):
    """One check of validate() met a problem: the checks after it that need
    the same value are skipped, the others still run."""


def validate(data, shown=FILENAME):
    """Check a parsed cubbi_image.yaml; return it normalised (every field
    present, lists of dicts, strings where strings are expected).  Every
    problem is found, each on its own line naming the file and the field
    (InvalidDefinition.problems holds them)."""
    problems = []

    def note(field, problem):
        problems.append(Problem(shown, field, problem))

    def bad(field, problem):
        note(field, problem)
        raise _Stop

    def each(check, *args):
        try:
            return check(*args)
        except _Stop:
            return None

    if not isinstance(data, dict):
        raise InvalidDefinition(Problem(shown, None, "the top level must be a mapping with "
                                                     "at least 'name'"))
    _known(data, _TOP, "", note)
    out = {"name": each(_name, data.get("name"), bad)}
    out["description"] = each(_opt_str, data.get("description"), "description", bad)
    out["version"] = each(_opt_str, data.get("version"), "version", bad, True)
    out["maintainer"] = each(_opt_str, data.get("maintainer"), "maintainer", bad)

    out["init"] = {"pre_command": None, "command": None}
    init = data.get("init")
    init = {} if init is None else init
    if not isinstance(init, dict):
        note("init", "expected a mapping with pre_command and/or command")
    else:
        _known(init, ("pre_command", "command"), "init.", note)
        for key in ("pre_command", "command"):
            out["init"][key] = each(_command, init.get(key), f"init.{key}", bad)

    out["environment"] = []
    seen = set()
    for field, item in _entries(data, "environment", _ENV_KEYS, note):
        entry = {"name": each(_var_name, item.get("name"), f"{field}.name", seen, bad),
                 "description": each(_opt_str, item.get("description"),
                                     f"{field}.description", bad)}
        for key in ("required", "sensitive"):
            entry[key] = bool(each(_flag, item.get(key, False), f"{field}.{key}", bad))
        entry["default"] = each(_default, item.get("default"), entry["sensitive"],
                                f"{field}.default", bad)
        out["environment"].append(entry)

    ports = data.get("ports")
    ports = [] if ports is None else ports
    out["ports"] = []
    if not isinstance(ports, list):
        note("ports", "expected a list of port numbers")
        ports = []
    for i, port in enumerate(ports):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            note(f"ports[{i}]", f"expected a port number 1-65535, not {port!r}")
        out["ports"].append(port)

    out["volumes"] = []
    for field, vol in _entries(data, "volumes", ("mountPath", "description"), note):
        mount = vol.get("mountPath")
        if not isinstance(mount, str) or not mount.startswith("/"):
            note(f"{field}.mountPath", f"expected an absolute path, not {mount!r}")
        out["volumes"].append({"mountPath": mount,
                               "description": each(_opt_str, vol.get("description"),
                                                   f"{field}.description", bad)})

    out["persistent_configs"] = []
    targets = set()
    for field, pc in _entries(data, "persistent_configs", _PC_KEYS, note):
        source, target = pc.get("source"), pc.get("target")
        each(_pc_source, source, f"{field}.source", bad)
        each(_pc_target, target, f"{field}.target", targets, bad)
        for path in (source, target):
            if isinstance(path, str) and any(c in path for c in "\n\"'`$\\"):
                note(field, f"{path!r}: quotes, '$', '`' and backslashes are not allowed in paths")
        kind = pc.get("type", "directory")
        if kind not in ("directory", "file"):
            note(f"{field}.type", f"expected directory or file, not {kind!r}")
        out["persistent_configs"].append({
            "source": (source.rstrip("/") or source) if isinstance(source, str) else source,
            "target": target.rstrip("/") if isinstance(target, str) else target, "type": kind,
            "description": each(_opt_str, pc.get("description"), f"{field}.description", bad)})
    out["mcp"] = each(_mcp, data.get("mcp"), bad)
    out["allow_hosts"] = each(_allow_hosts, data.get("allow_hosts"), bad)
    if problems:
        raise InvalidDefinition("\n".join(problems), problems)
    return out


def _allow_hosts(value, bad):
    """allow_hosts: the HOST[:PORT]s the tool needs (its model API), added to
    a session's egress allowlist when it has one."""
    from .validate import allow_hosts

    try:
        return allow_hosts([] if value is None else value, "allow_hosts")
    except UsageError as exc:
        bad("allow_hosts", str(exc).split(": ", 1)[-1])


def _mcp(value, bad):
    """The mcp: section: {format, target, template, hook, note} or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        bad("mcp", "expected a mapping with format (and target/template/hook)")
    for key in value:
        if key not in _MCP_KEYS:
            bad(f"mcp.{key}", f"unknown field (known: {', '.join(_MCP_KEYS)})")
    fmt = value.get("format")
    if fmt not in MCP_FORMATS:
        bad("mcp.format", f"expected one of {', '.join(MCP_FORMATS)}, not {fmt!r}")
    out = {"format": fmt}
    for key in ("target", "template", "hook", "note"):
        v = value.get(key)
        if v is not None and not isinstance(v, str):
            bad(f"mcp.{key}", "expected a string")
        out[key] = v
    if fmt == "template" and not (out["target"] and out["template"]):
        bad("mcp", "format template needs target (a path, ~/ for the home) and template")
    if fmt == "hook" and not out["hook"]:
        bad("mcp.hook", "format hook needs hook: a command run as the session user")
    target = out["target"]
    if target and (not (target.startswith("/") or target.startswith("~/"))
                   or any(c in target for c in "\n\"'`$\\")):
        bad("mcp.target", f"expected an absolute path or ~/path without quotes or '$', "
                          f"not {target!r}")
    return out


def _name(name, bad):
    if name is None:
        bad("name", "missing; give the image a name like 'aider'")
    if not isinstance(name, str) or not valid_name(name):
        bad("name", f"{name!r} is not a valid name: lower-case letters, digits, '.', '_', '-' "
                    "(starting with a letter or digit, at most 64)")
    return name


def _var_name(vname, field, seen, bad):
    if vname is None:
        bad(field, "missing; give the variable's name, e.g. API_KEY")
    if not isinstance(vname, str) or not _VAR_RE.fullmatch(vname):
        bad(field, f"{vname!r} is not a variable name like API_KEY")
    if vname in seen:
        bad(field, f"{vname} is listed twice")
    seen.add(vname)
    return vname


def _flag(value, field, bad):
    if not isinstance(value, bool):
        bad(field, f"expected true or false, not {value!r}")
    return value


def _default(default, sensitive, field, bad):
    if default is None:
        return None
    if isinstance(default, bool):
        default = "true" if default else "false"
    elif isinstance(default, (int, float)):
        default = str(default)
    elif not isinstance(default, str):
        bad(field, "expected a string")
    if "\n" in default or "\0" in default:
        bad(field, "must be one line")
    if sensitive:
        bad(field, "a sensitive variable cannot have a default: defaults are "
                   "stored in the image; users pass it with -e or --env-file")
    return default


def _pc_source(source, field, bad):
    if not isinstance(source, str) or not (source.startswith("/") or source.startswith("~/")):
        bad(field, f"expected an absolute path or ~/path in the container, not {source!r}")
    if not _safe_source(source):
        bad(field, f"{source!r} cannot be linked: not /, /app itself, a folder holding it, "
                   "a home itself, cubbi's own folders, or a path with '.' or '..'")


def _pc_target(target, field, targets, bad):
    if not isinstance(target, str) or not target.startswith(CONFIG_MOUNT + "/") \
            or "/../" in target + "/" or target.rstrip("/") == CONFIG_MOUNT:
        bad(field, f"expected a path under {CONFIG_MOUNT}/, not {target!r}")
    if target in targets:
        bad(field, f"{target} is used twice")
    targets.add(target)


_PROTECTED = ("/app", "/cubbi", CONFIG_MOUNT)


def _safe_source(source):
    """A persistent_configs source the init may replace by a symlink: never
    /, the project (/app, a host folder), cubbi's folders or what holds them."""
    rest = source[2:] if source.startswith("~/") else source
    parts = rest.strip("/").split("/")
    if not rest.strip("/") or any(p in ("", ".", "..") for p in parts):
        return False
    if source.startswith("~/"):
        return True
    path = "/" + "/".join(parts)
    if any(path == p or p.startswith(path + "/") for p in _PROTECTED):
        return False  # /app itself, cubbi's folders, or a folder holding them
    return not path.startswith(("/cubbi/", CONFIG_MOUNT + "/"))  # under /app is fine


def _known(mapping, keys, prefix, note):
    for key in mapping:
        if key not in keys:
            note(f"{prefix}{key}", f"unknown field (known: {', '.join(keys)})")


def _entries(data, section, keys, note):
    """(field, item) for each mapping of a list section; unknown keys and
    items that are not mappings are noted (and the latter skipped)."""
    items = data.get(section)
    items = [] if items is None else items
    if not isinstance(items, list):
        note(section, f"expected a list of {{{', '.join(keys)}}}")
        return
    for i, item in enumerate(items):
        field = f"{section}[{i}]"
        if not isinstance(item, dict):
            note(field, f"expected a mapping with at least {keys[0]}")
            continue
        _known(item, keys, field + ".", note)
        yield field, item


def _command(value, field, bad):
    if value is None or value == "":
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        import shlex

        return " ".join(shlex.quote(v) for v in value)
    if not isinstance(value, str):
        bad(field, "expected a shell command line (a string) or a list of words")
    return value.strip()


def _opt_str(value, field, bad, numbers=False):
    """A string field; NUMBERS: a number is taken as its text (version: 1.2)."""
    if value is None:
        return None
    if isinstance(value, str) or (numbers and isinstance(value, (int, float))
                                  and not isinstance(value, bool)):
        return str(value)
    bad(field, f"expected a string, not {value!r}")


def _shown(path):
    """A path as a user would type it: relative to the cwd when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def public(defn):
    """The definition with sensitive defaults masked, for show/list output."""
    out = dict(defn)
    out["environment"] = [
        dict(e, default="********" if e["sensitive"] and e["default"] else e["default"])
        for e in defn.get("environment", [])]
    return out

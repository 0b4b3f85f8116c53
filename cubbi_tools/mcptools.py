"""Each tool's MCP configuration, written from a session's MCP servers
(the /cubbi/mcp.json document of cubbi_tools.mcp) as the image's
cubbi_image.yaml asks (`mcp: {format: ...}`).

cubbi writes the tool's fragment here, on the host, into /cubbi/mcp/, and a
session hook (/cubbi/hooks/65-mcp.sh, after the persistent configs are
linked) merges it into the tool's own file as the session user, with the
shell functions of data/image/mcp-install.sh:

    claude-code  ~/.claude.json, key mcpServers      (merged with node or python3)
    opencode     ~/.config/opencode/opencode.json, key mcp   (the same)
    codex        ~/.codex/config.toml, [mcp_servers.NAME] tables between
                 cubbi's marker lines (replaced each session)
    goose        ~/.config/goose/config.yaml, entries of `extensions:`
                 (cubbi's entries replaced each session)
    template     TARGET written from TEMPLATE: {{mcp_json}} is the whole
                 /cubbi/mcp.json document, {{mcp_host}} MCP_HOST
    hook         HOOK run as the session user (it reads $CUBBI_MCP_FILE)
    none         nothing written; NOTE (or a default line) said in the log

Values: codex and opencode refer to session variables (codex
env_http_headers, opencode {env:VAR}); claude-code and goose get the
values themselves (their config has no such reference for headers), in
files of the session user's only (0600).
"""

import json
import os

DIR = "/cubbi/mcp"
TARGETS = {"claude-code": "~/.claude.json", "opencode": "~/.config/opencode/opencode.json",
           "codex": "~/.codex/config.toml", "goose": "~/.config/goose/config.yaml"}
JSON_KEYS = {"claude-code": "mcpServers", "opencode": "mcp"}


def _value(ref, env):
    return env.get(ref["env"], "") if isinstance(ref, dict) else str(ref)


def claude_code(doc, env):
    out = {}
    for s in doc["servers"]:
        if s["transport"] == "stdio":
            out[s["name"]] = {"type": "stdio", "command": s["command"], "args": s["args"],
                              "env": {k: _value(v, env) for k, v in s["env"].items()}}
        else:
            out[s["name"]] = {"type": "sse" if s["transport"] == "sse" else "http",
                              "url": s["url"],
                              "headers": {k: _value(v, env) for k, v in s["headers"].items()}}
    return json.dumps(out, indent=2) + "\n"


def opencode(doc, env):
    out = {}
    for s in doc["servers"]:
        if s["transport"] == "stdio":
            out[s["name"]] = {"type": "local", "command": [s["command"], *s["args"]],
                              "enabled": True,
                              "environment": {k: "{env:%s}" % v["env"] for k, v in s["env"].items()}}
        else:
            out[s["name"]] = {"type": "remote", "url": s["url"], "enabled": True,
                              "headers": {k: "{env:%s}" % v["env"] for k, v in s["headers"].items()}}
    return json.dumps(out, indent=2) + "\n"


def _toml_str(text):
    return json.dumps(str(text))


def codex(doc, env):
    lines = []
    for s in doc["servers"]:
        key = f"mcp_servers.{_toml_str(s['name'])}"
        if s["transport"] == "sse":
            lines.append(f"# {s['name']}: codex speaks streamable HTTP and stdio, not SSE; skipped")
            continue
        lines.append(f"[{key}]")
        if s["transport"] == "stdio":
            lines.append(f"command = {_toml_str(s['command'])}")
            lines.append("args = [" + ", ".join(_toml_str(a) for a in s["args"]) + "]")
            if s["env"]:
                lines.append(f"[{key}.env]")
                lines += [f"{_toml_str(k)} = {_toml_str(_value(v, env))}" for k, v in s["env"].items()]
        else:
            lines.append(f"url = {_toml_str(s['url'])}")
            if s["headers"]:
                lines.append(f"[{key}.env_http_headers]")
                lines += [f"{_toml_str(k)} = {_toml_str(v['env'])}" for k, v in s["headers"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"


def goose(doc, env):
    """One `  NAME: {...}` line per server (JSON is YAML), for extensions:."""
    lines = []
    for s in doc["servers"]:
        entry = {"enabled": True, "name": s["name"], "description": f"cubbi MCP server {s['name']}",
                 "timeout": 300, "bundled": None}
        if s["transport"] == "stdio":
            entry.update(type="stdio", cmd=s["command"], args=s["args"],
                         envs={k: _value(v, env) for k, v in s["env"].items()}, env_keys=[])
        else:
            entry.update(type="sse" if s["transport"] == "sse" else "streamable_http",
                         uri=s["url"], envs={}, env_keys=[],
                         headers={k: _value(v, env) for k, v in s["headers"].items()})
        lines.append(f"  {s['name']}: {json.dumps(entry)}")
    return "\n".join(lines) + "\n"


WRITERS = {"claude-code": claude_code, "opencode": opencode, "codex": codex, "goose": goose}


def _q(text):
    import shlex

    return shlex.quote(str(text))


def _funcs():
    with open(os.path.join(os.path.dirname(__file__), "data", "image", "mcp-install.sh"),
              encoding="utf-8") as fh:
        return fh.read()


def _target(path):
    return '"$HOME"' + _q(path[1:]) if path.startswith("~/") else _q(path)


def session_files(spec, doc, env, image_name):
    """{container path: (text, mode)} writing DOC for an image whose
    cubbi_image.yaml says SPEC (its mcp: section, or None): the fragment
    and the hook that installs it."""
    names = [s["name"] for s in doc["servers"]]
    fmt = (spec or {}).get("format")
    lines = [f"# cubbi: the session's MCP servers ({', '.join(names)}) for image {image_name}",
             _funcs().strip()]
    files = {}
    if fmt in WRITERS:
        text = WRITERS[fmt](doc, env)
        frag = f"{DIR}/{fmt}.fragment"
        files[frag] = (text, 0o600)
        target = _target((spec or {}).get("target") or TARGETS[fmt])
        if fmt in JSON_KEYS:
            call = f"_mcp_json_merge {target} {JSON_KEYS[fmt]} {frag}"
        elif fmt == "codex":
            call = f"_mcp_toml_block {target} {frag}"
        else:
            call = f"_mcp_goose_extensions {target} {frag} {_q(' '.join(names))}"
        lines += [f"chown \"$CUBBI_UID:$CUBBI_GID\" {DIR} {frag}",
                  f"as_user /bin/sh -c {_q(_funcs() + call)} "
                  f"|| fail {_q('cannot write the MCP servers into the ' + fmt + ' config')}",
                  f"say {_q('MCP servers configured for ' + fmt + ': ' + ', '.join(names))}"]
    elif fmt == "template":
        text = spec["template"].replace("{{mcp_json}}", json.dumps(doc, indent=2)).replace(
            "{{mcp_host}}", env.get("MCP_HOST", ""))
        frag = f"{DIR}/template.out"
        files[frag] = (text, 0o600)
        lines += [f"chown \"$CUBBI_UID:$CUBBI_GID\" {DIR} {frag}",
                  f"as_user /bin/sh -c {_q(_funcs() + '_mcp_copy ' + _target(spec['target']) + ' ' + frag)} "
                  f"|| fail {_q('cannot write the MCP servers to ' + spec['target'])}"]
    elif fmt == "hook":
        lines.append(f"as_user /bin/sh -c {_q(spec['hook'])} "
                     f"|| fail \"the image's MCP hook exited with status $?\"")
    else:
        note = (spec or {}).get("note") or (
            f"image {image_name} declares no MCP configuration (cubbi_image.yaml mcp:); "
            "its servers are described in /cubbi/mcp.json")
        lines.append(f"say {_q(note)}")
    files["/cubbi/hooks/65-mcp.sh"] = ("\n".join(lines) + "\n", 0o600)
    return files

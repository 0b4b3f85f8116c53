"""The session's image setup, as init hooks: what a session of an image
definition needs in /cubbi (its environment defaults and required
variables, its persistent configs, init.pre_command, init.command).  The
shell functions of the persistent-config hook are a data file,
data/image/persist-funcs.sh.
"""

import os

from .validate import short_name


def _persist_funcs():
    with open(os.path.join(os.path.dirname(__file__), "data", "image", "persist-funcs.sh"),
              encoding="utf-8") as fh:
        return fh.read()


def _q(text):
    import shlex

    return shlex.quote(str(text))


def session_files(image_meta, image_ref, mcp=None):
    """{container path: (bytes, mode, uid, gid)} that the init needs for this
    image: hooks in /cubbi/hooks/ (sourced in name order by cubbi-init.sh)
    and /cubbi/command (what cubbi-connect starts).  mcp: (the session's
    /cubbi/mcp.json document, its variables) when it has MCP servers: the
    image's tool gets them as its cubbi_image.yaml says (mcptools)."""
    meta = image_meta or {}
    name = meta.get("name") or short_name(image_ref, "image")
    files = {"/cubbi/hooks/20-image-env.sh": _env_hook(meta, name),
             "/cubbi/hooks/60-persistent-configs.sh": _persist_hook(meta, name)}
    init = meta.get("init") or {}
    if init.get("pre_command"):
        files["/cubbi/hooks/69-image-pre-command.sh"] = (
            "# the image's init.pre_command, as the session user\n"
            "say \"running the image's pre_command\"\n"
            f"as_user /bin/sh -c {_q(init['pre_command'])} "
            "|| fail \"the image's init.pre_command exited with status $?\"\n")
    if mcp is not None:
        from . import mcptools

        for path, (text, mode) in mcptools.session_files(meta.get("mcp"), mcp[0], mcp[1],
                                                         name).items():
            files[path] = text
    out = {path: (text.encode(), 0o600, 0, 0) for path, text in files.items()}
    if init.get("command"):
        out["/cubbi/command"] = (
            f"# what cubbi-connect starts (init.command of {name})\n{init['command']}\n".encode(),
            0o644, 0, 0)
    return out


def _env_hook(meta, name):
    lines = [f"# cubbi: the environment of image {name} (from its cubbi_image.yaml)",
             "_cubbi_isset() { ( [ -r \"$C/env\" ] && . \"$C/env\" >/dev/null 2>&1; "
             "eval \"test -n \\\"\\${$1:-}\\\"\" ); }",
             "if [ -d /cubbi-config ]; then",
             "    printf 'export CUBBI_CONFIG_DIR=/cubbi-config CUBBI_IMAGE_CONFIG_DIR=%s\\n' "
             f"{_q('/cubbi-config/' + name)} >> \"$C/env\"",
             "fi"]
    for var in meta.get("environment") or []:
        if var.get("default") is not None:
            line = f"export {var['name']}={_q(var['default'])}"
            lines.append(f"_cubbi_isset {var['name']} || printf '%s\\n' {_q(line)} >> \"$C/env\"")
    for var in meta.get("environment") or []:
        if var.get("required"):
            what = f" ({var['description']})" if var.get("description") else ""
            reason = (f"required variable {var['name']} is not set{what}; pass it with "
                      f"-e {var['name']}=VALUE or --env-file")
            lines.append(f"_cubbi_isset {var['name']} || fail {_q(reason)}")
    return "\n".join(lines) + "\n"


def _persist_hook(meta, name):
    lines = [f"# cubbi: the project's persistent tool state for image {name}",
             _persist_funcs().strip(),
             "if [ -d /cubbi-config ]; then",
             f"    _pc_mkdirs {_q('/cubbi-config/' + name)} "
             f"|| fail {_q('cannot create /cubbi-config/' + name)}"]
    for pc in meta.get("persistent_configs") or []:
        lines.append(f"    _pc_link {pc['type']} {_q(pc['source'])} {_q(pc['target'])} "
                     f"|| fail {_q('cannot link ' + pc['source'] + ' to ' + pc['target'])}")
    if meta.get("persistent_configs"):
        lines += ["else",
                  "    say \"no persistent storage (no project and no mount): tool state is not kept\""]
    lines.append("fi")
    return "\n".join(lines) + "\n"

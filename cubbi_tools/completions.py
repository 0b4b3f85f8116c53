"""Shell completions (bash, zsh, fish) generated from the commands' own
metadata (docmodel.py); docs.py writes them with the man pages.  The shell
functions they feed are data files: data/completions/runtime.bash,
runtime.fish and runtime.zsh (the dispatcher).  Standard library only.
"""

import os
import re

from .docmodel import (DISPATCH_OPTS, HELP_OPT, MARK, Node, arg_kind, command_tree, dispatcher,
                       metavar)

# ----------------------------------------------------------------- completion data

def node_data(tree):
    """Per node: options, value options {flag: (kind, choices)}, positional kinds."""
    for node in tree.walk():
        vals = {}
        for opt in node.all_options:
            if opt.takes_value:
                for flag in opt.flags:
                    vals[flag] = arg_kind(opt)
        pos, rest = [], None
        for arg in node.args:
            if arg.nargs in ("*", "+"):
                rest = arg_kind(arg)
                break
            pos.append(arg_kind(arg))
        yield node, vals, pos, rest


def all_nodes(cmds):
    for cmd in cmds:
        yield from node_data(command_tree(cmd))


def shq(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def image_words():
    from . import commands

    if "cubbi-image" in commands.COMMANDS:
        return "cubbi-image list -q 2>/dev/null"
    return "docker images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v '<none>'"


def word_commands():
    """kind -> a command printing the candidate words, one per line."""
    return {
        "session": "cubbi-ls -q --all 2>/dev/null",
        "image": image_words(),
        "network": "docker network ls --format '{{.Name}}' 2>/dev/null",
        "remote": "cubbi-remote list -q 2>/dev/null",
        "project": "cubbi-project list -q 2>/dev/null",
    }


def kind_key(kind, choices):
    if kind == "choices":
        return "=" + " ".join(choices)
    return kind or "-"


def header(comment="#"):
    return f"{comment} {MARK}\n{comment} Source: cubbi_tools/commands/*.py (cli.Command) and bin/cubbi.\n"


def runtime(name):
    """A completion runtime shipped as a data file (cubbi_tools/data/
    completions/NAME): the shell functions the generated tables feed, with
    @ARMS@ and @COMMANDS@ filled in by the generator."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "completions",
                           name), encoding="utf-8") as fh:
        return fh.read()


def bash_completion(cmds):
    _, _, session = dispatcher()
    names = [c.name for c in cmds]
    subs = [n[len("cubbi-"):] for n in names]
    out = [header(), "# bash: source this file, or install it (and bash/*) in "
                     "share/bash-completion/completions.", ""]
    opts, vals, args, children = [], [], [], []
    for node, v, pos, rest in all_nodes(cmds):
        key = node.path
        opts.append(f"  [{shq(key)}]={shq(' '.join(f for o in node.all_options for f in o.flags))}")
        for flag, (kind, choices) in v.items():
            vals.append(f"  [{shq(key + '|' + flag)}]={shq(kind_key(kind, choices))}")
        for n, (kind, choices) in enumerate(pos):
            args.append(f"  [{shq(f'{key}|{n}')}]={shq(kind_key(kind, choices))}")
        args.append(f"  [{shq(key + '|n')}]={len(pos)}")
        if rest:
            args.append(f"  [{shq(key + '|rest')}]={shq(kind_key(*rest))}")
        if node.children:
            children.append(f"  [{shq(key)}]={shq(' '.join(node.children))}")
    disp_opts = " ".join(f for o in DISPATCH_OPTS for f in o.flags)
    out += ["declare -gA _cubbi_opts=(", *opts, ")",
            "declare -gA _cubbi_val=(", *vals, ")",
            "declare -gA _cubbi_args=(", *args, ")",
            "declare -gA _cubbi_subs=(", *children, ")",
            "declare -gA _cubbi_session=(", *[f"  [{shq(k)}]={shq('cubbi-' + v)}" for k, v in session.items()], ")",
            f"_cubbi_commands={shq(' '.join(subs))}",
            f"_cubbi_dispatch_opts={shq(disp_opts)}",
            ""]
    wc = word_commands()
    arms = "\n".join(f"    {k}) words=$({v});;" for k, v in wc.items())
    out.append(runtime('runtime.bash').replace("@ARMS@", arms).replace("@COMMANDS@", " ".join(names)))
    return "\n".join(out)




def bash_stub(name):
    return (header() + f"# Loader for {name}: bash-completion looks for a file named after the command.\n"
            '. "${BASH_SOURCE[0]%/*}/cubbi.bash"\n')


# zsh

zq = shq  # zsh quotes single-quoted words as sh does


def zesc(s, chars="[]:"):
    s = str(s).replace("\\", "\\\\")
    for c in chars:
        s = s.replace(c, "\\" + c)
    return s


def zfunc(path):
    return "_cubbi__" + re.sub(r"[^A-Za-z0-9]", "_", path)


def zsh_action(kind, choices, sh_kinds):
    if kind == "choices":
        return "(" + " ".join(zesc(c, "[]:() ") for c in choices) + ")"
    if kind == "file":
        return "_files"
    if kind == "dir":
        return "_files -/"
    if kind == "command":
        return "_command_names -e"
    if kind in word_commands():
        return "_cubbi__" + kind
    if kind and kind.startswith("sh:"):
        return sh_kinds.setdefault(kind, f"_cubbi__sh{len(sh_kinds) + 1}")
    return " "


def zsh_specs(node, sh_kinds):
    specs = []
    for opt in node.all_options:
        excl = "" if opt.kind in ("multi", "count") else "(" + " ".join(opt.flags) + ")"
        if opt.flags == HELP_OPT.flags and opt is HELP_OPT:
            excl = "(- *)"
        star = "*" if opt.kind in ("multi", "count") else ""
        help_ = zesc(" ".join((opt.help or "").split()))
        for flag in opt.flags:
            spec = excl + star + flag
            if opt.takes_value:
                spec += ("=" if flag.startswith("--") else "+")
                spec += f"[{help_}]:{zesc(metavar(opt))}:{zsh_action(*arg_kind(opt), sh_kinds)}"
            else:
                spec += f"[{help_}]"
            specs.append(zq(spec))
    if node.children:
        specs += [zq("1: :->sub"), zq("*:: :->args")]
        return specs
    n = 0
    for arg in node.args:
        action = zsh_action(*arg_kind(arg), sh_kinds)
        msg = zesc(arg.metavar)
        if arg.nargs in ("*", "+"):
            specs.append(zq(f"*:{msg}:{action}"))
            break
        n += 1
        specs.append(zq(f"{n}:{msg}:{action}" if arg.nargs is None else f"{n}::{msg}:{action}"))
    return specs


def zsh_node(node, sh_kinds):
    f = zfunc(node.path)
    specs = " \\\n    ".join(zsh_specs(node, sh_kinds))
    if not node.children:
        return [f"{f}() {{", f"  _arguments -s -S \\\n    {specs}", "}", ""]
    items = " ".join(zq(f"{zesc(n, ':')}:{c.summary}") for n, c in node.children.items())
    arms = "\n".join(f"        {zq(n)}) {zfunc(c.path)} && ret=0;;" for n, c in node.children.items())
    out = [f"{f}() {{",
           "  local curcontext=$curcontext state state_descr line ret=1",
           "  typeset -A opt_args",
           f"  _arguments -C -s -S \\\n    {specs} && ret=0",
           "  case $state in",
           f"    sub) local -a subs; subs=({items})",
           f"      _describe -t commands {zq(node.path + ' subcommand')} subs && ret=0;;",
           "    args)",
           "      case $line[1] in",
           arms,
           "      esac;;",
           "  esac",
           "  return ret",
           "}", ""]
    for child in node.children.values():
        out += zsh_node(child, sh_kinds)
    return out


def zsh_completion(cmds):
    doc, forms, session = dispatcher()
    names = [c.name for c in cmds]
    sh_kinds = {}
    body = []
    for cmd in cmds:
        body += zsh_node(command_tree(cmd), sh_kinds)
    disp = Node("cubbi", "", DISPATCH_OPTS[:-1], [])
    disp_specs = [s for s in zsh_specs(disp, sh_kinds) if "->" not in s]
    disp_specs = [s.replace("'(--list)", "'(- *)").replace("'(--version)", "'(- *)") for s in disp_specs]
    cmd_items = " ".join(zq(f"{c.name[len('cubbi-'):]}:{c.summary}") for c in cmds)
    sess_items = " ".join(zq(f"{k}:cubbi-{v}") for k, v in session.items())
    sess_arms = "\n".join(f"            {zq(k)}) {zfunc('cubbi-' + v)};;" for k, v in session.items())
    out = [f"#compdef cubbi {' '.join(names)}", header(), ""]
    for kind, command in word_commands().items():
        out += [f"_cubbi__{kind}() {{", "  local -a words",
                f"  words=(${{(f)\"$({command})\"}})",
                f"  _wanted {kind} expl {kind} compadd -a words", "}", ""]
    out += body
    for kind, fname in sorted(sh_kinds.items(), key=lambda kv: kv[1]):
        out += [f"{fname}() {{", "  local -a words",
                f"  words=(${{(f)\"$({kind[3:]} 2>/dev/null)\"}})",
                "  compadd -a words", "}", ""]
    specs = " \\\n    ".join(disp_specs + [
        zq("(- *)" + "-h[" + zesc(DISPATCH_OPTS[-1].help) + "]"),
        zq("(- *)" + "--help[" + zesc(DISPATCH_OPTS[-1].help) + "]"),
        zq("1: :->cmd"), zq("*:: :->args")])
    text = (runtime("runtime.zsh").replace("@SPECS@", specs).replace("@COMMANDS@", cmd_items)
            .replace("@FORMS@", sess_items).replace("@FORM_ARMS@", sess_arms)
            .replace("@SERVICE_ARMS@", "\n".join(f"    {n}) {zfunc(n)};;" for n in names)))
    out += text.split("\n")
    return "\n".join(out)


# fish

def fq(s):
    return "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_flag(flag):
    if flag.startswith("--"):
        return f"-l {fq(flag[2:])}"
    if len(flag) == 2:
        return f"-s {fq(flag[1:])}"
    return f"-o {fq(flag[1:])}"


def fish_completion(cmds):
    _, _, session = dispatcher()
    out = [header(), "# fish: install in vendor_completions.d with fish/*.fish, or source it.",
           "if set -q __cubbi_completions_loaded", "    exit", "end",
           "set -g __cubbi_completions_loaded 1", ""]
    valopts, subs, posk = [], [], []
    for node, v, pos, rest in all_nodes(cmds):
        if v:
            valopts.append(f"        case {fq(node.path)}\n            printf '%s\\n' {' '.join(fq(f) for f in v)}")
        if node.children:
            subs.append(f"        case {fq(node.path)}\n            printf '%s\\n' {' '.join(fq(n) for n in node.children)}")
        for n, k in enumerate(pos):
            posk.append(f"        case {fq(f'{node.path}|{n}')}\n            echo {fq(kind_key(*k))}")
        if rest:
            posk.append(f"        case {fq(node.path + '|*')}\n            echo {fq(kind_key(*rest))}")
    wc = word_commands()
    arms = "\n".join(f"        case {k}\n            {v}" for k, v in wc.items())
    out.append(runtime('runtime.fish').replace("@ARMS@", arms)
               .replace("@VALOPTS@", "\n".join(valopts))
               .replace("@SUBS@", "\n".join(subs))
               .replace("@POS@", "\n".join(posk))
               .replace("@SESSION@", "\n".join(
                   f"                case {fq(k)}\n                    set rest[1] cubbi-{v}" for k, v in session.items())))
    for cmd in cmds:
        out.append(f"\n# {cmd.name}")
        out.append(f"complete -c {cmd.name} -f")
        for node in command_tree(cmd).walk():
            cond = f"-n {fq('__cubbi_at ' + shq(node.path))}"
            for opt in node.all_options:
                flags = " ".join(fish_flag(f) for f in opt.flags)
                line = f"complete -c {cmd.name} {cond} {flags}"
                if opt.takes_value:
                    kind, choices = arg_kind(opt)
                    if kind == "choices":
                        line += " -x -a " + fq(" ".join(choices))
                    else:
                        line += " -x -a " + fq(f"(__cubbi_values {fq(kind_key(kind, choices))})")
                out.append(line + f" -d {fq(' '.join((opt.help or '').split()))}")
            for name, child in node.children.items():
                out.append(f"complete -c {cmd.name} -n {fq('__cubbi_at ' + shq(node.path) + ' 0')} "
                           f"-a {fq(name)} -d {fq(child.summary)}")
            if node.args:
                out.append(f"complete -c {cmd.name} {cond} -a '(__cubbi_posargs)'")
    out.append("\n# cubbi: the dispatcher")
    out.append("complete -c cubbi -f")
    for opt in DISPATCH_OPTS:
        flags = " ".join(fish_flag(f) for f in opt.flags)
        extra = " -x -a '(__cubbi_values remote)'" if opt.takes_value else ""
        out.append(f"complete -c cubbi -n __cubbi_first {flags}{extra} -d {fq(opt.help)}")
    for cmd in cmds:
        out.append(f"complete -c cubbi -n __cubbi_first -a {fq(cmd.name[len('cubbi-'):])} -d {fq(cmd.summary)}")
    out.append("complete -c cubbi -n __cubbi_first -a help -d 'show the manual page of a command'")
    out.append("complete -c cubbi -n __cubbi_first -a session -d 'the original cubbi\\'s forms'")
    out.append("complete -c cubbi -n 'not __cubbi_first' -a '(__cubbi_delegate)'")
    out.append("complete -c cubbi -n '__cubbi_first; and string match -q -- \"-*\" (commandline -ct)' "
               "-a '(complete -C \"cubbi-create \"(commandline -ct))'")
    return "\n".join(out) + "\n" + fish_tail(cmds, session)




def fish_tail(cmds, session):
    return ("\nfunction __cubbi_commands\n    printf '%s\\n' " + " ".join(c.name for c in cmds) + "\nend\n"
            "\nfunction __cubbi_subs_of_cubbi\n" + "".join(
                f"    printf '%s\\t%s\\n' {fq(c.name[len('cubbi-'):])} {fq(c.summary)}\n" for c in cmds) + "end\n"
            "\nfunction __cubbi_session_forms\n" + "".join(
                f"    printf '%s\\t%s\\n' {fq(k)} {fq('cubbi-' + v)}\n" for k, v in session.items()) + "end\n")


def fish_stub(name):
    return (header() + f"# Loader for {name}: fish autoloads completions by command name.\n"
            "source (status dirname)/cubbi.fish\n")

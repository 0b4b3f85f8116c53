"""Man pages and shell completions, generated from the commands' own metadata.

(Over 500 lines: its roff renderer and its text markup are one piece, and
the markup's rules are written here, beside the code that applies them.
The command model is docmodel.py, the completions completions.py.)

    python3 -m cubbi_tools.docs            write man/ and completions/
    python3 -m cubbi_tools.docs --check    exit 1 listing stale files; writes nothing
    python3 -m cubbi_tools.docs --out DIR  write (or --check) under DIR instead

Sources, so that nothing is listed twice:

- every `cli.Command` in `cubbi_tools.commands.COMMANDS` (loaded with
  `commands.load(name)`): name, summary, description, options (`cli.Opt`:
  flags, metavar, help, choices, kind, complete), args (`cli.Arg`), examples,
  sections, see_also, and `subcommands={name: (summary, [Opt], [Arg])}`
  (a 4th tuple item, a dict of the same shape, nests subcommands).
  A new command needs no change here: add it to COMMANDS and regenerate.
- the dispatcher `bin/cubbi`: its docstring (the forms, one per line:
  "  cubbi FORM    what it does") and its SESSION mapping;
- `cubbi_tools/errors.py`: every upper-case int constant is an exit status;
- `PAGES` below: extra pages (file formats, section 5) taken from a module.

Extra pages (PAGES)
    Each entry is (name, section, module, attribute): the page
    `man/<name>.<section>` is rendered from the string `module.attribute`
    (a callable is called).  cubbi-config(5) is
    ("cubbi-config", 5, "cubbi_tools.config", "FORMAT_DOC"); to add another
    page, write its text next to the code it describes and add one entry to
    PAGES.  An entry whose attribute does not exist (yet) is skipped with a
    note on stderr.  A page with the same name as a command is linked from
    that command's SEE ALSO, and every page from cubbi(1).
    The text is either man-style (a line "NAME" then an indented
    "name - summary", then more headings in capitals, bodies indented) or
    plain (first paragraph = the summary, then the markup below).

Text markup (descriptions, `sections` texts and PAGES texts); a text whose
first line is flush loses its common indentation first, as a docstring:
    - a blank line separates paragraphs;
    - indented lines are preformatted (tables, schemas, YAML): .nf/.fi;
      except that one or two flush lines (not ending in ':', '.' or ',')
      directly above an indented block are a term and its description (.TP);
      flush lines with columns (3+ spaces inside) are preformatted too, and
      `key:` lines stay with their indented YAML children;
    - a line starting with "- " is a bullet; lines indented by exactly two
      spaces right after it continue it;
    - `code` is set in bold;
    - headings, in PAGES texts only: a flush line in capitals ("FILES",
      "UI") starts a section; its body may be indented.
    A command's own `sections` named EXIT STATUS or ENVIRONMENT are put at
    the head of the common sections of that name, not repeated.

Completion hints, `complete=` on an Opt or Arg: file, dir, session, image,
network, remote, project, command, or "sh:COMMAND" (the words COMMAND prints,
one per line; COMMAND must be valid in sh, zsh and fish).  An option with
`choices` completes exactly those words; so does an Arg whose metavar lists
lower-case words ("list|add|remove").  An option that takes a value always
consumes the next word, and nothing else is offered there.

Files: man/cubbi.1, man/cubbi-<x>.1, man/<PAGES>.<n>; completions/cubbi.bash
(every command, and `cubbi <sub>` / `cubbi session <form>`), completions/_cubbi
(zsh, #compdef for every command), completions/cubbi.fish, plus one-line
loaders completions/bash/<cmd> and completions/fish/<cmd>.fish, because
bash-completion and fish load completions by command name.  pyproject.toml
installs them all with globs.  A file that carries the "Generated" mark but is
no longer generated (a removed command) is reported by --check and deleted.

Output is deterministic (no dates; the version comes from pyproject.toml), so
regenerating in CI yields no diff; tests/test_docs.py runs --check.
Standard library only.
"""

import inspect
import importlib
import os
import re
import sys

from . import errors
from .completions import (bash_completion, bash_stub, fish_completion, fish_stub,  # noqa: F401
                          shq, zsh_completion)
from .docmodel import (DISPATCH_OPTS, MARK, SRC, DocsError, Node, command_tree,  # noqa: F401
                       dispatcher, load_commands, metavar, project_meta, version)

# (name, section, module, attribute): extra pages, see the docstring.
PAGES = [
    ("cubbi-config", 5, "cubbi_tools.config", "FORMAT_DOC"),
    ("cubbi-service.yaml", 5, "cubbi_tools.service", "FORMAT_DOC"),
]

ENVIRONMENT = [
    ("CUBBI_CONFIG_DIR", "Directory of the configuration file config.yaml "
                         "(default: ~/.config/cubbi)."),
    ("CUBBI_REMOTE", "Name of a remote cubbi service to use instead of the local Docker "
                     "engine, as with -r (see cubbi-remote)."),
    ("CUBBI_REMOTE_URL", "With CUBBI_REMOTE_TOKEN: an ad-hoc remote service, used when "
                         "neither -r nor CUBBI_REMOTE is given (before remote.default) or "
                         "when they name a remote that is not configured; never for a "
                         "remote added with cubbi-remote add (see cubbi-remote)."),
    ("CUBBI_REMOTE_TOKEN", "The API token sent to CUBBI_REMOTE_URL, and only there."),
    ("CUBBI_DEBUG", "Set to 1 to show Python tracebacks with errors."),
    ("DOCKER_HOST", "The Docker engine to talk to (default: unix:///var/run/docker.sock)."),
    ("CUBBI_DOCKER_TIMEOUT", "Seconds a request to the Docker engine may wait for an "
                             "answer (default: 60); streams that follow (logs -f, builds, "
                             "connect) have no timeout."),
    ("NO_COLOR", "When set, no colour in the output."),
]

EXIT_TEXT = {
    "OK": "success",
    "FAILURE": "failure (the message on stderr says what failed)",
    "USAGE": "usage error: a bad switch, argument or input line",
    "NOT_FOUND": "not found: no such session, image, project or file",
    "ENGINE": "the Docker engine is unreachable",
    "AUTH": "not authenticated, or forbidden",
}

DISPATCH_EXAMPLES = [
    ("cubbi", "a session with the configured defaults on the current directory, connected"),
    ("cubbi ~/src/app", "the same for ~/src/app"),
    ("cubbi ls --json", "runs cubbi-ls --json"),
    ("cubbi session list", "the same, in the original cubbi's form"),
    ("cubbi help ls", "the manual page of cubbi-ls"),
]

def exit_codes():
    codes = [(v, k) for k, v in vars(errors).items()
             if k.isupper() and isinstance(v, int) and not isinstance(v, bool)]
    rows = [(v, EXIT_TEXT.get(k, k.lower().replace("_", " "))) for v, k in sorted(codes)]
    return rows + [(130, "interrupted (Ctrl-C)")]


# ----------------------------------------------------------------- roff

def esc(text):
    text = str(text).replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def inline(text):
    """Escape, then `code` in bold."""
    return re.sub(r"`([^`\n]+)`", lambda m: "\\fB" + m.group(1) + "\\fR", esc(text))


HEADING = re.compile(r"^[A-Z][A-Z0-9 ()/.\-]+$")


def clean(text):
    """A docstring-like text (first line flush) loses its common indentation;
    a text whose first line is indented (a bare table) keeps it."""
    text = (text or "").rstrip()
    if not text.startswith((" ", "\t")):
        return inspect.cleandoc(text)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def _indent(line):
    return len(line) - len(line.lstrip())


def _dedent(lines):
    depth = min((_indent(l) for l in lines if l.strip()), default=0)
    return [l[depth:] for l in lines]


def _is_table(lines):
    return all(re.search(r"\S {3,}\S", l) for l in lines)


def _preformatted(lines):
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return [".PP", ".RS 4", ".nf"] + [esc(l) for l in _dedent(lines)] + [".fi", ".RE"]


def render_text(text, headings=False):
    """Our small markup (see the module docstring) -> roff lines."""
    lines = clean(text).split("\n")
    if headings:
        out, body, head = [], [], None
        for line in lines + [None]:
            if line is None or HEADING.match(line):
                if head is not None or any(b.strip() for b in body):
                    out += ([f'.SH "{esc(head)}"'] if head else []) + _render_block(_dedent(body))
                head, body = line, []
            else:
                body.append(line)
        return out
    return _render_block(lines)


def _render_block(lines):
    """Paragraphs, bullets, preformatted blocks and term/description lists."""
    out, para, i = [], [], 0

    def flush():
        if para:
            if _is_table(para):
                out.extend(_preformatted(para))
            else:
                out.extend([".PP", inline(" ".join(p.strip() for p in para))])
            para.clear()

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            flush()
            i += 1
        elif line[:1] in (" ", "\t"):
            block = []
            while i < len(lines) and (lines[i][:1] in (" ", "\t") or not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            term = para and len(para) <= 2 and not para[-1].rstrip().endswith((":", ".", ","))
            if para and all(re.match(r"^[\w.-]+:( \S.*)?$", p) for p in para):
                block = para + block  # YAML: a key and its indented children stay together
                para.clear()
                out.extend(_preformatted(block))
            elif term and not _is_table(block):
                tag = [inline(p.strip()) for p in para]
                para.clear()
                desc = _render_block(_dedent(block))
                if desc[:1] == [".PP"]:
                    desc = desc[1:]
                desc = [".IP" if d == ".PP" else d for d in desc]
                out.extend([".TP", tag[0]] + [x for t in tag[1:] for x in (".TQ", t)] + desc)
            else:
                flush()
                out.extend(_preformatted(block))
        elif line.startswith("- "):
            flush()
            item = [line[2:]]
            i += 1
            while i < len(lines) and re.match(r"^  \S", lines[i]):
                item.append(lines[i].strip())
                i += 1
            out.extend([".IP \\(bu 2", inline(" ".join(item))])
        else:
            para.append(line)
            i += 1
    flush()
    # preformatted blocks separated only by blank lines are one block
    text = "\n".join(out).replace("\n.fi\n.RE\n.PP\n.RS 4\n.nf\n", "\n\n")
    return text.split("\n") if out else []


def opt_heading(opt):
    flags = ", ".join(f"\\fB{esc(f)}\\fR" for f in opt.flags)
    if opt.takes_value:
        flags += f" \\fI{esc(metavar(opt))}\\fR"
    return flags


def opt_entry(opt):
    notes = []
    if opt.choices:
        notes.append("One of: " + ", ".join(f"\\fB{esc(c)}\\fR" for c in opt.choices) + ".")
    if opt.kind == "multi":
        notes.append("May be given more than once.")
    # no "Default:" from opt.default: some defaults come from the environment at
    # import time, and the pages must not depend on who generates them.
    text = inline(opt.help or "")
    if text and not text.endswith("."):
        text += "."
    return [".TP", opt_heading(opt), " ".join([text] + notes).strip()]


def arg_entry(arg):
    nargs = {"?": " (optional)", "*": " (zero or more)", "+": " (one or more)"}.get(arg.nargs, "")
    return [".TP", f"\\fI{esc(arg.metavar)}\\fR", inline((arg.help or "") + nargs)]


def synopsis_words(options, args):
    words = []
    for opt in options:
        flag = max(opt.flags, key=len)
        w = f"\\fB{esc(flag)}\\fR"
        if opt.takes_value:
            w += f"\\ \\fI{esc(metavar(opt))}\\fR"
        words.append(f"[{w}]" + ("..." if opt.kind in ("multi", "count") else ""))
    for arg in args:
        m = f"\\fI{esc(arg.metavar)}\\fR"
        words.append({None: m, "?": f"[{m}]", "*": f"[{m}...]", "+": f"{m}..."}.get(arg.nargs, m))
    return words


def synopsis(node, prefix=""):
    """The words after the command's name, one line per leaf:
    [global opts] sub [opts] args."""
    head = " ".join(filter(None, [prefix] + synopsis_words(node.options, node.args)))
    if not node.children:
        return [head]
    lines = []
    for name, child in node.children.items():
        lines.extend(synopsis(child, " ".join(filter(None, [head, f"\\fB{esc(name)}\\fR"]))))
    return lines


def synopsis_block(name, lines):
    out = [".nh", ".ad l"]
    for line in lines:
        out += [f".SY {esc(name)}"] + ([line] if line else []) + [".YS"]
    return out + [".ad", ".hy"]


def th(name, section):
    return [f'.\\" {MARK}',
            f'.TH "{esc(name.upper())}" "{section}" "" "cubbi {esc(version())}" "cubbi manual"']


def synopsis_section(name, lines):
    return [".SH SYNOPSIS"] + synopsis_block(name, lines)


MERGED = ("EXIT STATUS", "ENVIRONMENT")  # a command's own text goes first in these


def common_tail(see_also, own=None):
    own = own or {}
    out = [".SH \"EXIT STATUS\""] + own.get("EXIT STATUS", [])
    if own.get("EXIT STATUS"):
        out += [".PP", "Every cubbi command:"]
    for code, text in exit_codes():
        out += [".TP", f"\\fB{code}\\fR", esc(text[:1].upper() + text[1:] + ".")]
    out += [".SH ENVIRONMENT"] + own.get("ENVIRONMENT", [])
    if own.get("ENVIRONMENT"):
        out += [".PP", "Every cubbi command:"]
    for var, text in ENVIRONMENT:
        out += [".TP", f"\\fB{var}\\fR", esc(text)]
    out += [".SH \"SEE ALSO\"", ",\n".join(f"\\fB{esc(n)}\\fR({s})" for n, s in see_also)]
    return out


def examples_section(examples):
    if not examples:
        return []
    out = [".SH EXAMPLES"]
    for line, what in examples:
        out += [".PP", inline(what[:1].upper() + what[1:] + ":"), ".RS 4", ".nf", esc(line), ".fi", ".RE"]
    return out


def _see(name):
    m = re.match(r"^(.*)\((\d\w*)\)$", name)
    return (m.group(1), m.group(2)) if m else (name, "1")


def subcommand_section(node, depth=0):
    out = []
    for name, child in node.children.items():
        title = " ".join(child.path.split()[1:])
        out += [f'.SS "{esc(title)}"', ".PP", inline(child.summary[:1].upper() + child.summary[1:]
                                                     + ("" if child.summary.endswith(".") else "."))]
        root = child.path.split()[0]
        out += synopsis_block(root, synopsis(child, f"\\fB{esc(title)}\\fR"))
        for opt in child.options:
            out += opt_entry(opt)
        for arg in child.args:
            out += arg_entry(arg)
        out += subcommand_section(child, depth + 1)
    return out


def man_command(cmd, extra_pages):
    tree = command_tree(cmd)
    out = th(cmd.name, 1)
    out += [".SH NAME", f"{esc(cmd.name)} \\- {esc(cmd.summary)}"]
    out += synopsis_section(cmd.name, synopsis(tree))
    out += [".SH DESCRIPTION"] + (render_text(cmd.description) or [".PP", esc(cmd.summary)])
    out += [".SH OPTIONS"]
    for opt in tree.all_options:
        out += opt_entry(opt)
    if tree.children:
        out += [".SH SUBCOMMANDS"] + subcommand_section(tree)
    if cmd.args:
        out += [".SH ARGUMENTS"]
        for arg in cmd.args:
            out += arg_entry(arg)
    own = {}
    for heading, text in cmd.sections:
        if heading.upper() in MERGED:
            own.setdefault(heading.upper(), []).extend(render_text(text))
        else:
            out += [f'.SH "{esc(heading.upper())}"'] + render_text(text)
    out += examples_section(cmd.examples)
    see = [("cubbi", "1")] + [(n, s) for n, s in extra_pages if n == cmd.name]
    for item in cmd.see_also:
        if _see(item) not in see:
            see.append(_see(item))
    return "\n".join(out + common_tail(see, own)) + "\n"


def man_dispatcher(cmds):
    doc, forms, session = dispatcher()
    summary = project_meta("description", "run AI coding tools in ephemeral Docker containers")
    summary = summary[:1].lower() + summary[1:]
    out = th("cubbi", 1)
    out += [".SH NAME", f"cubbi \\- {esc(summary)}"]
    out += synopsis_section("cubbi", [esc(" ".join(f.split()[1:])) for f, _ in forms])
    out += [".SH DESCRIPTION", ".PP",
            "cubbi runs AI coding tools (and any image with /bin/sh) in ephemeral Docker "
            "containers called sessions, locally or through a remote cubbi service. "
            "It is a set of small commands, \\fBcubbi\\-\\fR\\fISUB\\fR, that compose in pipes: "
            "every command that prints records prints one JSON object per line with "
            "\\fB\\-\\-json\\fR, and commands that act on sessions read ids, or those JSON "
            "lines, from standard input.",
            ".PP",
            "\\fBcubbi\\fR itself is a git\\-style dispatcher: \\fBcubbi\\fR \\fISUB\\fR "
            "runs \\fBcubbi\\-\\fR\\fISUB\\fR with the remaining arguments, so any "
            "\\fBcubbi\\-\\fR\\fIx\\fR on PATH is a subcommand."]
    for form, text in forms:
        out += [".TP", f"\\fB{esc(form)}\\fR", esc(text[:1].upper() + text[1:] + ".")]
    if session:
        out += [".PP", "The forms \\fBcubbi session\\fR \\fIX\\fR run: " + ", ".join(
            f"\\fB{esc(k)}\\fR \\(-> \\fBcubbi\\-{esc(v)}\\fR" for k, v in session.items()) + "."]
    out += [".SH OPTIONS"]
    for opt in DISPATCH_OPTS:
        out += opt_entry(opt)
    out += [".SH COMMANDS"]
    for cmd in cmds:
        out += [".TP", f"\\fB{esc(cmd.name)}\\fR(1)", esc(cmd.summary[:1].upper() + cmd.summary[1:] + ".")]
    out += examples_section(DISPATCH_EXAMPLES)
    see = [(c.name, "1") for c in cmds] + [(n, str(s)) for n, s in page_entries()]
    return "\n".join(out + common_tail(sorted(set(see)))) + "\n"


def page_entries():
    """[(name, section)] of the PAGES whose text exists."""
    return [(name, str(sec)) for name, sec, _, _, _ in extra_pages()]


_pages_cache = None


def extra_pages():
    """[(name, section, module, attribute, text)] for PAGES entries present."""
    global _pages_cache
    if _pages_cache is None:
        _pages_cache = []
        for name, sec, module, attr in PAGES:
            try:
                obj = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                sys.stderr.write(f"docs: skipping {name}({sec}): {module}.{attr} does not exist yet\n")
                continue
            text = obj() if callable(obj) else obj
            _pages_cache.append((name, sec, module, attr, text))
    return _pages_cache


def man_page(name, section, module, attr, text):
    body = clean(text)
    out = th(name, section)
    m = re.match(r"^NAME\n((?:[ \t]+\S.*\n?)+)", body)
    if m:  # a man-style text names itself
        out += [".SH NAME", esc(" ".join(m.group(1).split()))]
        rest = body[m.end():]
    else:
        first, _, rest = body.partition("\n\n")
        out += [".SH NAME", f"{esc(name)} \\- {esc(' '.join(first.split()).rstrip('.'))}"]
    rendered = render_text(rest, headings=True)
    if not rendered or not rendered[0].startswith(".SH"):
        rendered = [".SH DESCRIPTION"] + rendered
    out += rendered
    if '.SH "SEE ALSO"' not in rendered:
        see = [("cubbi", "1")] + ([(name, "1")] if name.startswith("cubbi-") else [])
        out += [".SH \"SEE ALSO\"", ",\n".join(f"\\fB{esc(n)}\\fR({s})" for n, s in see)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------- files

def generate():
    """{relative path: text} of every generated file."""
    cmds = load_commands()
    pages = extra_pages()
    files = {"man/cubbi.1": man_dispatcher(cmds)}
    for cmd in cmds:
        files[f"man/{cmd.name}.1"] = man_command(cmd, [(n, str(s)) for n, s, _, _, _ in pages])
    for name, sec, module, attr, text in pages:
        files[f"man/{name}.{sec}"] = man_page(name, sec, module, attr, text)
    files["completions/cubbi.bash"] = bash_completion(cmds)
    files["completions/_cubbi"] = zsh_completion(cmds)
    files["completions/cubbi.fish"] = fish_completion(cmds)
    for name in ["cubbi"] + [c.name for c in cmds]:
        files[f"completions/bash/{name}"] = bash_stub(name)
        if name != "cubbi":
            files[f"completions/fish/{name}.fish"] = fish_stub(name)
    return files


def generated_on_disk(out):
    """Files under man/ and completions/ that carry our mark."""
    found = set()
    for top in ("man", "completions"):
        for dirpath, _, filenames in os.walk(os.path.join(out, top)):
            for fn in filenames:
                path = os.path.join(dirpath, fn)
                try:
                    with open(path, encoding="utf-8") as fh:
                        head = fh.read(400)
                except (OSError, UnicodeDecodeError):
                    continue
                if MARK in head:
                    found.add(os.path.relpath(path, out).replace(os.sep, "/"))
    return found


def stale(out, files):
    """[(path, why)] of files that differ from what would be generated."""
    result = []
    for rel, text in sorted(files.items()):
        path = os.path.join(out, rel)
        try:
            with open(path, encoding="utf-8") as fh:
                current = fh.read()
        except FileNotFoundError:
            result.append((rel, "missing"))
            continue
        if current != text:
            result.append((rel, "out of date"))
    for rel in sorted(generated_on_disk(out) - set(files)):
        result.append((rel, "no longer generated"))
    return result


def write(out, files):
    changed = stale(out, files)
    for rel, why in changed:
        path = os.path.join(out, rel)
        if why == "no longer generated":
            os.remove(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(files[rel])
        os.replace(tmp, path)
    return changed


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python3 -m cubbi_tools.docs",
                                description="Generate man pages and shell completions.")
    p.add_argument("--check", action="store_true", help="list stale files and exit 1; write nothing")
    p.add_argument("--out", default=SRC, help="tree to write or check (default: the source tree)")
    args = p.parse_args(argv)
    try:
        files = generate()
    except DocsError as exc:
        sys.stderr.write(f"docs: {exc}\n")
        return 1
    if args.check:
        bad = stale(args.out, files)
        for rel, why in bad:
            sys.stdout.write(f"{rel}: {why}\n")
        if bad:
            sys.stderr.write("docs: stale generated files; run: python3 -m cubbi_tools.docs\n")
            return 1
        return 0
    for rel, why in write(args.out, files):
        sys.stdout.write(f"{rel}: {'removed' if why == 'no longer generated' else 'written'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

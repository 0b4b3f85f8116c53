"""Docs follow the code: man pages and completions are generated from the
commands' own definitions (cubbi_tools/docs.py), committed, and checked here.

The completions are exercised for real: bash functions are called with
COMP_WORDS/COMP_CWORD set, fish answers `complete -C`, zsh is parsed.
Value completions that call other programs (cubbi-ls -q --all, docker ...)
run against stand-ins put first on PATH, so the answers are known.
"""

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from cubbi_tools import cli, commands, docs

from conftest import BIN, ROOT, run

MAN = os.path.join(ROOT, "man")
COMP = os.path.join(ROOT, "completions")
COMPLETION_FILES = ["cubbi.bash", "_cubbi", "cubbi.fish"]


def need(program):
    path = shutil.which(program)
    if not path:
        pytest.fail(f"{program} is not installed (apt-get install {program}); "
                    "the docs tests need it and do not skip")
    return path


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def unroff(text):
    return text.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")


def all_commands():
    return [(name, commands.load(name)) for name in sorted(commands.COMMANDS)]


def nodes(cmd):
    return list(docs.command_tree(cmd).walk())


# ------------------------------------------------------------ up to date

def test_generated_files_are_current():
    proc = subprocess.run([sys.executable, "-m", "cubbi_tools.docs", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, (
        "man pages or completions are stale; run: python3 -m cubbi_tools.docs\n"
        + proc.stdout + proc.stderr)


def test_pages_do_not_depend_on_who_generates_them(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "CUBBI_CONFIG_DIR": str(tmp_path / "cfg"),
           "CUBBI_REMOTE": "elsewhere", "CUBBI_SERVER_CONFIG": str(tmp_path / "svc.yaml"),
           "DOCKER_HOST": "tcp://127.0.0.1:9", "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "LC_ALL": "C", "COLUMNS": "40"}
    proc = subprocess.run([sys.executable, "-m", "cubbi_tools.docs", "--check"], cwd=str(tmp_path),
                          capture_output=True, text=True, env={**env, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_lists_stale_files_and_writes_nothing(tmp_path):
    out = str(tmp_path)
    gen = [sys.executable, "-m", "cubbi_tools.docs", "--out", out]
    assert subprocess.run(gen, cwd=ROOT, capture_output=True).returncode == 0
    page = tmp_path / "man" / "cubbi-ls.1"
    page.write_text(page.read_text().replace("SESSION RECORD", "OLD"))
    leftover = tmp_path / "man" / "cubbi-gone.1"
    leftover.write_text(f'.\\" {docs.MARK}\n')
    (tmp_path / "completions" / "_cubbi").unlink()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    proc = subprocess.run(gen + ["--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc
    assert "man/cubbi-ls.1: out of date" in proc.stdout
    assert "man/cubbi-gone.1: no longer generated" in proc.stdout
    assert "completions/_cubbi: missing" in proc.stdout
    assert "python3 -m cubbi_tools.docs" in proc.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, "--check must not write"

    assert subprocess.run(gen, cwd=ROOT, capture_output=True).returncode == 0
    assert not leftover.exists()
    assert subprocess.run(gen + ["--check"], cwd=ROOT, capture_output=True).returncode == 0


def test_output_is_deterministic():
    assert docs.generate() == docs.generate()
    text = read(os.path.join(MAN, "cubbi-ls.1"))
    assert not re.search(r"20\d\d-\d\d-\d\d", text), "no dates in generated pages"


# ------------------------------------------------------------ man pages

def test_a_man_page_per_command_with_every_switch():
    for name, cmd in all_commands():
        path = os.path.join(MAN, name + ".1")
        assert os.path.isfile(path), f"no man page for {name}"
        page = unroff(read(path))
        assert page.startswith('.\\" ' + docs.MARK)
        for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS",
                        "ENVIRONMENT", "SEE ALSO"):
            assert re.search(rf'^\.SH "?{section}"?$', page, re.M), f"{name}: no {section}"
        assert cmd.summary in page
        for node in nodes(cmd):
            for sub in node.path.split()[1:]:
                assert sub in page, f"{name}: subcommand {sub} missing"
            for opt in node.options:
                for flag in opt.flags:
                    assert re.search(rf"\\fB{re.escape(flag)}\\fR", page), f"{name}: {flag} missing"
                for choice in opt.choices or ():
                    assert str(choice) in page
            for arg in node.args:
                assert arg.metavar in page, f"{name}: argument {arg.metavar} missing"
        for code in (0, 1, 2, 3, 4, 5):
            assert f"\\fB{code}\\fR" in page
        for var, _ in docs.ENVIRONMENT:
            assert var in page


def test_dispatcher_page_lists_every_command_and_form():
    page = unroff(read(os.path.join(MAN, "cubbi.1")))
    for name, cmd in all_commands():
        assert f"\\fB{name}\\fR(1)" in page
        assert cmd.summary[1:] in page
    _, forms, session = docs.dispatcher()
    assert len(forms) >= 5
    for form, _ in forms:
        assert form in page
    for word in session:
        assert f"\\fB{word}\\fR" in page


def test_ls_page_documents_the_session_record():
    from cubbi_tools import session

    page = unroff(read(os.path.join(MAN, "cubbi-ls.1")))
    record = page.split('.SH "SESSION RECORD"', 1)[1].split(".SH ", 1)[0]
    assert ".nf" in record and ".fi" in record
    for field in session.FIELDS:
        assert re.search(rf"^{field}\s", record, re.M), f"schema field {field} missing"


def test_pages_render_with_man():
    need("man")
    pages = sorted(os.listdir(MAN))
    assert len(pages) >= len(commands.COMMANDS) + 1
    for page in pages:
        proc = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)],
                              capture_output=True, text=True, env={**os.environ, "MANWIDTH": "100"})
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "", f"{page}: {proc.stderr}"
        assert "SEE ALSO" in proc.stdout
        if page.endswith(".1"):
            assert "EXIT STATUS" in proc.stdout and page[:-2] in proc.stdout
    text = subprocess.run(["man", "-l", os.path.join(MAN, "cubbi-ls.1")], capture_output=True,
                          text=True, env={**os.environ, "MANWIDTH": "100"}).stdout
    assert "--filter KEY=VALUE" in text          # ASCII hyphens, copy-pasteable
    # the schema stays a table: one field per line
    assert re.search(r"^\s+created_epoch\s+the same", text, re.M), text


def test_cubbi_help_shows_the_man_page():
    need("man")
    r = run(["cubbi", "help", "ls"])
    assert r.exit_code == 0, r
    assert "SESSION RECORD" in r.stdout, r      # only the man page has it, not --help
    r = run(["cubbi", "help"])
    assert r.exit_code == 0 and "COMMANDS" in r.stdout, r


def test_cubbi_list_includes_every_command():
    r = run(["cubbi", "--list"])
    assert r.exit_code == 0, r
    listed = r.stdout.split()
    for name in commands.COMMANDS:
        assert name[len("cubbi-"):] in listed, f"{name} not in cubbi --list"
        assert os.access(os.path.join(BIN, name), os.X_OK), f"bin/{name} missing or not executable"


def test_extra_pages_mechanism(monkeypatch, tmp_path):
    mod = tmp_path / "cubbi_docs_fmt_test.py"
    mod.write_text(textwrap.dedent('''
        FORMAT = """The frobnicator file: ~/.frob.

        It holds `frob` settings.

        FILE FORMAT
          key: value
          other: 1

        - one bullet
          that continues
        """
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(docs, "PAGES", [("cubbi-frob", 5, "cubbi_docs_fmt_test", "FORMAT"),
                                        ("cubbi-nope", 5, "cubbi_docs_fmt_test", "MISSING")])
    monkeypatch.setattr(docs, "_pages_cache", None)
    files = docs.generate()
    assert "man/cubbi-nope.5" not in files
    page = files["man/cubbi-frob.5"]
    assert '.TH "CUBBI\\-FROB" "5"' in page
    assert "cubbi\\-frob \\- The frobnicator file: ~/.frob\n" in page
    assert '.SH "FILE FORMAT"\n.PP\n.RS 4\n.nf\nkey: value\nother: 1\n.fi' in page
    assert "\\fBfrob\\fR" in page and ".IP \\(bu 2\none bullet that continues" in page
    assert "\\fBcubbi\\-frob\\fR(5)" in files["man/cubbi.1"]


# ------------------------------------------------------------ completions

def test_every_command_and_switch_in_every_completion_file():
    texts = {f: read(os.path.join(COMP, f)) for f in COMPLETION_FILES}
    for name, cmd in all_commands():
        for f, text in texts.items():
            assert name in text, f"{f}: {name} missing"
            for node in nodes(cmd):
                for sub in node.path.split()[1:]:
                    assert sub in text, f"{f}: {node.path} missing"
                for opt in node.options:
                    for flag in opt.flags:
                        if f == "cubbi.fish":
                            word = f"-l '{flag[2:]}'" if flag.startswith("--") else f"-s '{flag[1:]}'"
                        else:
                            word = flag
                        assert word in text, f"{f}: {name} {flag} missing"
        assert os.path.isfile(os.path.join(COMP, "bash", name)), f"bash loader for {name}"
        assert os.path.isfile(os.path.join(COMP, "fish", name + ".fish")), f"fish loader for {name}"


@pytest.fixture
def fakes(tmp_path):
    """Stand-ins for the programs that value completions call, first on PATH."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    scripts = {
        "cubbi-ls": '[ "$*" = "-q --all" ] && printf "3fa1b2c4\\n77aa0011\\n"',
        "cubbi-image": '[ "$*" = "list -q" ] && printf "aider\\ngoose\\n"',
        "docker": 'case "$*" in images*) printf "aider:latest\\ngoose:latest\\n";; '
                  'network*) printf "cubbi-network\\nteamnet\\n";; esac',
        "cubbi-remote": '[ "$*" = "list -q" ] && printf "team\\nlab\\n"',
        "cubbi-project": '[ "$*" = "list -q" ] && printf "github.com/a/b\\n"',
    }
    for name, body in scripts.items():
        p = bindir / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "env.list").write_text("A=1\n")
    (tmp_path / "files" / "subdir").mkdir()
    return {"PATH": f"{bindir}:{BIN}:{os.environ['PATH']}", "cwd": str(tmp_path / "files")}


def bash_complete(line, env, source=None, cwd=None, split_eq=True):
    """COMPREPLY for `line` (cursor at its end), from the real bash function.
    Words are split as bash does with its default COMP_WORDBREAKS: `--opt=v`
    is three words, `--opt`, `=`, `v` (split_eq=False: one word)."""
    bash = need("bash")
    source = source or os.path.join(COMP, "cubbi.bash")
    words = []
    for w in line.split():
        m = re.match(r"^(-[^=]+)=(.*)$", w)
        words += [m.group(1), "="] + ([m.group(2)] if m.group(2) else []) if m and split_eq else [w]
    if line.endswith(" ") or not words:
        words.append("")
    script = textwrap.dedent(f'''
        source {docs.shq(source)}
        COMP_WORDS=({" ".join(docs.shq(w) for w in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE={docs.shq(line)}; COMP_POINT=${{#COMP_LINE}}
        spec=$(complete -p "${{COMP_WORDS[0]}}") || exit 7
        fn=${{spec#*-F }}; fn=${{fn%% *}}
        "$fn" "${{COMP_WORDS[0]}}" "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
    ''')
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PATH": env["PATH"]}, cwd=cwd or env["cwd"], timeout=30)
    assert proc.returncode == 0, (line, proc.stderr)
    assert proc.stderr == "", (line, proc.stderr)
    return sorted(w for w in proc.stdout.split("\n") if w)


def test_bash_completes_options_subcommands_and_values(fakes):
    c = lambda line: bash_complete(line, fakes)  # noqa: E731
    assert c("cubbi-ls --fi") == ["--filter"]
    assert c("cubbi ses") == ["session"]
    assert c("cubbi session ") == sorted(docs.dispatcher()[2])
    assert c("cubbi session list --a") == ["--all"]
    assert c("cubbi ls --a") == ["--all"]
    assert c("cubbi -r team ls --a") == ["--all"]
    assert c("cubbi -r ") == ["lab", "team"]
    assert "ls" in c("cubbi help ") and "help" not in c("cubbi help ")
    # a value-taking option consumes its word: values only, never options
    images = ["aider", "goose"] if "cubbi-image" in commands.COMMANDS else ["aider:latest", "goose:latest"]
    assert c("cubbi-create --image ") == images
    assert c("cubbi-create --image=") == images
    assert c("cubbi create -i ") == images
    assert c("cubbi-create --name ") == []
    assert c("cubbi-create --network ") == ["cubbi-network", "teamnet"]
    assert c("cubbi-create --network t") == ["teamnet"]
    assert c("cubbi-create --env-file en") == ["env.list"]
    assert c("cubbi-create --mount ") == ["subdir"]
    assert c("cubbi-close ") == ["3fa1b2c4", "77aa0011"]
    assert c("cubbi-close 3fa1b2c4 7") == ["77aa0011"]
    assert c("cubbi session close 3") == ["3fa1b2c4"]
    assert c("cubbi-logs --tail 5 ") == ["3fa1b2c4", "77aa0011"]
    assert c("cubbi-connect 3fa1b2c4 -- ") == []


def test_bash_every_option_of_every_command(fakes):
    for name, cmd in all_commands():
        for node in nodes(cmd):
            prefix = " ".join([name] + node.path.split()[1:])
            offered = bash_complete(prefix + " -", fakes)
            for opt in node.all_options:
                for flag in opt.flags:
                    assert flag in offered, f"{prefix} -<TAB> lacks {flag}: {offered}"
            if node.children:
                assert bash_complete(prefix + " ", fakes) == sorted(node.children)
            for opt in node.options:
                if opt.choices:
                    assert bash_complete(f"{prefix} {opt.flags[0]} ", fakes) == sorted(map(str, opt.choices))


SYNTHETIC = cli.Command(
    "cubbi-zz", "a made-up command for the generator's tests", lambda a: 0,
    options=[cli.Opt("-r", "--remote", kind="value", complete="remote", help="remote")],
    subcommands={
        "run": ("run it", [cli.Opt("--format", kind="value", choices=["table", "json"], help="format"),
                           cli.Opt("-e", "--env", kind="multi", metavar="KEY=VALUE", help="env"),
                           cli.Opt("--from", kind="value", complete="sh:printf 'x1\\nx2\\n'", help="from"),
                           cli.Opt("-v", kind="count", help="louder")],
                [cli.Arg("what", "kind", complete="project"), cli.Arg("files", "files", nargs="*",
                                                                     complete="file")]),
        "net": ("networks", [], [cli.Arg("action", "", metavar="list|add|remove"),
                                 cli.Arg("name", "", nargs="?", complete="network")]),
    },
)


def fish_complete(line, env, source=None):
    fish = need("fish")
    source = source or os.path.join(COMP, "cubbi.fish")
    proc = subprocess.run([fish, "--no-config", "-c",
                           f"source {docs.shq(source)}; complete -C {docs.shq(line)}"],
                          capture_output=True, text=True, env={**os.environ, "PATH": env["PATH"]},
                          cwd=env["cwd"], timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", (line, proc.stderr)
    return sorted(w.split("\t")[0] for w in proc.stdout.split("\n") if w)


def test_fish_completes_options_subcommands_and_values(fakes):
    c = lambda line: fish_complete(line, fakes)  # noqa: E731
    assert c("cubbi-ls --fi") == ["--filter"]
    assert c("cubbi ses") == ["session"]
    assert c("cubbi session list --a") == ["--all"]
    assert c("cubbi -r team ls --a") == ["--all"]
    assert c("cubbi-close ") == ["3fa1b2c4", "77aa0011"]
    images = ["aider", "goose"] if "cubbi-image" in commands.COMMANDS else ["aider:latest", "goose:latest"]
    assert c("cubbi-create --image ") == images
    assert c("cubbi-create --name ") == []
    for name, cmd in all_commands():
        for node in nodes(cmd):
            prefix = " ".join([name] + node.path.split()[1:])
            offered = c(prefix + " -")
            for opt in node.all_options:
                long = [f for f in opt.flags if f.startswith("--")]
                assert not long or long[0] in offered, f"fish {prefix}: {long[0]} missing"


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_generator_on_a_synthetic_command(shell, fakes, tmp_path):
    generate, complete = {"bash": (docs.bash_completion, bash_complete),
                          "fish": (docs.fish_completion, fish_complete)}[shell]
    path = tmp_path / f"zz.{shell}"
    path.write_text(generate([SYNTHETIC]))
    c = lambda line: complete(line, fakes, source=str(path))  # noqa: E731
    assert c("cubbi-zz ") == ["net", "run"]
    assert c("cubbi-zz run --format ") == ["json", "table"]     # choices only, no junk
    assert c("cubbi-zz run --format json ") == ["github.com/a/b"]  # the value was consumed
    assert c("cubbi-zz run --from ") == ["x1", "x2"]
    assert c("cubbi-zz net ") == ["add", "list", "remove"]
    assert c("cubbi-zz net add t") == ["teamnet"]
    if shell != "bash":
        return
    assert c("cubbi-zz -r ") == ["lab", "team"]
    assert c("cubbi-zz -r team r") == ["run"]
    assert c("cubbi-zz run --format=j") == ["json"]
    assert bash_complete("cubbi-zz run --format=j", fakes, source=str(path), split_eq=False) == ["--format=json"]
    assert c("cubbi-zz run -v ") == ["github.com/a/b"]            # a count takes no value
    assert c("cubbi-zz run -e A=1 github.com/a/b en") == ["env.list"]
    assert c("cubbi-zz run --") == ["--env", "--format", "--from", "--help"]
    zsh_file = tmp_path / "_zz"
    zsh_file.write_text(docs.zsh_completion([SYNTHETIC]))
    proc = subprocess.run([need("zsh"), "-n", str(zsh_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "'(--format)--format=[format]:FORMAT:(table json)'" in zsh_file.read_text()
    man = docs.man_command(SYNTHETIC, [])
    assert ".SH SUBCOMMANDS" in man and '.SS "run"' in man and "\\fBjson\\fR" in man


def test_completion_files_parse():
    zsh = need("zsh")
    fish = need("fish")
    bash = need("bash")
    for shell, f in ((zsh, "_cubbi"), (fish, "cubbi.fish"), (bash, "cubbi.bash")):
        proc = subprocess.run([shell, "-n", os.path.join(COMP, f)], capture_output=True, text=True)
        assert proc.returncode == 0, (f, proc.stderr)
    text = read(os.path.join(COMP, "_cubbi"))
    assert text.splitlines()[0] == "#compdef cubbi " + " ".join(sorted(commands.COMMANDS))


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_config_keys_are_completed_for_get_set_and_unset(shell, fakes):
    """cubbi-config get/set/unset complete the words of `cubbi-config keys`
    (zsh uses the same generated function; its file is checked to parse)."""
    fake = os.path.join(fakes["PATH"].split(":")[0], "cubbi-config")
    with open(fake, "w") as fh:
        fh.write('#!/bin/sh\n[ "$*" = "keys" ] && printf "defaults.image\\ndefaults.cpus\\nui.colors\\n"\n')
    os.chmod(fake, 0o755)
    complete = {"bash": bash_complete, "fish": fish_complete}[shell]
    for sub in ("get", "set", "unset"):
        assert complete(f"cubbi-config {sub} def", fakes) == ["defaults.cpus", "defaults.image"]
    assert complete("cubbi-config set ui.colors ", fakes) == []  # the value is not a key
    assert "cubbi-config keys 2>/dev/null" in open(os.path.join(COMP, "_cubbi")).read()

"""The `cubbi` dispatcher: git-style subcommands, the spec's `cubbi session
...` forms, `cubbi PATH`, bare `cubbi`, help and the list of commands."""

import os
import stat

import pytest

from conftest import BIN, one_line_error


def test_list_shows_the_session_commands_and_plugins(cubbi, tmp_path):
    plugin = tmp_path / "cubbi-hello"
    plugin.write_text('#!/bin/sh\necho "hello $*"; exit 5\n')
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    path = f"{tmp_path}:{os.environ['PATH']}"
    r = cubbi("cubbi", "--list", env={"PATH": path})
    assert r.exit_code == 0, r
    names = r.stdout.split()
    assert {"create", "ls", "close", "connect", "logs", "hello"} <= set(names)
    assert names == sorted(names)
    # any cubbi-X on PATH is a subcommand; arguments and exit status pass through
    r = cubbi("cubbi", "hello", "a b", "-c", env={"PATH": path})
    assert (r.exit_code, r.stdout) == (5, "hello a b -c\n"), r


def test_help(cubbi):
    r = cubbi("cubbi", "--help")
    assert r.exit_code == 0 and "cubbi session create" in r.stdout, r
    r = cubbi("cubbi", "help", "ls")
    assert r.exit_code == 0, r
    assert "cubbi-ls" in r.stdout and "--filter" in r.stdout  # man page, or --help without man
    r = cubbi("cubbi", "help", "no-such-command")
    assert r.exit_code == 2 and "cubbi --list" in r.stderr, r


@pytest.mark.parametrize("argv,words", [
    (["frobnicate"], ["frobnicate", "cubbi --list"]),
    (["session"], ["cubbi session create|list"]),
    (["session", "frob"], ["cubbi session create|list"]),
    (["-r"], ["-r"]),
])
def test_unknown_words_exit_2(cubbi, argv, words):
    one_line_error(cubbi("cubbi", *argv), 2, *words)


def test_usage_errors_of_the_subcommand_pass_through(cubbi):
    r = cubbi("cubbi", "ls", "--bogus")
    assert r.exit_code == 2 and r.stderr.startswith("cubbi-ls: "), r


def test_subcommands_and_session_forms(cubbi, busybox_image, prefix):
    r = cubbi("cubbi", "session", "create", "--image", busybox_image, "--name", f"{prefix}-s",
              "--no-mount", "-q", "--wait")
    assert r.exit_code == 0, r
    sid = r.stdout.strip()
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*")
    for form in (["ls"], ["session", "list"], ["session", "ls"]):
        r = cubbi("cubbi", *form, "--json", "--filter", f"name={prefix}*")
        assert (r.exit_code, r.stdout) == (0, ls.stdout), (form, r)
    r = cubbi("cubbi", "session", "connect", sid, "--", "sh", "-c", "echo in; exit 4")
    assert (r.exit_code, r.stdout) == (4, "in\n"), r
    r = cubbi("cubbi", "session", "logs", sid)
    assert r.exit_code == 0 and "cubbi-init: ready" in r.stderr, r
    r = cubbi("cubbi", "logs", "--json", sid)
    assert r.exit_code == 0 and r.json()[-1]["session"] == sid, r
    r = cubbi("cubbi", "session", "close", sid)
    assert r.exit_code == 0, r
    assert cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*").stdout == ""


def test_cubbi_path_mounts_it(cubbi, busybox_image, prefix, tmp_path):
    work = tmp_path / "proj"
    work.mkdir()
    r = cubbi("cubbi", str(work), "--image", busybox_image, "--name", f"{prefix}-path", "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["mount"] == str(work)
    assert cubbi("cubbi-close", rec["id"]).exit_code == 0


def test_bare_cubbi_off_a_terminal_creates_a_session_with_the_defaults(cubbi, busybox_image,
                                                                       tmp_path):
    (cubbi.config_dir / "config.yaml").write_text(
        f"defaults:\n  image: {busybox_image}\n  mount_local: false\n")
    r = cubbi("cubbi", cwd=str(tmp_path))  # stdin/stdout are pipes: no connect
    try:
        assert r.exit_code == 0, r
        lines = r.stdout.splitlines()
        assert lines[0].split()[:3] == ["ID", "NAME", "IMAGE"]  # the table, off a terminal
        sid = lines[1].split()[0]
        r2 = cubbi("cubbi-ls", "--json", "--all")
        (rec,) = [x for x in r2.json() if x["id"] == sid]
        assert rec["image"] == busybox_image and rec["mount"] is None
        assert rec["name"].startswith("busybox-")
    finally:
        for line in r.stdout.splitlines()[1:]:
            cubbi("cubbi-close", line.split()[0])


def test_dispatcher_is_stdlib_only():
    """`cubbi` must start fast and work before the package's dependencies:
    it imports only the standard library's os and sys."""
    src = open(os.path.join(BIN, "cubbi")).read()
    imports = {ln.split()[1] for ln in src.splitlines()
               if ln.startswith(("import ", "from ")) and not ln.startswith("from importlib")}
    assert imports <= {"os", "sys"}, imports

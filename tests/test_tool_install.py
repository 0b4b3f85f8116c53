"""`pipx install .` and `uv tool install .` (README): the commands work
from the tool's own virtualenv, `cubbi help X` finds the man page the
install carries (nothing else on MANPATH), pipx exposes the pages itself,
and `cubbi --install-links DIR` gives uv's (or any) install its links, man
pages and completions under DIR.

Opt-in (CUBBI_SLOW=1): it installs pipx and uv (pinned) and cubbi's
dependencies from PyPI, about a minute.  uv is told to trust the system
store (UV_SYSTEM_CERTS): on a fresh Debian whose PyPI comes through a
TLS-intercepting CA it otherwise knows only its bundled roots (found by the
fresh-Debian run)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("CUBBI_SLOW") != "1",
    reason="installs pipx, uv and cubbi from PyPI: set CUBBI_SLOW=1")]

PIPX, UV = "pipx==1.18.4", "uv==0.13.9"  # looked up on PyPI


def _run(argv, env, timeout=600):
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, (argv, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    top = tmp_path_factory.mktemp("tools")
    _run([sys.executable, "-m", "venv", str(top / "venv")], dict(os.environ))
    _run([str(top / "venv" / "bin" / "pip"), "install", "-q", PIPX, UV], dict(os.environ))
    return top


def _clean_env(top, **extra):
    """No checkout on PYTHONPATH, no system man pages: only what the install has."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"HOME": str(top / "home"), "MANPATH": str(top / "no-man"), "MANPAGER": "cat",
                "PAGER": "cat", "NO_COLOR": "1", "CUBBI_CONFIG_DIR": str(top / "cfg")})
    env.update(extra)
    return env


def _check(bindir, env, prefix):
    path = f"{bindir}:/usr/bin:/bin"
    env = dict(env, PATH=path)
    r = _run([os.path.join(bindir, "cubbi-ls"), "--help"], env)
    assert "usage: cubbi-ls" in r.stdout
    r = _run([os.path.join(bindir, "cubbi"), "help", "ssh"], env)
    assert "CUBBI-SSH(1)" in r.stdout, r.stdout[:300]  # the page itself, not --help
    _run([os.path.join(bindir, "cubbi"), "--install-links", str(prefix)], env)
    for rel in ("bin/cubbi-ssh", "share/man/man1/cubbi-ls.1", "share/man/man5/cubbi-config.5",
                "share/bash-completion/completions/cubbi-ls",
                "share/bash-completion/completions/cubbi.bash",
                "share/zsh/site-functions/_cubbi", "share/fish/vendor_completions.d/cubbi.fish"):
        assert os.path.exists(prefix / rel), rel
    r = _run(["man", "-w", "cubbi-ssh-config"], dict(env, MANPATH=str(prefix / "share" / "man")))
    assert r.stdout.strip().startswith(str(prefix))
    r = _run(["bash", "-c", f". {prefix}/share/bash-completion/completions/cubbi-ls && "
              "complete -p cubbi-ls"], env)
    assert "cubbi-ls" in r.stdout


def test_pipx_install(tools, tmp_path):
    env = _clean_env(tmp_path, PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
                     PIPX_MAN_DIR=str(tmp_path / "man"))
    _run([str(tools / "venv" / "bin" / "pipx"), "install", ROOT], env)
    assert (tmp_path / "man" / "man1" / "cubbi-ls.1").exists()  # pipx exposes the pages
    _check(str(tmp_path / "bin"), env, tmp_path / "prefix")


def test_uv_tool_install(tools, tmp_path):
    env = _clean_env(tmp_path, UV_TOOL_DIR=str(tmp_path / "uv"),
                     UV_TOOL_BIN_DIR=str(tmp_path / "bin"), UV_PYTHON=sys.executable,
                     UV_SYSTEM_CERTS="true")  # a CA the host trusts (a proxy's) counts
    _run([str(tools / "venv" / "bin" / "uv"), "tool", "install", ROOT], env)
    _check(str(tmp_path / "bin"), env, tmp_path / "prefix")

"""The standalone binary (dist/build, PyInstaller): built, then run in a
container of the offline Debian base, which has no Python at all: multi-call
by argv[0], `cubbi SUB`, the built-in image definitions, init scripts, man
pages and completions inside, `cubbi --install-links`, and real sessions
made and reached through the engine's socket.

In the default run (CI proves the binary, as the issue asks): the build takes
one to three minutes on two cores, PyPI included for a fresh build venv."""

import os
import subprocess

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow]

SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("work")
    env = dict(os.environ, CUBBI_DIST_DIR=str(dist), CUBBI_DIST_WORK=str(work))
    b = subprocess.run([os.path.join(ROOT, "dist", "build")], capture_output=True, text=True,
                       env=env, timeout=1200)
    assert b.returncode == 0, b.stderr[-3000:]
    exe = dist / "cubbi" / "cubbi"
    assert os.access(exe, os.X_OK)
    return dist / "cubbi"


def _in_debian(image, folder, script, timeout=300):
    """SCRIPT (sh) in a container of IMAGE with the binary's folder at
    /opt/cubbi and the engine's socket: a Debian without Python."""
    return subprocess.run(
        ["docker", "run", "--rm", "-v", f"{folder}:/opt/cubbi:ro", "-v", f"{SOCKET}:{SOCKET}",
         "-e", "CUBBI_CONFIG_DIR=/tmp/cfg", "-e", "NO_COLOR=1", image, "sh", "-euc", script],
        capture_output=True, text=True, timeout=timeout)


def test_the_binary_runs_on_a_debian_without_python(binary, debian_image, busybox_image,
                                                    prefix):
    name = f"{prefix}-bin"
    r = _in_debian(debian_image, binary, f"""
        ! command -v python3 && ! ls /usr/bin/python* 2>/dev/null && echo no-python
        /opt/cubbi/cubbi --version
        /opt/cubbi/cubbi --install-links /usr/local 2>&1
        export PATH=/usr/local/bin:$PATH
        readlink /usr/local/bin/cubbi-ls
        ls /usr/local/share/man/man1/cubbi-ls.1 /usr/local/share/man/man5/cubbi-config.5 \\
           /usr/local/share/bash-completion/completions/cubbi-ls \\
           /usr/local/share/zsh/site-functions/_cubbi \\
           /usr/local/share/fish/vendor_completions.d/cubbi.fish
        cubbi --list | tr '\\n' ' '; echo
        cubbi-image list --offline -q | tr '\\n' ' '; echo
        sid=$(cubbi-create --image {busybox_image} --name {name} --no-mount --no-connect \\
              --wait -q)
        cubbi ls -q --filter name={name}
        cubbi-ls --json --filter name={name}
        echo hi | cubbi-connect "$sid" -- cat
        cubbi session close "$sid"
        cubbi-server start >/dev/null 2>&1 || echo "server: $?"
    """)
    assert r.returncode == 0, r
    out = r.stdout
    assert "no-python\n" in out and "cubbi 0.1.0\n" in out, out
    assert "/opt/cubbi/cubbi\n" in out, out  # cubbi-ls is a link to the one executable
    assert "ls mcp project prune remote ssh ssh-config" in out and " server " not in out, out
    assert "aider base claude-code codex goose opencode" in out, (out, r.stderr)  # inside
    lines = out.splitlines()
    sid = lines[lines.index("hi") - 2]  # cubbi ls -q, then the --json line, then cat's echo
    assert f'"name": "{name}"' in lines[lines.index("hi") - 1] or \
        f'"name":"{name}"' in lines[lines.index("hi") - 1], out
    # no cubbi-server link among the binary's: the server is not in it
    assert len(sid) == 8 and "server: 127" in out, (out, r.stderr)
    assert "cubbi-server: not in this binary" not in out  # its stderr went to /dev/null


def test_help_man_pages_and_usage_errors_of_the_binary(binary, debian_image):
    r = _in_debian(debian_image, binary, """
        cd /opt/cubbi
        ./cubbi --help | head -1
        ./cubbi help ls | head -3
        ./cubbi frobnicate || echo "exit $?"
        ./cubbi --install-links 2>&1 || echo "exit $?"
        ln -s /opt/cubbi/cubbi /tmp/cubbi-ls && /tmp/cubbi-ls --bogus 2>&1 || echo "exit $?"
        ln -s /opt/cubbi/cubbi /tmp/cubbi-server && /tmp/cubbi-server start 2>&1 || echo "exit $?"
    """)
    assert r.returncode == 0, r
    out = r.stdout
    assert "usage: cubbi-ls" in out or "cubbi-ls" in out, out  # no man on minbase: --help
    assert out.count("exit 2") == 3 and "exit 1" in out, out
    assert "cubbi-server: not in this binary" in out and "Traceback" not in out + r.stderr, r

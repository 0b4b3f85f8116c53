"""What a new operator trips over (ATTACK-11's trial): cubbi-server run by a
python3 without cubbi, and a server listening beyond loopback, where
sessions reach it through their bridge's gateway."""

import os
import subprocess
import sys
import time

from conftest import one_line
from serverproc import BIN, _env


def test_a_python_without_cubbi_gives_one_line_not_a_traceback(tmp_path):
    # -I -S: no site-packages, no PYTHONPATH: as a system python3 without cubbi
    r = subprocess.run([sys.executable, "-I", "-S", os.path.join(BIN, "cubbi-server"), "--help"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.returncode == 1, r
    one_line(r.stderr, "cubbi-server:", "cannot import cubbi_tools", "PATH")
    assert "Traceback" not in r.stderr


def test_listening_beyond_loopback_warns_that_sessions_reach_it(engine, tmp_path):
    conf = tmp_path / "cubbi-service.yaml"
    conf.write_text("state:\n  database: server.db\n")
    log = tmp_path / "server.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([os.path.join(BIN, "cubbi-server"), "--config", str(conf),
                                 "--host", "0.0.0.0", "--port", "0"], stdout=subprocess.DEVNULL,
                                stderr=err, env=_env(), cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        text = ""
        while "warning" not in text and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the log, as serverproc does for "listening on"
            text = log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [ln for ln in text.splitlines() if "warning" in ln]
    assert lines and "0.0.0.0 is not loopback" in lines[0] and "gateway" in lines[0], text

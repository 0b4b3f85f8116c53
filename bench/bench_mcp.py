"""Time from `cubbi-create --mcp X` to the first successful MCP tool call
made from inside the session (not a test).

    python3 bench/bench_mcp.py [--runs N]

X is mcp-server-time (PyPI) added with `cubbi-mcp add` (its own container
behind mcp-proxy): cold (the server stopped, so the session starts it) and
warm (already running).  Beside them, the yardsticks: the same session and
call with the server run inside the session (`add-local`, stdio), and the
session alone (`--wait`, then a trivial command).  Each figure is the median
of N runs (3).  The session image is tests/fixtures/images/cubbi-test-mcp,
built once (reused by content hash, as the tests do); everything it makes
is named bm<PID>... and removed at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "images", "cubbi-test-mcp")
TAG = f"bm{os.getpid()}"


def env(cfg):
    e = dict(os.environ)
    e["PATH"] = os.path.join(ROOT, "bin") + os.pathsep + os.path.dirname(sys.executable) + \
        os.pathsep + e["PATH"]
    e["PYTHONPATH"] = ROOT
    e.update(CUBBI_CONFIG_DIR=cfg, CUBBI_SECRETS="file", NO_COLOR="1")
    e.pop("CUBBI_REMOTE", None)
    return e


def sh(e, *argv):
    r = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=900)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed: {r.stderr.strip()[-2000:]}")
    return r.stdout


def image(api, base):
    from cubbi_tools import imagedef, images

    defn = imagedef.load(FIXTURE)
    defn["source"] = "path"
    tag = "cubbi-test/mcp-time:" + images.digest(FIXTURE).split(":")[-1][:12]
    if images.inspect(api, tag) is None:
        images.build(api, defn, base=base, ca_certs=[HOST_CA], tag=tag, log=lambda t: None)
    return tag


def session_to_call(e, img, n, mcp=None):
    """Seconds from cubbi-create to the first tool call's answer (or to a
    trivial command without MCP)."""
    t0 = time.monotonic()
    argv = ["cubbi-create", "--no-connect", "--no-mount", "--wait", "--image", img, "-q",
            "--name", f"{TAG}-{n}", "-v", f"{ROOT}/tests:/cubbi-tests:ro"]
    sid = sh(e, *argv, *(["--mcp", mcp] if mcp else ["--no-mcp"])).strip()
    if mcp:
        out = sh(e, "cubbi-connect", sid, "--", "/opt/mcp/bin/python",
                 "/cubbi-tests/mcp_client.py", mcp)
        assert json.loads(out.splitlines()[0])["ok"], out
    else:
        sh(e, "cubbi-connect", sid, "--", "true")
    took = time.monotonic() - t0
    sh(e, "cubbi-close", sid)
    return took


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args(argv)
    from cubbi_tools import images
    from cubbi_tools.dockerapi import DockerAPI

    api = DockerAPI()
    base = images.ensure_base_os(api)
    img = image(api, base)
    cfg = tempfile.mkdtemp(prefix="cubbi-bench-mcp-")
    with open(os.path.join(cfg, "config.yaml"), "w") as fh:
        fh.write(f"images:\n  base: {base}\n  ca_cert: {HOST_CA}\n")
    e = env(cfg)
    net, local = f"{TAG}time", f"{TAG}local"
    sh(e, "cubbi-mcp", "add", net, img)
    sh(e, "cubbi-mcp", "add-local", local, "--", "mcp-server-time", "--local-timezone", "UTC")
    sh(e, "cubbi-mcp", "start", net, "-q")  # builds the proxy image if needed: not timed
    runs = {"cold": [], "warm": [], "local": [], "none": []}
    try:
        n = 0
        for _ in range(args.runs):
            for what in runs:
                n += 1
                if what == "cold":
                    sh(e, "cubbi-mcp", "stop", net, "-q")
                runs[what].append(session_to_call(e, img, n, {"cold": net, "warm": net,
                                                              "local": local}.get(what)))
    finally:
        subprocess.run(["cubbi-mcp", "remove", net, local], env=e, capture_output=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"cubbi-create --mcp X to the first tool call (median of {args.runs}, s):")
    print(f"  container server, cold (the session starts it)  {med['cold']:6.2f}")
    print(f"  container server, warm (already running)        {med['warm']:6.2f}")
    print(f"  yardstick: the same server in the session (add-local, stdio)  {med['local']:6.2f}")
    print(f"  yardstick: the session alone (--wait, then `true`)            {med['none']:6.2f}")


if __name__ == "__main__":
    main()

"""Session commands beside the engine's own CLI, in one run (not a test).

    bench/bench_session.sh [--sessions N] [--runs N]

Prints, side by side: `cubbi-ls --json` vs `docker ps --format json` with N
(20) sessions; `cubbi-create --no-connect` vs `docker run -d` of the same
image; `cubbi --help`; the dispatcher's overhead (`cubbi ls` vs `cubbi-ls`).
Times come from hyperfine when installed (no shell in between, -N), else
from a loop around fork/exec.

What runs is what a user gets from `./install`: the checkout installed
(not editable) into a throwaway virtualenv made from the interpreter named
in the header, whose executables start that interpreter directly (never a
pyenv shim: that alone costs ~90 ms a start; an editable install adds its
import hook, ~10 ms).  --checkout runs bin/ from the checkout instead.

It makes its sessions from a tag of its own (cubbi-bench/bb-PID), so their
names start with bb-PID-, and removes them and the tag at the end.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin")
BASE_IMAGE = "cubbi-test/busybox:latest"
TARGETS = {"ls": 6.0, "create": 2.0, "dispatch_ms": 30.0}


def sh(*argv, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed: {r.stderr.strip()}")
    return r.stdout


BINDIR = [BIN]  # where the cubbi executables come from (set in main)
CONFIG_DIR = tempfile.mkdtemp(prefix="cubbi-bench-config-")  # empty: defaults


def env():
    e = dict(os.environ)
    e["PATH"] = BINDIR[0] + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + e["PATH"]
    if BINDIR[0] == BIN:
        e["PYTHONPATH"] = ROOT
    e["NO_COLOR"] = "1"
    e["CUBBI_CONFIG_DIR"] = CONFIG_DIR
    e.pop("CUBBI_REMOTE", None)
    return e


def install(where):
    """The checkout installed as a user gets it: a virtualenv, not editable.
    Returns its bin directory, or None (and why) when pip cannot do it."""
    venv = os.path.join(where, "venv")
    r = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q",
                            "--disable-pip-version-check", ROOT], capture_output=True, text=True)
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["?"])[-1]
    return os.path.join(venv, "bin"), None


class Timer:
    def __init__(self, runs, warmup=2):
        self.runs = runs
        self.warmup = warmup
        self.hyperfine = shutil.which("hyperfine")

    def name(self):
        if self.hyperfine:
            v = sh(self.hyperfine, "--version").strip()
            return f"{v}, -N, {self.runs} runs"
        return f"fork/exec loop, {self.runs} runs"

    def time(self, argv_list, runs=None, warmup=None):
        """Mean and stddev in ms of each command (a list of argv)."""
        runs = runs or self.runs
        warmup = self.warmup if warmup is None else warmup
        if self.hyperfine:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                cmd = [self.hyperfine, "-N", "--style", "none", "--runs", str(runs),
                       "--warmup", str(warmup), "--export-json", out.name]
                cmd += [" ".join(_quote(a) for a in argv) for argv in argv_list]
                subprocess.run(cmd, check=True, env=env(), stdout=subprocess.DEVNULL)
                data = json.load(open(out.name))
            return [(r["mean"] * 1e3, (r["stddev"] or 0) * 1e3) for r in data["results"]]
        results = []
        for argv in argv_list:
            for _ in range(warmup):
                subprocess.run(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ts = []
            for _ in range(runs):
                t0 = time.perf_counter_ns()
                subprocess.run(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                ts.append((time.perf_counter_ns() - t0) / 1e6)
            mean = sum(ts) / len(ts)
            sd = (sum((t - mean) ** 2 for t in ts) / max(len(ts) - 1, 1)) ** 0.5
            results.append((mean, sd))
        return results


def _quote(arg):
    import shlex

    return shlex.quote(arg)


def docker_ps_json():
    """`docker ps --format json` (CLI 23+); older CLIs need '{{json .}}'."""
    out = sh("docker", "ps", "-n", "1", "--format", "json", check=False)
    if out.strip() and not out.lstrip().startswith("{"):
        return ["docker", "ps", "--format", "{{json .}}"]
    return ["docker", "ps", "--format", "json"]


def wait_healthy(prefix, n, timeout=60):
    """The sessions' first health check runs after 15 s: until then cubbi-ls
    also reads each initializing session's log tail.  Measure steady state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = sh("docker", "ps", "--filter", f"name=^cubbi-{prefix}", "--format", "{{.Status}}")
        if out.count("(healthy)") >= n:
            return True
        time.sleep(1)
    return False


def row(what, a, b=None, target=None):
    am, asd = a
    text = f"{what:<44} {am:8.1f} ± {asd:5.1f}"
    if b:
        bm, bsd = b
        ratio = am / bm if bm else float("inf")
        verdict = "" if target is None else ("  ok" if ratio <= target else "  MISSED")
        text += f"   {bm:8.1f} ± {bsd:5.1f}   {ratio:5.2f}x"
        if target is not None:
            text += f"  (target < {target:g}x){verdict}"
    print(text, flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description="cubbi session commands vs docker")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--create-runs", type=int, default=8)
    p.add_argument("--checkout", action="store_true",
                   help="run bin/ from the checkout instead of a fresh install")
    a = p.parse_args(argv)

    if "pyenv/shims" in sys.executable:
        sys.exit("bench: run on a real interpreter, not a pyenv shim")
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        sys.exit(f"bench: needs the test image {BASE_IMAGE}: run the tests once (tests/run)")
    tag = f"cubbi-bench/bb-{os.getpid()}:latest"
    prefix = f"bb-{os.getpid()}-"
    sh("docker", "tag", BASE_IMAGE, tag)
    timer = Timer(a.runs)
    workdir = tempfile.mkdtemp(prefix="cubbi-bench-")
    what = f"the checkout's bin/ ({BIN})"
    if not a.checkout:
        bindir, why = install(workdir)
        if bindir:
            BINDIR[0] = bindir
            what = "a fresh non-editable install in a throwaway virtualenv"
        else:
            what += f" (installing failed: {why})"
    client = sh("docker", "version", "--format", "{{.Client.Version}}").strip()
    server = sh("docker", "version", "--format", "{{.Server.Version}}").strip()
    print(f"interpreter: {sys.executable} (Python {sys.version.split()[0]}); cubbi: {what}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"docker: client {client}, engine {server}; timing: {timer.name()}")
    print(f"{'':<44} {'cubbi (ms)':>16}   {'docker (ms)':>16}   ratio")
    try:
        for i in range(a.sessions):
            sh(os.path.join(BINDIR[0], "cubbi-create"), "--image", tag, "--name", f"{prefix}{i:02d}",
               "--no-mount", "--no-connect", "-q", env=env())
        steady = wait_healthy(prefix, a.sessions)
        total = len(sh("docker", "ps", "-q").split())
        note = "" if steady else " (some still initializing)"
        ls, ps = timer.time([["cubbi-ls", "--json"], docker_ps_json()])
        row(f"list: {a.sessions} sessions, {total} containers{note}", ls, ps, TARGETS["ls"])

        # the dispatcher: cubbi SUB execs cubbi-SUB; measured while the
        # sessions are steady (before create adds initializing ones)
        via_help, direct_help, via_ls, direct_ls = timer.time(
            [["cubbi", "ls", "--help"], ["cubbi-ls", "--help"],
             ["cubbi", "ls", "-q"], ["cubbi-ls", "-q"]], runs=a.runs * 2)
        for label, v, d in (("dispatcher: cubbi ls --help / cubbi-ls --help", via_help, direct_help),
                            ("dispatcher: cubbi ls -q / cubbi-ls -q", via_ls, direct_ls)):
            overhead = v[0] - d[0]
            verdict = "ok" if overhead < TARGETS["dispatch_ms"] else "MISSED"
            print(f"{label:<44} {v[0]:8.1f} ± {v[1]:5.1f}   {d[0]:8.1f} ± {d[1]:5.1f}   "
                  f"+{overhead:.1f} ms (target < {TARGETS['dispatch_ms']:g} ms) {verdict}", flush=True)
        help_, dhelp = timer.time([["cubbi", "--help"], ["docker", "--help"]])
        row("help: cubbi --help / docker --help", help_, dhelp)

        # create: both make containers of the same image; names stay unique
        # by image tag (cubbi) and label (docker)
        create, run = timer.time([
            ["cubbi-create", "--no-connect", "--no-mount", "-q", "--image", tag],
            ["docker", "run", "-d", "--label", f"cubbi-bench={os.getpid()}", tag, "sleep", "3600"],
        ], runs=a.create_runs, warmup=1)
        row("create: cubbi-create --no-connect / run -d", create, run, TARGETS["create"])
    finally:
        # only what this run made: its name prefix and its label (an
        # ancestor filter would match everyone's containers of the same image)
        ids = sh("docker", "ps", "-aq", "--filter", f"name=^cubbi-{prefix}", check=False).split()
        ids += sh("docker", "ps", "-aq", "--filter", f"label=cubbi-bench={os.getpid()}",
                  check=False).split()
        if ids:
            sh("docker", "rm", "-f", *sorted(set(ids)), check=False)
        sh("docker", "rmi", tag, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(CONFIG_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Event latency of cubbi-events beside `docker events`, in one run (not a test).

    python3 bench/bench_events.py [--sessions 20]

Starts `cubbi-events --json` and, as the yardstick, `docker events` on the
same label, then creates --sessions sessions of the tests' busybox image
(made by `pytest tests/` once), waits for them to run, and closes them.
Each printed line is stamped when it arrives; its latency is that moment
minus the engine's own time of the event (the same clock: one host).
Prints p50/p99 per event kind for both, and the load average.  Its
sessions are named evb-PID-N and removed at the end.
"""

import argparse
import calendar
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "cubbi-test/busybox:latest"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def iso_ns(text):
    whole, _, frac = text.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10 ** 9 + \
        int((frac + "000000000")[:9])


def reader(proc, out, parse):
    for line in proc.stdout:
        now = time.time_ns()
        try:
            kind, when = parse(json.loads(line))
        except (ValueError, KeyError):
            continue
        if kind:
            out.append((kind, (now - when) / 1e6))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20)
    args = ap.parse_args(argv)
    env = dict(os.environ, PATH=os.path.join(ROOT, "bin") + os.pathsep
               + os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONPATH=ROOT, CUBBI_CONFIG_DIR=os.path.join("/tmp", f"evb-{os.getpid()}"))
    os.makedirs(env["CUBBI_CONFIG_DIR"], exist_ok=True)
    prefix = f"evb-{os.getpid()}"
    cubbi_seen, docker_seen = [], []
    cubbi = subprocess.Popen(["cubbi-events", "--json", "--filter", f"name={prefix}*"],
                             env=env, stdout=subprocess.PIPE, text=True)
    docker = subprocess.Popen(["docker", "events", "--format", "{{json .}}",
                               "--filter", "type=container",
                               "--filter", "label=cubbi.session=true"],
                              stdout=subprocess.PIPE, text=True)
    docker_kind = {"create": "created", "start": "initializing",
                   "health_status: healthy": "running", "destroy": "closed"}
    threading.Thread(target=reader, args=(cubbi, cubbi_seen,
                     lambda e: (e["event"], iso_ns(e["time"]))), daemon=True).start()
    threading.Thread(target=reader, args=(docker, docker_seen, lambda e: (
        docker_kind.get(e.get("Action")) if (e.get("Actor", {}).get("Attributes", {})
                                             .get("cubbi.session.name", "")
                                             .startswith(prefix)) else None,
        int(e["timeNano"]))), daemon=True).start()
    time.sleep(1)  # both streams subscribed
    ids = []
    try:
        for i in range(args.sessions):
            r = subprocess.run(["cubbi-create", "--image", IMAGE, "--name", f"{prefix}-{i}",
                                "--no-connect", "-q"], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"bench: create failed: {r.stderr.strip()}")
            ids.append(r.stdout.strip())
        deadline = time.time() + 60
        while sum(k == "running" for k, _ in cubbi_seen) < args.sessions and time.time() < deadline:
            time.sleep(0.2)
        subprocess.run(["cubbi-close", *ids], env=env, capture_output=True)
        deadline = time.time() + 30
        while sum(k == "closed" for k, _ in cubbi_seen) < args.sessions and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
    finally:
        subprocess.run(["cubbi-close", *ids], env=env, capture_output=True)
        cubbi.terminate()
        docker.terminate()
    print(f"{args.sessions} sessions, {os.cpu_count()} cores; latency = line printed - "
          "the engine's time of the event, ms")
    for kind in ("created", "initializing", "running", "closed"):
        c = [ms for k, ms in cubbi_seen if k == kind]
        d = [ms for k, ms in docker_seen if k == kind]
        note = " (docker: the health check, up to 15 s after the init)" if kind == "running" else ""
        print(f"{kind:<13} cubbi-events n={len(c):3} p50 {percentile(c, 50):8.1f} "
              f"p99 {percentile(c, 99):8.1f} | docker events n={len(d):3} "
              f"p50 {percentile(d, 50):8.1f} p99 {percentile(d, 99):8.1f}{note}")
    print("load average %.1f" % os.getloadavg()[0])


if __name__ == "__main__":
    main()

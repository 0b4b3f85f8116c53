#!/usr/bin/env python3
"""Log forwarding under load, in one run (not a test).

    python3 bench/bench_logfwd.py [--sessions 50] [--lines 10000]

A fluentd forward-protocol receiver (tests/fluentrecv.py) on loopback;
--sessions sessions of the tests' busybox image (made by `pytest tests/`
once) with logging.providers pointing at it; each prints --lines numbered
lines on its stdout at once (all sessions together).  Prints, per
session and in total, how many lines the collector got, in order or not,
how long until the last one arrived, and beside it the engine's own copy
(`cubbi-logs`, the yardstick: what Docker kept locally).  Lines the
collector lacks are what the non-blocking 4 MiB buffer dropped.  Its
sessions are named lfb-PID-N and removed at the end.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from fluentrecv import Receiver  # noqa: E402

IMAGE = "cubbi-test/busybox:latest"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--lines", type=int, default=10000)
    args = ap.parse_args(argv)
    recv = Receiver()
    cfg = tempfile.mkdtemp(prefix="lfb-config-")
    env = dict(os.environ, CUBBI_CONFIG_DIR=cfg, PYTHONPATH=ROOT,
               PATH=os.path.join(ROOT, "bin") + os.pathsep + os.path.dirname(sys.executable)
               + os.pathsep + os.environ["PATH"])
    subprocess.run(["cubbi-config", "set", "logging.providers",
                    f"[{{type: fluentd, url: tcp://127.0.0.1:{recv.port}}}]"], env=env, check=True)
    prefix = f"lfb-{os.getpid()}"
    recs = []
    try:
        for i in range(args.sessions):
            r = subprocess.run(["cubbi-create", "--image", IMAGE, "--name", f"{prefix}-{i}",
                                "--no-connect", "--wait", "--json"], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"bench: create failed: {r.stderr.strip()}")
            import json

            recs.append(json.loads(r.stdout.splitlines()[0]))
        t0 = time.monotonic()
        threads = [threading.Thread(target=subprocess.run, args=(
            ["docker", "exec", rec["container_id"], "sh", "-c",
             f"seq 1 {args.lines} > /proc/1/fd/1"],), kwargs={"check": True})
            for rec in recs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_written = time.monotonic() - t0
        want = args.sessions * args.lines

        def count(rs):
            return sum(1 for x in rs if x[2].get("source") == "stdout")

        last, seen = time.monotonic(), -1
        while True:  # until everything came, or nothing more for 10 s
            n = count(recv.wait_for(lambda rs: count(rs) >= want, 2))
            if n >= want:
                break
            if n != seen:
                seen, last = n, time.monotonic()
            elif time.monotonic() - last > 10:
                break
        t_all = time.monotonic() - t0
        per = {rec["id"]: [] for rec in recs}
        for _, _, record in recv.records:
            if record.get("source") == "stdout" and record.get("cubbi.session.id") in per:
                per[record["cubbi.session.id"]].append(record["log"])
        complete = sum(1 for lines in per.values()
                       if lines == [str(i) for i in range(1, args.lines + 1)])
        got = sum(len(v) for v in per.values())
        local = 0
        for rec in recs[:5]:
            r = subprocess.run(["cubbi-logs", rec["id"]], env=env, capture_output=True, text=True)
            local += sum(1 for line in r.stdout.splitlines() if line.isdigit())
        print(f"{args.sessions} sessions x {args.lines} lines, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"collector: {got}/{want} lines ({want - got} dropped), {complete} sessions complete "
              f"and in order; written in {t_written:.1f} s, last line {t_all:.1f} s after the start")
        print(f"engine's own copy (cubbi-logs, first 5 sessions): {local}/{5 * args.lines} lines")
    finally:
        ids = [rec["id"] for rec in recs]
        if ids:
            subprocess.run(["cubbi-close", *ids], env=env, capture_output=True)
        recv.stop()


if __name__ == "__main__":
    main()

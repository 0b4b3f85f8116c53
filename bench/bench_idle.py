"""What the idle watch costs an idle session (not a test).

    python3 bench/bench_idle.py [--seconds N] [--image IMAGE]

Two sessions of a small image (default: the tests' cubbi-test/busybox):
one with --idle-timeout 1h (a look every 30 s, also what every session
without a timeout does) and one with --idle-timeout 5s (a look every
second, the shortest tick).  Both are left unused for N seconds (default
30; the 5 s one is kept in use by an attached `sleep`, so it is not closed)
while the container's CPU account (cgroup v1 cpuacct, or v2 cpu.stat) is
read on the host before and after: the CPU time per look and per minute,
health checks included.  Runs bin/ from the checkout; removes its sessions."""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_session as B  # noqa: E402  (env, sh)


def cpu_ns(cid):
    for path, scale in ((f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1),
                        (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1000)):
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError:
            continue
        if scale == 1:
            return int(text)
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * scale
    sys.exit("bench: cannot read the container's CPU account under /sys/fs/cgroup")


def main(argv=None):
    p = argparse.ArgumentParser(description="the idle watch's CPU cost")
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--image", default="cubbi-test/busybox:latest")
    a = p.parse_args(argv)
    e = B.env()
    made = []
    try:
        rows = []
        for timeout, tick in (("1h", 30), ("5s", 1)):
            name = f"bench-idle-{os.getpid()}-{timeout}"
            out = subprocess.run(["cubbi-create", "-q", "--no-mount", "--no-connect", "--wait",
                                  "--image", a.image, "--name", name, "--idle-timeout", timeout],
                                 env=e, capture_output=True, text=True, check=True)
            sid = out.stdout.strip()
            made.append(sid)
            cid = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", f"cubbi-{name}"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            if tick == 1:  # in use (an attached process), so the 5 s one stays for the run
                subprocess.run(["docker", "exec", "-d", cid, "sleep", str(int(a.seconds) + 60)],
                               check=True)
            rows.append((timeout, tick, cid))
        start = {cid: cpu_ns(cid) for _, _, cid in rows}
        t0 = time.monotonic()
        time.sleep(a.seconds)  # the measurement window itself, not a synchronisation
        spent = time.monotonic() - t0
        print(f"idle watch, {spent:.0f} s unused, CPU of the whole session (health checks too):")
        for timeout, tick, cid in rows:
            used = (cpu_ns(cid) - start[cid]) / 1e6
            looks = max(spent / tick, 1)
            print(f"  --idle-timeout {timeout:>3} (a look every {tick:>2} s): "
                  f"{used:7.1f} ms CPU, {used / looks:5.2f} ms per look, "
                  f"{used * 60 / spent:6.1f} ms per minute ({used / spent / 10:.3f} % of a CPU)")
    finally:
        if made:
            subprocess.run(["cubbi-close", *made], env=e, capture_output=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Load on a cubbi-server, on loopback only, bounded in count and time.

  python3 bench/bench_server.py [--sessions 10] [--requests 2000] [--concurrency 32]
                                [--streams 50] [--lines 2000] [--max-seconds 60]

1. Starts a cubbi-server (temp database, free port on 127.0.0.1), issues a
   token, and creates --sessions sessions from the tiny busybox test image.
2. GET /sessions with --concurrency clients until --requests are done (or
   --max-seconds pass): requests/s, p50, p99; then the same load straight
   on the Docker API (GET /containers/json filtered on cubbi's label, over
   the unix socket: the very query the server makes), the floor the service
   stands on.
3. --streams clients follow the log of one session (GET .../logs?follow=1)
   while it prints --lines numbered lines; each must receive every line,
   once, in order.
Everything it made is removed at the end.
"""

import argparse
import http.client
import json
import os
import secrets
import statistics
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from serverproc import ServerProcess  # noqa: E402

from cubbi_tools.dockerapi import DockerAPI  # noqa: E402

IMAGE = "cubbi-test/busybox:latest"


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def load(call, requests, concurrency, max_seconds):
    """Run call() `requests` times over `concurrency` threads; latencies in ms."""
    lat, errors, lock = [], [], threading.Lock()
    left = [requests]
    stop_at = time.time() + max_seconds

    def worker():
        state = {}
        while True:
            with lock:
                if left[0] <= 0 or time.time() > stop_at:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                call(state)
            except Exception as exc:  # counted, reported
                with lock:
                    errors.append(repr(exc))
                state.clear()
                continue
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(dt)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": len(errors), "seconds": round(wall, 2),
            "rps": round(len(lat) / wall, 1), "p50_ms": round(percentile(lat, 50), 2),
            "p99_ms": round(percentile(lat, 99), 2), "first_error": errors[0] if errors else None}


def http_get(url, token):
    p = urllib.parse.urlsplit(url)

    def call(state):
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
        conn.request("GET", "/sessions", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:100]}")
        json.loads(body)
    return call


def docker_get(api):
    def call(state):
        api.containers(labels=["cubbi.session=true", "cubbi.owner=bench"])  # the server's query
    return call


def follow(url, token, sid, expect, results, idx, ready):
    p = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=120)
    conn.request("GET", f"/sessions/{sid}/logs?follow=1&tail=0",
                 headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    ready.release()
    got = []
    try:
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.strip():
                continue
            text = json.loads(line)["line"]
            if text.startswith("n "):
                got.append(int(text[2:]))
                if got[-1] == expect:
                    break
    except Exception as exc:
        results[idx] = ("error", repr(exc), got)
        return
    finally:
        conn.close()
    results[idx] = ("ok" if got == list(range(1, expect + 1)) else "lost", len(got), None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args(argv)

    import tempfile

    api = DockerAPI()
    api.inspect_image(IMAGE)  # made by the tests' busybox fixture (pytest tests/ once)
    work = tempfile.mkdtemp(prefix="cubbi-bench-")
    srv = ServerProcess(work, config_text="server:\n  heartbeat: 5\nstate:\n  database: server.db\n")
    srv.start(quiet=True)
    prefix = "bench" + secrets.token_hex(3)
    token = srv.token("bench")
    p = urllib.parse.urlsplit(srv.url)
    made = []
    try:
        def post(body):
            conn = http.client.HTTPConnection(p.hostname, p.port, timeout=120)
            conn.request("POST", "/sessions", body=json.dumps(body),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            rec = json.loads(resp.read())
            conn.close()
            if resp.status != 201:
                raise SystemExit(f"create failed: {rec}")
            made.append(rec["container_id"])
            return rec

        for i in range(args.sessions):
            post({"image": IMAGE, "name": f"{prefix}-{i}"})
        # steady state: every session healthy (a session still initializing
        # costs cubbi-ls one log read to tell its state)
        deadline = time.time() + 60
        while time.time() < deadline:
            recs = [x for x in api.containers(labels=["cubbi.session=true"])
                    if x["Id"] in made]
            if all("(healthy)" in x.get("Status", "") for x in recs):
                break
            time.sleep(1)
        print(f"server {srv.url}, {args.sessions} sessions, {os.cpu_count()} cores", flush=True)

        r = load(http_get(srv.url, token), args.requests, args.concurrency, args.max_seconds)
        print(f"GET /sessions (cubbi-server)     x{args.concurrency}: {r}", flush=True)
        d = load(docker_get(api), args.requests, args.concurrency, args.max_seconds)
        print(f"GET /containers/json (Docker API) x{args.concurrency}: {d}", flush=True)

        # a session that starts printing numbered lines 3 s after it is ready
        hook = (f"( sleep 3; i=0; while [ $i -lt {args.lines} ]; do i=$((i+1)); echo \"n $i\"; "
                "[ $((i % 200)) -eq 0 ] && sleep 0.05; done ) &\n")
        rec = post({"image": IMAGE, "name": f"{prefix}-lines",
                    "files": {"/cubbi/hooks/90-lines.sh": [hook, 0o755]}})
        results = [None] * args.streams
        ready = threading.Semaphore(0)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=follow, args=(srv.url, token, rec["id"], args.lines,
                                                         results, i, ready), daemon=True)
                   for i in range(args.streams)]
        for t in threads:
            t.start()
        for _ in threads:
            ready.acquire(timeout=30)
        for t in threads:
            t.join(timeout=args.max_seconds)
        wall = time.perf_counter() - t0
        ok = sum(1 for x in results if x and x[0] == "ok")
        bad = [x for x in results if not x or x[0] != "ok"]
        print(f"{args.streams} followed log streams x {args.lines} lines: {ok} complete, "
              f"{len(bad)} incomplete, {round(wall, 1)} s (incl. the 3 s start delay)"
              + (f"; first problem: {bad[0]}" if bad else ""), flush=True)
        return 0 if not bad and not r["errors"] else 1
    finally:
        for cid in made:
            try:
                api.remove(cid)
            except Exception:
                pass
        srv.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

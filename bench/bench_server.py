#!/usr/bin/env python3
"""Load on a cubbi-server, on loopback only, bounded in count and time.

  python3 bench/bench_server.py [--sessions 10] [--requests 2000] [--concurrency 32]
                                [--rounds 3] [--streams 50] [--lines 2000]
                                [--typists 20] [--keys 40] [--flood cat|yes]
                                [--max-seconds 60] [--skip list,streams,terminals]

1. Starts a cubbi-server (temp database, free port on 127.0.0.1), issues a
   token, and creates --sessions sessions from the tiny busybox test image.
2. GET /sessions with --concurrency clients until --requests are done (or
   --max-seconds pass): requests/s, p50, p99; then the same load straight
   on the Docker API (GET /containers/json filtered on cubbi's label, over
   the unix socket: the very query the server makes), the yardstick.  The
   two alternate, --rounds times (the machine is shared: one-off figures
   mean little); it prints each round, then the medians with their range,
   the ratio, the CPU the server spent per request and the load average,
   and whether the ratio meets issue 11's target (70% at 32 clients).
3. --streams clients follow the log of one session (GET .../logs?follow=1)
   while it prints --lines numbered lines; each must receive every line,
   once, in order.
4. Terminal fairness: --typists clients each type into their own WebSocket
   terminal (`cat` on a TTY), one byte at a time, and time the echo; alone,
   then while another user floods a terminal of their own (--flood cat: a
   non-TTY `cat` fed 64 KiB frames as fast as it takes them and drained as
   fast as it echoes; yes: `yes` output drained as fast as it comes).  The
   same, alternating, straight through the Engine API (exec with a TTY,
   the hijacked socket), the yardstick.  p50/p99 echo latency of the
   typists; the flooder runs in a process of its own.  Target (issue 11):
   the typists' p99 through cubbi-server with the flooder under 100 ms.
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
LIST_TARGET = 70  # % of the Docker API's GET /containers/json rate, at 32 clients
ECHO_TARGET = 100  # ms: the typists' p99 echo while another user floods a terminal


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


def cpu_seconds(pid):
    """utime + stime of a process (Linux /proc), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def spread(values):
    """median [min-max] of a list of numbers."""
    return (f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"
            if values else "n/a")


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


# -- terminals ------------------------------------------------------------
def ws_terminal(url, token, sid, cmd, tty):
    from cubbi_tools.wsclient import WebSocket

    q = urllib.parse.urlencode({"tty": "1" if tty else "0", "cmd": json.dumps(cmd)})
    return WebSocket(url.replace("http://", "ws://", 1) + f"/sessions/{sid}/connect?{q}",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)


class ServerTerminal:
    """A typist's terminal through cubbi-server: send(byte), echo() -> bytes."""

    def __init__(self, url, token, sid):
        self.ws = ws_terminal(url, token, sid, ["cat"], tty=True)

    def send(self, data):
        self.ws.send_binary(data)

    def echo(self):
        while True:
            msg = self.ws.recv()
            if msg is None:
                raise ConnectionError("the terminal closed")
            if isinstance(msg, bytes):
                return msg[1:]
            if json.loads(msg).get("type") in ("exit", "error"):
                raise ConnectionError(f"the terminal ended: {msg}")

    def close(self):
        self.ws.close()


class EngineTerminal:
    """The same straight through the Engine API: an exec with a TTY."""

    def __init__(self, api, cid):
        eid = api.exec_create(cid, ["cat"], tty=True)
        self.conn = api.exec_start(eid, tty=True)

    def send(self, data):
        self.conn.sendall(data)

    def echo(self):
        data = self.conn.read(65536)
        if not data:
            raise ConnectionError("the exec closed")
        return data

    def close(self):
        self.conn.close()


def typist(term, keys, lat, errors, ready, go):
    """Type keys bytes one at a time, each once the previous one echoed, a
    few ms apart (a fast typist); the round trip of each, in ms."""
    import random

    try:
        # the terminal is up once a byte comes back (the WebSocket opens
        # before the server has started the exec): untimed
        term.send(b"0")
        got = b""
        while b"0" not in got:
            got += term.echo()
    except Exception as exc:
        errors.append(repr(exc))
        return
    finally:
        ready.release()
    go.wait()
    try:
        for i in range(keys):
            key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
            t0 = time.perf_counter()
            term.send(key)
            got = b""
            while key not in got:
                got += term.echo()
            lat.append((time.perf_counter() - t0) * 1000)
            if os.environ.get("BENCH_TRACE") and lat[-1] > 100:
                sys.stderr.write(f"slow echo: key {i}, {lat[-1]:.0f} ms, at {t0:.2f}\n")
            time.sleep(random.uniform(0.01, 0.03))
    except Exception as exc:
        errors.append(repr(exc))


def flooder(kind, target, ready, stop, counter):
    """In a process of its own: flood one terminal until stop is set.
    target: ("server", url, token, sid) or ("engine", cid)."""
    import socket as socketmod

    try:
        if target[0] == "server":
            ws = ws_terminal(target[1], target[2], target[3],
                             ["cat"] if kind == "cat" else ["yes", "flood " * 10], tty=False)
            send, recv = ws.send_binary, ws.recv
        else:
            api = DockerAPI()
            eid = api.exec_create(target[1], ["cat"] if kind == "cat" else ["yes", "flood " * 10])
            conn = api.exec_start(eid)
            send, recv = conn.sendall, conn.read
    except Exception as exc:
        sys.stderr.write(f"flooder could not start: {exc!r}\n")
        ready.set()
        return
    block = os.urandom(65536)

    def writer():
        try:
            while not stop.is_set():
                send(block)
        except Exception:
            pass

    if kind == "cat":
        threading.Thread(target=writer, daemon=True).start()
    ready.set()
    try:
        while not stop.is_set():
            data = recv()
            if not data:
                break
            counter.value += len(data)
    except (OSError, socketmod.error):
        pass


def terminal_round(make_term, n, keys, flood_target, kind):
    """p50/p99 echo latency (ms) of n typists, with a flooder when
    flood_target is given; and the bytes the flooder moved per second."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    proc = None
    if flood_target:
        ready, stop, counter = ctx.Event(), ctx.Event(), ctx.Value("q", 0, lock=False)
        proc = ctx.Process(target=flooder, args=(kind, flood_target, ready, stop, counter),
                           daemon=True)
        proc.start()
        ready.wait(30)
        time.sleep(1)  # a benchmark, not a test: let the flood reach its pace
        c0 = counter.value
    terms = [make_term(i) for i in range(n)]
    lat, errors, ready, go = [], [], threading.Semaphore(0), threading.Event()
    threads = [threading.Thread(target=typist, args=(t, keys, lat, errors, ready, go),
                                daemon=True)
               for t in terms]
    for t in threads:
        t.start()
    for _ in threads:
        ready.acquire(timeout=60)
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join(timeout=120)
    wall = time.perf_counter() - t0
    for t in terms:
        t.close()
    rate = None
    if proc is not None:
        rate = (counter.value - c0) / wall / 1e6
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat),
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "flood_MBps": rate}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--typists", type=int, default=20)
    ap.add_argument("--keys", type=int, default=40, help="bytes each typist types per round")
    ap.add_argument("--flood", choices=("cat", "yes"), default="cat")
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: "
                    "list, streams, terminals")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import tempfile

    api = DockerAPI()
    api.inspect_image(IMAGE)  # made by the tests' busybox fixture (pytest tests/ once)
    work = tempfile.mkdtemp(prefix="cubbi-bench-")
    srv = ServerProcess(work, config_text=(
        "server:\n  heartbeat: 5\n"
        # the bench's own clients exceed a shared host's per-user caps on purpose
        f"  max_streams_per_user: {4 * args.streams}\n"
        f"  max_terminals_per_user: {8 * args.typists}\n"
        "state:\n  database: server.db\n"
        # the busybox test image is a local image
        "policy:\n  images:\n    any_local: true\n"))
    srv.start(quiet=True)
    prefix = "bench" + secrets.token_hex(3)
    token = srv.token("bench")
    p = urllib.parse.urlsplit(srv.url)
    made = []
    failed = False
    try:
        def post(body, tok=token):
            conn = http.client.HTTPConnection(p.hostname, p.port, timeout=120)
            conn.request("POST", "/sessions", body=json.dumps(body),
                         headers={"Authorization": f"Bearer {tok}",
                                  "Content-Type": "application/json"})
            resp = conn.getresponse()
            rec = json.loads(resp.read())
            conn.close()
            if resp.status != 201:
                raise SystemExit(f"create failed: {rec}")
            made.append(rec["container_id"])
            return rec

        def settle(ids):
            # steady state: every session healthy (a session still initializing
            # costs cubbi-ls one log read to tell its state)
            deadline = time.time() + 60
            while time.time() < deadline:
                recs = [x for x in api.containers(labels=["cubbi.session=true"])
                        if x["Id"] in ids]
                if len(recs) == len(ids) and all("(healthy)" in x.get("Status", "") for x in recs):
                    return
                time.sleep(1)

        sessions = [post({"image": IMAGE, "name": f"{prefix}-{i}"}) for i in range(args.sessions)]
        settle(made)
        print(f"server {srv.url}, {args.sessions} sessions, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

        if "list" not in skip:
            rs, ds, ratios, cpu = [], [], [], []
            for rnd in range(args.rounds):
                order = ("server", "docker") if rnd % 2 == 0 else ("docker", "server")
                for who in order:
                    if who == "server":
                        c0 = cpu_seconds(srv.proc.pid)
                        r = load(http_get(srv.url, token), args.requests, args.concurrency,
                                 args.max_seconds)
                        c1 = cpu_seconds(srv.proc.pid)
                        if c0 is not None and c1 is not None and r["requests"]:
                            cpu.append(1000 * (c1 - c0) / r["requests"])
                        print(f"GET /sessions (cubbi-server)     x{args.concurrency}: {r}",
                              flush=True)
                        failed |= bool(r["errors"])
                    else:
                        d = load(docker_get(api), args.requests, args.concurrency,
                                 args.max_seconds)
                        print(f"GET /containers/json (Docker API) x{args.concurrency}: {d}",
                              flush=True)
                rs.append(r["rps"])
                ds.append(d["rps"])
                ratios.append(100 * r["rps"] / d["rps"] if d["rps"] else 0)
            print(f"x{args.concurrency}, {args.rounds} rounds, median [min-max]: cubbi-server "
                  f"{spread(rs)} req/s, Docker API {spread(ds)} req/s, server/Docker "
                  f"{spread(ratios)} %; server CPU {spread(cpu)} ms/request; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            ratio = statistics.median(ratios)
            print(f"target (issue 11): GET /sessions x32 at {LIST_TARGET}% or more of the Docker "
                  f"API: {ratio:.1f}% -> {'met' if ratio >= LIST_TARGET else 'NOT MET'}"
                  + ("" if args.concurrency == 32 else f" (measured at x{args.concurrency})"),
                  flush=True)

        if "streams" not in skip:
            rec = post({"image": IMAGE, "name": f"{prefix}-lines"})
            settle([rec["container_id"]])
            results = [None] * args.streams
            ready = threading.Semaphore(0)
            t0 = time.perf_counter()
            threads = [threading.Thread(target=follow, args=(srv.url, token, rec["id"],
                                                             args.lines, results, i, ready),
                                        daemon=True)
                       for i in range(args.streams)]
            for t in threads:
                t.start()
            for _ in threads:
                ready.acquire(timeout=30)
            # numbered lines on the session's own output (its log), once every
            # follower is attached; straight through the engine, as root
            script = (f"i=0; while [ $i -lt {args.lines} ]; do i=$((i+1)); echo \"n $i\"; "
                      "[ $((i % 200)) -eq 0 ] && sleep 0.05; done > /proc/1/fd/1")
            eid = api.exec_create(rec["container_id"], ["sh", "-c", script], user="0",
                                  stdin=False)
            conn = api.exec_start(eid)
            for _ in conn.frames():
                pass
            conn.close()
            for t in threads:
                t.join(timeout=args.max_seconds)
            wall = time.perf_counter() - t0
            ok = sum(1 for x in results if x and x[0] == "ok")
            bad = [x for x in results if not x or x[0] != "ok"]
            print(f"{args.streams} followed log streams x {args.lines} lines: {ok} complete, "
                  f"{len(bad)} incomplete, {round(wall, 1)} s"
                  + (f"; first problem: {bad[0]}" if bad else ""), flush=True)
            failed |= bool(bad)

        if "terminals" not in skip and args.typists:
            ftoken = srv.token("flooder")  # another user floods a terminal of their own
            frec = post({"image": IMAGE, "name": f"{prefix}-flood"}, tok=ftoken)
            settle([frec["container_id"]])
            targets = {
                "cubbi-server": (lambda i: ServerTerminal(srv.url, token,
                                                          sessions[i % len(sessions)]["id"]),
                                 ("server", srv.url, ftoken, frec["id"])),
                "Engine API": (lambda i: EngineTerminal(api, sessions[i % len(sessions)]
                                                        ["container_id"]),
                               ("engine", frec["container_id"])),
            }
            figures = {(w, f): {"p50": [], "p99": [], "MBps": []}
                       for w in targets for f in (False, True)}
            for rnd in range(args.rounds):
                names = list(targets) if rnd % 2 == 0 else list(targets)[::-1]
                for who in names:
                    make, flood_target = targets[who]
                    for flood in (False, True):
                        t = terminal_round(make, args.typists, args.keys,
                                           flood_target if flood else None, args.flood)
                        fig = figures[(who, flood)]
                        fig["p50"].append(t["p50"])
                        fig["p99"].append(t["p99"])
                        if t["flood_MBps"] is not None:
                            fig["MBps"].append(t["flood_MBps"])
                        failed |= bool(t["errors"])
                        print(f"{args.typists} typists via {who}, "
                              f"{'with a ' + args.flood + ' flooder' if flood else 'alone'}: "
                              f"p50 {t['p50']:.1f} ms, p99 {t['p99']:.1f} ms ({t['n']} keys"
                              + (f", flood {t['flood_MBps']:.1f} MB/s" if flood else "")
                              + (f", {t['errors']} errors: {t['first_error']}"
                                 if t["errors"] else "") + ")", flush=True)
            for (who, flood), fig in figures.items():
                print(f"{args.typists} typists via {who:12} "
                      f"{'with a ' + args.flood + ' flooder' if flood else 'alone':18}, "
                      f"{args.rounds} rounds, median [min-max]: p50 {spread(fig['p50'])} ms, "
                      f"p99 {spread(fig['p99'])} ms"
                      + (f", flood {spread(fig['MBps'])} MB/s" if flood else ""), flush=True)
            p99 = statistics.median(figures[("cubbi-server", True)]["p99"])
            print(f"target (issue 11): p99 echo of {args.typists} typists with a flooder under "
                  f"{ECHO_TARGET} ms: {p99:.1f} ms -> {'met' if p99 < ECHO_TARGET else 'NOT MET'}"
                  + ("" if args.typists == 20 else f" (measured with {args.typists})"),
                  flush=True)
            print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        return 1 if failed else 0
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

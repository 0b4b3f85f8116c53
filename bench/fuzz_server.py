#!/usr/bin/env python3
"""API fuzzing of a cubbi-server, longer than CI's, on loopback only.

  python3 bench/fuzz_server.py [--cases 100] [--no-token-cases 25] [--seed N]

Starts a cubbi-server (temp database, free port on 127.0.0.1) on the local
Docker engine, issues a token, and runs schemathesis against the server's
own /openapi.json (tests/apifuzz.py, the driver CI's
tests/test_server_fuzz.py uses): --cases cases per operation and mode
(positive and negative) with the valid token, then --no-token-cases
without it.  Prints one line per operation and mode, the total case
count, every failure, and the seed (give --seed to replay a run).

Pass: 0 responses of 500 or above and 0 that break the document (status
code, content type, body); the exit status is 1 otherwise.  Fuzzed
sessions come from the busybox test image (cubbi-test/busybox:latest,
made by the test suite), each closed as soon as it is made; the fuzzer's
sessions are closed again at the end.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "pkgroot"))

import apifuzz  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

IMAGE = "cubbi-test/busybox:latest"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100,
                    help="cases per operation and mode, with a valid token (default 100)")
    ap.add_argument("--no-token-cases", type=int, default=25,
                    help="cases per operation and mode, without a token (default 25)")
    ap.add_argument("--seed", type=int, default=None, help="replay the run of this seed")
    args = ap.parse_args()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode:
        sys.exit(f"fuzz_server: no image {IMAGE}: run the tests once (tests/run -k fuzz) to make it")
    seed = args.seed if args.seed is not None else random.randrange(2 ** 32)
    work = tempfile.mkdtemp(prefix="cubbi-fuzz-")
    server = ServerProcess(work).start(quiet=True)
    total = apifuzz.Report()
    try:
        token = server.token("fuzzer")
        for tok, n, label in ((token, args.cases, "with a valid token"),
                              (None, args.no_token_cases, "without a token")):
            if n <= 0:
                continue
            print(f"-- {label}: up to {n} cases per operation and mode, seed {seed}", flush=True)
            report = apifuzz.fuzz(server.url, tok, n, IMAGE, seed=seed,
                                  progress=lambda line: print("  " + line, flush=True))
            print(f"{label}: {report.summary()}", flush=True)
            total.add(report)
        left = apifuzz.close_all(server.url, token)
        if left:
            print(f"closed {left} leftover fuzzed session(s)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal: {total.summary()}; seed {seed}")
    for line in total.failure_lines():
        print("FAIL " + line)
    ok = total.cases > 0 and total.server_errors == 0 and not total.failures
    print("PASS" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

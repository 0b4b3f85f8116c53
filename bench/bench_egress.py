"""What an egress allowlist costs (not a test).

    python3 bench/bench_egress.py [--runs N] [--requests M]

- create: `cubbi-create --wait --allow-host web1` (warm: the proxy image
  built) beside a plain `cubbi-create --wait` of the same image, median of
  N runs (3) each, and the difference;
- cold: the first use's extra, building the egress proxy image
  (data/egress-proxy: tinyproxy from Debian's mirror) on this base, timed
  once into a throwaway tag;
- request: one HTTPS request (curl, a new TCP connection and TLS handshake
  each) to a stand-in internet host from a session allowed only it (through
  its proxy, CONNECT) beside the same request from a plain session on the
  same network (direct): the median of M requests (20), curl's time_total.

The stand-in host is tests/fixtures/egress (web.py on the tools image the
tests build, reused by content hash); everything made is named
egress-bm<PID>... and removed at the end.
"""

import argparse
import hashlib
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
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "egress")
TAG = f"egress-bm{os.getpid()}"
BASE = "cubbi/base-os:bookworm"  # the tests' Debian base (made by them, or cubbi-image)


def env(cfg):
    e = dict(os.environ)
    e["PATH"] = os.path.join(ROOT, "bin") + os.pathsep + os.path.dirname(sys.executable) + \
        os.pathsep + e["PATH"]
    e["PYTHONPATH"] = ROOT
    e.update(CUBBI_CONFIG_DIR=cfg, NO_COLOR="1")
    e.pop("CUBBI_REMOTE", None)
    return e


def sh(*argv, e=None):
    r = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=900)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed: {r.stderr.strip()[-2000:]}")
    return r.stdout


def tools_image(base):
    tag = "egress-test/tools:" + hashlib.sha256(
        open(os.path.join(FIXTURE, "Dockerfile"), "rb").read() + base.encode()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode:
        sh("docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", tag,
           "-f", os.path.join(FIXTURE, "Dockerfile"), FIXTURE)
    return tag


def create(e, img, *extra):
    t = time.monotonic()
    out = sh("cubbi-create", "--no-connect", "--no-mount", "--wait", "--json", "--image", img,
             *extra, e=e)
    took = time.monotonic() - t
    return took, json.loads(out.splitlines()[-1])


def close(e, rec):
    sh("cubbi-close", rec["id"], e=e)


def request_times(e, rec, n):
    loop = (f"for i in $(seq {n}); do curl -sS -o /dev/null --cacert /certs/cert.pem "
            "-w '%{time_total} %{time_namelookup}\\n' https://web1/; done")
    out = sh("cubbi-connect", rec["id"], "--", "sh", "-c", loop, e=e)
    pairs = [tuple(float(x) for x in line.split()) for line in out.splitlines() if line.strip()]
    return [t for t, _ in pairs], [t - lookup for t, lookup in pairs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--base", default=BASE)
    args = ap.parse_args()
    from cubbi_tools import egress, imagedef, images
    from cubbi_tools.dockerapi import DockerAPI
    from cubbi_tools.engine import LocalEngine

    api = DockerAPI()
    img = tools_image(args.base)
    egress.proxy_image(LocalEngine(images={"base": args.base, "ca_certs": [HOST_CA]}))
    work = tempfile.mkdtemp(prefix=TAG)
    certs = os.path.join(work, "certs")
    os.makedirs(certs)
    os.chmod(work, 0o755)
    os.chmod(certs, 0o755)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
       "/CN=web1", "-addext", "subjectAltName=DNS:web1", "-keyout",
       os.path.join(certs, "key.pem"), "-out", os.path.join(certs, "cert.pem"))
    os.chmod(os.path.join(certs, "key.pem"), 0o644)
    cfg = os.path.join(work, "config")
    os.makedirs(cfg)
    net = f"{TAG}-out"
    with open(os.path.join(cfg, "config.yaml"), "w") as fh:
        fh.write(f"docker:\n  network: {net}\n")
    e = env(cfg)
    web = f"{TAG}-web1"
    made, recs = [], []
    try:
        sh("docker", "network", "create", net)
        made.append(("network", net))
        sh("docker", "run", "-d", "--name", web, "--network", net, "--network-alias", "web1",
           "-v", f"{FIXTURE}:/fixture:ro", "-v", f"{certs}:/certs:ro", img, "python3", "-u",
           "/fixture/web.py", "web1", "/certs/cert.pem", "/certs/key.pem")
        made.append(("container", web))
        for _, data in api.logs(web, follow=True, timestamps=False,
                                deadline=time.monotonic() + 30):
            if b"ready" in data:
                break
        vol = ["-v", f"{certs}:/certs:ro"]
        plain, fenced = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            took, rec = create(e, img, *vol)
            plain.append(took)
            close(e, rec)
            took, rec = create(e, img, *vol, "--allow-host", "web1")
            fenced.append(took)
            close(e, rec)
        defn = imagedef.load(os.path.join(ROOT, "cubbi_tools", "data", "egress-proxy"))
        defn["source"] = "builtin"
        t = time.monotonic()
        images.build(api, defn, base=args.base, ca_certs=[HOST_CA], tag=f"{TAG}/proxy:cold",
                     no_cache=True,
                     log=lambda text: None)
        cold = time.monotonic() - t
        made.append(("image", f"{TAG}/proxy:cold"))
        _, direct_rec = create(e, img, *vol)
        recs.append(direct_rec)
        _, fenced_rec = create(e, img, *vol, "--allow-host", "web1")
        recs.append(fenced_rec)
        direct, direct_nl = request_times(e, direct_rec, args.requests)
        proxied, proxied_nl = request_times(e, fenced_rec, args.requests)
        mp, mf = statistics.median(plain), statistics.median(fenced)
        md, mx = statistics.median(direct), statistics.median(proxied)
        print(f"engine {api.get('/version')['Version']}, {os.cpu_count()} CPUs; "
              f"medians of {args.runs} creates, {args.requests} requests")
        print(f"create --wait, plain (yardstick)       {mp:7.2f} s")
        print(f"create --wait --allow-host web1 (warm) {mf:7.2f} s   (+{mf - mp:.2f} s)")
        print("  runs, plain: " + " ".join(f"{x:.2f}" for x in plain)
              + "; with --allow-host: " + " ".join(f"{x:.2f}" for x in fenced))
        print(f"cold first use: building the proxy image {cold:5.1f} s   (once per host)")
        nd, nx = statistics.median(direct_nl), statistics.median(proxied_nl)
        print(f"HTTPS request, direct (yardstick)      {md * 1000:7.1f} ms   "
              f"({nd * 1000:.1f} ms after the name lookup)")
        print(f"HTTPS request, through the proxy       {mx * 1000:7.1f} ms   "
              f"({nx * 1000:.1f} ms after the name lookup; {(mx - md) * 1000:+.1f} ms, "
              f"{(nx - nd) * 1000:+.1f} ms after it)")
        print("(the session's own name lookup: web1 on a plain network, where the engine's "
              "DNS also asks outside; cubbi-egress on the internal one, where it does not)")
    finally:
        for rec in recs:
            subprocess.run(["cubbi-close", rec["id"]], env=e, capture_output=True)
        for kind, name in reversed(made):
            cmd = {"container": ["rm", "-f"], "network": ["network", "rm"],
                   "image": ["rmi", "-f"]}[kind]
            subprocess.run(["docker", *cmd, name], capture_output=True)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()

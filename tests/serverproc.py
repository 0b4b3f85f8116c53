#!/usr/bin/env python3
"""A real cubbi-server on loopback for tests: a temp SQLite database, a free
port, tokens issued with `cubbi-server token create`.

As a script it wraps a command (the bats suite's second run):
    python3 tests/serverproc.py [--oidc] bats tests/bats
starts a server, issues a token, adds it as remote `test` in the config dir
($CUBBI_CONFIG_DIR, made when unset), exports CUBBI_REMOTE=test and runs
the command; the server stops when the command ends, and its exit code is
the command's.  With --oidc the server signs users in through a real
OpenID provider on loopback (tests/oidcproc.py, 120 s access tokens) and
remote `test` is alice's sign-in (cubbi-remote login) instead of a token;
the environment's ad-hoc remote keeps an API token.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "bin")
# The checkout's packages first: cubbi_tools is ROOT/cubbi_tools, but the
# server package lives in ROOT/server and is installed as cubbi_server, so
# tests/pkgroot/cubbi_server (a link to ../../server) makes this checkout's
# server code the one that runs, whatever venv's editable install is used.
PYTHONPATH = [ROOT, os.path.join(HERE, "pkgroot")]


def _env(extra=None):
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(PYTHONPATH + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("CUBBI_REMOTE", None)
    env.update(extra or {})
    return env


def stop_process(proc, grace=10):
    """Terminate PROC (a Popen, or None), killing it after GRACE seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerProcess:
    def __init__(self, workdir, env=None, config_text=None):
        self.workdir = workdir
        self.config = os.path.join(workdir, "cubbi-service.yaml")
        with open(self.config, "w") as fh:
            fh.write(config_text or "server:\n  heartbeat: 1\n  max_body: 65536\n"
                                    "state:\n  database: server.db\n"
                                    "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n"
                                    # the tests' busybox images are local images; the
                                    # git servers of the project tests are on cubbi-network
                                    "policy:\n  images:\n    any_local: true\n"
                                    "    build: true\n"  # definitions built on first use
                                    "  networks: [cubbi-network]\n")
        self.env = _env({"TEST_PROJECT_KEY": "test-key-" + os.urandom(8).hex(), **(env or {})})
        self.proc = None
        self.url = None
        self.log = os.path.join(workdir, "server.log")

    @property
    def database(self):
        return os.path.join(self.workdir, "server.db")

    def start(self, timeout=20, quiet=False):
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "cubbi-server"), "--config", self.config, "--host", "127.0.0.1",
             "--port", str(getattr(self, "port", 0))] + (["--quiet"] if quiet else []),
            stdout=subprocess.DEVNULL, stderr=self._log, env=self.env, cwd=self.workdir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log, "rb") as fh:
                m = re.findall(rb"listening on (http://[\d.]+:(\d+))", fh.read())
            if m and (self.url is None or self.proc.poll() is None):
                self.url = m[-1][0].decode()
                self.port = int(m[-1][1])
                if self._healthy():
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"cubbi-server did not start:\n{open(self.log).read()}")

    def _healthy(self):
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def token(self, user):
        out = subprocess.run([os.path.join(BIN, "cubbi-server"), "token", "create", user,
                              "--config", self.config], capture_output=True, text=True,
                             env=self.env, cwd=self.workdir, check=True)
        self._keys = self._keys | set(self._user_keys())  # for cleanup, even once removed
        return out.stdout.strip()

    _keys = frozenset()

    def _user_keys(self):
        import sqlite3

        try:
            with sqlite3.connect(self.database) as db:
                return [row[0] for row in db.execute("SELECT key FROM users") if row[0]]
        except sqlite3.Error:
            return []

    def stop(self):
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()

    def cleanup(self):
        """Remove the users' session networks this server made and no
        container uses any more (each takes one of the engine's few address
        pools); called when a test is done with the server."""
        from cubbi_tools.service import user_network

        for key in self._keys | set(self._user_keys()):
            subprocess.run(["docker", "network", "rm", user_network(key)], capture_output=True)


class Client:
    """A JSON client of the server's HTTP API: call() returns (status, body)."""

    def __init__(self, url, token=None):
        import urllib.parse

        p = urllib.parse.urlsplit(url)
        self.host, self.port, self.token = p.hostname, p.port, token

    def call(self, method, path, body=None, raw=None, headers=None, token=...):
        import http.client
        import json

        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        hdrs = dict(headers or {})
        tok = self.token if token is ... else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type", "")
        assert "json" in ctype, (method, path, resp.status, ctype, text[:200])
        return resp.status, (json.loads(text) if text.strip() and "ndjson" not in ctype else text)


class Recorder:
    """A loopback HTTP server standing in for a remote: it records every
    request as it came over the wire (method, path, headers, body) and
    answers each with `answer` (status, JSON body): where did a token go,
    what did a client send?"""

    def __init__(self, answer=(200, {"sessions": []}), host="127.0.0.1"):
        import http.server
        import json
        import threading

        self.requests = []
        self.answer = answer  # may be changed between requests
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                n = int(self.headers.get("Content-Length") or 0)
                outer.requests.append({"method": self.command, "path": self.path,
                                       "headers": dict(self.headers.items()),
                                       "body": self.rfile.read(n) if n else b""})
                status, body = outer.answer
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def seen(self):
        """The Authorization header of each request, in order."""
        return [r["headers"].get("Authorization") for r in self.requests]

    def wire(self):
        """Every byte the clients sent that the handler saw: request lines,
        headers and bodies."""
        return b"".join(f"{r['method']} {r['path']}\n".encode()
                        + "".join(f"{k}: {v}\n" for k, v in r["headers"].items()).encode()
                        + r["body"] for r in self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv):
    oidc = bool(argv) and argv[0] == "--oidc"
    argv = argv[1:] if oidc else argv
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    work = tempfile.mkdtemp(prefix="cubbi-server-test-")
    provider = server = None
    auth = ""
    env_extra = {}
    if oidc:  # a real OpenID provider (tests/oidcproc.py); remote `test` signs in through it
        from oidcproc import Provider

        os.makedirs(os.path.join(work, "provider"))
        provider = Provider(os.path.join(work, "provider"), access_lifetime=120).start()
        auth = (f"auth:\n  provider: oidc\n  url: {provider.issuer}\n  client_id: cubbi-service\n"
                "  client_secret: ${OIDC_CLIENT_SECRET}\n  scopes: [openid, profile, email]\n")
        env_extra["OIDC_CLIENT_SECRET"] = provider.client_secret
    try:
        # sessions get this user's uid/gid, as local ones do (sessions.uid/gid)
        server = ServerProcess(work, env=env_extra, config_text=(
            f"server:\n  heartbeat: 2\nstate:\n  database: server.db\n"
            f"sessions:\n  uid: {os.getuid()}\n  gid: {os.getgid()}\n" + auth +
            "policy:\n  images:\n    any_local: true\n    build: true\n"
            "  networks: [cubbi-network]\n")).start()
        if provider:
            provider.register([server.url + "/auth/callback"])
        return _run(server, argv, provider)
    finally:
        if server:
            server.stop()
            server.cleanup()
        if provider:
            provider.stop()
        shutil.rmtree(work, ignore_errors=True)


def _run(server, argv, provider):
    work = server.workdir
    cfg = os.environ.get("CUBBI_CONFIG_DIR") or os.path.join(work, "client-config")
    os.makedirs(cfg, exist_ok=True)
    env = _env({"CUBBI_CONFIG_DIR": cfg})
    # an API token: for the environment's ad-hoc remote (CI-style), and
    # for remote `test` unless it signs in
    token = server.token(os.environ.get("USER") or "tester")
    subprocess.run([os.path.join(BIN, "cubbi-remote"), "add", "test", server.url]
                   + ([] if provider else ["--token", "-"]), input=token,
                   text=True, env=env, check=True, capture_output=True)
    if provider:  # alice signs in through the provider's forms ($BROWSER)
        r = subprocess.run([os.path.join(BIN, "cubbi-remote"), "login", "test"],
                           env={**env, "BROWSER": os.path.join(HERE, "fakebrowser.py"),
                                "FAKEBROWSER_USER": "alice", "CUBBI_AUTH_TIMEOUT": "60"},
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(f"serverproc: the OIDC sign-in failed: {r.stderr}")
            return 1
        sys.stderr.write(r.stderr)
    env["CUBBI_REMOTE"] = "test"
    # tests that make their own config dir still reach the server
    env["CUBBI_REMOTE_URL"] = server.url
    env["CUBBI_REMOTE_TOKEN"] = token
    env["CUBBI_TEST_SERVER_URL"] = server.url
    return subprocess.call(argv, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

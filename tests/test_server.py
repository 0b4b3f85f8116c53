"""The Cubbi Service against the real engine: a real cubbi-server on
127.0.0.1 (free port, temp SQLite), driven over HTTP and WebSocket, and
through the commands with -r.  Bad input, auth, isolation between users,
an engine that is down, clients that vanish mid-stream, restarts."""

import http.client
import json
import os
import socket
import sqlite3
import time
import urllib.parse

import pytest

from serverproc import ServerProcess

pytestmark = pytest.mark.engine


class Client:
    def __init__(self, url, token=None):
        p = urllib.parse.urlsplit(url)
        self.host, self.port, self.token = p.hostname, p.port, token

    def call(self, method, path, body=None, raw=None, headers=None, token=...):
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


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    srv = ServerProcess(str(tmp_path_factory.mktemp("server"))).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def alice(server):
    return Client(server.url, server.token("alice"))


@pytest.fixture(scope="module")
def bob(server):
    return Client(server.url, server.token("bob"))


@pytest.fixture
def remote_env(server, cubbi):
    """cubbi commands talking to the server as alice, through cubbi-remote add."""
    tok = server.token("alice")
    r = cubbi("cubbi-remote", "add", "srv", server.url, "--token", "-", input=tok,
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    return {"CUBBI_REMOTE": "srv", "CUBBI_SECRETS": "file"}


def _session(client, busybox_image, name, hook=None):
    body = {"image": busybox_image, "name": name}
    if hook:  # a setup hook: runs (as root) before the session reports ready
        body["files"] = {"/cubbi/hooks/90-test.sh": [hook, 0o755]}
    st, rec = client.call("POST", "/sessions", body)
    assert st == 201, rec
    st, rec = client.call("GET", f"/sessions/{rec['id']}?wait=60")
    assert st == 200 and rec["status"] == "running", rec
    return rec


# -- errors are JSON, with the right codes ------------------------------------
def test_health_needs_no_token_and_reports_the_engine(server):
    st, body = Client(server.url).call("GET", "/health")
    assert st == 200 and body["status"] == "ok" and body["engine"] == "ok"


def test_missing_or_wrong_token_is_401_on_every_endpoint(server):
    anon, wrong = Client(server.url), Client(server.url, "cubbi_000000000000_" + "0" * 64)
    junk = Client(server.url, "not-a-token")
    for method, path in [("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/sessions/x"),
                         ("DELETE", "/sessions/x"), ("GET", "/sessions/x/logs"),
                         ("POST", "/sessions/x/connect"), ("GET", "/images"),
                         ("GET", "/images/x"), ("GET", "/projects"), ("POST", "/projects"),
                         ("GET", "/projects/a/b"), ("PUT", "/projects/a/b"),
                         ("DELETE", "/projects/a/b")]:
        for c in (anon, wrong, junk):
            st, body = c.call(method, path, body={} if method in ("POST", "PUT") else None)
            assert st == 401 and body["kind"] == "auth", (method, path, st, body)


def test_unknown_routes_and_methods_are_json(server, alice):
    st, body = alice.call("GET", "/nope")
    assert st == 404 and body["status"] == 404
    st, body = alice.call("PATCH", "/sessions")
    assert st == 405 and body["status"] == 405


def test_malformed_non_object_and_mistyped_bodies_are_400(alice):
    for raw in (b"{bad", b"[1,2]", b"\xff\xfe", b'"x"'):
        st, body = alice.call("POST", "/sessions", raw=raw,
                              headers={"Content-Type": "application/json"})
        assert st == 400 and body["kind"] == "usage", (raw, body)
    for payload in ({"image": 5}, {"image": "x", "env": {"A": 1}}, {"image": "x", "ports": "80"},
                    {"name": "no-image"}, {"image": "x", "pids_limit": True}):
        st, body = alice.call("POST", "/sessions", payload)
        assert st == 400, (payload, body)


def test_oversized_body_is_413(alice):
    st, body = alice.call("POST", "/sessions", raw=b"{" + b" " * 70000 + b"}",
                          headers={"Content-Type": "application/json"})
    assert st == 413 and "too large" in body["error"]


def test_host_paths_from_a_client_are_refused(alice, busybox_image):
    st, body = alice.call("POST", "/sessions", {"image": busybox_image, "volumes": ["/:/host"]})
    assert st == 400 and "volume" in body["error"]
    st, body = alice.call("POST", "/sessions", {"image": busybox_image, "mount": "/etc"})
    assert st == 400 and "--mount" in body["error"]


def test_unknown_session_is_404_everywhere(alice):
    for method, path in [("GET", "/sessions/zzzz9999"), ("DELETE", "/sessions/zzzz9999"),
                         ("GET", "/sessions/zzzz9999/logs")]:
        st, body = alice.call(method, path)
        assert st == 404 and body["kind"] == "not_found", (method, path, body)
    st, body = alice.call("POST", "/sessions/zzzz9999/connect", {"command": ["true"]})
    assert st == 404


# -- one user's sessions are invisible to another -------------------------------
def test_another_users_session_is_404(server, alice, bob, busybox_image, prefix):
    rec = _session(alice, busybox_image, f"{prefix}-alice")
    assert rec["owner"] == "alice"
    sid = rec["id"]
    st, body = bob.call("GET", "/sessions?all=1")
    assert st == 200 and sid not in [r["id"] for r in body["sessions"]]
    for method, path in [("GET", f"/sessions/{sid}"), ("GET", f"/sessions/{rec['name']}"),
                         ("DELETE", f"/sessions/{sid}"), ("GET", f"/sessions/{sid}/logs")]:
        st, body = bob.call(method, path)
        assert st == 404, (method, path, body)
    st, body = bob.call("POST", f"/sessions/{sid}/connect", {"command": ["id"]})
    assert st == 404
    from cubbi_tools.remote import RemoteService

    with pytest.raises(Exception) as info:
        RemoteService("b", url=server.url, token=bob.token).connect(rec, ["id"], use_stdin=False)
    assert "no session" in str(info.value)
    # still alive for its owner
    st, body = alice.call("GET", f"/sessions/{sid}")
    assert st == 200 and body["status"] == "running"


def test_owner_comes_from_the_token_not_the_body(alice, engine, busybox_image, prefix):
    for labels in ({"cubbi.owner": "bob", "team": "x"}, {"cubbi.served": "x"},
                   {"cubbi.session": "true"}):
        st, body = alice.call("POST", "/sessions", {"image": busybox_image,
                                                    "name": f"{prefix}-own", "labels": labels})
        assert st == 400 and "cubbi.* labels are set by the service only" in body["error"], body
    st, rec = alice.call("POST", "/sessions", {
        "image": busybox_image, "name": f"{prefix}-own", "owner": "bob", "uid": 0,
        "labels": {"team": "x"}})
    assert st == 201, rec
    assert rec["owner"] == "alice"
    labels = engine.get(f"/containers/{rec['container_id']}/json")["Config"]["Labels"]
    assert labels["team"] == "x" and len(labels["cubbi.served"]) == 24, labels


def test_a_local_session_of_the_same_owner_name_is_not_served(server, cubbi, busybox_image,
                                                              prefix, tmp_path):
    """cubbi-create without -r labels cubbi.owner with the local account; a
    server user of that name must not reach it (it may mount a host folder)."""
    from cubbi_tools.commands.create import _owner

    (tmp_path / "f").write_text("host file\n")
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-local", "--json",
              "--mount", str(tmp_path), "--no-connect", "--wait", cwd=str(tmp_path))
    assert r.exit_code == 0, r
    (local,) = r.json()
    assert local["owner"] == _owner() and local["remote"] is None, local
    twin = Client(server.url, server.token(local["owner"]))
    st, body = twin.call("GET", "/sessions?all=1")
    assert st == 200 and local["id"] not in [x["id"] for x in body["sessions"]], body
    for ref in (local["id"], local["name"], local["container_id"][:12]):
        for method, path in [("GET", f"/sessions/{ref}"), ("GET", f"/sessions/{ref}?wait=5"),
                             ("GET", f"/sessions/{ref}/logs"), ("DELETE", f"/sessions/{ref}")]:
            st, body = twin.call(method, path)
            assert st == 404 and body["kind"] == "not_found", (method, path, body)
        st, body = twin.call("POST", f"/sessions/{ref}/connect",
                             {"command": ["sh", "-c", "echo x > /app/f"]})
        assert st == 404, body
    # the commands with -r: nothing listed, connect is "not found" (3)
    r = cubbi("cubbi-remote", "add", "twin", server.url, "--token", "-", input=twin.token,
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    env = {"CUBBI_SECRETS": "file"}
    r = cubbi("cubbi-ls", "-r", "twin", "--all", "-q", "--filter", f"name={prefix}*", env=env)
    assert r.exit_code == 0 and r.stdout == "", r
    for argv in (["cubbi-connect", "-r", "twin", local["name"], "--", "sh", "-c",
                  "echo x > /app/f"], ["cubbi-logs", "-r", "twin", local["id"]],
                 ["cubbi-close", "-r", "twin", local["id"]]):
        r = cubbi(*argv, env=env)
        assert r.exit_code == 3, (argv, r)
    assert (tmp_path / "f").read_text() == "host file\n"
    r = cubbi("cubbi-ls", "--all", "-q", "--filter", f"name={prefix}*")
    assert r.stdout.split() == [local["id"]], r  # still there, locally


# -- exec mode, logs ---------------------------------------------------------------
def test_exec_mode_separates_streams_and_passes_the_status(alice, busybox_image, prefix):
    rec = _session(alice, busybox_image, f"{prefix}-exec")
    st, out = alice.call("POST", f"/sessions/{rec['id']}/connect",
                         {"command": ["sh", "-c", "cat; echo oops >&2; id -u; exit 7"],
                          "stdin": "from stdin\n"})
    assert st == 200, out
    assert out == {"exit_code": 7, "stdout": "from stdin\n1000\n", "stderr": "oops\n"}


def _health(client):
    return client.call("GET", "/health", token=None)[1]


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_client_leaving_a_followed_log_stream_leaks_nothing(server, alice, busybox_image, prefix):
    rec = _session(alice, busybox_image, f"{prefix}-logs")
    before_fds = _fds(server.proc.pid)
    socks = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall((f"GET /sessions/{rec['id']}/logs?follow=1 HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {alice.token}\r\n\r\n").encode())
        data = b""
        while b"cubbi-init: ready" not in data:
            data += s.recv(4096)
        socks.append(s)
    assert _health(alice)["streams"] == 5
    for s in socks:
        s.close()
    deadline = time.time() + 10
    while time.time() < deadline and _health(alice)["streams"]:
        time.sleep(0.2)
    assert _health(alice)["streams"] == 0
    while time.time() < deadline and _fds(server.proc.pid) > before_fds:
        time.sleep(0.2)  # the last /health connection closing
    assert _fds(server.proc.pid) <= before_fds, os.listdir(f"/proc/{server.proc.pid}/fd")


def test_logs_tail_and_since(alice, busybox_image, prefix):
    rec = _session(alice, busybox_image, f"{prefix}-tail", hook="for i in 1 2 3; do echo line$i >&2; done\n")
    st, text = alice.call("GET", f"/sessions/{rec['id']}/logs?tail=3")
    lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    assert [x["line"] for x in lines] == ["line2", "line3", "cubbi-init: ready"], lines
    st, text = alice.call("GET", f"/sessions/{rec['id']}/logs?since={int(time.time()) + 60}")
    assert st == 200 and not text.strip()
    assert set(lines[0]) == {"session", "stream", "time", "line"}
    st, body = alice.call("GET", f"/sessions/{rec['id']}/logs?tail=-1")
    assert st == 400


# -- WebSocket terminal ----------------------------------------------------------
def test_websocket_terminal_is_a_real_tty_with_resize(server, alice, busybox_image, prefix):
    from cubbi_tools.remote import RemoteService

    rec = _session(alice, busybox_image, f"{prefix}-tty")
    svc = RemoteService("t", url=server.url, token=alice.token)
    ws = svc.websocket(rec, tty=True, size=(33, 101))
    ws.send_binary(b"stty size; tty; exit 5\n")
    out, code = b"", None
    while True:
        msg = ws.recv()
        if msg is None:
            break
        if isinstance(msg, bytes):
            out += msg[1:]
        else:
            ctl = json.loads(msg)
            if ctl["type"] == "exit":
                code = ctl["code"]
    assert b"33 101" in out, out
    assert b"/dev/pts/" in out, out
    assert code == 5
    assert _health(alice)["terminals"] == 0


# -- the engine down -----------------------------------------------------------------
def test_engine_down_is_503_with_a_clear_message(engine, tmp_path):
    srv = ServerProcess(str(tmp_path), env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    srv.start()
    try:
        c = Client(srv.url, srv.token("alice"))
        st, body = c.call("GET", "/sessions")
        assert st == 503 and body["kind"] == "engine"
        assert "Docker engine" in body["error"]
        st, body = c.call("GET", "/health", token=None)
        assert st == 200 and body["engine"] != "ok"
    finally:
        srv.stop()


# -- state: hashed tokens, encrypted credentials, restarts --------------------------
def test_secrets_at_rest_and_a_restart_loses_nothing(server, alice, busybox_image, prefix):
    canary = "ghp_canary" + os.urandom(6).hex()
    st, proj = alice.call("POST", "/projects", {"url": "git@example.com:team/private.git",
                                                "auth": "token", "token": canary})
    assert st == 201, proj
    assert proj["id"] == "example.com/team/private" and proj["auth"] == "token"
    assert canary not in json.dumps(proj)
    st, again = alice.call("GET", "/projects/example.com/team/private")
    assert st == 200 and canary not in json.dumps(again)
    rec = _session(alice, busybox_image, f"{prefix}-restart")
    secret_part = alice.token.rsplit("_", 1)[1]
    raw = open(server.database, "rb").read()
    for wal in (server.database + "-wal",):
        if os.path.exists(wal):
            raw += open(wal, "rb").read()
    assert canary.encode() not in raw and secret_part.encode() not in raw
    db = sqlite3.connect(server.database)
    assert db.execute("SELECT count(*) FROM projects WHERE secret IS NOT NULL").fetchone()[0] >= 1
    db.close()

    server.stop()
    server.start()
    st, body = alice.call("GET", "/sessions")
    assert st == 200 and rec["id"] in [r["id"] for r in body["sessions"]]
    st, body = alice.call("GET", "/projects")
    assert [p["id"] for p in body["projects"]] == ["example.com/team/private"]
    from cubbi_tools.serverstate import State

    state = State(server.database, server.env["TEST_PROJECT_KEY"])
    assert state.project("alice", "example.com/team/private", with_secret=True)["secret"] == canary


def test_projects_are_per_user(alice, bob):
    alice.call("POST", "/projects", {"url": "https://example.org/a/b"})
    st, body = bob.call("GET", "/projects/example.org/a/b")
    assert st == 404
    st, body = bob.call("DELETE", "/projects/example.org/a/b")
    assert st == 404
    st, body = alice.call("PUT", "/projects/example.org/a/b",
                          {"url": "https://example.org/a/b", "auth": "ssh_key"})
    assert st == 400 and "ssh_key" in body["error"]
    st, body = alice.call("DELETE", "/projects/example.org/a/b")
    assert st == 200 and body["removed"]


# -- the commands with -r --------------------------------------------------------------
def test_commands_work_unchanged_with_a_remote(cubbi, remote_env, busybox_image, prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-cli", "--json",
              "--wait", env=remote_env, cwd=str(tmp_path))
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["remote"] == "srv" and rec["owner"] == "alice" and rec["mount"] is None
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*", env=remote_env)
    assert ls.exit_code == 0, ls
    assert [x["id"] for x in ls.json()] == [rec["id"]]
    assert set(ls.json()[0]) >= {"id", "name", "image", "status", "created", "container_id",
                                 "project", "mount", "networks", "ports", "remote"}
    ex = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3",
               input="piped text\n", env=remote_env)
    assert (ex.exit_code, ex.stdout, ex.stderr) == (3, "PIPED TEXT\n", "err\n"), ex
    logs = cubbi("cubbi-logs", "--json", rec["id"], env=remote_env)
    assert logs.exit_code == 0 and any(x["line"] == "cubbi-init: ready" for x in logs.json()), logs
    # the dispatcher's -r and the shared switch give the same answer
    d = cubbi("cubbi", "-r", "srv", "ls", "-q", "--filter", f"name={prefix}*",
              env={"CUBBI_SECRETS": "file"})
    assert d.stdout.split() == [rec["id"]], d
    bad = cubbi("cubbi-create", "--image", busybox_image, "-v", f"{tmp_path}:/x", env=remote_env)
    assert bad.exit_code == 2 and "not available with a remote" in bad.stderr, bad
    gone = cubbi("cubbi-close", "nope-nope", env=remote_env)
    assert gone.exit_code == 3 and "Traceback" not in gone.stderr
    c = cubbi("cubbi-close", rec["id"], env=remote_env)
    assert c.exit_code == 0, c
    assert cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", env=remote_env).stdout == ""


def test_remote_errors_map_to_the_documented_exit_codes(cubbi, server, tmp_path):
    r = cubbi("cubbi-ls", "-r", "nowhere")
    assert r.exit_code == 3 and "cubbi-remote add" in r.stderr, r
    r = cubbi("cubbi-remote", "add", "bad", server.url, "--token", "cubbi_x_y",
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    r = cubbi("cubbi-ls", "-r", "bad", env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 5 and "token" in r.stderr, r
    r = cubbi("cubbi-ls", env={"CUBBI_REMOTE": "x", "CUBBI_REMOTE_URL": "http://127.0.0.1:9",
                               "CUBBI_REMOTE_TOKEN": "t"})
    assert r.exit_code == 4 and "cannot reach remote" in r.stderr, r


def test_cubbi_remote_list_default_remove(cubbi):
    env = {"CUBBI_SECRETS": "file"}
    assert cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:1", "--token", "-",
                 input="tok1\n", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "add", "local", "http://x", env=env).exit_code == 2
    assert cubbi("cubbi-remote", "add", "two", "ftp://x", env=env).exit_code == 2
    assert cubbi("cubbi-remote", "default", "one", env=env).exit_code == 0
    rows = cubbi("cubbi-remote", "list", "--json", env=env).json()
    assert rows == [{"name": "one", "url": "http://127.0.0.1:1", "default": True, "token": True}]
    cfg = (cubbi.config_dir / "config.yaml").read_text()
    assert "tok1" not in cfg
    # the default remote is used without -r; -r local goes back to the engine
    r = cubbi("cubbi-ls", env=env)
    assert r.exit_code == 4 and "remote 'one'" in r.stderr, r
    assert cubbi("cubbi-ls", "-r", "local", "-q", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "remove", "one", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "list", "--json", env=env).stdout == ""
    assert cubbi("cubbi-remote", "remove", "one", env=env).exit_code == 3


def test_openapi_document_matches_the_routes(tmp_path):
    from cubbi_server import openapi
    from cubbi_server.app import make_app
    from cubbi_tools.service import Service, load_config

    conf = load_config(None)
    conf["state"]["database"] = str(tmp_path / "db.sqlite")
    app = make_app(Service(conf), conf)
    import re

    routes = set()
    for r in app.routes:
        path = re.sub(r"<(\w+)(:\w+)?>", lambda m: "{" + ("id" if m.group(1) in ("ref", "pid")
                                                          else m.group(1)) + "}", r.rule)
        routes.add((path, r.method.lower()))
    documented = {(p, m) for p, ops in openapi.DOCUMENT["paths"].items() for m in ops}
    assert routes == documented


def test_image_and_project_commands_with_a_remote(cubbi, remote_env, tmp_path):
    local = cubbi("cubbi-image", "list", "--json", "--offline")
    remote = cubbi("cubbi-image", "list", "--json", env=remote_env)
    assert remote.exit_code == 0, remote
    assert {r["name"] for r in remote.json()} >= {r["name"] for r in local.json()}
    assert set(remote.json()[0]) >= set(local.json()[0])
    one = cubbi("cubbi-image", "-r", "srv", "show", "--json", local.json()[0]["name"],
                env={"CUBBI_SECRETS": "file"})
    assert one.exit_code == 0 and one.json()[0]["name"] == local.json()[0]["name"], one
    assert cubbi("cubbi-image", "show", "no-such-image", env=remote_env).exit_code == 3
    canary = "ghp_remote" + os.urandom(5).hex()
    r = cubbi("cubbi-project", "add", "https://git.example.net/t/repo.git", "--token", "-",
              "--json", input=canary + "\n", env=remote_env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["id"] == "git.example.net/t/repo" and rec["auth"] == "token"
    ls = cubbi("cubbi-project", "list", "--json", env=remote_env)
    assert "git.example.net/t/repo" in [p["id"] for p in ls.json()]
    assert canary not in ls.stdout + r.stdout + r.stderr
    assert cubbi("cubbi-project", "list", "--json").stdout == ""  # nothing stored locally
    rm = cubbi("cubbi-project", "remove", "git.example.net/t/repo", env=remote_env)
    assert rm.exit_code == 0, rm
    assert cubbi("cubbi-project", "show", "git.example.net/t/repo", env=remote_env).exit_code == 3


from test_cli_project import servers  # noqa: E402,F401  (real git servers on cubbi-network)


def test_a_project_stored_on_the_service_clones_with_its_token(cubbi, remote_env, servers, prefix):
    r = cubbi("cubbi-project", "add", servers["http_url"], "--token", "-",
              input=servers["token"], env=remote_env)
    assert r.exit_code == 0, r
    assert cubbi("cubbi-project", "list", "-q").stdout == ""  # not in the local store
    r = cubbi("cubbi-create", "--project", servers["http_url"], "--image", servers["client_image"],
              "--name", f"{prefix}-rproj", "--no-connect", "--wait", "--json", env=remote_env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    out = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
                "cat /app/README; stat -c %a /cubbi/project/token", env=remote_env)
    assert out.stdout.splitlines() == ["hello from the project", "600"], out
    assert servers["token"] not in json.dumps(rec)


def _admin(cubbi, server):
    """cubbi-server's admin commands on the test server's config and database."""
    from conftest import BIN

    def admin(*argv):
        return cubbi(os.path.join(BIN, "cubbi-server"), *argv, "--config", server.config,
                     env={"TEST_PROJECT_KEY": server.env["TEST_PROJECT_KEY"]})
    return admin


def test_admin_tokens_list_revoke(server, cubbi):
    admin = _admin(cubbi, server)
    r = admin("token", "create", "dora", "--label", "laptop", "--json")
    assert r.exit_code == 0, r
    (tok,) = r.json()
    c = Client(server.url, tok["token"])
    assert c.call("GET", "/sessions")[0] == 200
    listed = admin("token", "list", "dora", "--json")
    assert [t["id"] for t in listed.json()] == [tok["id"]] and tok["token"] not in listed.stdout
    assert admin("token", "revoke", tok["id"]).exit_code == 0
    assert c.call("GET", "/sessions")[0] == 401
    assert admin("token", "revoke", tok["id"]).exit_code == 3
    assert admin("token", "create").exit_code == 2
    assert admin("token", "create", "bad user!").exit_code == 2


def test_removing_a_user_closes_their_sessions_and_deletes_their_projects(
        server, cubbi, engine, busybox_image, prefix):
    admin = _admin(cubbi, server)
    user = f"gone-{prefix}"
    erin = Client(server.url, server.token(user))
    rec = _session(erin, busybox_image, f"{prefix}-erin")
    canary = "ghp_gone" + os.urandom(5).hex()
    st, proj = erin.call("POST", "/projects", {"url": "https://git.example.net/e/r.git",
                                               "auth": "token", "token": canary})
    assert st == 201, proj

    def rows():
        with sqlite3.connect(server.database) as db:
            return [db.execute(q, (user,)).fetchone()[0] for q in (
                "SELECT COUNT(*) FROM users WHERE name = ?",
                "SELECT COUNT(*) FROM tokens WHERE user = ?",
                "SELECT COUNT(*) FROM projects WHERE owner = ?")]

    def alive():
        return bool(engine.containers(all=True, labels=[f"cubbi.session.id={rec['id']}"]))

    # refused without --yes: nothing changes, the token still works
    r = admin("user", "remove", user)
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"cubbi-server: user {user} has 1 session and 1 project; to close and delete them "
        f"with the user, confirm with --yes: cubbi-server user remove {user} --yes"), r
    assert rows() == [1, 1, 1] and alive() and erin.call("GET", "/sessions")[0] == 200
    r = admin("user", "remove", user, "--yes")
    assert r.exit_code == 0 and r.stdout == "", r
    assert r.stderr.strip() == (
        f"cubbi-server: removed user {user}: 1 token; closed 1 session ({rec['id']}); "
        "deleted 1 project (git.example.net/e/r) with their credentials"), r
    assert canary not in r.stderr
    assert rows() == [0, 0, 0] and not alive()
    assert erin.call("GET", "/sessions")[0] == 401
    # a new token for the same name starts empty
    again = Client(server.url, server.token(user))
    assert again.call("GET", "/sessions?all=1") == (200, {"sessions": []})
    assert again.call("GET", "/projects") == (200, {"projects": []})
    # a user with nothing needs no --yes; an unknown one is 3
    r = admin("user", "remove", user, "--json")
    assert r.exit_code == 0 and r.json() == [{"user": user, "removed": True, "tokens": 1,
                                              "projects": [], "sessions": []}], r
    assert admin("user", "remove", user).exit_code == 3


def test_a_removed_users_leftover_session_is_not_the_new_users(server, busybox_image, prefix):
    """Even a session that outlived its user (made before the removal, or the
    close failed) is not inherited: its cubbi.served key was the old row's."""
    from cubbi_tools.serverstate import State

    user = f"heir-{prefix}"
    old = Client(server.url, server.token(user))
    rec = _session(old, busybox_image, f"{prefix}-heir")
    State(server.database, server.env["TEST_PROJECT_KEY"]).remove_user(user)  # no closing
    new = Client(server.url, server.token(user))
    assert new.call("GET", "/sessions?all=1") == (200, {"sessions": []})
    assert new.call("GET", f"/sessions/{rec['id']}")[0] == 404


def test_a_terminal_client_that_vanishes_leaves_no_process(server, alice, engine, busybox_image,
                                                           prefix):
    from cubbi_tools.remote import RemoteService

    rec = _session(alice, busybox_image, f"{prefix}-gone")

    def procs():
        top = engine.get(f"/containers/{rec['container_id']}/top", params={"ps_args": "-o pid,args"})
        return [p[-1] for p in top["Processes"]]

    before = len(procs())
    svc = RemoteService("t", url=server.url, token=alice.token)
    ws = svc.websocket(rec, tty=True, size=(24, 80))
    ws.send_binary(b"sleep 600\n")
    deadline = time.time() + 10
    while time.time() < deadline and not any("sleep 600" in p for p in procs()):
        time.sleep(0.2)
    assert any("sleep 600" in p for p in procs())
    assert _health(alice)["terminals"] == 1
    ws.sock.close()  # no closing handshake: the client just goes away
    deadline = time.time() + 15
    while time.time() < deadline and (_health(alice)["terminals"] or len(procs()) > before):
        time.sleep(0.3)
    assert _health(alice)["terminals"] == 0
    assert not any("sleep 600" in p for p in procs()), procs()


# -- review fixes: which remote gets which token, host paths, exit codes ---------------
class Recorder:
    """A loopback HTTP server that records the Authorization header of every
    request and answers an empty session list: where did a token go?"""

    def __init__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers.get("Authorization"))
                body = b'{"sessions": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_env_url_never_redirects_a_named_remote(cubbi, server, remote_env, busybox_image,
                                                prefix, tmp_path):
    rec_ = Recorder()
    try:
        trap = {"CUBBI_SECRETS": "file", "CUBBI_REMOTE_URL": rec_.url,
                "CUBBI_REMOTE_TOKEN": "env-token"}
        r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-named", "-q",
                  "--no-connect", env=remote_env, cwd=str(tmp_path))
        assert r.exit_code == 0, r
        sid = r.stdout.strip()
        # a configured NAME (by -r, CUBBI_REMOTE or the dispatcher) is its own URL and token
        for argv, extra in ((["cubbi-ls", "-r", "srv"], {}), (["cubbi-ls"], {"CUBBI_REMOTE": "srv"}),
                            (["cubbi", "-r", "srv", "ls"], {})):
            r = cubbi(*argv, "-q", "--filter", f"name={prefix}*", env={**trap, **extra})
            assert r.exit_code == 0 and r.stdout.split() == [sid], (argv, r)
        assert rec_.seen == []
        # no -r: the environment's ad-hoc remote, with its own token, before remote.default
        assert cubbi("cubbi-remote", "default", "srv", env=trap).exit_code == 0
        r = cubbi("cubbi-ls", "--json", env=trap)
        assert r.exit_code == 0 and r.stdout == "", r
        # an unconfigured NAME is the ad-hoc remote too
        r = cubbi("cubbi-ls", "-r", "adhoc", env=trap)
        assert r.exit_code == 0, r
        assert rec_.seen == ["Bearer env-token", "Bearer env-token"]
        # a URL without its token: no stored token is borrowed
        r = cubbi("cubbi-ls", env={"CUBBI_SECRETS": "file", "CUBBI_REMOTE_URL": rec_.url})
        assert r.exit_code == 5 and "CUBBI_REMOTE_TOKEN is not" in r.stderr, r
        assert len(rec_.seen) == 2
        # the pair pointing at the real server lists its sessions, not the local engine's
        pair = {"CUBBI_REMOTE_URL": server.url, "CUBBI_REMOTE_TOKEN": server.token("alice")}
        r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*", env=pair)
        assert r.exit_code == 0 and [(x["id"], x["remote"]) for x in r.json()] == \
            [(sid, server.url)], r
        # -r local is the local engine whatever the environment says
        r = cubbi("cubbi-ls", "-r", "local", "--json", "--filter", f"name={prefix}*", env=trap)
        assert r.exit_code == 0 and [(x["id"], x["remote"]) for x in r.json()] == [(sid, None)], r
        assert len(rec_.seen) == 2
    finally:
        rec_.close()


def test_remote_add_refuses_an_existing_name_and_bad_ports(cubbi):
    env = {"CUBBI_SECRETS": "file"}
    for url in ("http://h:99999", "http://h:0", "http://h:x", "http://:80", "https://"):
        r = cubbi("cubbi-remote", "add", "x", url, env=env)
        assert r.exit_code == 2 and "invalid URL" in r.stderr, (url, r)
    assert cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:1", "--token", "tok1",
                 env=env).exit_code == 0
    r = cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:2", "--token", "tok2", env=env)
    assert r.exit_code == 1, r
    assert r.stderr.strip() == ("cubbi-remote: remote one exists; use --force to replace it "
                                "or cubbi-remote remove one"), r
    rows = cubbi("cubbi-remote", "list", "--json", env=env).json()
    assert [(x["url"], x["token"]) for x in rows] == [("http://127.0.0.1:1", True)]
    # --force replaces the URL; the old token never follows it to the new URL
    r = cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:2", "--force", env=env)
    assert r.exit_code == 0 and "replaced remote one" in r.stderr, r
    rows = cubbi("cubbi-remote", "list", "--json", env=env).json()
    assert [(x["url"], x["token"]) for x in rows] == [("http://127.0.0.1:2", False)]
    assert cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:3", "-f", "--token", "-",
                 input="tok3\n", env=env).exit_code == 0
    store = (cubbi.config_dir / "secrets.yaml")
    text = store.read_text() if store.exists() else ""
    assert "tok1" not in text
    rows = cubbi("cubbi-remote", "list", "--json", env=env).json()
    assert [(x["url"], x["token"]) for x in rows] == [("http://127.0.0.1:3", True)]


def test_image_paths_are_never_read_on_the_server(server, alice, cubbi, remote_env, tmp_path):
    from cubbi_tools.remote import IMAGE_PATH_REFUSED

    for image in ("/etc", "/nonexistent/x", "./x", "../x", "~/x", "~root"):
        st, body = alice.call("POST", "/sessions", {"image": image})
        assert st == 400 and body["error"] == f"image {image!r}: {IMAGE_PATH_REFUSED}", body
    # a reference with a slash is a Docker reference: a directory of that name
    # on the server (its cwd holds one here) is never looked at
    tool = os.path.join(server.workdir, "probe", "tool")
    os.makedirs(tool)
    open(os.path.join(tool, "cubbi_image.yaml"), "w").write("name: tool\n")
    answers = [alice.call("POST", "/sessions", {"image": i}) for i in ("probe/tool", "probe/none")]
    assert [a[0] for a in answers] == [404, 404], answers
    assert answers[0][1]["error"].replace("tool", "none") == answers[1][1]["error"]
    for name in (".", "..", "probe"):
        st, body = alice.call("GET", "/images/" + name)
        assert st == 404 and "cubbi_image.yaml" not in body["error"], (name, body)
    # the client refuses an image directory before sending anything
    defn = tmp_path / "mytool"
    defn.mkdir()
    (defn / "cubbi_image.yaml").write_text("name: mytool\n")
    for image in (str(defn), "./mytool", "./not-here"):
        r = cubbi("cubbi-create", "-i", image, "--no-connect", env=remote_env, cwd=str(tmp_path))
        assert r.exit_code == 2 and IMAGE_PATH_REFUSED in r.stderr, (image, r)


def test_an_explicit_mount_is_refused_on_a_remote(cubbi, remote_env, busybox_image, prefix,
                                                  tmp_path):
    for argv in (["cubbi-create", "-m", str(tmp_path)], ["cubbi-create", "--mount", "."],
                 ["cubbi", str(tmp_path)]):
        r = cubbi(*argv, "--image", busybox_image, "--name", f"{prefix}-m", "--no-connect",
                  env=remote_env, cwd=str(tmp_path))
        assert r.exit_code == 2 and "--mount is not available with a remote" in r.stderr, \
            (argv, r)
    r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", env=remote_env)
    assert r.stdout == "", r


def _wait_procs(engine, cid, text, present, timeout=15):
    """Whether a process whose command line holds text is (present=True) or
    is not running in container cid, within timeout seconds."""
    deadline = time.time() + timeout
    while True:
        found = any(text in p[-1] for p in engine.get(f"/containers/{cid}/top")["Processes"])
        if found == present or time.time() > deadline:
            return found == present
        time.sleep(0.2)


def test_remote_connect_exit_codes_match_local(cubbi, remote_env, busybox_image, prefix,
                                               tmp_path, engine):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-codes", "--json",
              "--no-connect", "--wait", env=remote_env, cwd=str(tmp_path))
    assert r.exit_code == 0, r
    sid, cid = r.json()[0]["id"], r.json()[0]["container_id"]
    # the reader closes stdout: 141, nothing on stderr, the command stopped
    r = cubbi("bash", "-c", f'cubbi-connect {sid} -- seq 1 100000000 | head -1; '
                            'echo "status ${PIPESTATUS[0]}"', env=remote_env)
    assert r.stdout == "1\nstatus 141\n" and r.stderr == "", r
    assert _wait_procs(engine, cid, "seq 1", False, timeout=0)  # stopped before the exit
    # a client whose stdin never ends: the command's status once it ended
    r = cubbi("bash", "-c", f"yes | cubbi-connect {sid} -- echo done; "
                            'echo "status ${PIPESTATUS[1]}"', env=remote_env, timeout=60)
    assert r.stdout == "done\nstatus 0\n" and r.stderr == "", r
    r = cubbi("bash", "-c", f"yes | cubbi-connect {sid} -- sh -c 'head -c 100000 >/dev/null; "
                            "exit 4'; echo \"status ${PIPESTATUS[1]}\"", env=remote_env,
              timeout=60)
    assert r.stdout == "status 4\n" and r.stderr == "", r
    # Ctrl-C: 130, and the command is stopped in the session, as locally
    import signal
    import subprocess

    from conftest import cubbi_env

    env = cubbi_env({**remote_env, "CUBBI_CONFIG_DIR": str(cubbi.config_dir)})
    p = subprocess.Popen(["cubbi-connect", sid, "--", "sh", "-c", "sleep 30; exit 3"], env=env,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert _wait_procs(engine, cid, "sleep 30", True)
    p.send_signal(signal.SIGINT)
    assert p.wait(10) == 130
    assert _wait_procs(engine, cid, "sleep 30", False, timeout=0)


def test_a_project_with_an_ssh_key_clones_over_ssh_as_the_local_command_stores_it(alice):
    """cubbi-project -r R add host/x/y --ssh-key K: the service stores the
    ssh clone URL (git@host:x/y.git), as the local command does, so the
    session uses the key; a token keeps https."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    st, rec = alice.call("POST", "/projects", {"url": "git.example/team/keyed", "auth": "ssh_key",
                                               "ssh_key": key})
    assert st == 201 and rec["url"] == "git@git.example:team/keyed.git", rec
    st, rec = alice.call("POST", "/projects", {"url": "ssh://git@git.example/team/tok",
                                               "auth": "token", "token": "t0ken"})
    assert st == 201 and rec["url"] == "https://git.example/team/tok", rec
    from cubbi_tools import projects

    assert projects.clone_url("git.example/team/keyed", "ssh_key") == \
        ("git.example/team/keyed", "git@git.example:team/keyed.git")

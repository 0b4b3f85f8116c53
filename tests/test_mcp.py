"""cubbi-mcp and sessions with MCP servers (issue 13).

Engine-free: the definitions and their secrets, the bad-input contract, and
each built-in tool's MCP config as the session hook writes it (the hook's
own shell functions, run here on a fake home).  On the engine: a real stdio
server from PyPI (mcp-server-time) behind mcp-proxy, and the same server run
inside the session, reached by a real MCP client (the mcp SDK) from inside
a session; a server that exits at once; a remote that does not answer.
"""

import json
import os
import subprocess
import tomllib

import pytest
import yaml

from conftest import ROOT, one_line_error

HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "images", "cubbi-test-mcp")
TESTS = os.path.join(ROOT, "tests")


# -- definitions -------------------------------------------------------------
def test_add_list_show_remove_keep_secrets_in_the_store(cubbi):
    env = {"CUBBI_SECRETS": "file"}
    r = cubbi("cubbi-mcp", "add", "time", "some/image", "-e", "TZ=UTC", "-e", "API_KEY=canary-k1",
              "--default", "--json", env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["env"] == {"TZ": "UTC", "API_KEY": "********"} and rec["default"] is True
    r = cubbi("cubbi-mcp", "add-remote", "docs", "https://mcp.example.com/mcp",
              "--header", "Authorization=Bearer canary-h1", "--header", "X-Team=blue", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-mcp", "add-local", "clock", "-e", "TZ=UTC", "--", "mcp-server-time",
              "--local-timezone", "UTC", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-mcp", "list", "--json", env=env)
    recs = {x["name"]: x for x in r.json()}
    assert set(recs) == {"time", "docs", "clock"}
    assert recs["docs"]["headers"] == {"Authorization": "********", "X-Team": "blue"}
    assert recs["clock"]["command"] == "mcp-server-time" and recs["clock"]["args"] == [
        "--local-timezone", "UTC"]
    assert "canary" not in r.stdout + r.stderr
    text = (cubbi.config_dir / "mcp.yaml").read_text()
    assert "canary" not in text and "X-Team: blue" in text
    assert "canary-k1" in (cubbi.config_dir / "secrets.yaml").read_text()
    assert "mcp:\n  - time" in (cubbi.config_dir / "config.yaml").read_text()
    assert cubbi("cubbi-mcp", "list", "-q", env=env).stdout.split() == ["clock", "docs", "time"]

    # a duplicate is refused without --force; --force replaces it and its secrets
    r = cubbi("cubbi-mcp", "add", "time", "other/image", env=env)
    one_line_error(r, 1, "time exists", "--force")
    r = cubbi("cubbi-mcp", "add", "time", "other/image", "--force", "--no-default", env=env)
    assert r.exit_code == 0, r
    assert "canary-k1" not in (cubbi.config_dir / "secrets.yaml").read_text()
    assert "mcp" not in (cubbi.config_dir / "config.yaml").read_text().split("defaults:")[-1]

    # names from stdin, secrets go with their server
    r = cubbi("cubbi-mcp", "remove", input="docs\nclock\n", env=env)
    assert r.exit_code == 0, r
    assert "canary-h1" not in (cubbi.config_dir / "secrets.yaml").read_text()
    one_line_error(cubbi("cubbi-mcp", "show", "docs", env=env), 3, "no MCP server 'docs'")


@pytest.mark.parametrize("argv, words", [
    (["add", "Bad Name", "img"], ["invalid MCP server name"]),
    (["add", "x", "img", "-e", "NOEQUALS"], ["-e", "KEY=VALUE"]),
    (["add-remote", "x", "ftp://host/mcp"], ["invalid MCP server URL"]),
    (["add-remote", "x", "https://user:pw@host/mcp"], ["must not hold a password"]),
    (["add-remote", "x", "https://host/mcp", "--header", "bad header=1"], ["--header"]),
    (["add-local", "x"], ["give the server's command"]),
    (["start", "nosuch"], ["no MCP server 'nosuch'"]),
])
def test_bad_input_is_one_line(cubbi, argv, words):
    r = cubbi("cubbi-mcp", *argv)
    one_line_error(r, 3 if "start" in argv else 2, *words)


def test_unknown_mcp_name_stops_create_before_anything(cubbi):
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "no-such-image-x",
              "--mcp", "nosuch", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    one_line_error(r, 3, "no MCP server 'nosuch'")
    r = cubbi("cubbi-create", "--mcp", "a", "--no-mcp")
    one_line_error(r, 2, "exclude each other")


def test_start_of_a_remote_or_local_server_is_refused(cubbi):
    cubbi("cubbi-mcp", "add-remote", "docs", "https://mcp.example.com/mcp")
    r = cubbi("cubbi-mcp", "start", "docs", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    one_line_error(r, 2, "runs elsewhere")


# -- each tool's config, as the session hook writes it --------------------------
def _doc():
    from cubbi_tools import mcp

    servers = [("time", {"kind": "container", "image": "i", "env": {"API_KEY": "k"}},
                {"host": "cubbi-mcp-time"}),
               ("docs", {"kind": "remote", "url": "https://mcp.example.com/mcp",
                         "headers": {"Authorization": "Bearer canary-h2"}}, None),
               ("clock", {"kind": "local", "command": "mcp-server-time",
                          "args": ["--local-timezone", "UTC"], "env": {"TZ": "UTC"}}, None)]
    return mcp.session_setup(servers)


def _run_hook(tmp_path, fmt, spec=None, runs=1):
    """The image's 65-mcp.sh as cubbi-init sources it, on a fake home."""
    from cubbi_tools import mcptools

    doc, env = _doc()
    files = mcptools.session_files(spec or {"format": fmt}, doc, env, fmt)
    root = tmp_path / "cubbi-mcp"
    root.mkdir(exist_ok=True)
    for path, (text, _) in files.items():
        if path != "/cubbi/hooks/65-mcp.sh":
            (root / os.path.basename(path)).write_text(text)
    hook = files["/cubbi/hooks/65-mcp.sh"][0].replace("/cubbi/mcp/", f"{root}/").replace(
        "/cubbi/mcp ", f"{root} ")
    prelude = ('say() { echo "say: $*" >&2; }\nfail() { echo "FAIL: $*" >&2; exit 9; }\n'
               'as_user() { "$@"; }\n')
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    for _ in range(runs):
        r = subprocess.run(["sh", "-c", prelude + hook], capture_output=True, text=True,
                           env={"PATH": os.environ["PATH"], "HOME": str(home),
                                "CUBBI_UID": str(os.getuid()), "CUBBI_GID": str(os.getgid())})
        assert r.returncode == 0, r.stderr
    return home, r.stderr


NAMES = {"time", "docs", "clock"}


def test_claude_code_config_names_every_server_and_keeps_the_rest(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"numStartups": 3, "mcpServers": {"mine": {
        "type": "stdio", "command": "x"}}}))
    home, _ = _run_hook(tmp_path, "claude-code")
    data = json.loads((home / ".claude.json").read_text())
    assert data["numStartups"] == 3 and set(data["mcpServers"]) == NAMES | {"mine"}
    assert data["mcpServers"]["time"] == {"type": "http", "url": "http://cubbi-mcp-time:8080/mcp",
                                          "headers": {}}
    assert data["mcpServers"]["docs"]["headers"] == {"Authorization": "Bearer canary-h2"}
    assert data["mcpServers"]["clock"]["env"] == {"TZ": "UTC"}
    assert oct((home / ".claude.json").stat().st_mode & 0o777) == "0o600"


def test_opencode_config_refers_to_session_variables(tmp_path):
    home, _ = _run_hook(tmp_path, "opencode")
    data = json.loads((home / ".config/opencode/opencode.json").read_text())
    assert set(data["mcp"]) == NAMES
    assert data["mcp"]["docs"] == {"type": "remote", "url": "https://mcp.example.com/mcp",
                                   "enabled": True,
                                   "headers": {"Authorization": "{env:CUBBI_MCP_DOCS_H_AUTHORIZATION}"}}
    assert data["mcp"]["clock"]["command"] == ["mcp-server-time", "--local-timezone", "UTC"]
    assert "canary" not in (home / ".config/opencode/opencode.json").read_text()


def test_codex_config_is_toml_and_its_block_is_replaced_each_session(tmp_path):
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex/config.toml").write_text('model = "o3"\n\n[mcp_servers.mine]\ncommand = "x"\n')
    home, _ = _run_hook(tmp_path, "codex", runs=2)
    text = (home / ".codex/config.toml").read_text()
    data = tomllib.loads(text)
    assert data["model"] == "o3" and set(data["mcp_servers"]) == NAMES | {"mine"}
    assert data["mcp_servers"]["docs"]["env_http_headers"] == {
        "Authorization": "CUBBI_MCP_DOCS_H_AUTHORIZATION"}
    assert data["mcp_servers"]["clock"]["args"] == ["--local-timezone", "UTC"]
    assert text.count("# >>> cubbi mcp") == 1 and "canary" not in text


def test_goose_extensions_are_replaced_not_duplicated(tmp_path):
    home = tmp_path / "home"
    (home / ".config/goose").mkdir(parents=True)
    (home / ".config/goose/config.yaml").write_text(
        "GOOSE_PROVIDER: openai\nextensions:\n  developer:\n    enabled: true\n    type: builtin\n"
        "    name: developer\n  time:\n    enabled: false\n    type: stdio\n    cmd: old\n"
        "GOOSE_MODEL: gpt\n")
    home, _ = _run_hook(tmp_path, "goose", runs=2)
    data = yaml.safe_load((home / ".config/goose/config.yaml").read_text())
    assert data["GOOSE_PROVIDER"] == "openai" and data["GOOSE_MODEL"] == "gpt"
    ext = data["extensions"]
    assert set(ext) == NAMES | {"developer"}
    assert ext["time"]["type"] == "streamable_http" and ext["time"]["enabled"] is True
    assert ext["time"]["uri"] == "http://cubbi-mcp-time:8080/mcp"
    assert ext["clock"]["cmd"] == "mcp-server-time" and ext["clock"]["envs"] == {"TZ": "UTC"}
    assert ext["docs"]["headers"] == {"Authorization": "Bearer canary-h2"}


def test_goose_config_made_when_absent(tmp_path):
    home, _ = _run_hook(tmp_path, "goose")
    data = yaml.safe_load((home / ".config/goose/config.yaml").read_text())
    assert set(data["extensions"]) == NAMES


def test_aider_says_it_has_no_mcp_support(tmp_path):
    from cubbi_tools import imagedef

    spec = imagedef.load(os.path.join(ROOT, "images", "aider"))["mcp"]
    home, err = _run_hook(tmp_path, "none", spec=spec)
    assert "aider has no MCP support" in err and not any(home.iterdir())


def test_every_builtin_image_declares_its_mcp_format():
    from cubbi_tools import imagedef

    want = {"goose": "goose", "claude-code": "claude-code", "opencode": "opencode",
            "codex": "codex", "aider": "none"}
    for name, fmt in want.items():
        assert imagedef.load(os.path.join(ROOT, "images", name))["mcp"]["format"] == fmt, name


def test_custom_template_and_hook(tmp_path):
    home, _ = _run_hook(tmp_path, "template", spec={
        "format": "template", "target": "~/.tool/mcp.json",
        "template": '{"all": {{mcp_json}}, "host": "{{mcp_host}}"}'})
    data = json.loads((home / ".tool/mcp.json").read_text())
    assert [s["name"] for s in data["all"]["servers"]] == ["time", "docs", "clock"]
    assert data["host"] == "http://cubbi-mcp-time:8080/mcp"
    home, _ = _run_hook(tmp_path, "hook", spec={"format": "hook",
                                                "hook": 'echo hooked > "$HOME/hooked"'})
    assert (home / "hooked").read_text() == "hooked\n"


# -- on the engine, with real MCP servers -----------------------------------------
@pytest.fixture(scope="session")
def mcp_image(engine, debian_image):
    """tests/fixtures/images/cubbi-test-mcp, built once per content (tag from
    its files' hash and the base's id; reused while the tag exists)."""
    from cubbi_tools import imagedef, images

    defn = imagedef.load(FIXTURE)
    defn["source"] = "path"
    h = images.digest(FIXTURE).split(":")[-1][:12]
    tag = f"cubbi-test/mcp-time:{h}"
    if images.inspect(engine, tag) is None:
        images.build(engine, defn, base=debian_image, ca_certs=[HOST_CA], tag=tag,
                     log=lambda text: None)
    return tag


@pytest.fixture
def mcp_env(cubbi, prefix, debian_image, engine):
    """cubbi with images.base/ca_cert set (the proxy image builds on first
    use); the test's MCP servers (named PREFIX...) removed after it."""
    (cubbi.config_dir / "config.yaml").write_text(
        f"images:\n  base: {debian_image}\n  ca_cert: {HOST_CA}\n")
    yield {"CUBBI_SECRETS": "file"}
    # the test's sessions first (the prefix fixture's own cleanup comes after
    # this one): a network goes only when nothing is attached to it
    for entry in engine.containers(all=True, labels=["cubbi.session=true"]):
        if (entry.get("Labels") or {}).get("cubbi.session.name", "").startswith(prefix):
            try:
                engine.remove(entry["Id"])
            except Exception:
                pass
    for entry in engine.containers(all=True, labels=["cubbi.mcp=true"]):
        if (entry.get("Labels") or {}).get("cubbi.mcp.name", "").startswith(prefix):
            try:
                engine.remove(entry["Id"])
            except Exception:
                pass
    for net in engine.get("/networks"):
        if net["Name"].startswith(f"cubbi-mcp-{prefix}"):
            engine.remove_network(net["Id"])  # a leak fails the test


def _client(cubbi, sid, *args, env=None):
    r = cubbi("cubbi-connect", sid, "--", "/opt/mcp/bin/python", "/cubbi-tests/mcp_client.py",
              *args, env=env, timeout=120)
    assert r.exit_code == 0, r
    return {x["name"]: x for x in r.json()}


def test_real_servers_in_a_container_and_in_the_session(cubbi, mcp_env, mcp_image, prefix,
                                                        engine):
    env = mcp_env
    time_, clock, docs = f"{prefix}time", f"{prefix}clock", f"{prefix}docs"
    r = cubbi("cubbi-mcp", "add", time_, mcp_image, "-e", "MY_TOKEN=canary-t3", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-mcp", "add-local", clock, "-e", "TZ=UTC", "--", "mcp-server-time",
              "--local-timezone", "UTC", env=env)
    assert r.exit_code == 0, r
    # a remote that does not answer: a warning, the session still starts
    r = cubbi("cubbi-mcp", "add-remote", docs, "http://127.0.0.1:9/mcp",
              "--header", "Authorization=Bearer canary-h3", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--image", mcp_image,
              "--name", f"{prefix}-s", "--mcp", time_, "--mcp", clock, "--mcp", docs,
              "-v", f"{TESTS}:/cubbi-tests:ro", "--json", env=env, timeout=900)
    assert r.exit_code == 0, r
    assert f"warning: MCP server {docs}" in r.stderr and "does not answer" in r.stderr
    (rec,) = r.json()
    assert rec["status"] == "running"

    # a real MCP client in the session: network for add, stdio for add-local
    got = _client(cubbi, rec["id"], time_, clock, env=env)
    for name, transport in ((time_, "http"), (clock, "stdio")):
        assert got[name]["transport"] == transport
        assert {"get_current_time", "convert_time"} <= set(got[name]["tools"]), got[name]
        assert got[name]["ok"] and '"timezone": "UTC"' in got[name]["text"]
    got = _client(cubbi, rec["id"], time_, "--sse", env=env)
    assert got[time_]["ok"] and got[time_]["transport"] == "sse"

    # MCP_HOST, the documented file, the image's template written from it
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
              'echo "$MCP_HOST"; cat /cubbi/mcp.json; cat "$HOME/.config/test-tool/mcp.json"',
              env=env)
    assert r.stdout.startswith(f"http://cubbi-mcp-{time_}:8080/mcp\n"), r
    assert "canary" not in r.stdout.split("\n{", 1)[1].split('"host"')[0]
    # secrets never in docker inspect, --json or the server's log
    for cname in (f"cubbi-mcp-{time_}", f"cubbi-mcp-{time_}-server", rec["container_id"]):
        info = json.dumps(engine.inspect_container(cname))
        assert "canary" not in info, cname
    r = cubbi("cubbi-mcp", "list", "--json", env=env)
    assert "canary" not in r.stdout and {x["name"]: x["status"] for x in r.json()}[time_] == "running"
    r = cubbi("cubbi-mcp", "logs", time_, "--proxy", env=env)
    assert "Uvicorn running" in r.stdout and "canary" not in r.stdout

    # the network is the server's and its sessions' only
    net = engine.network(f"cubbi-mcp-{time_}")
    members = {c["Name"] for c in net["Containers"].values()}
    assert members == {f"cubbi-mcp-{time_}", f"cubbi-mcp-{time_}-server", rec["name"]
                       and f"cubbi-{rec['name']}"}, members

    # a second session reuses the running server; stop; restart
    started = engine.inspect_container(f"cubbi-mcp-{time_}")["State"]["StartedAt"]
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--image", mcp_image,
              "--name", f"{prefix}-s2", "--mcp", time_, "-q", env=env)
    assert r.exit_code == 0, r
    assert engine.inspect_container(f"cubbi-mcp-{time_}")["State"]["StartedAt"] == started
    r = cubbi("cubbi-mcp", "stop", time_, "--json", env=env)
    assert r.exit_code == 0 and r.json()[0]["status"] == "stopped", r
    # two sessions made at once with the server stopped: one start, both get it
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: cubbi(
            "cubbi-create", "--no-connect", "--no-mount", "--wait", "--image", mcp_image,
            "--name", f"{prefix}-c{i}", "--mcp", time_, "-q", env=env, timeout=600), (1, 2)))
    assert all(x.exit_code == 0 for x in results), results
    assert len(engine.containers(labels=[f"cubbi.mcp.name={time_}", "cubbi.mcp.role=proxy"])) == 1
    r = cubbi("cubbi-mcp", "restart", "--all", "-q", env=env, timeout=300)
    assert r.exit_code == 0 and time_ in r.stdout.split(), r

    # removed while sessions use it: its network goes with the last of them
    r = cubbi("cubbi-mcp", "remove", time_, env=env)
    assert r.exit_code == 0, r
    assert engine.network(f"cubbi-mcp-{time_}")  # still joined by the sessions
    r = cubbi("cubbi-close", f"{prefix}-s", f"{prefix}-s2", f"{prefix}-c1", f"{prefix}-c2", env=env)
    assert r.exit_code == 0, r
    assert f"cubbi-mcp-{time_}" not in {n["Name"] for n in engine.get("/networks")}


def test_a_server_that_exits_at_once_fails_the_session(cubbi, mcp_env, mcp_image, prefix):
    env = mcp_env
    bad = f"{prefix}bad"
    r = cubbi("cubbi-mcp", "add", bad, mcp_image, "--command",
              "echo boom-at-start-1 >&2; exit 3", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--wait", "--image", mcp_image,
              "--name", f"{prefix}-f", "--mcp", bad, "--json", env=env, timeout=900)
    assert r.exit_code == 1, r
    rec = r.json()[0]
    assert rec["status"] == "failed" and "boom-at-start-1" in rec["reason"], rec
    assert "failed to start" in rec["reason"]
    # not an MCP server: it answers initialize with something else
    r = cubbi("cubbi-mcp", "add", f"{prefix}cat", mcp_image, "--command",
              "echo not-mcp-2 >&2; echo 'hello, I am not MCP'; exit 0", "--force", env=env)
    r = cubbi("cubbi-mcp", "start", f"{prefix}cat", "-q", env=env, timeout=300)
    one_line_error(r, 1, "failed to start", "not-mcp-2")


def test_through_the_server_each_user_has_their_own(cubbi, mcp_env, mcp_image, prefix, server,
                                                    alice, bob, remote_env, engine):
    """cubbi-mcp -r and cubbi-create -r --mcp: the definitions are alice's on
    the service (bob sees none of them), the server runs on its engine, and
    a real client in her session calls it."""
    env = dict(mcp_env, **remote_env)
    time_, clock = f"{prefix}rtime", f"{prefix}rclock"
    r = cubbi("cubbi-mcp", "add", time_, mcp_image, "-e", "API_TOKEN=canary-r4", "--json", env=env)
    assert r.exit_code == 0, r
    assert r.json()[0]["env"] == {"API_TOKEN": "********"}
    r = cubbi("cubbi-mcp", "add-local", clock, "--", "mcp-server-time", env=env)
    assert r.exit_code == 0, r
    one_line_error(cubbi("cubbi-mcp", "add", time_, mcp_image, env=env), 1, "exists", "--force")
    assert cubbi("cubbi-mcp", "list", "-q", env=env).stdout.split() == sorted([time_, clock])
    st, body = bob.call("GET", f"/mcp/{time_}")
    assert st == 404, body
    st, body = bob.call("GET", "/mcp")
    assert st == 200 and body["servers"] == [], body
    r = cubbi("cubbi-create", "--no-connect", "--wait", "--image", mcp_image, "--name",
              f"{prefix}-r", "--mcp", time_, "--mcp", clock, "--json", env=env, timeout=900)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    with open(os.path.join(TESTS, "mcp_client.py")) as fh:
        script = fh.read()
    r = cubbi("cubbi-connect", rec["id"], "--", "/opt/mcp/bin/python", "-c", script, time_, clock,
              env=env, timeout=120)
    assert r.exit_code == 0, r
    got = {x["name"]: x for x in r.json()}
    assert got[time_]["ok"] and got[clock]["ok"] and got[clock]["transport"] == "stdio", got
    # alice's server runs in her scope: its containers carry her name and hash
    (proxy,) = [c for c in engine.containers(labels=[f"cubbi.mcp.name={time_}",
                                                      "cubbi.mcp.role=proxy"])]
    assert proxy["Labels"]["cubbi.mcp.owner"] == "alice" and "canary" not in json.dumps(
        engine.inspect_container(proxy["Id"]))
    r = cubbi("cubbi-mcp", "logs", time_, "--proxy", "--tail", "50", env=env)
    assert r.exit_code == 0 and "Uvicorn running" in r.stdout, r
    one_line_error(cubbi("cubbi-create", "--no-connect", "--image", mcp_image, "--mcp",
                         "nosuch", env=env), 3, "no MCP server 'nosuch'")
    r = cubbi("cubbi-mcp", "remove", time_, clock, env=env)
    assert r.exit_code == 0, r
    assert not engine.containers(all=True, labels=[f"cubbi.mcp.name={time_}"])

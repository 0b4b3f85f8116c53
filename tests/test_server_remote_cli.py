"""The commands with -r against a real cubbi-server: they work unchanged,
errors map to the documented exit codes, a named remote keeps its own URL
and token, host paths never travel, and remote connect exits as locally."""

import json
import os
import time

from conftest import one_line_error


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
    one_line_error(cubbi("cubbi-close", "nope-nope", env=remote_env), 3, "nope-nope")
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


def test_cubbi_remote_list_default_remove(cubbi, engine):  # -r local lists the engine
    env = {"CUBBI_SECRETS": "file"}
    assert cubbi("cubbi-remote", "add", "one", "http://127.0.0.1:1", "--token", "-",
                 input="tok1\n", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "add", "local", "http://x", env=env).exit_code == 2
    assert cubbi("cubbi-remote", "add", "two", "ftp://x", env=env).exit_code == 2
    assert cubbi("cubbi-remote", "default", "one", env=env).exit_code == 0
    rows = cubbi("cubbi-remote", "list", "--json", env=env).json()
    assert rows == [{"name": "one", "url": "http://127.0.0.1:1", "default": True, "token": True,
                     "auth": "token", "user": None, "expires": None}]
    cfg = (cubbi.config_dir / "config.yaml").read_text()
    assert "tok1" not in cfg
    # the default remote is used without -r; -r local goes back to the engine
    r = cubbi("cubbi-ls", env=env)
    assert r.exit_code == 4 and "remote 'one'" in r.stderr, r
    assert cubbi("cubbi-ls", "-r", "local", "-q", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "remove", "one", env=env).exit_code == 0
    assert cubbi("cubbi-remote", "list", "--json", env=env).stdout == ""
    assert cubbi("cubbi-remote", "remove", "one", env=env).exit_code == 3


def test_image_and_project_commands_with_a_remote(cubbi, remote_env, tmp_path):
    local = cubbi("cubbi-image", "list", "--json", "--offline")
    remote = cubbi("cubbi-image", "list", "--json", env=remote_env)
    assert remote.exit_code == 0, remote
    assert {r["name"] for r in remote.json()} >= {r["name"] for r in local.json()}
    # the same record, but no server file path (the definition's folder there)
    assert set(remote.json()[0]) >= set(local.json()[0]) - {"path"}
    assert "path" in local.json()[0] and "path" not in remote.json()[0]
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
              "--name", f"{prefix}-rproj", "--network", "cubbi-network", "--no-connect", "--wait", "--json", env=remote_env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    out = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c",
                "cat /app/README; stat -c %a /cubbi/project/token", env=remote_env)
    assert out.stdout.splitlines() == ["hello from the project", "600"], out
    assert servers["token"] not in json.dumps(rec)


# -- which remote gets which token, host paths, exit codes ----------------------
def test_env_url_never_redirects_a_named_remote(cubbi, server, remote_env, busybox_image,
                                                prefix, tmp_path, recorder):
    trap = {"CUBBI_SECRETS": "file", "CUBBI_REMOTE_URL": recorder.url,
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
    assert recorder.seen == []
    # no -r: the environment's ad-hoc remote, with its own token, before remote.default
    assert cubbi("cubbi-remote", "default", "srv", env=trap).exit_code == 0
    r = cubbi("cubbi-ls", "--json", env=trap)
    assert r.exit_code == 0 and r.stdout == "", r
    # an unconfigured NAME is the ad-hoc remote too
    r = cubbi("cubbi-ls", "-r", "adhoc", env=trap)
    assert r.exit_code == 0, r
    assert recorder.seen == ["Bearer env-token", "Bearer env-token"]
    # a URL without its token: no stored token is borrowed
    r = cubbi("cubbi-ls", env={"CUBBI_SECRETS": "file", "CUBBI_REMOTE_URL": recorder.url})
    assert r.exit_code == 5 and "CUBBI_REMOTE_TOKEN is not" in r.stderr, r
    assert len(recorder.seen) == 2
    # the pair pointing at the real server lists its sessions, not the local engine's
    pair = {"CUBBI_REMOTE_URL": server.url, "CUBBI_REMOTE_TOKEN": server.token("alice")}
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*", env=pair)
    assert r.exit_code == 0 and [(x["id"], x["remote"]) for x in r.json()] == \
        [(sid, server.url)], r
    # -r local is the local engine whatever the environment says
    r = cubbi("cubbi-ls", "-r", "local", "--json", "--filter", f"name={prefix}*", env=trap)
    assert r.exit_code == 0 and [(x["id"], x["remote"]) for x in r.json()] == [(sid, None)], r
    assert len(recorder.seen) == 2


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
    # sleep 29: the init's own idle watch sleeps 30 s at a time
    p = subprocess.Popen(["cubbi-connect", sid, "--", "sh", "-c", "sleep 29; exit 3"], env=env,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert _wait_procs(engine, cid, "sleep 29", True)
    p.send_signal(signal.SIGINT)
    assert p.wait(10) == 130
    assert _wait_procs(engine, cid, "sleep 29", False, timeout=0)

"""Projects: URL normalisation, cubbi-project, and sessions that clone a
private repository from REAL git servers (sshd with key auth, git's smart
HTTP behind a token) running as containers on cubbi-network, built from the
locally made Debian base (tests/fixtures/gitservers/)."""

import json
import os
import secrets
import subprocess
import sys

import pytest

from conftest import ROOT, one_line_error, run

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "gitservers"))
import gitservers  # noqa: E402

from cubbi_tools import projects  # noqa: E402
from cubbi_tools.errors import CubbiError, UsageError  # noqa: E402

@pytest.fixture(autouse=True)
def _own_state_home(tmp_path, monkeypatch):
    """Project sessions keep tool state in CUBBI_HOME: a temp one per test."""
    monkeypatch.setenv("CUBBI_HOME", str(tmp_path / "cubbi-home"))


# -- URL normalisation (unit) -------------------------------------------------
SAME = ["github.com/hello/private", "github.com/hello/private.git",
        "git@github.com:hello/private.git", "git@github.com:hello/private",
        "https://github.com/hello/private", "https://github.com/hello/private.git/",
        "https://GitHub.com:443/hello/private", "http://github.com/hello/private",
        "ssh://git@github.com/hello/private.git", "ssh://git@github.com:22/hello/private",
        "git+ssh://git@github.com/hello/private", "git://github.com/hello/private.git"]


@pytest.mark.parametrize("url", SAME)
def test_every_url_form_names_one_project(url):
    pid, clone, host = projects.normalise(url)
    assert (pid, host) == ("github.com/hello/private", "github.com")
    # round trips: the clone URL and the id name the same project again
    assert projects.normalise(clone)[0] == pid
    assert projects.normalise(pid)[0] == pid


@pytest.mark.parametrize("url,pid,clone", [
    ("ssh://git@host:2222/x/y.git", "host:2222/x/y", "ssh://git@host:2222/x/y.git"),
    ("https://git.example.com:8443/group/sub/app", "git.example.com:8443/group/sub/app",
     "https://git.example.com:8443/group/sub/app"),
    ("http://gitsrv:8080/x/y.git", "gitsrv:8080/x/y", "http://gitsrv:8080/x/y.git"),
    ("https://h.example/x/y.git/", "h.example/x/y", "https://h.example/x/y.git"),
    ("git@github.com:hello/private", "github.com/hello/private", "git@github.com:hello/private"),
    ("alice@host.example:~alice/repo.git", "host.example/~alice/repo",
     "alice@host.example:~alice/repo.git"),
    ("gitlab.example.com/a/b/c", "gitlab.example.com/a/b/c", "https://gitlab.example.com/a/b/c"),
])
def test_any_host_port_and_path(url, pid, clone):
    got = projects.normalise(url)
    assert got[:2] == (pid, clone)
    assert projects.normalise(got[1])[0] == pid
    assert projects.normalise(pid)[0] == pid  # the id as printed names it again


BAD_URLS = ["ssh://host/x;touch /tmp/pwned", "https://h.example/$(touch /tmp/pwned)",
            "git@h.example:x/`id`.git", "https://h.example/x y", "h.example/x|sh",
            "https://h.example/x'y", 'https://h.example/x"y', "https://h.example/a/../b",
            "https://user:secret@h.example/x", "file:///etc/passwd", "-oProxyCommand=sh/x",
            "ssh://-oProxyCommand=x/y", "https://h.example/-x", "https://h.example/x\n/y",
            "https://h.example:99999/x", "h.example", ""]


def test_every_url_form_shares_one_persistent_state():
    from cubbi_tools import toolstate

    dirs = {toolstate.state_dir(project=url, create=False) for url in SAME}
    assert len(dirs) == 1 and None not in dirs


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_are_refused(url):
    with pytest.raises(UsageError):
        projects.normalise(url)


def test_password_in_url_is_refused_without_echoing_it(cubbi):
    r = cubbi("cubbi-project", "add", "https://me:s3cr3t-pw@h.example/x")
    assert r.exit_code == 2, r
    assert "s3cr3t-pw" not in r.output and "--token -" in r.stderr


# -- cubbi-project (no engine) --------------------------------------------------
def _secret(cubbi, name):
    code = "import sys; from cubbi_tools import secrets; v = secrets.get(sys.argv[1]); print(v is not None)"
    r = run([sys.executable, "-c", code, name],
            env={"CUBBI_CONFIG_DIR": str(cubbi.config_dir)})
    assert r.exit_code == 0, r
    return r.stdout.strip() == "True"


def test_add_list_show_remove_with_token_on_stdin(cubbi):
    owner = "o" + secrets.token_hex(4)
    token = "CANARY-" + secrets.token_hex(12)
    r = cubbi("cubbi-project", "add", f"https://git.example.com/{owner}/app.git", "--token", "-",
              "--json", input=token + "\n")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    pid = f"git.example.com/{owner}/app"
    assert rec["id"] == pid and rec["auth"] == "token"
    assert rec["url"] == f"https://git.example.com/{owner}/app.git"
    # every form of the URL finds it; show says the kind of credential, never the value
    for form in (pid, f"git@git.example.com:{owner}/app.git", f"git.example.com/{owner}/app.git"):
        r = cubbi("cubbi-project", "show", form, "--json")
        assert r.exit_code == 0, r
        (shown,) = r.json()
        assert shown["id"] == pid and shown["credential"] == "an access token"
        assert token not in r.output
    r = cubbi("cubbi-project", "list", "-q")
    assert r.stdout == pid + "\n", r
    assert token not in cubbi("cubbi-project", "list").output
    meta = cubbi.config_dir / "projects.yaml"
    assert oct(meta.stat().st_mode & 0o777) == "0o600"
    assert token not in meta.read_text()
    assert _secret(cubbi, f"project:{pid}:token")
    # remove takes ids from stdin too, and drops the credential
    r = cubbi("cubbi-project", "remove", input=cubbi("cubbi-project", "list", "--json").stdout)
    assert r.exit_code == 0, r
    assert cubbi("cubbi-project", "list", "-q").stdout == ""
    assert not _secret(cubbi, f"project:{pid}:token")
    r = cubbi("cubbi-project", "show", pid)
    assert r.exit_code == 3 and "no project" in r.stderr, r
    assert cubbi("cubbi-project", "remove", pid).exit_code == 3


def test_remove_json_prints_one_result_per_input_line(cubbi):
    pid = f"git.example.com/o{secrets.token_hex(4)}/app"
    assert cubbi("cubbi-project", "add", pid).exit_code == 0
    r = cubbi("cubbi-project", "remove", "--json", input=f"{pid}\n{pid}\n{{bad\n")
    assert r.exit_code == 1, r  # unknown (3) and malformed (2): 1
    out = r.json()
    assert [(x["id"], x["removed"]) for x in out] == [(pid, True), (pid, False), (None, False)]
    assert out[0]["error"] is None and "no project" in out[1]["error"]
    assert out[2]["error"].startswith("stdin line 3")


def test_token_env_and_ssh_key(cubbi, tmp_path):
    key, _ = gitservers.keypair(str(tmp_path), "k")
    r = cubbi("cubbi-project", "add", "github.com/hello/private", "--ssh-key", key, "-q")
    assert r.exit_code == 0, r
    assert r.stdout == "github.com/hello/private\n"
    (rec,) = cubbi("cubbi-project", "show", "https://github.com/hello/private", "--json").json()
    assert rec["auth"] == "ssh_key" and rec["url"] == "git@github.com:hello/private.git"
    body = open(key).read().splitlines()[2]
    assert body not in cubbi("cubbi-project", "show", "github.com/hello/private").output
    # replacing the credential with a token (--force) drops the key
    r = cubbi("cubbi-project", "add", "https://github.com/hello/private", "--token-env", "MYTOK",
              "--force", env={"MYTOK": "tok-from-env"})
    assert r.exit_code == 0 and "replaced project github.com/hello/private (token)" in r.stderr, r
    assert not _secret(cubbi, "project:github.com/hello/private:ssh_key")
    assert _secret(cubbi, "project:github.com/hello/private:token")


EXISTS = ("cubbi-project: project github.com/hello/private exists; use --force to replace it "
          "(its stored credential goes) or cubbi-project remove github.com/hello/private\n")


def test_adding_a_stored_project_again_is_refused_and_keeps_its_key(cubbi, tmp_path):
    """Re-adding (any form of the URL) used to drop the key silently."""
    key, _ = gitservers.keypair(str(tmp_path), "k")
    assert cubbi("cubbi-project", "add", "git@github.com:hello/private.git",
                 "--ssh-key", key).exit_code == 0
    before = open(os.path.join(cubbi.config_dir, "projects.yaml")).read()
    for argv, kw in ((["https://github.com/hello/private"], {}),
                     (["github.com/hello/private", "--ssh-key", key], {}),
                     (["https://github.com/hello/private", "--token", "-", "--json"],
                      {"input": "new-tok\n"})):
        r = cubbi("cubbi-project", "add", *argv, **kw)
        assert (r.exit_code, r.stderr, r.stdout) == (1, EXISTS, ""), r
    assert open(os.path.join(cubbi.config_dir, "projects.yaml")).read() == before
    assert _secret(cubbi, "project:github.com/hello/private:ssh_key")
    assert not _secret(cubbi, "project:github.com/hello/private:token")
    # --force replaces, here by no credential at all: the key goes
    r = cubbi("cubbi-project", "add", "https://github.com/hello/private", "-f", "--json")
    assert r.exit_code == 0, r
    assert r.json()[0]["auth"] == "none"
    assert not _secret(cubbi, "project:github.com/hello/private:ssh_key")
    # --force on a project not stored yet just adds it
    r = cubbi("cubbi-project", "add", "h.example/new/one", "--force")
    assert r.exit_code == 0 and "added project h.example/new/one" in r.stderr, r


def test_the_library_refuses_a_stored_project_without_force(cubbi, monkeypatch):
    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(cubbi.config_dir))
    monkeypatch.setenv("CUBBI_SECRETS", "file")
    projects.add("h.example/x/y", token="t1")
    with pytest.raises(CubbiError, match="exists; use --force") as exc:
        projects.add("https://h.example/x/y")
    assert type(exc.value) is CubbiError  # exit 1
    assert projects.get("h.example/x/y")["auth"] == "token"
    rec, replaced = projects.add("h.example/x/y", token="t2", force=True)
    assert replaced and rec["auth"] == "token"


@pytest.fixture
def service(cubbi, start_server, tmp_path):
    """A real cubbi-server on loopback (no engine needed for projects),
    added as remote srv."""
    srv = start_server(env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    r = cubbi("cubbi-remote", "add", "srv", srv.url, "--token", "-",
              input=srv.token("alice"), env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    return srv


def test_the_service_path_refuses_too(cubbi, service):
    env = {"CUBBI_SECRETS": "file"}
    r = cubbi("cubbi-project", "-r", "srv", "add", "https://github.com/hello/private",
              "--token", "-", input="tok-one\n", env=env)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-project", "-r", "srv", "add", "git@github.com:hello/private.git", env=env)
    assert (r.exit_code, r.stderr) == (1, EXISTS), r
    (rec,) = cubbi("cubbi-project", "-r", "srv", "show", "github.com/hello/private", "--json",
                   env=env).json()
    assert rec["auth"] == "token"
    r = cubbi("cubbi-project", "-r", "srv", "add", "git@github.com:hello/private.git", "--force",
              "--json", env=env)
    assert r.exit_code == 0 and r.json()[0]["auth"] == "none", r
    assert cubbi("cubbi-project", "list", "-q").stdout == ""  # nothing stored locally


@pytest.mark.parametrize("argv,code,words", [
    (["add", "h.example/x/y", "--token", "t", "--ssh-key", "/etc/hostname"], 2, "one credential"),
    (["add", "h.example/x/y", "--token-env", "NO_SUCH_VAR_P5"], 2, "no such environment"),
    (["add", "h.example/x/y", "--ssh-key", "/nonexistent/key"], 3, "no such file"),
    (["add", "h.example/x/y", "--ssh-key", "/etc/hostname"], 2, "not a private key"),
    (["add", "h.example/x/y", "--token", "two words"], 2, "one line"),
    (["add", "ssh://h.example:2222/x/y", "--token", "t"], 2, "https"),
    (["add", "ssh://host/x;touch /tmp/pwned"], 2, "not allowed"),
    (["show"], 2, "required"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_bad_input(cubbi, argv, code, words):
    one_line_error(cubbi("cubbi-project", *argv), code, words)
    assert not (cubbi.config_dir / "projects.yaml").exists()


def test_public_and_passphrase_keys_are_refused(cubbi, tmp_path):
    key, _ = gitservers.keypair(str(tmp_path), "k")
    r = cubbi("cubbi-project", "add", "h.example/x/y", "--ssh-key", key + ".pub")
    assert r.exit_code == 2 and "public key" in r.stderr, r
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass phrase", "-f", str(locked)],
                   check=True)
    r = cubbi("cubbi-project", "add", "h.example/x/y", "--ssh-key", str(locked))
    assert r.exit_code == 2 and "passphrase" in r.stderr, r


# -- sessions against real git servers -------------------------------------------
@pytest.fixture(scope="module")
def servers(engine, debian_image, tmp_path_factory):
    """An sshd and a smart-HTTP git server holding repository x/y (with a
    .cubbi/init.sh), their key and token; removed after the module."""
    prefix = "g" + secrets.token_hex(3)
    info = gitservers.up(prefix, str(tmp_path_factory.mktemp("gitservers")), base=debian_image)
    yield info
    gitservers.down(prefix)


def _create(cubbi, servers, name, url, *extra, env=None, via="cubbi-create"):
    argv = [via, url] if via == "cubbi" else [via, "--project", url]
    return cubbi(*argv, "--image", servers["client_image"], "--name", name, "--no-connect",
                 "--wait", "--json", *extra, env=env)


def _session(cubbi, name):
    r = cubbi("cubbi-ls", "--all", "--json", "--filter", f"name={name}")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    return rec


def _inside(cubbi, sid, script):
    r = cubbi("cubbi-connect", sid, "--", "sh", "-c", script)
    assert r.exit_code == 0, r
    return r.stdout


def _add(cubbi, url, *cred, input=None):
    r = cubbi("cubbi-project", "add", url, *cred, input=input)
    assert r.exit_code == 0, r
    return r



def test_clone_over_ssh_with_the_key(cubbi, servers, prefix):
    _add(cubbi, servers["ssh_url"], "--ssh-key", servers["key"])
    r = _create(cubbi, servers, f"{prefix}-ssh", servers["ssh_url"])
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["status"] == "running" and rec["project"] == servers["ssh_url"]
    assert rec["mount"] is None
    out = _inside(cubbi, rec["id"], "cat /app/README; echo $CUBBI_PROJECT_URL $CUBBI_PROJECT_TYPE; "
                  "stat -c '%a %u' /cubbi/project/ssh_key; cat /app/.cubbi-init-ran; "
                  "cd /app && git pull -q && git remote get-url origin")
    assert out.splitlines() == ["hello from the project",
                                f"{servers['ssh_url']} git", f"600 {os.getuid()}",
                                "project-init-ran", servers["ssh_url"]]
    # the host key was scanned from the project's own host; strict checking on
    out = _inside(cubbi, rec["id"], "cat /cubbi/project/known_hosts; git -C /app config core.sshCommand")
    assert out.startswith(servers["ssh_host"] + " ")
    assert "StrictHostKeyChecking=yes" in out


def test_clone_over_ssh_on_another_port_and_a_non_root_user(cubbi, servers, prefix, monkeypatch):
    """The key file belongs to the session user (uid 4242 here): ssh accepts
    it, and the clone in /app is theirs."""
    from cubbi_tools.engine import CreateRequest, LocalEngine

    url = servers["ssh_port_url"]
    _add(cubbi, url, "--ssh-key", servers["key"])
    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(cubbi.config_dir))
    clone, pid, env, files = projects.session_setup(url)
    assert pid == f"{servers['ssh_host']}:2222/git/x/y"
    eng = LocalEngine()
    rec = eng.create(CreateRequest(image=servers["client_image"], name=f"{prefix}-port",
                                   env=env, files=files, project=clone, uid=4242, gid=4242))
    rec = eng.wait_ready(rec, timeout=120)
    out = _inside(cubbi, rec["id"], "id -u; stat -c %u /app/README /cubbi/project/ssh_key; "
                  "head -c 40 /cubbi/project/known_hosts")
    lines = out.splitlines()
    assert lines[:3] == ["4242", "4242", "4242"], out
    assert lines[3].startswith(f"[{servers['ssh_host']}]:2222 ")


def test_wrong_key_fails_with_the_reason_and_no_secret(cubbi, servers, prefix, tmp_path):
    wrong, _ = gitservers.keypair(str(tmp_path), "wrong")
    _add(cubbi, servers["ssh_url"], "--ssh-key", wrong)
    r = _create(cubbi, servers, f"{prefix}-bad", servers["ssh_url"])
    assert r.exit_code == 1, r
    assert "Permission denied (publickey)" in r.stderr
    rec = _session(cubbi, f"{prefix}-bad")
    assert rec["status"] == "failed" and "Permission denied (publickey)" in rec["reason"], rec
    logs = cubbi("cubbi-logs", rec["id"])
    assert "Permission denied (publickey)" in logs.stdout + logs.stderr
    for line in open(wrong).read().splitlines()[1:-1]:
        assert line not in logs.output + r.output


def test_clone_over_http_with_the_token(cubbi, servers, prefix):
    _add(cubbi, servers["http_url"], "--token", "-", input=servers["token"])
    # the shorthand: cubbi URL
    r = _create(cubbi, servers, f"{prefix}-http", servers["http_url"], via="cubbi")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    out = _inside(cubbi, rec["id"], "cat /app/README; stat -c %a /cubbi/project/token; "
                  "cd /app && git pull -q && git config --get-regexp '^credential'")
    lines = out.splitlines()
    assert lines[:2] == ["hello from the project", "600"], out
    # the helper is scoped to the project's own scheme://host:port only
    assert f"credential.http://{servers['http_host']}:8080.helper /cubbi/project/git-credential" in out
    assert "store" not in out
    # the helper answers for that host, and nothing for another one
    q = "printf 'protocol=%s\\nhost=%s\\n\\n' {} {} | /cubbi/project/git-credential get | grep -c password || true"
    assert _inside(cubbi, rec["id"], q.format("http", f"{servers['http_host']}:8080")).strip() == "1"
    assert _inside(cubbi, rec["id"], q.format("http", "evil.example")).strip() == "0"
    assert _inside(cubbi, rec["id"], q.format("https", f"{servers['http_host']}:8080")).strip() == "0"


@pytest.mark.parametrize("token,why", [(None, "could not read Username"),
                                        ("not-the-token", "Authentication failed")])
def test_http_refuses_without_the_token(cubbi, servers, prefix, token, why):
    if token:
        _add(cubbi, servers["http_url"], "--token", "-", input=token)
    r = _create(cubbi, servers, f"{prefix}-noauth", servers["http_url"])
    assert r.exit_code == 1, r
    rec = _session(cubbi, f"{prefix}-noauth")
    assert rec["status"] == "failed" and why in rec["reason"], rec
    if token:
        assert token not in r.output + cubbi("cubbi-logs", rec["id"]).output


@pytest.mark.parametrize("which,why", [
    ("nope", "does not appear to be a git repository"),
    ("nohost", "no SSH host key from"),
])
def test_clone_failures_say_why(cubbi, servers, prefix, which, why):
    if which == "nope":
        url = f"git@{servers['ssh_host']}:x/nope.git"
        _add(cubbi, url, "--ssh-key", servers["key"])
    else:  # a host of ours with no SSH server on that port
        url = f"ssh://git@{servers['http_host']}:2222/x/y.git"
    r = _create(cubbi, servers, f"{prefix}-f", url)
    assert r.exit_code == 1, r
    rec = _session(cubbi, f"{prefix}-f")
    assert rec["status"] == "failed" and why in rec["reason"], rec
    assert why in cubbi("cubbi-logs", rec["id"]).output


@pytest.mark.parametrize("debug", ["", "1"])
def test_credentials_never_leak(cubbi, servers, prefix, debug):
    """Canary: the token and the key appear in no cubbi output (debug on or
    off), not in docker inspect, only in the 0600 files in the session."""
    env = {"CUBBI_DEBUG": debug}
    key_lines = open(servers["key"]).read().splitlines()[1:-1]
    canaries = [servers["token"]] + key_lines
    outputs = []

    def c(*argv, **kw):
        r = cubbi(*argv, env=env, **kw)
        outputs.append(r.output)
        return r

    assert c("cubbi-project", "add", servers["http_url"], "--token", "-",
             input=servers["token"]).exit_code == 0
    assert c("cubbi-project", "add", servers["ssh_url"], "--ssh-key", servers["key"]).exit_code == 0
    ids, names = [], []
    for n, url in (("h", servers["http_url"]), ("s", servers["ssh_url"])):
        r = c("cubbi-create", "--project", url, "--image", servers["client_image"],
              "--name", f"{prefix}-{n}", "--no-connect", "--wait", "--json")
        assert r.exit_code == 0, r
        ids.append(r.json()[0]["id"])
        names.append(f"{prefix}-{n}")
    for argv in (["cubbi-ls"], ["cubbi-ls", "--json"], ["cubbi-project", "list"],
                 ["cubbi-project", "list", "--json"],
                 ["cubbi-project", "show", servers["http_url"], "--json"],
                 ["cubbi-project", "show", servers["ssh_url"]]):
        assert c(*argv).exit_code == 0
    for sid, name in zip(ids, names):
        assert c("cubbi-logs", sid).exit_code == 0
        assert c("cubbi-logs", sid, "--json").exit_code == 0
        inspect = subprocess.run(["docker", "inspect", f"cubbi-{name}"],
                                 capture_output=True, text=True)
        assert inspect.returncode == 0
        outputs.append(inspect.stdout)
    text = "\n".join(outputs)
    leaked = [cn for cn in canaries if cn in text]
    assert not leaked, f"credential leaked into output: {len(leaked)} canaries"
    # ... and the session has them where git needs them
    assert _inside(cubbi, ids[0], "cat /cubbi/project/token").strip() == servers["token"]


@pytest.mark.parametrize("url", ["ssh://host/x;touch /tmp/PWNED", "https://h.example/$(touch /tmp/PWNED)",
                                 "git@h.example:x/`touch /tmp/PWNED`.git"])
def test_metacharacters_in_the_url_run_nothing(cubbi, servers, prefix, url, tmp_path):
    url = url.replace("/tmp/PWNED", str(tmp_path / "pwned"))
    for argv in (["cubbi-create", "--project", url], ["cubbi", url]):
        r = cubbi(*argv, "--image", servers["client_image"], "--name", f"{prefix}-m",
                  "--no-connect", "--json")
        assert r.exit_code == 2, r
        assert "not allowed" in r.stderr
    assert not (tmp_path / "pwned").exists()
    assert cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*").stdout == ""


def test_the_hook_itself_refuses_metacharacters(cubbi, servers, prefix):
    """Defence in depth: even a project.env that bypassed cubbi's checks
    runs nothing (the hook re-checks and quotes every expansion)."""
    r = _create(cubbi, servers, f"{prefix}-h", servers["http_url"])  # anonymous: fails, stays
    sid = _session(cubbi, f"{prefix}-h")["container_id"]
    hook = os.path.join(ROOT, "cubbi_tools", "data", "hooks", "50-project.sh")
    for evil in ("http://h/x;touch /tmp/pwned", "http://h/$(touch /tmp/pwned)",
                 "http://h/`touch /tmp/pwned`"):
        env_text = f"CUBBI_PROJECT_URL='{evil}'\nCUBBI_PROJECT_SCHEME=http\n"
        script = ("mkdir -p /tmp/t && cd /tmp/t && printf '%s' \"$1\" > project.env && "
                  "C=/tmp; mkdir -p /tmp/project; cp project.env /tmp/project/; "
                  "fail() { echo \"FAILED: $*\"; exit 0; }; say() { :; }; "
                  "as_user() { \"$@\"; }; . /dev/stdin; ls /tmp/pwned 2>/dev/null || echo clean")
        with open(hook) as fh:
            p = subprocess.run(["docker", "exec", "-i", sid, "sh", "-c", script, "sh", env_text],
                               input=fh.read(), capture_output=True, text=True)
        assert "FAILED: project URL holds characters" in p.stdout, (p.stdout, p.stderr)
        assert subprocess.run(["docker", "exec", sid, "test", "-e", "/tmp/pwned"]).returncode == 1


def test_project_and_mount_exclude_each_other(cubbi, tmp_path):
    r = cubbi("cubbi-create", "--project", "github.com/hello/private", "--mount", str(tmp_path),
              "--no-connect", "--image", "none")
    assert r.exit_code == 2 and "exclude" in r.stderr, r


def test_an_image_without_git_fails_saying_so(cubbi, busybox_image, prefix):
    r = cubbi("cubbi-create", "--project", "https://git.example.com/x/y", "--image", busybox_image,
              "--name", f"{prefix}-nogit", "--no-connect", "--wait", "--json")
    assert r.exit_code == 1, r
    rec = _session(cubbi, f"{prefix}-nogit")
    assert rec["status"] == "failed" and "the image has no git" in rec["reason"], rec


def test_a_credential_lost_from_the_store_is_a_clear_error(cubbi):
    assert cubbi("cubbi-project", "add", "h.example/x/y", "--token", "-", input="t0k\n").exit_code == 0
    code = "from cubbi_tools import secrets; secrets.delete('project:h.example/x/y:token')"
    assert run([sys.executable, "-c", code], env={"CUBBI_CONFIG_DIR": str(cubbi.config_dir)}).exit_code == 0
    r = cubbi("cubbi-create", "--project", "https://h.example/x/y", "--image", "none", "--no-connect")
    assert r.exit_code == 1, r
    assert "token of project h.example/x/y is missing" in r.stderr
    assert "cubbi-project add --force h.example/x/y --token" in r.stderr

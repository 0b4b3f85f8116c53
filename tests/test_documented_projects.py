"""Documented project behaviours that had no test of their own (issue 9),
against REAL git servers on cubbi-network (tests/fixtures/gitservers: sshd
with key auth, git's smart HTTP behind a token):

- a session pushes a commit with the credential its project stored, locally
  (token and SSH key) and on the service, and the server's repository has it;
- the service's auto-made DB.key (no projects.storage.key configured) is
  reused after a restart: the stored token still decrypts and clones.
"""

import os
import secrets
import subprocess
import sys

import pytest

from conftest import ROOT, one_line_error

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures", "gitservers"))
import gitservers  # noqa: E402



@pytest.fixture(scope="module")
def servers(engine, debian_image, tmp_path_factory):
    """This module's own git servers (its pushes change their repositories)."""
    prefix = "p" + secrets.token_hex(3)
    info = gitservers.up(prefix, str(tmp_path_factory.mktemp("gitservers")), base=debian_image)
    yield info
    gitservers.down(prefix)


@pytest.fixture(autouse=True)
def _own_state_home(cubbi, monkeypatch):
    monkeypatch.setenv("CUBBI_HOME", str(cubbi.cubbi_home))


def _server_log(host, branch):
    """The subjects on branch in x/y.git inside the git server container host
    ([] when there is no such branch)."""
    r = subprocess.run(["docker", "exec", "-u", str(gitservers.GIT_UID), host, "git", "-C",
                        "/git/x/y.git", "log", "--format=%s", branch, "--"],
                       capture_output=True, text=True)
    return r.stdout.split("\n")[:-1] if r.returncode == 0 else []


def _push_from(cubbi, sid, branch, subject, env=None):
    """In session sid: commit in /app and push it to origin as branch,
    with nothing but what the session was given (no credential typed)."""
    script = (f"cd /app && echo {subject} > pushed.txt && git add pushed.txt && "
              f"git -c user.name=t -c user.email=t@example.invalid commit -q -m {subject} && "
              f"GIT_TERMINAL_PROMPT=0 git push -q origin HEAD:refs/heads/{branch} && "
              "git remote get-url origin")
    return cubbi("cubbi-connect", sid, "--", "sh", "-c", script, env=env)


def _create(cubbi, servers, name, url, env=None):
    r = cubbi("cubbi-create", "--project", url, "--image", servers["client_image"], "--name",
              name, "--network", "cubbi-network", "--no-connect", "--wait", "--json", env=env)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    return rec


@pytest.mark.parametrize("kind", ["token", "ssh_key"])
def test_a_session_pushes_with_the_stored_credential(cubbi, servers, prefix, kind):
    url = servers["http_url"] if kind == "token" else servers["ssh_url"]
    host = servers["http_host"] if kind == "token" else servers["ssh_host"]
    cred = ["--token", "-"] if kind == "token" else ["--ssh-key", servers["key"]]
    r = cubbi("cubbi-project", "add", url, *cred,
              input=servers["token"] if kind == "token" else None)
    assert r.exit_code == 0, r
    rec = _create(cubbi, servers, f"{prefix}-push", url)
    branch, subject = f"{prefix}-{kind}", f"pushed-{secrets.token_hex(4)}"
    assert _server_log(host, branch) == []
    r = _push_from(cubbi, rec["id"], branch, subject)
    assert r.exit_code == 0, r
    assert r.stdout.strip() == url, r  # the plain URL: no credential in .git/config
    assert _server_log(host, branch) == [subject, "init"]
    assert servers["token"] not in r.output


# -- on the service, whose project key is the auto-made DB.key ------------------------------
@pytest.fixture(scope="module")
def server(engine, start_module_server):
    """A cubbi-server with no projects.storage.key: it makes DB.key itself
    (conftest's remote_env talks to it)."""
    return start_module_server(config_text=(
        "server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
        # the test images are local; the git servers are on cubbi-network
        "policy:\n  images:\n    any_local: true\n  networks: [cubbi-network]\n"))


def test_the_auto_made_db_key_is_reused_after_a_restart(cubbi, server, remote_env, servers,
                                                        prefix):
    r = cubbi("cubbi-project", "add", servers["http_url"], "--token", "-",
              input=servers["token"], env=remote_env)
    assert r.exit_code == 0, r
    keyfile = server.database + ".key"
    assert os.path.exists(keyfile), os.listdir(server.workdir)
    assert oct(os.stat(keyfile).st_mode & 0o777) == "0o600"
    key = open(keyfile).read()
    raw = open(server.database, "rb").read()
    assert servers["token"].encode() not in raw and key.strip().encode() not in raw

    server.stop()
    server.start()
    assert open(keyfile).read() == key  # reused, not made again
    # the server still decrypts the token: the private repository clones with it
    rec = _create(cubbi, servers, f"{prefix}-after", servers["http_url"], env=remote_env)
    r = cubbi("cubbi-connect", rec["id"], "--", "cat", "/app/README", env=remote_env)
    assert (r.exit_code, r.stdout) == (0, "hello from the project\n"), r

    # the check can tell: with another key, the same stored token does not decrypt
    os.rename(keyfile, keyfile + ".saved")
    try:
        with open(keyfile, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
        server.stop()
        server.start()
        r = cubbi("cubbi-create", "--project", servers["http_url"], "--image",
                  servers["client_image"], "--name", f"{prefix}-otherkey", "--no-connect",
                  env=remote_env)
        one_line_error(r, 1, "cannot be decrypted")
    finally:
        os.replace(keyfile + ".saved", keyfile)
        server.stop()
        server.start()


def test_a_session_pushes_with_the_project_stored_on_the_service(cubbi, remote_env, servers,
                                                                 prefix):
    r = cubbi("cubbi-project", "add", servers["http_url"], "--token", "-", "--force",
              input=servers["token"], env=remote_env)
    assert r.exit_code == 0, r
    assert cubbi("cubbi-project", "list", "-q").stdout == ""  # nothing stored locally
    rec = _create(cubbi, servers, f"{prefix}-rpush", servers["http_url"], env=remote_env)
    branch, subject = f"{prefix}-service", f"pushed-{secrets.token_hex(4)}"
    r = _push_from(cubbi, rec["id"], branch, subject, env=remote_env)
    assert r.exit_code == 0, r
    assert _server_log(servers["http_host"], branch) == [subject, "init"]

"""Second-review fixes at the edges of create and remote: options before a
TARGET (`cubbi --image X DIR`), no user or password in a remote's URL, and a
local project credential never sent to a remote unasked."""


import json

import pytest

from cubbi_tools.errors import UsageError


def test_options_may_come_before_the_directory(cubbi, busybox_image, prefix, tmp_path):
    (tmp_path / "marker.txt").write_text("here\n")
    r = cubbi("cubbi", "--image", busybox_image, "--name", f"{prefix}-t", "--no-connect",
              "--json", str(tmp_path))
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["mount"] == str(tmp_path)
    r = cubbi("cubbi-connect", f"{prefix}-t", "--", "cat", "/app/marker.txt")
    assert (r.exit_code, r.stdout) == (0, "here\n"), r


def test_a_target_and_the_same_switch_twice_is_a_usage_error(cubbi, tmp_path):
    r = cubbi("cubbi-create", "--mount", str(tmp_path), "--no-connect", str(tmp_path))
    assert r.exit_code == 2 and "once" in r.stderr, r


def test_remote_urls_with_a_user_or_password_are_refused_without_echo(cubbi):
    from cubbi_tools.remote import check_url

    with pytest.raises(UsageError) as exc:
        check_url("http://alice:hunter2@127.0.0.1:3000")
    assert "hunter2" not in str(exc.value)
    r = cubbi("cubbi-remote", "add", "team", "http://alice:hunter2@127.0.0.1:3000",
              "--token", "-", input="tok\n")
    assert r.exit_code == 2, r
    assert "hunter2" not in r.output
    assert not (cubbi.config_dir / "config.yaml").exists() or \
        "hunter2" not in (cubbi.config_dir / "config.yaml").read_text()


def test_a_local_project_credential_stays_home_when_creating_on_a_remote(cubbi, recorder):
    """Created on a remote, a session of a project stored locally with a
    token gets the project but not the token: nothing that goes over the
    wire to the remote holds it (a loopback server records every byte)."""
    url, canary = "https://git.example.test/team/app", "LOCALTOKEN-canary"
    r = cubbi("cubbi-project", "add", url, "--token", "-", input=canary + "\n",
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    # the positive control: the token really is stored here (so the
    # create below had it at hand), and the recorder sees what is sent
    assert canary in (cubbi.config_dir / "secrets.yaml").read_text()
    recorder.answer = (503, {"error": "the recorder makes no sessions", "kind": "engine"})
    r = cubbi("cubbi-create", "--no-connect", "--image", "x", "--project", url,
              env={"CUBBI_SECRETS": "file", "CUBBI_REMOTE_URL": recorder.url,
                   "CUBBI_REMOTE_TOKEN": "remote-token"})
    assert r.exit_code == 4 and "the recorder makes no sessions" in r.stderr, r
    (create,) = [x for x in recorder.requests if x["method"] == "POST"]
    assert create["path"] == "/sessions" and json.loads(create["body"])["project"] == url, create
    assert create["headers"]["Authorization"] == "Bearer remote-token"
    assert b"remote-token" in recorder.wire() and url.encode() in recorder.wire()
    assert canary.encode() not in recorder.wire(), recorder.requests
    assert canary not in r.output

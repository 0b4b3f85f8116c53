"""Second-review fixes at the edges of create and remote: options before a
TARGET (`cubbi --image X DIR`), no user or password in a remote's URL, and a
local project credential never sent to a remote unasked."""


import pytest

from cubbi_tools.errors import UsageError


@pytest.mark.engine
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


def test_a_local_project_credential_stays_home_when_creating_on_a_remote(cubbi, monkeypatch):
    r = cubbi("cubbi-project", "add", "https://git.example.test/team/app", "--token", "-",
              input="LOCALTOKEN-canary\n", env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(cubbi.config_dir))
    monkeypatch.setenv("CUBBI_SECRETS", "file")
    from cubbi_tools import config
    from cubbi_tools.commands.create import COMMAND, build_request

    config._cache.clear()
    args = COMMAND.parser().parse_args(["--no-connect", "--image", "x",
                                        "--project", "https://git.example.test/team/app"])
    local = build_request(args)
    assert any("LOCALTOKEN-canary" in str(v) for v in local.files.values())
    monkeypatch.setenv("CUBBI_REMOTE_URL", "http://127.0.0.1:9")
    remote = build_request(COMMAND.parser().parse_args(
        ["--no-connect", "--image", "x", "--project", "https://git.example.test/team/app"]))
    assert "LOCALTOKEN-canary" not in repr(remote.to_dict())
    assert remote.project == local.project

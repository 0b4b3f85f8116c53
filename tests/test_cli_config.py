"""cubbi-config as a user types it, and the configuration reaching real
sessions: the env mapping, its precedence, the defaults, and the secret
canary (a distinctive fake key must appear only inside the session)."""

import json
import os
import secrets as _secrets
import shutil
import stat
import subprocess
import textwrap

import pytest

from conftest import BIN, BUSYBOX_IMAGE, cubbi_env, one_line_error

FILE = {"CUBBI_SECRETS": "file"}


# -- the command ---------------------------------------------------------------
def test_set_get_list_with_masking(cubbi):
    assert cubbi("cubbi-config", "set", "defaults.image", "aider").exit_code == 0
    r = cubbi("cubbi-config", "set", "openai.api_key", "sk-abc123", env=FILE)
    assert r.exit_code == 0, r
    assert "secrets.yaml" in r.stderr and "sk-abc123" not in r.output
    text = (cubbi.config_dir / "config.yaml").read_text()
    assert "api_key: secret:services.openai.api_key" in text and "sk-abc123" not in text
    assert stat.S_IMODE((cubbi.config_dir / "config.yaml").stat().st_mode) == 0o600

    assert cubbi("cubbi-config", "get", "defaults.image").stdout == "aider\n"
    assert cubbi("cubbi-config", "get", "openai.api_key", env=FILE).stdout == "********\n"
    r = cubbi("cubbi-config", "get", "services.openai.api_key", "--reveal", env=FILE)
    assert r.stdout == "sk-abc123\n", r
    rows = {x["key"]: x for x in cubbi("cubbi-config", "list", "--json", env=FILE).json()}
    assert rows["services.openai.api_key"] == {"key": "services.openai.api_key",
                                               "value": "********", "secret": True,
                                               "stored": "file"}
    assert rows["defaults.image"]["stored"] == "config"
    assert rows["defaults.connect"] == {"key": "defaults.connect", "value": True,
                                        "secret": False, "stored": "default"}
    listing = cubbi("cubbi-config", "list", env=FILE)
    assert "sk-abc123" not in listing.output and "********" in listing.stdout
    assert "sk-abc123" in cubbi("cubbi-config", "list", "--reveal", env=FILE).stdout


def test_set_reads_the_value_from_stdin(cubbi):
    r = cubbi("cubbi-config", "set", "anthropic.api_key", "-", input="sk-ant-stdin\n", env=FILE)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-config", "get", "anthropic.api_key", "--reveal", env=FILE)
    assert r.stdout == "sk-ant-stdin\n"
    r = cubbi("cubbi-config", "set", "anthropic.api_key", "-", input="", env=FILE)
    one_line_error(r, 2)


def test_unset_removes_the_key_and_its_secret(cubbi):
    cubbi("cubbi-config", "set", "openrouter.api_key", "sk-or-1", env=FILE)
    assert cubbi("cubbi-config", "unset", "openrouter.api_key", env=FILE).exit_code == 0
    assert "sk-or-1" not in (cubbi.config_dir / "secrets.yaml").read_text()
    one_line_error(cubbi("cubbi-config", "get", "openrouter.api_key", env=FILE), 3)
    one_line_error(cubbi("cubbi-config", "unset", "openrouter.api_key", env=FILE), 3)


def _secrets_file(cubbi):
    f = cubbi.config_dir / "secrets.yaml"
    return f.read_text() if f.exists() else ""


def test_secret_prefix_in_a_plain_key_is_a_string_and_unset_keeps_other_secrets(cubbi):
    """The review's sequence: unsetting defaults.image must not delete the
    OpenAI key its value happens to name."""
    assert cubbi("cubbi-config", "set", "openai.api_key", "sk-keep-me", env=FILE).exit_code == 0
    r = cubbi("cubbi-config", "set", "defaults.image", "secret:services.openai.api_key", env=FILE)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-config", "get", "defaults.image", "--json", env=FILE)
    assert r.json() == [{"key": "defaults.image", "value": "secret:services.openai.api_key",
                         "secret": False, "stored": "config"}], r
    assert cubbi("cubbi-config", "unset", "defaults.image", env=FILE).exit_code == 0
    assert "sk-keep-me" in _secrets_file(cubbi)
    r = cubbi("cubbi-config", "get", "openai.api_key", "--reveal", env=FILE)
    assert r.stdout == "sk-keep-me\n", r
    # a secret key takes the secret itself, never a reference to another key's
    one_line_error(cubbi("cubbi-config", "set", "anthropic.api_key", "secret:services.openai.api_key",
                   env=FILE), 2)
    assert cubbi("cubbi-config", "get", "anthropic.api_key", env=FILE).exit_code == 3


def test_unset_of_a_section_needs_yes_and_takes_its_secrets(cubbi):
    cubbi("cubbi-config", "set", "openai.api_key", "sk-sect-1", env=FILE)
    cubbi("cubbi-config", "set", "anthropic.api_key", "sk-sect-2", env=FILE)
    cubbi("cubbi-config", "set", "defaults.image", "aider", env=FILE)
    for key in ("services", "services.openai"):
        r = cubbi("cubbi-config", "unset", key, env=FILE)
        one_line_error(r, 2)
        assert "--yes" in r.stderr and key in r.stderr
    assert "sk-sect-1" in _secrets_file(cubbi) and "sk-sect-2" in _secrets_file(cubbi)
    r = cubbi("cubbi-config", "unset", "services", "--yes", env=FILE)
    assert r.exit_code == 0, r
    assert "removed services (2 settings, 2 stored secrets)" in r.stderr
    assert "sk-sect" not in _secrets_file(cubbi)
    assert cubbi("cubbi-config", "get", "defaults.image").stdout == "aider\n"
    one_line_error(cubbi("cubbi-config", "unset", "services", "--yes", env=FILE), 3)


def test_unset_remote_leaves_no_orphaned_tokens(cubbi):
    r = cubbi("cubbi-project", "add", "https://github.com/x/y", "--token", "tok-project",
              env=FILE)
    assert r.exit_code == 0 and "tok-project" in _secrets_file(cubbi), r
    for name in ("rva", "rvb"):
        r = cubbi("cubbi-remote", "add", name, f"http://127.0.0.1:9/{name}", "--token",
                  f"tok-{name}-secret", env=FILE)
        assert r.exit_code == 0, r
    cubbi("cubbi-remote", "default", "rva", env=FILE)
    one_line_error(cubbi("cubbi-config", "unset", "remote", env=FILE), 2)
    assert "tok-rva-secret" in _secrets_file(cubbi)
    r = cubbi("cubbi-config", "unset", "remote.endpoints.rva", "--yes", env=FILE)
    assert r.exit_code == 0, r
    assert "tok-rva-secret" not in _secrets_file(cubbi) and "tok-rvb-secret" in _secrets_file(cubbi)
    one_line_error(cubbi("cubbi-config", "get", "remote.default", env=FILE), 3)  # it named rva
    assert cubbi("cubbi-config", "unset", "remote", "-y", env=FILE).exit_code == 0
    assert "tok-rv" not in _secrets_file(cubbi)
    assert cubbi("cubbi-remote", "list", "--json", env=FILE).json() == []
    assert "tok-project" in _secrets_file(cubbi)  # not the config's: a project's git token


def test_unset_of_a_section_asks_on_a_terminal(cubbi):
    if not shutil.which("script"):
        pytest.fail("this test needs script(1) for a terminal: apt-get install util-linux")
    cubbi("cubbi-config", "set", "openai.api_key", "sk-ask", env=FILE)

    def on_tty(answer):  # script(1) runs it on a pseudo-terminal and types ANSWER
        return cubbi("script", "-qec", "cubbi-config unset services", "/dev/null",
                     input=answer, env=FILE)

    r = on_tty("n\n")
    assert r.exit_code == 1 and "nothing changed" in r.stdout, r
    assert "remove services (1 setting) and the stored secrets in it? [y/N]" in r.stdout, r
    assert "sk-ask" in _secrets_file(cubbi)
    r = on_tty("y\n")
    assert r.exit_code == 0 and "removed services (1 setting, 1 stored secret)" in r.stdout, r
    assert "sk-ask" not in _secrets_file(cubbi)


def test_bad_input_is_one_line_and_the_file_is_kept(cubbi):
    cubbi("cubbi-config", "set", "defaults.image", "aider")
    before = (cubbi.config_dir / "config.yaml").read_bytes()
    for args, code, words in [
        (("set", "defaults.connect", "maybe"), 2, "expected true or false"),
        (("set", "defaults.conect", "true"), 2, "did you mean defaults.connect"),
        (("set", "openai.api_kye", "x"), 2, "did you mean services.openai.api_key"),
        (("network", "add", "bad name"), 2, "invalid network name"),
        (("network", "remove", "nothere"), 3, "not a default network"),
        (("get", "defaults.imag"), 2, "did you mean defaults.image"),
        (("set",), 2, "required"),
    ]:
        r = cubbi("cubbi-config", *args)
        one_line_error(r, code)
        assert words in r.stderr, r
    assert (cubbi.config_dir / "config.yaml").read_bytes() == before


def test_malformed_yaml_is_reported_and_never_overwritten(cubbi):
    path = cubbi.config_dir / "config.yaml"
    path.write_text("defaults:\n  image: aider\n  networks: [a, b\n")
    path.chmod(0o600)
    before = path.read_bytes()
    for args in (("list",), ("set", "defaults.image", "goose"), ("network", "add", "n")):
        r = cubbi("cubbi-config", *args)
        one_line_error(r, 1)
        assert f"{path}:" in r.stderr and "invalid YAML" in r.stderr, r
        line, col = r.stderr.split(f"{path}:", 1)[1].split(":")[:2]
        assert line.isdigit() and col.isdigit(), r
    assert path.read_bytes() == before


def test_a_config_that_is_a_directory_or_not_in_a_directory(cubbi, tmp_path):
    (cubbi.config_dir / "config.yaml").mkdir()
    r = cubbi("cubbi-config", "list")
    one_line_error(r, 1)
    assert "is a directory" in r.stderr
    notdir = tmp_path / "plainfile"
    notdir.write_text("x")
    r = cubbi("cubbi-config", "set", "defaults.image", "x", env={"CUBBI_CONFIG_DIR": str(notdir)})
    one_line_error(r, 1)
    assert notdir.read_text() == "x"


def test_open_permissions_are_repaired_and_said(cubbi):
    cubbi("cubbi-config", "set", "defaults.image", "aider")
    path = cubbi.config_dir / "config.yaml"
    path.chmod(0o644)
    r = cubbi("cubbi-config", "get", "defaults.image")
    assert r.stdout == "aider\n" and "repaired to 0600" in r.stderr, r
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_network_list_add_remove(cubbi):
    assert cubbi("cubbi-config", "network", "add", "teamnet").exit_code == 0
    assert cubbi("cubbi-config", "network", "add", "othernet").exit_code == 0
    r = cubbi("cubbi-config", "network", "add", "teamnet")
    assert r.exit_code == 0 and "already" in r.stderr
    assert cubbi("cubbi-config", "network", "list").stdout == "teamnet\nothernet\n"
    assert cubbi("cubbi-config", "network", "list", "--json").json() == [
        {"name": "teamnet"}, {"name": "othernet"}]
    assert cubbi("cubbi-config", "get", "defaults.networks").stdout == "teamnet\nothernet\n"
    assert cubbi("cubbi-config", "network", "remove", "teamnet").exit_code == 0
    assert cubbi("cubbi-config", "network", "list").stdout == "othernet\n"


def test_reset_needs_confirmation_off_a_terminal(cubbi):
    cubbi("cubbi-config", "set", "openai.api_key", "sk-reset", env=FILE)
    one_line_error(cubbi("cubbi-config", "reset", env=FILE), 2)
    assert "sk-reset" in (cubbi.config_dir / "secrets.yaml").read_text()
    r = cubbi("cubbi-config", "reset", "--yes", env=FILE)
    assert r.exit_code == 0, r
    assert "sk-reset" not in (cubbi.config_dir / "secrets.yaml").read_text()
    assert cubbi("cubbi-config", "get", "defaults.image").stdout == "goose\n"


def test_path(cubbi):
    assert cubbi("cubbi-config", "path").stdout == f"{cubbi.config_dir}/config.yaml\n"
    (rec,) = cubbi("cubbi-config", "path", "--json", env=FILE).json()
    assert rec == {"config": f"{cubbi.config_dir}/config.yaml",
                   "secrets": f"{cubbi.config_dir}/secrets.yaml", "secrets_kind": "file"}


def test_unset_env_reference_fails_create_naming_the_key(cubbi):
    cubbi("cubbi-config", "set", "openai.api_key", "${CUBBI_T_NEVER_SET}")
    r = cubbi("cubbi-create", "--image", BUSYBOX_IMAGE, "--no-mount", "--json")
    one_line_error(r, 1)
    assert "services.openai.api_key" in r.stderr and "CUBBI_T_NEVER_SET" in r.stderr
    assert "export CUBBI_T_NEVER_SET=..." in r.stderr
    assert "cubbi-config unset services.openai.api_key" in r.stderr


# -- the real Secret Service ----------------------------------------------------
def _in_keyring_session(script, cfg, tmp_path):
    """Run SCRIPT (sh) on a private D-Bus session, where it unlocks its own
    gnome-keyring, with cubbi's secrets in the keyring: (proc, {"tag": value})
    from its "tag:value" lines."""
    for tool in ("dbus-run-session", "gnome-keyring-daemon"):
        if not shutil.which(tool):
            pytest.fail(f"this test needs {tool}: apt-get install dbus gnome-keyring")
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cfg), "CUBBI_SECRETS": "keyring",
                     "KEYRINGS": str(tmp_path / "keyrings")})
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.run(["dbus-run-session", "--", "sh", "-c", script], capture_output=True,
                          text=True, env=env, timeout=120)
    return proc, dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)


def test_keyring_backend_with_a_real_secret_service(tmp_path):
    """gnome-keyring on a private D-Bus session: cubbi-config stores the
    secret there (not in a file), reads it back, and unset removes it."""
    cfg = tmp_path / "cfg"
    script = textwrap.dedent("""\
        set -u
        printf pw | XDG_DATA_HOME="$KEYRINGS" gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1
        echo "set:$(printf 'sk-ring-42\\n' | cubbi-config set openai.api_key - 2>&1)"
        echo "reveal:$(cubbi-config get openai.api_key --reveal)"
        echo "masked:$(cubbi-config get openai.api_key)"
        echo "direct:$(python3 -c 'import keyring; print(keyring.get_password("cubbi", "services.openai.api_key"))')"
        echo "env:$(python3 -c 'from cubbi_tools import config; print(config.session_env(config.load())["OPENAI_API_KEY"])')"
        echo "stored:$(cubbi-config list --json | grep api_key)"
        cubbi-config unset openai.api_key
        echo "after:$(python3 -c 'import keyring; print(keyring.get_password("cubbi", "services.openai.api_key"))')"
    """)
    proc, out = _in_keyring_session(script, cfg, tmp_path)
    assert out.get("set") == ("cubbi-config: services.openai.api_key stored in the keyring "
                              f"(SecretService); {cfg}/config.yaml refers to it"), proc
    assert out["reveal"] == "sk-ring-42" and out["masked"] == "********", proc
    assert out["direct"] == "sk-ring-42" and out["env"] == "sk-ring-42", proc
    assert json.loads(out["stored"])["stored"] == "keyring", proc
    assert out["after"] == "None", proc
    assert not (cfg / "secrets.yaml").exists()


# -- sessions --------------------------------------------------------------------
def _session_env(cubbi, sid, *names):
    script = "; ".join(f'echo "{n}=${n}"' for n in names)
    r = cubbi("cubbi-connect", sid, "--", "sh", "-lc", script)
    assert r.exit_code == 0, r
    return dict(line.split("=", 1) for line in r.stdout.splitlines())


def test_env_mapping_and_precedence_reach_the_session(cubbi, busybox_image, prefix, tmp_path,
                                                       monkeypatch):
    for key, value in [("openai.api_key", "cfg-openai"), ("anthropic.api_key", "cfg-anthropic"),
                       ("openrouter.api_key", "cfg-openrouter"),
                       ("langfuse.url", "http://lf.example"),
                       ("langfuse.public_key", "${CUBBI_T_PK}"),
                       ("langfuse.secret_key", "cfg-lf-secret"),
                       ("mistral.api_key", "cfg-mistral"),
                       ("openai.base_url", "${CUBBI_T_NOT_SET}")]:
        r = cubbi("cubbi-config", "set", key, value, env=FILE)
        assert r.exit_code == 0, r
    envfile = tmp_path / "s.env"
    envfile.write_text("ANTHROPIC_API_KEY=file-anthropic\nOPENROUTER_API_KEY=file-openrouter\n")
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-env", "--no-mount",
              "--json", "--wait", "--env-file", str(envfile), "-e", "OPENROUTER_API_KEY=cli-or",
              "-e", "OPENAI_BASE_URL=http://cli", env=dict(FILE, CUBBI_T_PK="pk-from-env"))
    assert r.exit_code == 0, r
    (rec,) = r.json()
    got = _session_env(cubbi, rec["id"], "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                       "OPENROUTER_API_KEY", "LANGFUSE_URL", "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
                       "LANGFUSE_INIT_PROJECT_SECRET_KEY", "MISTRAL_API_KEY", "OPENAI_BASE_URL")
    assert got == {
        "OPENAI_API_KEY": "cfg-openai",              # config only
        "ANTHROPIC_API_KEY": "file-anthropic",       # --env-file over config
        "OPENROUTER_API_KEY": "cli-or",              # -e over --env-file over config
        "LANGFUSE_URL": "http://lf.example",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-from-env",   # ${VAR} resolved at use
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": "cfg-lf-secret",
        "MISTRAL_API_KEY": "cfg-mistral",            # a provider the user added
        "OPENAI_BASE_URL": "http://cli",             # unset ${VAR} overridden: never resolved
    }


def test_defaults_drive_bare_cubbi(cubbi, busybox_image, prefix, engine):
    net = f"{prefix}-net"
    engine.create_network(net, labels={"cubbi.test": "true"})
    try:
        for key, value in [("defaults.image", busybox_image), ("defaults.mount_local", "false"),
                           ("defaults.connect", "false"), ("defaults.memory", "256m")]:
            assert cubbi("cubbi-config", "set", key, value).exit_code == 0
        assert cubbi("cubbi-config", "network", "add", net).exit_code == 0
        r = cubbi("cubbi", "--name", f"{prefix}-bare", "--json")
        assert r.exit_code == 0, r
        (rec,) = r.json()
        assert rec["image"] == busybox_image and rec["mount"] is None, rec
        assert net in rec["networks"], rec
        info = engine.inspect_container(rec["container_id"])
        assert info["HostConfig"]["Memory"] == 256 * 1024 * 1024
        assert cubbi("cubbi-close", rec["id"]).exit_code == 0
    finally:
        for entry in engine.containers(all=True, labels=["cubbi.session=true"]):
            if (entry.get("Labels") or {}).get("cubbi.session.name", "").startswith(prefix):
                engine.remove(entry["Id"])
        subprocess.run(["docker", "network", "rm", net], capture_output=True)


def test_secret_canary_appears_only_inside_the_session(cubbi, busybox_image, prefix):
    canary_cfg = "sk-canary-cfg-" + _secrets.token_hex(8)
    canary_cli = "sk-canary-cli-" + _secrets.token_hex(8)
    r = cubbi("cubbi-config", "set", "openai.api_key", "-", input=canary_cfg + "\n", env=FILE)
    assert r.exit_code == 0, r
    seen = [r.output]
    assert canary_cfg not in (cubbi.config_dir / "config.yaml").read_text()
    debug = dict(FILE, CUBBI_DEBUG="1")
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-canary", "--no-mount",
              "--json", "--wait", "-e", f"ANTHROPIC_API_KEY={canary_cli}", env=debug)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    sid, cid = rec["id"], rec["container_id"]
    seen.append(r.output)

    # where the tool needs it: the session's environment, for login shells and commands
    got = _session_env(cubbi, sid, "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    assert got == {"OPENAI_API_KEY": canary_cfg, "ANTHROPIC_API_KEY": canary_cli}
    r = cubbi("cubbi-connect", sid, "--", "stat", "-c", "%a", "/cubbi/env")
    assert r.stdout.strip() == "600", r

    # and nowhere else
    for args in (("cubbi-ls", "--json", "--all"), ("cubbi-ls", "--all"),
                 ("cubbi-logs", sid), ("cubbi-logs", "--json", sid),
                 ("cubbi-config", "list"), ("cubbi-config", "list", "--json"),
                 ("cubbi-config", "get", "openai.api_key", "--json")):
        res = cubbi(*args, env=debug)
        assert res.exit_code == 0, (args, res)
        seen.append(res.output)
    inspect = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True)
    assert inspect.returncode == 0 and cid in inspect.stdout
    seen.append(inspect.stdout)
    top = subprocess.run(["docker", "exec", cid, "cat", "/proc/1/environ"], capture_output=True)
    seen.append(top.stdout.decode(errors="replace"))
    r = cubbi("cubbi-close", sid, "--json", env=debug)
    assert r.exit_code == 0, r
    seen.append(r.output)
    everything = "\n".join(seen)
    assert canary_cfg not in everything and canary_cli not in everything
    # the test would notice a leak: the same search finds the canary where it is
    assert canary_cfg in (cubbi.config_dir / "secrets.yaml").read_text()


def test_concurrent_sets_lose_nothing(cubbi):
    """Each set re-reads the file under a lock: parallel writers all land."""
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), "CUBBI_SECRETS": "file"})
    procs = [subprocess.Popen([os.path.join(BIN, "cubbi-config"), "set", f"svc{i}.api_key",
                               f"k{i}"], env=env, stderr=subprocess.PIPE)
             for i in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    rows = cubbi("cubbi-config", "list", "--json", "--reveal", env=FILE).json()
    got = {r["key"]: r["value"] for r in rows if r["key"].startswith("services.svc")}
    assert got == {f"services.svc{i}.api_key": f"k{i}" for i in range(8)}


def test_docker_network_from_the_config_is_the_one_sessions_join(cubbi, busybox_image, prefix, engine):
    net = f"{prefix}-net"
    assert cubbi("cubbi-config", "set", "docker.network", net).exit_code == 0
    try:
        r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-n",
                  "--no-mount", "--json")
        assert r.exit_code == 0, r
        (rec,) = r.json()
        assert rec["networks"] == [net]
        assert engine.network(net)["Labels"].get("cubbi.network") == "true"
    finally:
        cubbi("cubbi-close", f"{prefix}-n")
        try:
            engine.delete(f"/networks/{net}")
        except Exception:
            pass


def test_reset_repairs_a_malformed_config_keeping_a_backup(cubbi):
    path = cubbi.config_dir / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("defaults:\n  image: [unclosed\n")
    path.chmod(0o600)
    r = cubbi("cubbi-config", "get", "defaults.image")
    assert r.exit_code == 1 and "invalid YAML" in r.stderr, r
    r = cubbi("cubbi-config", "reset")  # off a terminal: asks for --yes, changes nothing
    assert r.exit_code == 2 and "--yes" in r.stderr and path.exists(), r
    r = cubbi("cubbi-config", "reset", "--yes")
    assert r.exit_code == 0 and "config.yaml.bak" in r.stderr, r
    assert (cubbi.config_dir / "config.yaml.bak").read_text() == "defaults:\n  image: [unclosed\n"
    r = cubbi("cubbi-config", "get", "defaults.image")
    assert r.exit_code == 0 and r.stdout.strip() == "goose", r


def test_keys_lists_every_known_key_and_every_key_set(cubbi):
    r = cubbi("cubbi-config", "set", "services.mistral.api_key", "m-1", env=FILE)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-config", "keys", env=FILE)
    keys = r.stdout.split()
    assert r.exit_code == 0 and keys == sorted(keys), r
    assert {"defaults.image", "ui.colors", "services.openai.api_key",
            "services.mistral.api_key"} <= set(keys) and "m-1" not in r.stdout


def test_ui_verbose_shows_each_engine_request_on_stderr(cubbi, engine):
    r = cubbi("cubbi-ls", "--json")
    assert r.exit_code == 0 and "cubbi: engine" not in r.stderr, r
    assert cubbi("cubbi-config", "set", "ui.verbose", "true").exit_code == 0
    r = cubbi("cubbi-ls", "--json")
    assert r.exit_code == 0 and "cubbi: engine GET /containers/json?" in r.stderr, r
    assert all(line.startswith("cubbi: engine ") for line in r.stderr.splitlines()), r


def test_a_malformed_reset_forgets_the_secrets_and_keeps_every_backup(cubbi):
    """The secret of a malformed config.yaml does not survive its reset, a
    second malformed reset keeps the first backup, and a reset with no
    config.yaml still clears what secrets.yaml holds for the config."""
    path = cubbi.config_dir / "config.yaml"
    store = cubbi.config_dir / "secrets.yaml"
    cubbi("cubbi-config", "set", "openai.api_key", "sk-first", env=FILE)
    (cubbi.config_dir / "projects-like").write_text("")  # unrelated files stay
    with open(path, "a") as fh:
        fh.write("remote:\n  endpoints:\n    srv:\n      url: https://x\nbroken: [\n")
    r = cubbi("cubbi-config", "get", "defaults.image", env=FILE)
    one_line_error(r, 1, "or run 'cubbi-config reset --yes' (keeps it as config.yaml.bak)")
    # a project's secret is cubbi-project's: reset leaves it
    with open(store, "a") as fh:
        fh.write("remote:srv:token: tok-1\nproject:github.com/a/b:token: keep-me\n")
    r = cubbi("cubbi-config", "reset", "--yes", env=FILE)
    assert r.exit_code == 0 and "config.yaml.bak " in r.stderr, r
    assert "2 stored secrets removed" in r.stderr, r
    text = store.read_text()
    assert "sk-first" not in text and "tok-1" not in text and "keep-me" in text, text
    one_line_error(cubbi("cubbi-config", "get", "openai.api_key", env=FILE), 3)

    cubbi("cubbi-config", "set", "openai.api_key", "sk-second", env=FILE)
    path.write_text(path.read_text() + "again: [\n")
    r = cubbi("cubbi-config", "reset", "--yes", env=FILE)
    assert r.exit_code == 0 and "config.yaml.bak.1 " in r.stderr, r
    assert "broken: [" in (cubbi.config_dir / "config.yaml.bak").read_text()
    assert "again: [" in (cubbi.config_dir / "config.yaml.bak.1").read_text()
    assert "sk-second" not in store.read_text()

    cubbi("cubbi-config", "set", "anthropic.api_key", "sk-third", env=FILE)
    path.unlink()
    r = cubbi("cubbi-config", "reset", "--yes", env=FILE)
    assert r.exit_code == 0 and "1 stored secret left behind removed" in r.stderr, r
    assert "sk-third" not in store.read_text() and "keep-me" in store.read_text()


def test_a_malformed_reset_forgets_the_keyring_secret(tmp_path):
    cfg = tmp_path / "cfg"
    script = textwrap.dedent("""\
        set -u
        printf pw | XDG_DATA_HOME="$KEYRINGS" gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1
        printf 'sk-ring-7\\n' | cubbi-config set openai.api_key - 2>/dev/null
        echo "before:$(python3 -c 'import keyring; print(keyring.get_password("cubbi", "services.openai.api_key"))')"
        echo 'broken: [' >> "$CUBBI_CONFIG_DIR/config.yaml"
        echo "reset:$(cubbi-config reset --yes 2>&1)"
        echo "after:$(python3 -c 'import keyring; print(keyring.get_password("cubbi", "services.openai.api_key"))')"
    """)
    proc, out = _in_keyring_session(script, cfg, tmp_path)
    assert out.get("before") == "sk-ring-7", proc
    assert "1 stored secret removed" in out["reset"], proc
    assert out["after"] == "None", proc


def test_a_repaired_mode_is_said_once(tmp_path, monkeypatch, capsys):
    """Reset reads config.yaml twice (load, then edit): on a file system
    where the mode does not stick (the trial's twice-printed line), the
    repair is still said once."""
    from cubbi_tools import files

    path = tmp_path / "config.yaml"
    path.write_text("defaults:\n  image: aider\n")
    path.chmod(0o644)
    monkeypatch.setattr(files.os, "fchmod", lambda fd, mode: None)
    files.load(str(path), fresh=True)
    files.load(str(path), fresh=True)
    assert capsys.readouterr().err.count("repaired to 0600") == 1


@pytest.mark.parametrize("key, said", [
    ("no.such.key", "no.such.key: unknown key; see cubbi-config list"),
    ("services.no.such.key", "services.no.such.key: unknown key; see cubbi-config list"),
    ("defaults.imag", "did you mean defaults.image?"),
    ("openai.api_kye", "did you mean services.openai.api_key?"),
])
def test_only_name_field_is_the_services_shorthand_and_only_close_keys_are_offered(cubbi, key,
                                                                                  said):
    one_line_error(cubbi("cubbi-config", "get", key), 2, said)

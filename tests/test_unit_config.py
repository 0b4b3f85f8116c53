"""The configuration's pure logic: keys, types, references, the session
environment and its precedence, masking, atomic writes, the secret file."""

import os
import stat
import subprocess
import sys

import pytest

from cubbi_tools import config, envs, secrets
from cubbi_tools.errors import CubbiError, NotFound, UsageError

from conftest import ROOT


@pytest.fixture(autouse=True)
def cfgdir(tmp_path, monkeypatch):
    d = tmp_path / "cfg"
    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(d))
    monkeypatch.setenv("CUBBI_SECRETS", "file")
    config._cache.clear()
    secrets._store.clear()
    yield d
    config._cache.clear()
    secrets._store.clear()


# -- keys ----------------------------------------------------------------------
def test_shorthand_is_the_services_section():
    assert config.canonical("openai.api_key") == "services.openai.api_key"
    assert config.canonical("langfuse.url") == "services.langfuse.url"
    assert config.canonical("defaults.image") == "defaults.image"
    assert config.canonical("services.openai.api_key") == "services.openai.api_key"
    with pytest.raises(UsageError):
        config.canonical("defaults..image")


@pytest.mark.parametrize("key", [
    "defaults.image", "defaults.connect", "defaults.mount_local", "defaults.networks",
    "docker.network", "docker.socket", "ui.colors", "ui.verbose", "images.ca_cert",
    "remote.default", "remote.endpoints.prod.url", "remote.endpoints.prod.auth_method",
    "services.mistral.api_key", "services.my-llm.base_url", "services.openai.api_key",
    "services.langfuse.public_key",
])
def test_known_keys_are_accepted(key):
    assert config.check_key(key)


@pytest.mark.parametrize("key,near", [
    ("defaults.conect", "defaults.connect"),
    ("defaults.imgae", "defaults.image"),
    ("services.openai.api_kye", "services.openai.api_key"),
    ("docker.sockt", "docker.socket"),
])
def test_unknown_key_names_the_nearest(key, near):
    with pytest.raises(UsageError, match=f"did you mean {near}"):
        config.check_key(key)


def test_secret_keys_by_name():
    for key in ("services.openai.api_key", "services.langfuse.secret_key",
                "services.anthropic.auth_token", "services.x.password"):
        assert config.is_secret(key), key
    for key in ("services.langfuse.url", "defaults.image", "remote.endpoints.a.auth_method"):
        assert not config.is_secret(key), key


# -- types ---------------------------------------------------------------------
def test_values_are_typed():
    assert config.parse("defaults.connect", "false") is False
    assert config.parse("defaults.connect", "YES") is True
    assert config.parse("defaults.networks", "a, b,a") == ["a", "b"]
    assert config.parse("defaults.networks", "") == []
    assert config.parse("defaults.cpus", "2") == 2
    assert config.parse("defaults.cpus", "1.5") == 1.5
    assert config.parse("remote.endpoints.p.url", "https://x.example/") == "https://x.example"


@pytest.mark.parametrize("key,text", [
    ("defaults.connect", "maybe"), ("defaults.cpus", "-1"), ("defaults.pids_limit", "x"),
    ("defaults.memory", "lots"), ("docker.network", "bad name"), ("docker.network", "host"),
    ("defaults.networks", "ok,-bad"), ("docker.socket", "relative/path"),
    ("remote.endpoints.p.url", "ftp://x"), ("images.ca_cert", "/no/such/file.pem"),
    ("remote.default", "nowhere"), ("defaults.image", ""),
])
def test_wrong_types_are_usage_errors(key, text):
    with pytest.raises(UsageError) as exc:
        config.parse(key, text)
    assert key in str(exc.value)


def test_a_wrong_type_in_the_file_names_file_and_key():
    with pytest.raises(CubbiError, match=r"config\.yaml: defaults\.connect: expected true or false"):
        config.defaults({"defaults": {"connect": "maybe"}})


def test_defaults_fill_in():
    d = config.defaults({"defaults": {"image": "aider"}})
    assert d["image"] == "aider" and d["connect"] is True and d["networks"] == []
    assert d["cpus"] is None and d["hardened"] is False


# -- references and the session environment -----------------------------------
def test_spec_mapping_and_the_rule_for_other_providers():
    cfg = {"services": {
        "openai": {"api_key": "o", "base_url": "http://b"},
        "anthropic": {"api_key": "a"}, "openrouter": {"api_key": "r"},
        "langfuse": {"url": "http://lf", "public_key": "pk", "secret_key": "sk"},
        "my-llm": {"api_key": "m"}, "empty": {"api_key": ""},
    }}
    assert config.session_env(cfg) == {
        "OPENAI_API_KEY": "o", "OPENAI_BASE_URL": "http://b", "ANTHROPIC_API_KEY": "a",
        "OPENROUTER_API_KEY": "r", "LANGFUSE_URL": "http://lf",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk", "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk",
        "MY_LLM_API_KEY": "m",
    }


def test_env_references_resolve_at_use(monkeypatch):
    cfg = {"services": {"openai": {"api_key": "${CUBBI_T_KEY}"},
                        "x": {"url": "http://${CUBBI_T_HOST}:1/$${LITERAL}"}}}
    monkeypatch.setenv("CUBBI_T_KEY", "from-env")
    monkeypatch.setenv("CUBBI_T_HOST", "h")
    assert config.session_env(cfg) == {"OPENAI_API_KEY": "from-env",
                                       "X_URL": "http://h:1/${LITERAL}"}
    monkeypatch.delenv("CUBBI_T_KEY")
    with pytest.raises(CubbiError) as exc:
        config.session_env(cfg)
    assert "services.openai.api_key" in str(exc.value) and "CUBBI_T_KEY" in str(exc.value)
    assert exc.value.code == 1


def test_secret_references_resolve_from_the_store():
    secrets.put("services.openai.api_key", "stored-value")
    cfg = {"services": {"openai": {"api_key": "secret:services.openai.api_key"},
                        "anthropic": {"api_key": "secret:services.anthropic.api_key"}}}
    with pytest.raises(CubbiError, match="services.anthropic.api_key.*not in"):
        config.session_env(cfg)
    assert config.session_env(cfg, skip={"ANTHROPIC_API_KEY"}) == {"OPENAI_API_KEY": "stored-value"}


def test_secret_prefix_is_a_reference_only_in_a_secret_key():
    secrets.put("services.openai.api_key", "sk-not-an-image")
    data = {"defaults": {"image": "secret:services.openai.api_key"}}
    assert config.secret_ref("defaults.image", "secret:services.openai.api_key") is None
    assert config.value(data, "defaults.image") == "secret:services.openai.api_key"
    assert config.secret_ref("services.x.api_key", "secret:services.x.api_key") == \
        "services.x.api_key"


def test_owned_secrets_are_the_removed_keys_own_names_and_endpoint_tokens():
    before = {"defaults": {"image": "secret:services.openai.api_key"},
              "services": {"openai": {"api_key": "secret:services.openai.api_key",
                                      "base_url": "http://h"},
                           "x": {"api_key": "secret:services.other.api_key"}},
              "remote": {"default": "a", "endpoints": {"a": {"url": "http://a"},
                                                       "b": {"url": "http://b"}}}}
    assert config.owned_secrets(before, {**before, "defaults": {}}) == []
    after = {"remote": {"endpoints": {"b": {"url": "http://b"}}}}
    assert config.owned_secrets(before, after) == [
        "services.openai.api_key", "services.x.api_key", "remote:a:token"]
    assert config.owned_secrets(before, {}) == [
        "services.openai.api_key", "services.x.api_key", "remote:a:token", "remote:b:token"]


def test_unset_variable_error_names_key_variable_and_both_fixes():
    with pytest.raises(CubbiError) as exc:
        config.resolve("services.anthropic.api_key", "${CUBBI_T_NOPE_VAR}")
    assert str(exc.value) == (
        "services.anthropic.api_key: ${CUBBI_T_NOPE_VAR} is not set in the environment; "
        "export CUBBI_T_NOPE_VAR=... or remove the setting with: "
        "cubbi-config unset services.anthropic.api_key")


def test_precedence_cli_over_env_file_over_config_over_defaults(tmp_path):
    f = tmp_path / "e.env"
    f.write_text("B=file\nC=file\n")
    env = envs.session_env(["C=cli"], [str(f)], config_env={"A": "cfg", "B": "cfg", "C": "cfg",
                                                            "D": "cfg"},
                           defaults={"D": "default", "E": "default"})
    assert env == {"A": "cfg", "B": "file", "C": "cli", "D": "cfg", "E": "default"}


def test_overridden_variables_are_never_resolved(tmp_path):
    cfg = {"services": {"openai": {"api_key": "${CUBBI_T_UNSET_VAR}"}}}
    env = envs.session_env(["OPENAI_API_KEY=cli"], [],
                           config_env=lambda skip: config.session_env(cfg, skip))
    assert env == {"OPENAI_API_KEY": "cli"}
    with pytest.raises(CubbiError, match="CUBBI_T_UNSET_VAR"):
        envs.session_env([], [], config_env=lambda skip: config.session_env(cfg, skip))


# -- masking -------------------------------------------------------------------
def test_list_masks_secrets_unless_revealed(monkeypatch):
    from cubbi_tools.commands import config as cmd

    secrets.put("services.openai.api_key", "sk-hidden")
    monkeypatch.setenv("CUBBI_T_PK", "pk-env")
    data = {"services": {"openai": {"api_key": "secret:services.openai.api_key"},
                         "langfuse": {"public_key": "${CUBBI_T_PK}", "secret_key": "plain"},
                         "anthropic": {"api_key": "secret:services.anthropic.api_key"}}}
    rows = {r["key"]: r for r in cmd._rows(data, None, reveal=False)[0]}
    assert rows["services.openai.api_key"] == {"key": "services.openai.api_key", "value": config.MASK,
                                               "secret": True, "stored": "file"}
    assert rows["services.langfuse.public_key"]["value"] == "${CUBBI_T_PK}"
    assert rows["services.langfuse.public_key"]["stored"] == "env"
    assert rows["services.langfuse.secret_key"]["value"] == config.MASK
    assert rows["services.anthropic.api_key"]["stored"] == "missing"
    assert rows["defaults.image"] == {"key": "defaults.image", "value": "goose", "secret": False,
                                      "stored": "default"}
    assert "sk-hidden" not in repr(rows) and "pk-env" not in repr(rows)
    shown = {r["key"]: r["value"] for r in cmd._rows(data, None, reveal=True)[0]}
    assert shown["services.openai.api_key"] == "sk-hidden"
    assert shown["services.langfuse.public_key"] == "pk-env"


# -- the file ------------------------------------------------------------------
def test_save_is_0600_and_round_trips(cfgdir):
    config.save({"defaults": {"image": "aider", "networks": ["a"]}})
    path = cfgdir / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.load(fresh=True) == {"defaults": {"image": "aider", "networks": ["a"]}}


def test_a_failed_write_leaves_the_old_file(cfgdir, monkeypatch):
    config.save({"defaults": {"image": "old"}})
    before = (cfgdir / "config.yaml").read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(CubbiError, match="No space left on device.*unchanged"):
        config.save({"defaults": {"image": "new"}})
    assert (cfgdir / "config.yaml").read_bytes() == before
    assert sorted(p.name for p in cfgdir.iterdir() if p.name.endswith(".tmp")) == []


def test_edit_saves_nothing_when_the_block_fails(cfgdir):
    config.save({"defaults": {"image": "old"}})
    before = (cfgdir / "config.yaml").read_bytes()
    with pytest.raises(UsageError):
        with config.edit() as data:
            data["defaults"]["image"] = "new"
            config.parse("defaults.connect", "maybe")
    assert (cfgdir / "config.yaml").read_bytes() == before


def test_too_open_permissions_are_repaired(cfgdir, capsys):
    config.save({"ui": {"colors": False}})
    path = cfgdir / "config.yaml"
    os.chmod(path, 0o644)
    assert config.load(fresh=True) == {"ui": {"colors": False}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "repaired to 0600" in capsys.readouterr().err


def test_malformed_yaml_names_line_and_column(cfgdir):
    cfgdir.mkdir()
    (cfgdir / "config.yaml").write_text("defaults:\n  image: [unclosed\n")
    with pytest.raises(CubbiError, match=r"config\.yaml:\d+:\d+: invalid YAML"):
        config.load(fresh=True)


def test_set_and_unset_in_nested_sections():
    data = {}
    config.set_in(data, "remote.endpoints.p.url", "https://x")
    config.set_in(data, "remote.default", "p")
    assert config.unset_in(data, "remote.endpoints.p.url") == "https://x"
    assert data == {"remote": {"default": "p"}}
    with pytest.raises(NotFound):
        config.unset_in(data, "remote.endpoints.p.url")


def test_peek_does_not_import_yaml_without_a_file(tmp_path):
    code = ("import sys; from cubbi_tools import config; "
            "v = config.peek('defaults.connect', 'dflt'); "
            "print(v, 'yaml' in sys.modules, 'keyring' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, CUBBI_CONFIG_DIR=str(tmp_path / "none"),
                                  PYTHONPATH=ROOT))
    assert out.stdout.split() == ["dflt", "False", "False"], out.stderr


# -- the secret file -----------------------------------------------------------
def test_file_store_put_get_delete(cfgdir):
    assert secrets.where() == str(cfgdir / "secrets.yaml")
    assert secrets.get("project:github.com/hello/private:token") is None
    secrets.put("project:github.com/hello/private:token", "ghp_x")
    secrets.put("services.openai.api_key", "sk-y")
    assert secrets.get("project:github.com/hello/private:token") == "ghp_x"
    assert stat.S_IMODE((cfgdir / "secrets.yaml").stat().st_mode) == 0o600
    assert secrets.delete("services.openai.api_key") is True
    assert secrets.delete("services.openai.api_key") is False
    assert secrets.get("services.openai.api_key") is None
    assert secrets.get("project:github.com/hello/private:token") == "ghp_x"


def test_unusable_keyring_backends_fall_back_to_the_file(cfgdir, monkeypatch):
    monkeypatch.setenv("CUBBI_SECRETS", "auto")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    import keyring.core

    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    assert secrets.usable_keyring() is None
    assert secrets.kind() == "file"
    secrets._store.clear()
    monkeypatch.setenv("CUBBI_SECRETS", "keyring")
    with pytest.raises(CubbiError, match="no usable keyring"):
        secrets.put("x", "y")
    monkeypatch.setenv("CUBBI_SECRETS", "bogus")
    with pytest.raises(UsageError, match="CUBBI_SECRETS"):
        secrets.where()

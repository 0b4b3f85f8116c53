"""cubbi-ssh and cubbi-ssh-config with the real OpenSSH client (ssh, scp,
sftp, ssh -O), against local sessions and sessions of a real cubbi-server:
sshd -i in the session over cubbi's own exec stream, no published port."""

import hashlib
import os
import re
import subprocess

import pytest

from conftest import ROOT, cubbi_env, one_line_error

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "sshd-image")


@pytest.fixture(scope="session")
def sshd_image(debian_image):
    """The offline Debian base with openssh-server, cached by its Dockerfile."""
    with open(os.path.join(FIXTURE, "Dockerfile"), "rb") as fh:
        tag = "cubbi-test/sshd:" + hashlib.sha256(fh.read()).hexdigest()[:12]
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode:
        b = subprocess.run(["docker", "build", "-q", "-t", tag, "--build-arg",
                            f"BASE_IMAGE={debian_image}", FIXTURE],
                           capture_output=True, text=True, timeout=600)
        if b.returncode:
            pytest.fail(f"cannot build {tag}: {b.stderr[-2000:]}")
    return tag


def _keypair(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return str(key)


def _ssh(*argv, input=None, timeout=60, env=None):
    """The OpenSSH client itself, without an agent (only the keys named), in
    the environment of the test's cubbi (its config directory: the
    ProxyCommand is a cubbi command)."""
    env = cubbi_env({"SSH_AUTH_SOCK": None, "CUBBI_SECRETS": "file", **(env or {})})
    return subprocess.run(list(argv), input=input, capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(autouse=True)
def _ssh_env(cubbi, monkeypatch):
    monkeypatch.setenv("CUBBI_CONFIG_DIR", str(cubbi.config_dir))
    monkeypatch.setenv("CUBBI_HOME", str(cubbi.cubbi_home))


@pytest.fixture
def user_key(cubbi, tmp_path):
    """This test's user key, set as ssh.public_key in its cubbi config."""
    key = _keypair(tmp_path / "keys", "alice_ed25519")
    r = cubbi("cubbi-config", "set", "ssh.public_key", key + ".pub")
    assert r.exit_code == 0, r
    return key


def _config(cubbi, tmp_path, sid, env=None):
    r = cubbi("cubbi-ssh-config", sid, env=env)
    assert r.exit_code == 0, r
    path = tmp_path / f"ssh_config-{sid}"
    path.write_text(r.stdout)
    return str(path), r.stdout


def _exercise(cubbi, tmp_path, rec, env=None, user="root"):
    """ssh, scp, sftp and ssh -O against the session REC."""
    r = cubbi("cubbi-ssh", rec["id"], "--", "id -un; exit 7", env=env)
    assert r.exit_code == 7 and r.stdout == f"{user}\n", r  # the command's status comes back
    cfg, text = _config(cubbi, tmp_path, rec["id"], env)
    host = f"cubbi-{rec['name']}"
    assert f"Host {host}\n" in text and f"HostKeyAlias cubbi-{rec['id']}" in text, text
    assert "StrictHostKeyChecking yes" in text and "PasswordAuthentication no" in text, text
    s = _ssh("ssh", "-F", cfg, host, "cat /cubbi/ssh/host_ed25519_key.pub")
    assert s.returncode == 0, s
    recorded = open(os.path.join(str(cubbi.config_dir), "ssh", "known_hosts")).read()
    assert s.stdout.split()[1] in recorded  # the key ssh accepted is the one recorded

    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(300_000))
    s = _ssh("scp", "-F", cfg, str(payload), f"{host}:/tmp/payload.bin")
    assert s.returncode == 0, s
    back = tmp_path / "back.bin"
    s = _ssh("sftp", "-F", cfg, "-b", "-", host,
             input=f"get /tmp/payload.bin {back}\nls /tmp\n")
    assert s.returncode == 0 and "payload.bin" in s.stdout, s
    assert back.read_bytes() == payload.read_bytes()

    control = tmp_path / "cm.sock"  # ssh -O: one connection, commands multiplexed on it
    master = ["-o", "ControlMaster=yes", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
    s = _ssh("ssh", "-F", cfg, *master, "-fN", host)
    assert s.returncode == 0, s
    try:
        s = _ssh("ssh", "-F", cfg, "-o", f"ControlPath={control}", "-O", "check", host)
        assert s.returncode == 0 and "Master running" in s.stderr, s
        s = _ssh("ssh", "-F", cfg, "-o", f"ControlPath={control}", "-o", "ControlMaster=no",
                 host, "echo over-the-master")
        assert s.returncode == 0 and s.stdout == "over-the-master\n", s
    finally:
        s = _ssh("ssh", "-F", cfg, "-o", f"ControlPath={control}", "-O", "exit", host)
    assert s.returncode == 0, s
    return cfg


def test_ssh_scp_sftp_and_multiplexing_into_a_local_session(cubbi, user_key, sshd_image,
                                                              prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", sshd_image, "--name", f"{prefix}-ssh", "--no-mount",
              "--no-connect", "--wait", "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    cfg = _exercise(cubbi, tmp_path, rec, user="root")
    # the host key is checked: a changed one is refused (StrictHostKeyChecking stays on)
    kh = os.path.join(str(cubbi.config_dir), "ssh", "known_hosts")
    other = _keypair(tmp_path / "other", "other_host")
    with open(other + ".pub") as fh:
        wrong = " ".join(fh.read().split()[:2])
    text = open(kh).read()
    with open(kh, "w") as fh:
        fh.write(re.sub(r"(cubbi-%s) \S+ \S+" % rec["id"], r"\1 " + wrong, text))
    s = _ssh("ssh", "-F", cfg, f"cubbi-{rec['name']}", "true")
    assert s.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in s.stderr, s
    r = cubbi("cubbi-ssh", rec["id"], "--", "true")
    assert r.exit_code == 255 and "Host key verification failed" in r.stderr, r
    # password login is off in the session's sshd
    s = _ssh("ssh", "-F", "/dev/null", "-o", "ProxyCommand=" + _proxy_of(open(cfg).read()),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PubkeyAuthentication=no", "-o", "BatchMode=yes", "root@x", "true")
    assert s.returncode == 255 and "Permission denied (publickey)" in s.stderr, s


def _proxy_of(config_text):
    return re.search(r"ProxyCommand (.+)", config_text).group(1)


def test_an_image_without_sshd_is_a_clear_error_not_a_hang(cubbi, user_key, busybox_image,
                                                           prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-nosshd",
              "--no-mount", "--no-connect", "--wait", "-q")
    assert r.exit_code == 0, r
    sid = r.stdout.strip()
    one_line_error(cubbi("cubbi-ssh", sid, timeout=60), 1, "this image has no sshd")
    one_line_error(cubbi("cubbi-ssh-config", sid, timeout=60), 1, "this image has no sshd")
    # through ssh's ProxyCommand too: the proxy says why and ssh gives up at once
    r = cubbi("cubbi-ssh", "--proxy", sid, input="", timeout=60)
    one_line_error(r, 1, "this image has no sshd")


def test_a_session_made_without_any_key_says_so(cubbi, sshd_image, prefix, tmp_path):
    home = {"HOME": str(tmp_path)}  # no ~/.ssh/*.pub, no ssh.public_key
    r = cubbi("cubbi-create", "--image", sshd_image, "--name", f"{prefix}-nokey", "--no-mount",
              "--no-connect", "--wait", "-q", env=home)
    assert r.exit_code == 0, r
    one_line_error(cubbi("cubbi-ssh", r.stdout.strip(), env=home), 1, "allows no SSH key",
                   "ssh.public_key")


def test_ssh_into_a_remote_session_and_another_users_key_is_refused(
        cubbi, server, remote_env, user_key, sshd_image, prefix, tmp_path):
    r = cubbi("cubbi-create", "--image", sshd_image, "--name", f"{prefix}-rssh",
              "--no-connect", "--wait", "--json", env=remote_env, cwd=str(tmp_path))
    assert r.exit_code == 0, r
    (rec,) = r.json()
    try:
        _remote_checks(cubbi, server, remote_env, rec, tmp_path)
    finally:  # through the service, which then drops alice's network (an address pool)
        cubbi("cubbi-close", rec["id"], env=remote_env)


def _remote_checks(cubbi, server, remote_env, rec, tmp_path):
    cfg = _exercise(cubbi, tmp_path, rec, env=remote_env, user="cubbi")
    text = open(cfg).read()
    assert "-r srv" in _proxy_of(text), text  # the ProxyCommand goes through the service
    # bob's key, even through alice's own (authenticated) proxy: sshd refuses it, as the
    # session allows the keys its owner gave when creating it
    bob_key = _keypair(tmp_path / "bob", "bob_ed25519")
    bob_cfg = tmp_path / "bob_config"
    bob_cfg.write_text(re.sub(r"IdentityFile .*", f"IdentityFile {bob_key}", text))
    s = _ssh("ssh", "-F", str(bob_cfg), "-o", "BatchMode=yes", f"cubbi-{rec['name']}", "true")
    assert s.returncode == 255 and "Permission denied (publickey)" in s.stderr, s
    # and bob's own cubbi cannot reach alice's session at all
    bob_dir = tmp_path / "bob-cubbi"
    bob_dir.mkdir()
    benv = {"CUBBI_CONFIG_DIR": str(bob_dir), "CUBBI_SECRETS": "file"}
    a = cubbi("cubbi-remote", "add", "srv", server.url, "--token", "-",
              input=server.token("bob"), env=benv)
    assert a.exit_code == 0, a
    one_line_error(cubbi("cubbi-ssh", "-r", "srv", rec["id"], "--", "true", env=benv), 3,
                   rec["id"])
    one_line_error(cubbi("cubbi-ssh", "-r", "srv", "--proxy", rec["id"], env=benv, input=""),
                   3, rec["id"])


def test_install_keeps_an_included_file_current(cubbi, user_key, sshd_image, prefix,
                                                tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").write_text("Host example\n    User me\n")
    r = cubbi("cubbi-create", "--image", sshd_image, "--name", f"{prefix}-inst", "--no-mount",
              "--no-connect", "--wait", "-q")
    assert r.exit_code == 0, r
    sid = r.stdout.strip()
    for _ in range(2):  # once adds the Include, twice keeps one
        r = cubbi("cubbi-ssh-config", "--install", sid, env={"HOME": str(home)})
        assert r.exit_code == 0 and r.stdout == "", r
    user_config = (home / ".ssh" / "config").read_text()
    include = os.path.join(str(cubbi.config_dir), "ssh", "config.d", "*")
    assert user_config.startswith(f"# cubbi's sessions") and \
        user_config.count(f"Include {include}\n") == 1 and user_config.endswith("User me\n")
    s = _ssh("ssh", "-F", str(home / ".ssh" / "config"), f"cubbi-{prefix}-inst", "echo in")
    assert s.returncode == 0 and s.stdout == "in\n", s
    # closed sessions leave the file when it is written again
    assert cubbi("cubbi-close", sid).exit_code == 0
    r = cubbi("cubbi-ssh-config", "--install", sid, env={"HOME": str(home)})
    assert r.exit_code == 3
    # a running session made without a key (no ~/.ssh/*.pub) is left out, as one
    # without sshd is: the fresh-Debian run had the README's first session so
    keyless_home = tmp_path / "keyless"
    keyless_home.mkdir()
    r = cubbi("cubbi-create", "--image", sshd_image, "--name", f"{prefix}-nokey", "--no-mount",
              "--no-connect", "--wait", "-q", env={"HOME": str(keyless_home)})
    assert r.exit_code == 0, r
    r = cubbi("cubbi-ssh-config", "--install", env={"HOME": str(home)})
    assert r.exit_code == 0, r
    written = (tmp_path / "cubbi-config" / "ssh" / "config.d" / "local").read_text()
    assert f"cubbi-{prefix}-inst" not in written


def test_ssh_keys_are_checked_before_they_reach_a_session(cubbi, tmp_path):
    from cubbi_tools.errors import UsageError
    from cubbi_tools.service import check_create
    from cubbi_tools.validate import CreateRequest

    good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHSdmKJ3MpEwL8R3lFtUEe7GHyHO0n8N4ufkD2vm89XG me"
    assert CreateRequest(image="x", ssh_keys=[good]).check().ssh_keys == [good]
    for bad in (["command=\"sh\" " + good], [good + "\nssh-rsa AAAA"], ["hello"], [3], "x" * 9):
        with pytest.raises(UsageError):
            CreateRequest(image="x", ssh_keys=bad).check()
    with pytest.raises(UsageError):
        check_create({"image": "x", "ssh_keys": "not a list"})
    r = cubbi("cubbi-config", "set", "ssh.public_key", str(tmp_path / "none.pub"))
    assert r.exit_code == 0, r
    one_line_error(cubbi("cubbi-create", "--image", "x", "--no-connect"), 3, "ssh.public_key")
    r = cubbi("cubbi-config", "set", "ssh.public_key", good)
    assert r.exit_code == 0 and "secret" not in r.stderr, r  # public: kept in config.yaml
    assert cubbi("cubbi-config", "get", "ssh.public_key").stdout.strip() == good

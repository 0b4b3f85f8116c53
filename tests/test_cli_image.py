"""cubbi-image and image sessions, on the real engine.

The test image (tests/fixtures/images/cubbi-test-tool) is built once per run
through `cubbi-image build` -- the same build path as every image -- on the
Debian base made locally by debootstrap (no registry).  Sessions from it
prove the init's image steps: required variables, defaults, persistent
configs kept per project, init.pre_command, init.command, and the
project's own .cubbi/init.sh; a plain busybox image gets the same init.
"""

import json
import os
import re
import subprocess
import textwrap

import pytest

from conftest import ROOT, one_line_error, run

from cubbi_tools import images

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "images", "cubbi-test-tool")
# built from its directory: its own tag, cubbi/NAME-HASH:latest (images.tag_for)
TOOL_TAG = images.tag_for({"name": "cubbi-test-tool", "source": "path", "path": FIXTURE})
BUILTIN = ("base", "aider", "claude-code", "goose", "opencode", "codex")


def _definition(root, name="t-image", yaml_text=None, dockerfile="FROM scratch\n"):
    d = root / name
    d.mkdir(parents=True)
    (d / "cubbi_image.yaml").write_text(yaml_text if yaml_text is not None else f"name: {name}\n")
    if dockerfile is not None:
        (d / "Dockerfile").write_text(dockerfile)
    return d


# -- definitions (no engine) ------------------------------------------------
def test_builtin_definitions_are_listed_and_valid(cubbi):
    r = cubbi("cubbi-image", "list", "--offline", "--json")
    assert r.exit_code == 0, r
    recs = {rec["name"]: rec for rec in r.json()}
    assert set(BUILTIN) <= set(recs)
    for name in BUILTIN:
        assert recs[name]["source"] == "builtin"
        assert recs[name]["tag"] == f"cubbi/{name}:latest"
        v = cubbi("cubbi-image", "validate", name)
        assert v.exit_code == 0, v
    # every built-in Dockerfile builds FROM the BASE_IMAGE argument and trusts cubbi-ca/
    for name in BUILTIN:
        text = open(os.path.join(ROOT, "images", name, "Dockerfile")).read()
        assert "FROM ${BASE_IMAGE}" in text and "COPY cubbi-ca/" in text, name
        assert "update-ca-certificates" in text, name
    assert recs["aider"]["init"]["command"] == "aider"


def test_user_definitions_shadow_builtin_ones(cubbi, tmp_path):
    images = cubbi.config_dir / "images"
    _definition(images, "aider", "name: aider\ndescription: my own aider\n")
    _definition(images, "mine", "name: mine\n")
    r = cubbi("cubbi-image", "list", "--offline", "--json")
    assert r.exit_code == 0, r
    recs = {rec["name"]: rec for rec in r.json()}
    assert recs["aider"]["source"] == "user" and recs["aider"]["description"] == "my own aider"
    assert recs["mine"]["source"] == "user"
    r = cubbi("cubbi-image", "list", "--offline", "-q")
    assert r.stdout.split().count("aider") == 1


def test_a_broken_user_definition_is_reported_and_the_rest_listed(cubbi):
    _definition(cubbi.config_dir / "images", "broken", "name: broken\nports: [http]\n")
    r = cubbi("cubbi-image", "list", "--offline", "-q")
    assert r.exit_code == 1, r
    assert "aider" in r.stdout.split()
    assert "ports[0]" in r.stderr and "broken" in r.stderr


@pytest.mark.parametrize("yaml_text, field", [
    ("description: no name\n", "name"),
    ("name: Bad Name\n", "name"),
    ("name: t-image\nversoin: 1\n", "versoin"),
    ("name: t-image\nenvironment:\n  - name: 1BAD\n", "environment[0].name"),
    ("name: t-image\nenvironment:\n  - name: OK\n    required: yes-please\n", "environment[0].required"),
    ("name: t-image\nenvironment:\n  - name: KEY\n    sensitive: true\n    default: s3cret\n",
     "environment[0].default"),
    ("name: t-image\nports: [70000]\n", "ports[0]"),
    ("name: t-image\npersistent_configs:\n  - source: ~/.x\n    target: /etc/x\n",
     "persistent_configs[0].target"),
    ("name: t-image\npersistent_configs:\n  - source: relative\n    target: /cubbi-config/x\n",
     "persistent_configs[0].source"),
    ("name: t-image\npersistent_configs:\n  - source: ~/.x\n    target: /cubbi-config/x\n"
     "    type: socket\n", "persistent_configs[0].type"),
    ("name: t-image\ninit:\n  command: {a: b}\n", "init.command"),
    ("name: [unclosed\n", "invalid YAML"),
])
def test_invalid_definitions_exit_2_naming_the_field(cubbi, tmp_path, yaml_text, field):
    d = _definition(tmp_path, yaml_text=yaml_text)
    one_line_error(cubbi("cubbi-image", "validate", str(d)), 2, field, "cubbi_image.yaml")
    # a session from it fails the same way, before anything is created
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", str(d))
    assert r.exit_code == 2 and field in r.stderr, r


def test_definition_folder_problems(cubbi, tmp_path):
    d = _definition(tmp_path, dockerfile=None)
    r = cubbi("cubbi-image", "validate", str(d))
    assert r.exit_code == 2 and "no Dockerfile" in r.stderr, r
    r = cubbi("cubbi-image", "validate", str(tmp_path / "nowhere"))
    assert r.exit_code == 3 and "no such directory" in r.stderr, r
    r = cubbi("cubbi-image", "show", "no-such-image")
    assert r.exit_code == 3 and "cubbi-image list" in r.stderr, r
    # found by name, the folder and the name field must agree
    _definition(cubbi.config_dir / "images", "named", "name: other\n")
    r = cubbi("cubbi-image", "validate", "named")
    assert r.exit_code == 2 and "differs from its folder" in r.stderr, r


def test_show_masks_nothing_secret_and_prints_the_definition(cubbi, engine):  # show asks the engine
    r = cubbi("cubbi-image", "show", FIXTURE, "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["name"] == "cubbi-test-tool" and rec["tag"] == TOOL_TAG
    env = {e["name"]: e for e in rec["environment"]}
    assert env["FAKE_REQUIRED"]["required"] and env["FAKE_TOKEN"]["sensitive"]
    assert rec["persistent_configs"][0]["type"] == "directory"
    r = cubbi("cubbi-image", "show", FIXTURE)
    assert r.exit_code == 0 and "FAKE_REQUIRED" in r.stdout and "~/.fake-tool ->" in r.stdout, r


def test_ca_cert_errors(cubbi, tmp_path):
    r = cubbi("cubbi-image", "build", FIXTURE, "--ca-cert", str(tmp_path / "missing.crt"))
    assert r.exit_code == 3 and "missing.crt" in r.stderr, r
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    r = cubbi("cubbi-image", "build", FIXTURE, "--ca-cert", str(bad))
    assert r.exit_code == 2 and "not a PEM certificate" in r.stderr, r


@pytest.mark.parametrize("sub", [["build", FIXTURE], ["validate", FIXTURE],
                                 ["bootstrap-base", "--force"]])
@pytest.mark.parametrize("how", ["-r", "--remote=", "CUBBI_REMOTE", "cubbi -r", "default"])
def test_local_only_subcommands_refuse_a_remote(cubbi, tmp_path, sub, how):
    """They used to ignore -r and build on the local engine: now one line,
    exit 2, and no engine touched (DOCKER_HOST points nowhere)."""
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "CUBBI_REMOTE": ""}
    argv = ["cubbi-image", *sub]
    if how == "-r":
        argv = ["cubbi-image", "-r", "srv", *sub]
    elif how == "--remote=":
        argv = ["cubbi-image", "--remote=srv", *sub]
    elif how == "CUBBI_REMOTE":
        env["CUBBI_REMOTE"] = "srv"
    elif how == "cubbi -r":
        argv = ["cubbi", "-r", "srv", "image", *sub]
    else:
        r = cubbi("cubbi-remote", "add", "srv", "http://127.0.0.1:9", "--default")
        assert r.exit_code == 0, r
    r = cubbi(*argv, env=env)
    want = (f"cubbi-image: cubbi-image {sub[0]} works on the local engine only (-r local); "
            "build on the server host, or use an image name the server knows\n")
    assert (r.exit_code, r.stderr, r.stdout) == (2, want, ""), r


def test_local_only_subcommands_run_with_r_local_and_list_stays_remote(cubbi):
    r = cubbi("cubbi-image", "-r", "local", "validate", FIXTURE, env={"CUBBI_REMOTE": "srv"})
    assert r.exit_code == 0 and "valid image definition" in r.stdout, r
    # list and show still go to the remote (here one that does not exist: 3)
    for argv in (["list"], ["show", "base"]):
        r = cubbi("cubbi-image", "-r", "no-such-remote", *argv)
        assert r.exit_code == 3 and "no remote 'no-such-remote'" in r.stderr, r


# -- building (real engine, no registry) ------------------------------------
@pytest.fixture(scope="module")
def tool_image(engine, debian_image, tmp_path_factory):
    """The test image, built through cubbi-image build on the local Debian
    base, with an extra CA certificate file."""
    cfg = tmp_path_factory.mktemp("cfg")
    ca = "/etc/ssl/certs/ca-certificates.crt"
    r = run(["cubbi-image", "build", FIXTURE, "--base", debian_image, "--ca-cert", ca, "--json"],
            env={"CUBBI_CONFIG_DIR": str(cfg)})
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["tag"] == TOOL_TAG and rec["base"] == debian_image and rec["size"] > 0
    assert "Step 1/" in r.stderr  # the build's progress went to stderr
    return rec


def _docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def test_build_labels_the_image_and_gives_each_extra_ca_its_own_file(engine, tool_image, cubbi):
    info = engine.inspect_image(TOOL_TAG)
    labels = info["Config"]["Labels"]
    assert labels["cubbi.image.name"] == "cubbi-test-tool"
    assert json.loads(labels["cubbi.image.definition"])["init"]["command"] == "fake-tool"
    out = _docker("run", "--rm", "--entrypoint", "cat", TOOL_TAG, "/etc/cubbi-test-cas")
    assert out.returncode == 0 and out.stdout.count(".crt") > 10, out  # one file per certificate of the bundle
    r = cubbi("cubbi-image", "list", "--json")
    r = cubbi("cubbi-image", "show", FIXTURE, "--json")
    (rec,) = r.json()
    assert rec["built"] is True and rec["stale"] is False and rec["image_id"] == info["Id"]


def _test_ca(name, issuer=None):
    """A self-signed CA (or, with issuer=(cert, key), a leaf it signs): (PEM, cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_cert, ca_key = issuer or (None, key)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(ca_cert.subject if ca_cert else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert, key


def test_build_installs_extra_cas_into_the_images_trust_store(engine, debian_image, cubbi,
                                                              prefix, tmp_path):
    """--ca-cert with a bundle file: each certificate lands in the image's
    trust store once the Dockerfile runs update-ca-certificates, as the
    built-in images do -- a certificate the test CA signed verifies there,
    through the bundle (SSL_CERT_FILE) and the hashed directory (CApath)."""
    other_pem, _, _ = _test_ca(f"cubbi-test-other-{prefix}")
    ca_pem, ca_cert, ca_key = _test_ca(f"cubbi-test-ca-{prefix}")
    leaf_pem, _, _ = _test_ca(f"leaf.{prefix}.test", issuer=(ca_cert, ca_key))
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(other_pem + ca_pem)  # the test CA second: one file per certificate
    d = _definition(tmp_path, "t-cas", dockerfile=textwrap.dedent("""\
        ARG BASE_IMAGE
        FROM ${BASE_IMAGE}
        RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates openssl \\
         && rm -rf /var/lib/apt/lists/*
        COPY cubbi-ca/ /usr/local/share/ca-certificates/cubbi/
        RUN update-ca-certificates
        """))
    tag = f"cubbi-test/{prefix}-cas:x"
    try:
        r = cubbi("cubbi-image", "build", str(d), "--base", debian_image, "--tag", tag,
                  "--ca-cert", str(bundle))
        assert r.exit_code == 0, r
        # update-ca-certificates took both, as two certificates
        assert "2 added, 0 removed; done." in r.stderr.splitlines(), r
        check = subprocess.run(
            ["docker", "run", "--rm", "-i", "--entrypoint", "sh", tag, "-c",
             "cat > /tmp/leaf.pem && openssl verify -CAfile /etc/ssl/certs/ca-certificates.crt "
             "/tmp/leaf.pem && openssl verify -CApath /etc/ssl/certs /tmp/leaf.pem"],
            input=leaf_pem, capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check
        assert check.stdout == "/tmp/leaf.pem: OK\n" * 2, check
    finally:
        _docker("rmi", "--no-prune", tag)  # the apt layer stays cached for the next run


def test_a_failing_build_exits_1_with_the_builds_error(engine, debian_image, cubbi, tmp_path):
    d = _definition(tmp_path, "t-fails", dockerfile=textwrap.dedent("""\
        ARG BASE_IMAGE
        FROM ${BASE_IMAGE}
        RUN echo about to fail && exit 7
        """))
    r = cubbi("cubbi-image", "build", str(d), "--base", debian_image, "--tag", "cubbi-test/t-fails:x")
    assert r.exit_code == 1, r
    assert "building cubbi-test/t-fails:x failed" in r.stderr and "returned a non-zero code: 7" in r.stderr
    assert "about to fail" in r.stderr


def test_a_build_step_slower_than_the_request_timeout_and_plain_output(engine, busybox_image,
                                                                      cubbi, tmp_path):
    """A build streams with no read timeout (a step may run for minutes), and
    its colour codes reach a stderr that is not a terminal as plain text:
    because it is not a terminal (NO_COLOR unset, a colour TERM)."""
    d = _definition(tmp_path, "t-slow", dockerfile=textwrap.dedent("""\
        ARG BASE_IMAGE
        FROM ${BASE_IMAGE}
        RUN sleep 3 && printf '\\033[91mred-text\\033[0m\\n'
        """))
    tag = "cubbi-test/t-slow:x"
    try:
        r = cubbi("cubbi-image", "build", str(d), "--base", busybox_image, "--tag", tag,
                  "--no-cache", env={"CUBBI_DOCKER_TIMEOUT": "1", "NO_COLOR": None,
                                     "TERM": "xterm-256color"})
        assert r.exit_code == 0, r
        assert "red-text" in r.stderr and "\x1b" not in r.stderr, r
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_bad_tag_exits_2(cubbi, tmp_path):
    d = _definition(tmp_path, "t-tag")
    one_line_error(cubbi("cubbi-image", "build", str(d), "--tag", "Bad Tag"), 2, "'Bad Tag'")


def test_an_explicit_base_that_cannot_be_had_exits_3(engine, cubbi, tmp_path):
    d = _definition(tmp_path, "t-nobase", dockerfile="ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    r = cubbi("cubbi-image", "build", str(d), "--base", "cubbi-test/no-such-base:never")
    assert r.exit_code == 3, r
    assert "cubbi-test/no-such-base:never" in r.stderr and "bootstrap-base" in r.stderr


def test_create_builds_a_missing_definition_on_first_use(engine, debian_image, cubbi, prefix):
    """A user's own definition by name, never built: cubbi-create builds it
    (saying so), falling back to the local Debian base since no registry
    answers for the default base."""
    name = f"cubbi-t-{prefix}"
    _definition(cubbi.config_dir / "images", name, dockerfile=textwrap.dedent("""\
        ARG BASE_IMAGE=debian:bookworm-slim
        FROM ${BASE_IMAGE}
        RUN echo built-on-first-use > /etc/first-use
        """))
    tag = f"cubbi/{name}:latest"
    try:
        r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", name,
                  "--name", f"{prefix}-first", "--wait", "--json")
        assert r.exit_code == 0, r
        assert f"image {tag} is not built yet; building it" in r.stderr
        # the default base when it is here, else the local Debian base made
        # earlier (debian_image), never a pull: no registry answers here
        if _docker("image", "inspect", "debian:bookworm-slim").returncode == 0:
            import warnings

            warnings.warn(UserWarning("debian:bookworm-slim is here: the fallback to "
                                      f"{debian_image} was not tested"))
            want = "debian:bookworm-slim"
        else:
            want = debian_image
            assert (f"base image debian:bookworm-slim is not here; using {debian_image}, "
                    "made locally earlier") in r.stderr, r
        assert "pulling" not in r.stderr, r
        assert engine.inspect_image(tag)["Config"]["Labels"]["cubbi.image.base"] == want
        (rec,) = r.json()
        assert rec["status"] == "running" and rec["image"] == name
        r = cubbi("cubbi-connect", rec["id"], "--", "cat", "/etc/first-use")
        assert r.exit_code == 0 and r.stdout.strip() == "built-on-first-use", r
        # the second session reuses the image: no build
        r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", name,
                  "--name", f"{prefix}-second", "-q")
        assert r.exit_code == 0 and "building" not in r.stderr, r
    finally:
        for rec in run(["cubbi-ls", "-a", "-q", "--filter", f"name={prefix}*"]).stdout.split():
            run(["cubbi-close", rec])
        _docker("rmi", "-f", tag)


# -- sessions from the test image -------------------------------------------
def _create(cubbi, prefix, suffix, *args, wait=True):
    argv = ["cubbi-create", "--no-connect", "--image", TOOL_TAG, "--name", f"{prefix}-{suffix}",
            "--json"] + (["--wait"] if wait else []) + list(args)
    return cubbi(*argv)


def _sh(cubbi, sid, script):
    return cubbi("cubbi-connect", sid, "--", "sh", "-c", script)


def test_a_missing_required_variable_fails_the_session_naming_it(tool_image, cubbi, prefix, tmp_path):
    r = _create(cubbi, prefix, "noreq", "--mount", str(tmp_path))
    assert r.exit_code == 1, r
    assert "FAKE_REQUIRED" in r.stderr
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-noreq")
    (rec,) = r.json()
    assert rec["status"] == "failed"
    assert "required variable FAKE_REQUIRED is not set" in rec["reason"]
    r = cubbi("cubbi-logs", rec["id"])
    assert "cubbi-init: failed: required variable FAKE_REQUIRED" in r.stdout + r.stderr


def test_environment_defaults_config_dirs_pre_command_and_command(tool_image, cubbi, prefix,
                                                                   tmp_path):
    r = _create(cubbi, prefix, "env", "--mount", str(tmp_path), "-e", "FAKE_REQUIRED=given",
                "-e", "FAKE_TOKEN=tok-secret-123")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["status"] == "running"
    r = _sh(cubbi, rec["id"], 'echo "$FAKE_REQUIRED $FAKE_DEFAULT $CUBBI_CONFIG_DIR '
                              '$CUBBI_IMAGE_CONFIG_DIR"; cat ~/.fake-tool/pre-command')
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "given from-image /cubbi-config /cubbi-config/cubbi-test-tool"
    assert lines[1] == f"pre_command ran as {os.getuid()}:{os.getgid()}"
    # a value given wins over the image's default
    r = _create(cubbi, prefix, "env2", "--no-mount", "-e", "FAKE_REQUIRED=1",
                "-e", "FAKE_DEFAULT=mine")
    (rec2,) = r.json()
    r = _sh(cubbi, rec2["id"], 'echo "$FAKE_DEFAULT ${CUBBI_CONFIG_DIR:-none}"')
    assert r.stdout.strip() == "mine none", r  # no mount, no project: no state kept
    # an interactive connect (no command) starts the image's init.command
    r = cubbi("cubbi-connect", rec["id"], input="")
    assert r.exit_code == 0, r
    assert "fake-tool interactive: FAKE_DEFAULT=from-image" in r.stdout
    # the secret never shows in docker inspect
    out = _docker("inspect", rec["container_id"])
    assert "tok-secret-123" not in out.stdout


def test_tool_state_persists_per_project_and_is_isolated(tool_image, cubbi, prefix, tmp_path):
    a, b = tmp_path / "project-a", tmp_path / "project-b"
    a.mkdir()
    b.mkdir()
    env = ("-e", "FAKE_REQUIRED=1")
    r = _create(cubbi, prefix, "a1", "--mount", str(a), *env)
    (a1,) = r.json()
    r = _sh(cubbi, a1["id"], "fake-tool --remember from-a1 && touch ~/.fake-tool.json && "
                             "echo '{\"k\": 1}' > ~/.fake-tool.json && ls -ld ~/.fake-tool")
    assert r.exit_code == 0 and "-> /cubbi-config/cubbi-test-tool/fake-tool" in r.stdout, r
    assert cubbi("cubbi-close", a1["id"]).exit_code == 0

    # the same project again: the state is back
    r = _create(cubbi, prefix, "a2", "--mount", str(a), *env)
    (a2,) = r.json()
    r = _sh(cubbi, a2["id"], "fake-tool --recall; cat ~/.fake-tool.json")
    assert r.exit_code == 0 and r.stdout.split() == ["from-a1", '{"k":', "1}"], r

    # another project sees none of it
    r = _create(cubbi, prefix, "b1", "--mount", str(b), *env)
    (b1,) = r.json()
    r = _sh(cubbi, b1["id"], "fake-tool --recall; test -e ~/.fake-tool.json && echo leaked")
    assert r.stdout.strip() == "", r

    # on the host: ~/.cubbi/projects/<hash>/config (CUBBI_HOME here), one per project
    home = cubbi.cubbi_home
    dirs = sorted(os.listdir(home / "projects"))
    assert len(dirs) == 2
    sources = {(home / "projects" / d / "source").read_text().strip(): d for d in dirs}
    da = sources[f"path {a}"]
    memory = home / "projects" / da / "config" / "cubbi-test-tool" / "fake-tool" / "memory"
    assert memory.read_text() == "from-a1\n"
    st = os.stat(memory)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # nothing was written into the projects themselves
    assert os.listdir(a) == [] and os.listdir(b) == []


def test_the_projects_own_init_script_runs_as_the_session_user(tool_image, busybox_image, cubbi,
                                                                prefix, tmp_path):
    for image in (TOOL_TAG, busybox_image):
        work = tmp_path / image.replace("/", "_").replace(":", "_")
        (work / ".cubbi").mkdir(parents=True)
        (work / ".cubbi" / "init.sh").write_text(
            "echo project-init-says-hi\nid -u > /app/init-ran\necho \"$FAKE_REQUIRED\" >> /app/init-ran\n")
        r = cubbi("cubbi-create", "--no-connect", "--image", image, "--mount", str(work),
                  "--name", f"{prefix}-pi{len(image)}", "--wait", "-q", "-e", "FAKE_REQUIRED=env-seen")
        assert r.exit_code == 0, r
        made = work / "init-ran"
        assert made.read_text().split() == [str(os.getuid()), "env-seen"], image
        st = os.stat(made)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        logs = cubbi("cubbi-logs", r.stdout.strip())
        assert "project-init-says-hi" in logs.stdout + logs.stderr


def test_a_failing_project_init_script_fails_the_session(busybox_image, cubbi, prefix, tmp_path):
    (tmp_path / ".cubbi").mkdir()
    (tmp_path / ".cubbi" / "init.sh").write_text("echo nope >&2\nexit 4\n")
    r = cubbi("cubbi-create", "--no-connect", "--image", busybox_image, "--mount", str(tmp_path),
              "--name", f"{prefix}-pifail", "--wait", "--json")
    assert r.exit_code == 1, r
    (rec,) = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-pifail").json()
    assert rec["status"] == "failed" and "init.sh exited with status 4" in rec["reason"]


def test_a_plain_image_gets_the_config_dir_and_a_login_shell(busybox_image, cubbi, prefix, tmp_path):
    r = cubbi("cubbi-create", "--no-connect", "--image", busybox_image, "--mount", str(tmp_path),
              "--name", f"{prefix}-plain", "--wait", "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    r = _sh(cubbi, rec["id"], 'echo "$CUBBI_CONFIG_DIR $CUBBI_IMAGE_CONFIG_DIR"; '
                              'test -w "$CUBBI_IMAGE_CONFIG_DIR" && echo writable')
    assert r.stdout.split() == ["/cubbi-config", "/cubbi-config/busybox", "writable"], r
    r = cubbi("cubbi-connect", rec["id"], input="echo from-login-shell $0\n")
    assert r.exit_code == 0 and "from-login-shell" in r.stdout, r


def test_a_plain_reference_to_a_built_image_keeps_its_definition(tool_image, cubbi, prefix):
    """The tool's tag (cubbi/cubbi-test-tool-HASH:latest) as a Docker reference (what a remote
    server or another user sees) still applies the definition from its labels."""
    r = _create(cubbi, prefix, "ref", "--no-mount")
    assert r.exit_code == 1 and "FAKE_REQUIRED" in r.stderr, r


# -- a real non-root host user ----------------------------------------------


def test_a_non_root_user_owns_its_tool_state(tool_image, as_user, host_user, prefix):
    import shutil
    import tempfile

    from conftest import _reachable_tmp

    work = tempfile.mkdtemp(prefix="cubbi-user-work-", dir=_reachable_tmp())
    state_root = os.path.join(host_user.pw_dir, ".cubbi", "projects")
    try:
        os.chmod(work, 0o755)
        os.chown(work, host_user.pw_uid, host_user.pw_gid)
        r = as_user("cubbi-create", "--no-connect", "--image", TOOL_TAG, "--mount", work,
                    "--name", f"{prefix}-nr", "--wait", "--json", "-e", "FAKE_REQUIRED=1")
        assert r.exit_code == 0, r
        (rec,) = r.json()
        r = as_user("cubbi-connect", rec["id"], "--", "sh", "-c",
                    "fake-tool --remember mine && cat ~/.fake-tool/pre-command && "
                    "touch ~/.config-made-by-user && id -u")
        assert r.exit_code == 0, r
        lines = r.stdout.splitlines()
        assert lines == [f"pre_command ran as {host_user.pw_uid}:{host_user.pw_gid}",
                         str(host_user.pw_uid)]
        hits = [d for d in os.listdir(state_root)
                if open(os.path.join(state_root, d, "source")).read().strip() == f"path {work}"]
        assert len(hits) == 1
        config = os.path.join(state_root, hits[0], "config")
        for path in (config, os.path.join(config, "cubbi-test-tool"),
                     os.path.join(config, "cubbi-test-tool", "fake-tool", "memory")):
            st = os.stat(path)
            assert (st.st_uid, st.st_gid) == (host_user.pw_uid, host_user.pw_gid), path
        assert as_user("cubbi-close", rec["id"]).exit_code == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for d in os.listdir(state_root) if os.path.isdir(state_root) else []:
            src = os.path.join(state_root, d, "source")
            if os.path.exists(src) and open(src).read().strip() == f"path {work}":
                shutil.rmtree(os.path.join(state_root, d), ignore_errors=True)


# -- the real tool images (opt-in: CUBBI_SLOW=1) ----------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CUBBI_SLOW") != "1",
                    reason="builds aider (PyPI) and claude-code (npm): set CUBBI_SLOW=1")
@pytest.mark.parametrize("name, version_cmd", [("aider", "aider --version"),
                                               ("claude-code", "claude --version")])
def test_real_tool_images_build_and_run(engine, debian_image, cubbi, prefix, name, version_cmd):
    """Builds with the host's CA bundle (TLS-intercepting proxies) on the
    default base (falling back to the local Debian one), then runs the tool
    in a session.  Prints the build time and image size."""
    r = cubbi("cubbi-image", "build", name, "--ca-cert", "/etc/ssl/certs/ca-certificates.crt",
              "--json", timeout=1800)
    assert r.exit_code == 0, r.stderr[-3000:]
    (rec,) = r.json()
    print(f"\n{name}: built in {rec['seconds']} s, {round(rec['size'] / 1e6)} MB")
    r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", name,
              "--name", f"{prefix}-{name}", "--run", version_cmd, "-q")
    assert r.exit_code == 0, r
    assert any(c.isdigit() for c in r.stderr), r


def test_bootstrap_base_reuses_an_existing_base(debian_image, cubbi):
    r = cubbi("cubbi-image", "bootstrap-base", "--tag", debian_image, "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["tag"] == debian_image and rec["size"] > 10_000_000
    assert "exists; use --force" in r.stderr


def test_state_folder_is_keyed_on_the_project_id_or_the_path(tmp_path, monkeypatch):
    from cubbi_tools import toolstate

    monkeypatch.setenv("CUBBI_HOME", str(tmp_path / "home"))
    a = toolstate.state_dir(project="git@github.com:hello/private.git")
    b = toolstate.state_dir(project="https://github.com/hello/private")
    assert a == b and a.startswith(str(tmp_path / "home" / "projects")) and a.endswith("/config")
    assert open(os.path.join(os.path.dirname(a), "source")).read() == \
        "project github.com/hello/private\n"
    (tmp_path / "x").mkdir()
    os.symlink(tmp_path / "x", tmp_path / "link-to-x")
    c = toolstate.state_dir(mount=str(tmp_path / "x"))
    assert c not in (a, None) and c == toolstate.state_dir(mount=str(tmp_path / "link-to-x"))
    assert toolstate.state_dir() is None


def test_validate_lists_every_problem_each_with_its_field(cubbi, tmp_path):
    d = _definition(tmp_path, yaml_text="name: t-image\nversoin: 1\nports: [70000, 80]\n"
                                        "environment:\n  - name: 1BAD\n    required: maybe\n"
                                        "persistent_configs:\n  - source: ~/.x\n    target: /etc/x\n")
    r = cubbi("cubbi-image", "validate", str(d))
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r
    lines = r.stderr.strip().splitlines()
    fields = ["versoin", "environment[0].name", "environment[0].required", "ports[0]",
              "persistent_configs[0].target"]
    assert len(lines) == len(fields), r
    for line, field in zip(lines, fields):
        assert "cubbi_image.yaml: " + field + ": " in line, (field, line)


def test_a_definition_given_as_a_directory_has_its_own_tag(cubbi, tmp_path, engine):
    """cubbi-image build ./dir with name: base must not overwrite
    cubbi/base:latest: a directory's definition is tagged by its path too."""
    tags = []
    for where in ("one", "two"):
        d = _definition(tmp_path / where, yaml_text="name: base\n")
        r = cubbi("cubbi-image", "show", str(d), "--json")
        assert r.exit_code == 0, r
        tags.append(r.json()[0]["tag"])
    assert all(re.fullmatch(r"cubbi/base-[0-9a-f]{8}:latest", t) for t in tags), tags
    assert tags[0] != tags[1]
    r = cubbi("cubbi-image", "show", "base", "--json")
    assert r.exit_code == 0 and r.json()[0]["tag"] == "cubbi/base:latest", r


def test_validate_lists_the_yaml_folder_and_dockerfile_problems_together(cubbi, tmp_path):
    """A YAML error and a missing Dockerfile both show; a definition found by
    name lists its field problems and the name/folder mismatch together;
    every line carries the cubbi-image: prefix."""
    d = _definition(tmp_path, yaml_text="name: [unclosed\n", dockerfile=None)
    r = cubbi("cubbi-image", "validate", str(d))
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 2, r
    assert "invalid YAML" in lines[0] and "no Dockerfile" in lines[1], r
    assert all(line.startswith("cubbi-image: ") for line in lines), r
    _definition(cubbi.config_dir / "images", "mytool", "name: other\nports: [x]\n")
    r = cubbi("cubbi-image", "validate", "mytool")
    lines = r.stderr.splitlines()
    assert r.exit_code == 2 and len(lines) == 2, r
    assert "ports[0]" in lines[0] and "differs from its folder" in lines[1], r
    assert all(line.startswith("cubbi-image: ") for line in lines), r


@pytest.mark.parametrize("yaml_text, field, words", [
    ("name: t-image\ndescription: 42\n", "description", "expected a string"),
    ("name: t-image\nmaintainer: [a]\n", "maintainer", "expected a string"),
    ("name: t-image\nenvironment: {}\n", "environment", "expected a list"),
    ("name: t-image\nports: {}\n", "ports", "expected a list"),
    ("name: t-image\ninit: []\n", "init", "expected a mapping"),
    ("name: t-image\nenvironment:\n  - name: A\n  - description: b\n", "environment[1].name",
     "missing"),
])
def test_validate_checks_the_types(cubbi, tmp_path, yaml_text, field, words):
    d = _definition(tmp_path, yaml_text=yaml_text)
    one_line_error(cubbi("cubbi-image", "validate", str(d)), 2, f": {field}: {words}")
    assert "None" not in cubbi("cubbi-image", "validate", str(d)).stderr


def test_validate_version_may_be_a_number(cubbi, tmp_path):
    d = _definition(tmp_path, yaml_text="name: t-image\nversion: 1.0\n")
    r = cubbi("cubbi-image", "validate", str(d), "--json")
    assert r.exit_code == 0 and r.json()[0]["valid"] is True, r


def test_validate_json_prints_a_record_of_an_invalid_definition(cubbi, tmp_path):
    d = _definition(tmp_path, yaml_text="name: t-image\nports: [x]\n", dockerfile=None)
    r = cubbi("cubbi-image", "validate", "--json", str(d))
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 2, r
    (rec,) = r.json()
    assert rec == {"name": "t-image", "path": str(d), "valid": False, "problems": [
        {"file": str(d / "cubbi_image.yaml"), "field": "ports[0]",
         "message": "expected a port number 1-65535, not 'x'"},
        {"file": str(d / "Dockerfile"), "field": None,
         "message": "no Dockerfile beside cubbi_image.yaml"}]}
    d = _definition(tmp_path, "t-yaml", yaml_text="name: [unclosed\n")
    (rec,) = cubbi("cubbi-image", "validate", "--json", str(d)).json()
    assert rec["name"] is None and rec["problems"][0]["message"].startswith("2:1: invalid YAML")


def test_a_folder_without_a_definition_file_is_not_found(cubbi, tmp_path):
    (tmp_path / "empty").mkdir()
    for sub in ("validate", "show"):
        r = cubbi("cubbi-image", sub, str(tmp_path / "empty"))
        one_line_error(r, 3, "no cubbi_image.yaml")


def test_a_definition_of_your_own_keeps_its_own_base_default(engine, busybox_image, cubbi,
                                                             tmp_path):
    """Without --base or images.base, a folder definition's own
    ARG BASE_IMAGE=... default is the base, not cubbi's; a Dockerfile that
    declares no BASE_IMAGE gets no build argument and no base label."""
    tags = []
    try:
        for name, dockerfile in (
                ("t-ownbase", f"ARG BASE_IMAGE={busybox_image}\nFROM ${{BASE_IMAGE}}\n"
                              "RUN echo own > /own\n"),
                ("t-nobasearg", f"FROM {busybox_image}\nRUN echo plain > /own\n")):
            d = _definition(tmp_path, name, dockerfile=dockerfile)
            tag = f"cubbi-test/{name}:x"
            tags.append(tag)
            r = cubbi("cubbi-image", "build", str(d), "--tag", tag, "--json")
            assert r.exit_code == 0, r
            labels = engine.inspect_image(tag)["Config"]["Labels"]
            if name == "t-ownbase":
                assert r.json()[0]["base"] == busybox_image, r
                assert labels["cubbi.image.base"] == busybox_image
            else:
                assert r.json()[0]["base"] is None and "cubbi.image.base" not in labels, r
                assert "BASE_IMAGE" not in r.stderr, r  # no unused build argument
    finally:
        for tag in tags:
            _docker("rmi", "-f", tag)


def test_the_directory_tag_is_documented_where_the_tag_is_named(cubbi):
    """cubbi/NAME-HASH:latest is said wherever cubbi/NAME:latest is: build's
    one-liner and --tag, cubbi-create --image, the README, images/custom."""
    build = cubbi("cubbi-image", "build", "--help").stdout
    assert build.count("cubbi/NAME-HASH:latest") >= 2, build
    assert "cubbi/NAME-HASH:latest" in cubbi("cubbi-create", "--help").stdout
    for doc in ("README.md", os.path.join("images", "custom", "README.md")):
        text = " ".join(open(os.path.join(ROOT, doc)).read().split())
        assert re.search(r"cubbi/[A-Za-z]+-HASH:latest", text), doc


def test_a_session_of_a_directory_records_the_tag_built_from_it(busybox_image, cubbi, prefix,
                                                                 tmp_path):
    """cubbi-ls(1): the record's image is a definition name or a Docker
    reference, so --image ./tiny is recorded as its cubbi/tiny-HASH:latest
    (never the relative path, which means nothing from another folder)."""
    _definition(tmp_path, "tiny", dockerfile=f"ARG BASE_IMAGE={busybox_image}\n"
                                             "FROM ${BASE_IMAGE}\n")
    tag = images.tag_for({"name": "tiny", "source": "path", "path": str(tmp_path / "tiny")})
    try:
        r = cubbi("cubbi-create", "--no-connect", "--no-mount", "--image", "./tiny",
                  "--name", f"{prefix}-tiny", "--json", cwd=str(tmp_path))
        assert r.exit_code == 0, r
        assert r.json()[0]["image"] == tag, r
        (rec,) = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}-tiny").json()
        assert rec["image"] == tag
    finally:
        cubbi("cubbi-close", f"{prefix}-tiny")
        _docker("rmi", "-f", tag)


def test_an_unknown_switch_is_the_error_said_even_without_the_name(cubbi):
    one_line_error(cubbi("cubbi-image", "build", "--bogus"), 2,
                   "cubbi-image build: unrecognized arguments: --bogus")
    one_line_error(cubbi("cubbi-image", "build"), 2, "required: NAME|DIR")

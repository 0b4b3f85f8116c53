"""Team sign-in with OpenID Connect: a real provider (django-oauth-toolkit,
tests/oidc_provider) and a real cubbi-server on loopback; people sign in
through the provider's own forms (tests/oidcproc.Person), from the CLI's
browser flow ($BROWSER = tests/fakebrowser.py) or the device flow."""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from conftest import one_line_error

HERE = os.path.dirname(os.path.abspath(__file__))
LIFETIME = 6  # seconds an access token lives at the provider


def oidc_config(provider, extra=""):
    return ("server:\n  heartbeat: 1\nstate:\n  database: server.db\n"
            "projects:\n  storage:\n    key: ${TEST_PROJECT_KEY}\n"
            "auth:\n  provider: oidc\n"
            # a trailing / as Authentik's issuers have (the provider's tokens have none)
            f"  url: {provider.issuer}/\n  client_id: cubbi-service\n"
            "  client_secret: ${OIDC_CLIENT_SECRET}\n"
            "  scopes: [openid, profile, email, groups]\n"
            "  clock_skew: 0\n  introspection_cache: 0\n" + extra +
            "policy:\n  images:\n    any_local: true\n")


def start_provider(tmp, **kw):
    from oidcproc import Provider

    d = os.path.join(str(tmp), "provider")
    os.makedirs(d, exist_ok=True)
    return Provider(d, **kw).start()


def start_oidc_server(start, provider, extra="", secret=None):
    srv = start(env={"OIDC_CLIENT_SECRET": secret or provider.client_secret},
                config_text=oidc_config(provider, extra))
    provider.register([srv.url + "/auth/callback"])
    return srv


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    p = start_provider(tmp_path_factory.mktemp("oidc"), access_lifetime=LIFETIME)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def oidc_server(engine, provider, start_module_server):
    return start_oidc_server(start_module_server, provider)


@pytest.fixture
def signin(cubbi, tmp_path):
    """sign(remote_url, user, *args, consent=True) -> Result of cubbi-remote
    login through the fake browser, in the test's config dir (file secrets)."""
    log = tmp_path / "browser.log"

    def sign(url, user, *args, consent=True, name="team", add=True, env=None):
        if add:
            r = cubbi("cubbi-remote", "add", name, url, env={"CUBBI_SECRETS": "file", **(env or {})})
            assert r.exit_code == 0, r
        e = {"CUBBI_SECRETS": "file", "BROWSER": f"{HERE}/fakebrowser.py",
             "FAKEBROWSER_USER": user, "FAKEBROWSER_LOG": str(log),
             "FAKEBROWSER_CONSENT": "allow" if consent else "deny", "CUBBI_AUTH_TIMEOUT": "30"}
        e.update(env or {})
        return cubbi("cubbi-remote", "login", name, *args, env=e)

    sign.log = log
    return sign


def sign_in_error(r, *words):
    """A failed sign-in: exit 5, the progress line (what was opened, or the
    device code) and then one line saying why; no traceback."""
    from conftest import one_line

    assert r.exit_code == 5, r
    lines = r.stderr.splitlines(keepends=True)
    assert len(lines) == 2 and ("opening the sign-in page" in lines[0]
                                or "enter the code" in lines[0]), r.stderr
    one_line(lines[1], *words)


def stored(cubbi):
    path = cubbi.config_dir / "secrets.yaml"
    if not path.exists():
        return {}
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def test_sign_in_with_a_browser_lists_the_remote_without_tokens(oidc_server, signin, cubbi):
    r = signin(oidc_server.url, "alice")
    assert r.exit_code == 0, (r, signin.log.read_text() if signin.log.exists() else "")
    assert "signed in to remote team as alice" in r.stderr, r
    secrets = stored(cubbi)
    tokens = json.loads(secrets["remote:team:oidc"])
    assert tokens["user"] == "alice" and tokens["refresh_token"], tokens
    assert (cubbi.config_dir / "secrets.yaml").stat().st_mode & 0o777 == 0o600
    assert tokens["access_token"] not in (cubbi.config_dir / "config.yaml").read_text()
    r = cubbi("cubbi-remote", "list", "--json", env={"CUBBI_SECRETS": "file"})
    rec = r.json()[0]
    assert rec["auth"] == "oidc" and rec["user"] == "alice" and rec["expires"], rec
    assert tokens["access_token"] not in r.output and tokens["refresh_token"] not in r.output
    r = cubbi("cubbi-ls", "-r", "team", "--json", env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0 and r.json() == [], r


def _wait_until(when, what):
    """Wait until the wall clock passes WHEN (an access token's expiry)."""
    deadline = when + 30
    while time.time() <= when:
        assert time.time() < deadline, what
        time.sleep(0.2)


def test_sessions_through_a_sign_in_survive_expiry_logout_and_revocation(
        oidc_server, provider, signin, cubbi, busybox_image, prefix):
    env = {"CUBBI_SECRETS": "file", "CUBBI_REMOTE": "team"}
    assert signin(oidc_server.url, "alice").exit_code == 0
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-a", "--json",
              "--no-connect", env=env)
    assert r.exit_code == 0, r
    rec = r.json()[-1]
    r = cubbi("cubbi-ls", "--json", env=env)
    assert [s["id"] for s in r.json()] == [rec["id"]], r

    # past the access token's expiry: the CLI refreshes before it asks
    first = json.loads(stored(cubbi)["remote:team:oidc"])
    _wait_until(first["expires_at"], "the first access token never expired")
    r = cubbi("cubbi-ls", "-q", env=env)
    assert r.exit_code == 0 and r.stdout.split() == [rec["id"]], r
    second = json.loads(stored(cubbi)["remote:team:oidc"])
    assert second["access_token"] != first["access_token"]
    # the old token is refused by the service (expired, no clock skew here)
    from serverproc import Client

    st, body = Client(oidc_server.url, first["access_token"]).call("GET", "/sessions")
    assert st == 401 and "expired" in body["error"], body

    # a 401 for a token the CLI thinks fresh: refreshed once, then it works
    secrets_path = cubbi.config_dir / "secrets.yaml"
    import yaml

    data = yaml.safe_load(secrets_path.read_text())
    forged = dict(second, access_token=first["access_token"], expires_at=int(time.time()) + 3600)
    data["remote:team:oidc"] = json.dumps(forged)
    secrets_path.write_text(yaml.safe_dump(data))
    r = cubbi("cubbi-ls", "-q", env=env)
    assert r.exit_code == 0 and r.stdout.split() == [rec["id"]], r

    # bob signs in too and sees none of alice's sessions
    bob_cfg = {"CUBBI_CONFIG_DIR": str(cubbi.config_dir) + "-bob"}
    os.makedirs(bob_cfg["CUBBI_CONFIG_DIR"])
    assert signin(oidc_server.url, "bob", env=bob_cfg).exit_code == 0
    r = cubbi("cubbi-ls", "--json", env={**env, **bob_cfg})
    assert r.exit_code == 0 and r.json() == [], r
    one_line_error(cubbi("cubbi-close", rec["id"], env={**env, **bob_cfg}), 3, rec["id"])

    # alice closes her session
    r = cubbi("cubbi-close", rec["id"], env=env)
    assert r.exit_code == 0, r

    # revoked at the provider by its admin: once the access token is gone,
    # the refresh is refused and the CLI says to sign in again
    now = json.loads(stored(cubbi)["remote:team:oidc"])
    assert provider.revoke_user("bob")["revoked"] >= 1
    bob_tokens = json.loads(yaml.safe_load(
        open(os.path.join(bob_cfg["CUBBI_CONFIG_DIR"], "secrets.yaml")))["remote:team:oidc"])
    _wait_until(bob_tokens["expires_at"], "bob's access token never expired")
    one_line_error(cubbi("cubbi-ls", env={**env, **bob_cfg}), 5, "cubbi -r team auth")

    # signed out: the tokens are revoked and forgotten; the old access token is refused
    r = cubbi("cubbi-remote", "logout", "team", env=env)
    assert r.exit_code == 0 and "signed out" in r.stderr, r
    assert "remote:team:oidc" not in stored(cubbi)
    st, body = Client(oidc_server.url, now["access_token"]).call("GET", "/sessions")
    assert st == 401, body
    one_line_error(cubbi("cubbi-ls", env=env), 5, "cubbi -r team auth")
    r = cubbi("cubbi-remote", "list", "--json", env=env)
    assert r.json()[0]["auth"] == "none", r


def test_device_sign_in_prints_a_url_and_a_code(oidc_server, cubbi):
    from conftest import cubbi_env
    from oidcproc import Person

    assert cubbi("cubbi-remote", "add", "dev", oidc_server.url,
                 env={"CUBBI_SECRETS": "file"}).exit_code == 0
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), "CUBBI_SECRETS": "file",
                     "CUBBI_AUTH_TIMEOUT": "60", "BROWSER": None, "DISPLAY": None,
                     "WAYLAND_DISPLAY": None, "CUBBI_REMOTE": "dev"})
    proc = subprocess.Popen([os.path.join(HERE, "..", "bin", "cubbi"), "auth"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"open (\S+) and enter the code (\S+)", line)
        assert m, line
        Person("alice").enter_code(m.group(1), m.group(2))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (line, err)
    assert "signed in to remote dev as alice" in err
    r = cubbi("cubbi-ls", "-r", "dev", "--json", env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r


def test_bad_sign_ins_are_one_line_exit_5_and_leave_no_tokens(oidc_server, provider, signin,
                                                                cubbi, start_server, tmp_path):
    from oidcproc import Person, query
    from serverproc import Client

    # denied consent
    sign_in_error(signin(oidc_server.url, "mallory", consent=False), "denied")
    assert "remote:team:oidc" not in stored(cubbi)
    # a replayed callback: the state was used once already
    person = Person("alice")
    url = person.visit(oidc_server.url + "/auth/login", stop_at=oidc_server.url + "/auth/callback")
    first = person.http.get(url, allow_redirects=False, timeout=30)
    # a browser's sign-in ends on the web page with its cookie (test below)
    assert first.status_code == 302 and first.headers["Location"] == "/", first.text
    assert "cubbi_browser" in first.cookies
    again = person.http.get(url, allow_redirects=False, timeout=30)
    assert again.status_code == 401 and "already used" in again.json()["error"], again.text
    # a state the service never issued
    forged = person.http.get(oidc_server.url + "/auth/callback?code=x&state=forged", timeout=30)
    assert forged.status_code == 401 and forged.json()["kind"] == "auth"
    # a CLI loopback that is not loopback is refused
    r = person.http.get(oidc_server.url + "/auth/login?redirect_uri=http://evil.test/cb&state=s",
                        allow_redirects=False, timeout=30)
    assert r.status_code == 400, r.text
    # a token of another issuer (signed with another key) and garbage
    other = start_provider(tmp_path / "other")
    try:
        other.register(["http://127.0.0.1:9/cb"])
        foreign = _tokens_from(other, "alice")
    finally:
        other.stop()
    st, body = Client(oidc_server.url, foreign).call("GET", "/sessions")
    assert st == 401 and body["kind"] == "auth", body
    st, body = Client(oidc_server.url, "not-a-token").call("GET", "/sessions")
    assert st == 401, body
    assert query(url)["state"]


def _tokens_from(provider, user):
    """An access token of PROVIDER for USER (the code flow, done by hand)."""
    import base64
    import hashlib

    import requests

    from oidcproc import CLIENT_ID, Person, query

    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    url = (provider.issuer + "/authorize/?response_type=code&client_id=" + CLIENT_ID
           + "&redirect_uri=http://127.0.0.1:9/cb&scope=openid&state=s&code_challenge="
           + challenge.decode() + "&code_challenge_method=S256")
    back = Person(user).visit(url, stop_at="http://127.0.0.1:9/")
    r = requests.post(provider.issuer + "/token/", data={
        "grant_type": "authorization_code", "code": query(back)["code"], "code_verifier": verifier,
        "redirect_uri": "http://127.0.0.1:9/cb"}, auth=(CLIENT_ID, provider.client_secret),
        timeout=30)
    return r.json()["access_token"]


def test_a_wrong_client_secret_an_allowlist_and_opaque_tokens(provider, signin, cubbi, start_server,
                                                              tmp_path):
    # the service's secret is wrong: signing in fails with one line naming it
    srv = start_oidc_server(start_server, provider, secret="wrong")
    provider.register([srv.url + "/auth/callback"])
    sign_in_error(signin(srv.url, "alice", name="bad"), "client credentials")
    assert not stored(cubbi)
    r = signin(srv.url, "alice", "--device", name="bad", add=False)
    one_line_error(r, 5, "client credentials")
    # only the group cubbi-users: mallory is signed in at the provider but refused here
    allow = start_oidc_server(start_server, provider,
                              extra="  allow:\n    groups: [cubbi-users]\n")
    provider.register([srv.url + "/auth/callback", allow.url + "/auth/callback"])
    sign_in_error(signin(allow.url, "mallory", name="allow"), "not allowed")
    assert not stored(cubbi)
    assert signin(allow.url, "alice", name="allow", add=False).exit_code == 0


def test_opaque_tokens_are_introspected(engine, tmp_path, start_server, signin, cubbi):
    opaque = start_provider(tmp_path, opaque=True)
    try:
        srv = start_oidc_server(start_server, opaque)
        r = signin(srv.url, "bob")
        assert r.exit_code == 0, r
        tokens = json.loads(stored(cubbi)["remote:team:oidc"])
        assert tokens["access_token"].count(".") != 2  # not a JWT
        r = cubbi("cubbi-ls", "-r", "team", "--json", env={"CUBBI_SECRETS": "file"})
        assert r.exit_code == 0, r
        opaque.revoke_user("bob")  # introspection sees it at once
        from serverproc import Client

        st, body = Client(srv.url, tokens["access_token"]).call("GET", "/sessions")
        assert st == 401 and "not active" in body["error"], body
    finally:
        opaque.stop()


def test_an_unreachable_provider_stops_the_server_with_one_line(tmp_path):
    import socket

    from serverproc import ServerProcess

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    class Nowhere:
        issuer = f"http://127.0.0.1:{port}/o"

    srv = ServerProcess(str(tmp_path), env={"OIDC_CLIENT_SECRET": "x"},
                        config_text=oidc_config(Nowhere))
    r = subprocess.run([os.path.join(HERE, "..", "bin", "cubbi-server"), "--config", srv.config,
                        "--port", "0"], env=srv.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 5, r
    assert r.stderr.count("\n") == 1 and "cannot reach the OpenID provider" in r.stderr, r.stderr


def test_access_token_checks_against_the_providers_jwks(provider):
    """Tokens signed with the provider's own key (read from its work dir)
    but with a wrong audience, issuer, expiry or nbf are refused; another
    key, another algorithm and an unsigned token too."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from cubbi_tools.errors import AuthError, Forbidden
    from cubbi_tools.oidc import Provider

    p = Provider({"url": provider.issuer, "client_id": "cubbi-service", "client_secret": "x",
                  "clock_skew": 5, "allow": {"email_domains": ["team.test"]}})
    p.load()
    key = open(os.path.join(provider.workdir, "rsa.pem")).read()
    kid = next(iter(p._keys()))
    now = int(time.time())
    good = {"iss": provider.issuer, "sub": "7", "aud": "cubbi-service", "exp": now + 60,
            "iat": now, "email": "zed@team.test"}

    def tok(claims=None, k=key, alg="RS256", headers=None, **kw):
        return pyjwt.encode({**good, **(claims or {}), **kw}, k, algorithm=alg,
                            headers={"kid": kid, **(headers or {})})

    assert p.verify(tok())["sub"] == "7"
    assert p.user_name(p.verify(tok())) == "oidc-7"
    assert p.verify(tok(aud="other", azp="cubbi-service"))["sub"] == "7"
    assert p.verify(tok(exp=now - 3))  # within the 5 s skew
    refused = {
        "another audience": tok(aud="other"),
        "another issuer": tok(iss="http://127.0.0.1:1/o"),
        "expired": tok(exp=now - 30),
        "not yet valid": tok(nbf=now + 60),
        "no sub": tok({"sub": None}),
        "another key": tok(k=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "an unknown kid": tok(headers={"kid": "nope"}),
        "HS256": tok(k="x" * 32, alg="HS256"),
        "unsigned": pyjwt.encode(good, None, algorithm="none"),
    }
    for why, token in refused.items():
        with pytest.raises(AuthError) as exc:
            p.verify(token)
        assert not isinstance(exc.value, Forbidden), why
        assert token not in str(exc.value), why
    with pytest.raises(Forbidden):
        p.verify(tok(email="zed@elsewhere.test"))


def test_login_needs_a_remote_that_signs_in(start_server, cubbi):
    srv = start_server()  # API tokens only
    env = {"CUBBI_SECRETS": "file"}
    assert cubbi("cubbi-remote", "add", "plain", srv.url, env=env).exit_code == 0
    one_line_error(cubbi("cubbi-remote", "login", "plain", env=env), 2, "API tokens only")
    one_line_error(cubbi("cubbi-remote", "login", env=env), 2, "which remote")
    one_line_error(cubbi("cubbi-remote", "login", "nope", env=env), 3, "nope")
    r = cubbi("cubbi-remote", "logout", "plain", env=env)
    assert r.exit_code == 0 and "no sign-in" in r.stderr, r
    r = cubbi("cubbi-remote", "list", "--json", env=env)
    assert r.json()[0]["auth"] == "none" and r.json()[0]["expires"] is None, r


def test_a_browser_signs_in_to_the_page_through_the_provider(oidc_server, provider):
    """The web page's single sign-on: /auth/login from a browser, the
    provider's forms, and back on the page with its HttpOnly cookie; the
    provider's tokens are kept nowhere in the browser."""
    from oidcproc import Person

    person = Person("alice")
    last = person.visit(oidc_server.url + "/auth/login")
    assert last == oidc_server.url + "/", last
    cookie = next(c for c in person.http.cookies if c.name == "cubbi_browser")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/", cookie
    # cookies do not tell ports apart: the provider's own (Django's) are there too,
    # and nothing else: no token of the provider's reaches the browser
    assert sorted(c.name for c in person.http.cookies) == \
        ["csrftoken", "cubbi_browser", "sessionid"], list(person.http.cookies)
    assert not [c for c in person.http.cookies if c.value.count(".") == 2]  # no JWT
    who = person.http.get(oidc_server.url + "/auth/browser", timeout=30).json()
    assert who["user"].startswith("oidc-") and who["csrf"], who
    r = person.http.get(oidc_server.url + "/sessions", timeout=30)
    assert r.status_code == 200 and r.json() == {"sessions": []}, r.text
    assert person.http.get(oidc_server.url + "/auth/config", timeout=30).json()["provider"] == "oidc"

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
            f"  url: {provider.issuer}\n  client_id: cubbi-service\n"
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
def oidc_server(provider, start_module_server):
    return start_oidc_server(start_module_server, provider)


@pytest.fixture
def signin(cubbi, tmp_path):
    """sign(remote_url, user, *args, consent=True) -> Result of cubbi-remote
    login through the fake browser, in the test's config dir (file secrets)."""
    log = tmp_path / "browser.log"

    def sign(url, user, *args, consent=True, name="team", add=True, env=None):
        if add:
            r = cubbi("cubbi-remote", "add", name, url, env={"CUBBI_SECRETS": "file"})
            assert r.exit_code == 0, r
        e = {"CUBBI_SECRETS": "file", "BROWSER": f"{HERE}/fakebrowser.py",
             "FAKEBROWSER_USER": user, "FAKEBROWSER_LOG": str(log),
             "FAKEBROWSER_CONSENT": "allow" if consent else "deny", "CUBBI_AUTH_TIMEOUT": "30"}
        e.update(env or {})
        return cubbi("cubbi-remote", "login", name, *args, env=e)

    sign.log = log
    return sign


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

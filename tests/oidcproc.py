"""The test OpenID Connect provider (tests/oidc_provider, django-oauth-
toolkit) as a process on loopback, and a scripted user who signs in through
its own login and consent forms with `requests`, as a person in a browser
would."""

import os
import re
import subprocess
import sys
import time
from urllib.parse import parse_qs, urljoin, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oidc_provider"))
from serve import PASSWORD, USERS  # noqa: E402,F401

CLIENT_ID = "cubbi-service"


class Provider:
    def __init__(self, workdir, access_lifetime=3600, opaque=False):
        self.workdir = workdir
        self.admin_key = os.urandom(16).hex()
        self.args = [str(access_lifetime)] + (["--opaque"] if opaque else [])
        self.access_lifetime = access_lifetime
        self.client_secret = "secret-" + os.urandom(12).hex()
        self.proc = None
        self.url = None

    @property
    def issuer(self):
        return self.url + "/o"

    def start(self, timeout=60):
        self.log = open(os.path.join(self.workdir, "provider.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "oidc_provider", "serve.py"), self.workdir,
             "--access-lifetime", *self.args],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "OIDC_TEST_ADMIN_KEY": self.admin_key})
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.time() + timeout
        line = ""
        while time.time() < deadline and not line:
            if sel.select(max(0.0, deadline - time.time())):
                line = self.proc.stdout.readline()
                if not line:
                    break
        sel.close()
        m = re.match(r"listening on (http://\S+)", line or "")
        if not m:
            self.stop()
            raise RuntimeError("the test OIDC provider did not start:\n"
                               + open(os.path.join(self.workdir, "provider.log")).read())
        self.url = m.group(1)
        return self

    def admin(self, path, body):
        import requests

        r = requests.post(self.url + path, json=body, headers={"X-Test-Admin": self.admin_key},
                          timeout=30)
        r.raise_for_status()
        return r.json()

    def register(self, redirect_uris, client_id=CLIENT_ID, secret=None):
        """The service's confidential client, with its redirect URIs."""
        return self.admin("/test/app", {"client_id": client_id,
                                        "client_secret": secret or self.client_secret,
                                        "redirect_uris": list(redirect_uris)})

    def revoke_user(self, user):
        """Revoke every token of USER at the provider, as its admin would."""
        return self.admin("/test/revoke", {"user": user})

    def stop(self):
        from serverproc import stop_process

        stop_process(self.proc)
        if getattr(self, "log", None):
            self.log.close()


class Person:
    """A user in a browser: follows redirects, fills in the provider's login
    form, and approves (or denies) the consent page.  Cookies persist, as
    in a browser, so a second sign-in skips the password."""

    def __init__(self, name, password=None):
        import requests

        self.name = name
        self.password = password or PASSWORD % name
        self.http = requests.Session()

    def _form(self, page, url):
        """(action URL, fields) of the first form on PAGE."""
        m = re.search(r'<form[^>]*action="([^"]*)"', page) or re.search(r"<form[^>]*>", page)
        action = urljoin(url, m.group(1)) if m and m.groups() else url
        fields = {}
        for tag in re.findall(r"<input[^>]*>", page):
            name = re.search(r'name="([^"]*)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name:
                fields[name.group(1)] = (value.group(1) if value else "").replace("&amp;", "&")
        return action, fields

    def visit(self, url, consent=True, stop_at=None):
        """Open URL and go through sign-in and consent; returns the URL the
        provider finally sends the browser to that starts with STOP_AT (it
        is not followed: the caller, e.g. a loopback listener or the
        service's callback, takes it), or the last page's URL."""
        for _ in range(20):
            if stop_at and url.startswith(stop_at):
                return url
            r = self.http.get(url, allow_redirects=False, timeout=30)
            if r.is_redirect:
                url = urljoin(url, r.headers["Location"])
                continue
            page = r.text
            if 'name="password"' in page:
                action, fields = self._form(page, url)
                fields.update(username=self.name, password=self.password)
                r = self.http.post(action, data=fields, allow_redirects=False, timeout=30,
                                   headers={"Referer": url})
            elif 'name="allow"' in page or 'name="action"' in page or 'name="user_code"' in page:
                action, fields = self._form(page, url)
                if 'name="allow"' in page:
                    if consent:
                        fields["allow"] = "Authorize"
                    else:
                        fields.pop("allow", None)
                if 'name="action"' in page:
                    fields["action"] = "accept" if consent else "deny"
                r = self.http.post(action, data=fields, allow_redirects=False, timeout=30,
                                   headers={"Referer": url})
            else:
                return url
            if not r.is_redirect:
                if r.status_code >= 400:
                    raise RuntimeError(f"{r.status_code} from the provider at {action}: "
                                       f"{r.text[:300]}")
                return url
            url = urljoin(action, r.headers["Location"])
        raise RuntimeError("too many redirects")

    def enter_code(self, verification_uri, user_code, consent=True):
        """The device grant's user side: sign in, enter USER_CODE, approve."""
        url = verification_uri + ("&" if "?" in verification_uri else "?") + "user_code=" + user_code
        r = self.http.get(url, allow_redirects=False, timeout=30)
        url = urljoin(url, r.headers["Location"]) if r.is_redirect else url
        url = self.visit(url, consent=consent)
        r = self.http.get(url, timeout=30)
        if 'name="user_code"' in r.text:
            action, fields = self._form(r.text, r.url)
            fields["user_code"] = user_code
            r = self.http.post(action, data=fields, timeout=30, allow_redirects=False,
                               headers={"Referer": r.url})
            url = self.visit(urljoin(action, r.headers["Location"]), consent=consent)
        return url


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}

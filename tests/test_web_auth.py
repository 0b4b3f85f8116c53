"""Browser sign-in without a browser or an engine: the browser sessions in
the state database (revocable every way), which Origin is the service's
own, the CSRF check, server.base_path, and the page's headers (CSP without
inline script).  The same in a real Chromium: tests/test_web_browser.py."""

import io
import json
import re

import pytest

from cubbi_tools.errors import AuthError, UsageError


@pytest.fixture
def state(tmp_path):
    from cubbi_tools.serverstate import State

    return State(str(tmp_path / "db.sqlite"), key="k")


def test_a_browser_session_is_stored_hashed_and_ends_every_way(state, tmp_path):
    tok = state.create_token("alice")["token"]
    cookie = state.open_browser("alice", 60, token=tok)
    assert cookie.startswith("cubbib_") and state.user_for_browser(cookie) == "alice"
    raw = (tmp_path / "db.sqlite").read_bytes()
    assert cookie.rsplit("_", 1)[1].encode() not in raw  # only its HMAC is kept
    for bad in ("", "cubbib_", cookie + "x", cookie.replace("cubbib_", "cubbi_"), tok):
        with pytest.raises(AuthError):
            state.user_for_browser(bad)

    assert state.close_browser(cookie) and not state.close_browser(cookie)  # sign out
    with pytest.raises(AuthError):
        state.user_for_browser(cookie)

    cookie = state.open_browser("alice", 60, token=tok)
    state.revoke_token(tok.split("_")[1])  # the token it signed in with
    with pytest.raises(AuthError):
        state.user_for_browser(cookie)

    cookie = state.open_browser("alice", 60, token=state.create_token("alice")["token"])
    other = state.open_browser("alice", 60)  # an OIDC sign-in: no token
    state.remove_user("alice")
    for c in (cookie, other):
        with pytest.raises(AuthError):
            state.user_for_browser(c)
    assert state.browsers() == []


def test_a_browser_session_expires_and_needs_a_real_user_and_token(state):
    tok = state.create_token("alice")["token"]
    cookie = state.open_browser("alice", 0, token=tok)
    with pytest.raises(AuthError):
        state.user_for_browser(cookie)
    with pytest.raises(AuthError):
        state.open_browser("bob", 60, token=tok)  # alice's token does not sign in bob
    with pytest.raises(AuthError):
        state.open_browser("nobody", 60)
    state.open_browser("alice", 60)
    assert [b["user"] for b in state.browsers()] == ["alice"]  # the expired one was swept


@pytest.mark.parametrize("origin,host,extra,ok", [
    (None, "cubbi:3000", [], True),  # no Origin: not a browser page
    ("http://cubbi:3000", "cubbi:3000", [], True),
    ("https://cubbi.example.com", "cubbi.example.com", [], True),
    ("https://cubbi.example.com", "cubbi.example.com:443", [], True),
    ("HTTP://Cubbi:3000", "cubbi:3000", [], True),
    ("http://cubbi:3001", "cubbi:3000", [], False),  # another port: same site, not same origin
    ("http://evil.example", "cubbi:3000", [], False),
    ("null", "cubbi:3000", [], False),
    ("file://", "cubbi:3000", [], False),
    ("https://cubbi.example.com", "127.0.0.1:3000", ["https://cubbi.example.com/"], True),
    ("https://cubbi.example.com:8443", "127.0.0.1:3000", ["https://cubbi.example.com"], False),
    ("http://cubbi.example.com", "127.0.0.1:3000", ["https://cubbi.example.com"], False),
])
def test_which_origin_is_the_services_own(origin, host, extra, ok):
    from cubbi_server.web import Origins

    env = {"HTTP_HOST": host, **({"HTTP_ORIGIN": origin} if origin is not None else {})}
    assert Origins({"server": {"origins": extra}}).allowed(env) is ok


@pytest.mark.parametrize("conf", [{"origins": ["cubbi.example.com"]},
                                  {"origins": ["https://x/path"]}, {"origins": "ftp://x"},
                                  {"base_path": "/a b"}, {"base_path": "//x"},
                                  {"browser_lifetime": "a day"}])
def test_bad_browser_settings_name_their_key(conf, state):
    from cubbi_server.web import Browser

    with pytest.raises(UsageError) as err:
        Browser(state, {"server": conf})
    assert f"server.{next(iter(conf))}" in str(err.value)


def _app(tmp_path, **server):
    from cubbi_server.app import make_app, serving
    from cubbi_tools.service import Service, load_config

    conf = load_config(None)
    conf["state"]["database"] = str(tmp_path / "db.sqlite")
    conf["server"].update(server)
    service = Service(conf)
    wsgi, _ = serving(make_app(service, conf), conf)
    return wsgi, service


def _call(wsgi, method, path, headers=None, body=None):
    """(status, headers, body) of one request to the WSGI app."""
    data = json.dumps(body).encode() if body is not None else b""
    env = {"REQUEST_METHOD": method, "PATH_INFO": path.split("?")[0],
           "QUERY_STRING": path.partition("?")[2], "SERVER_NAME": "cubbi", "SERVER_PORT": "3000",
           "HTTP_HOST": "cubbi:3000", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(data),
           "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": "application/json",
           "SCRIPT_NAME": ""}
    for k, v in (headers or {}).items():
        env["HTTP_" + k.upper().replace("-", "_")] = v
    out = {}

    def start_response(status, hdrs, exc_info=None):
        out["status"], out["headers"] = int(status.split()[0]), hdrs

    text = b"".join(wsgi(env, start_response))
    return out["status"], out["headers"], text


def test_sign_in_csrf_and_sign_out_over_wsgi(tmp_path):
    wsgi, service = _app(tmp_path)
    tok = service.state.create_token("alice")["token"]
    st, hdrs, text = _call(wsgi, "POST", "/auth/browser", {"Origin": "http://cubbi:3000"},
                           {"token": tok})
    assert st == 200, text
    set_cookie = dict(hdrs)["Set-Cookie"]
    assert re.search(r"(?i)httponly", set_cookie) and re.search(r"(?i)samesite=strict",
                                                                  set_cookie)
    assert "secure" not in set_cookie.lower()  # plain http
    assert tok not in text.decode() and tok not in set_cookie
    cookie = set_cookie.split(";")[0]
    csrf = json.loads(text)["csrf"]
    jar = {"Cookie": cookie}
    assert _call(wsgi, "GET", "/auth/browser", jar)[0] == 200
    assert _call(wsgi, "DELETE", "/projects/x", jar)[0] == 403  # no CSRF token
    wrong = csrf[:-1] + ("1" if csrf[-1] == "0" else "0")  # never the token itself
    st, _, text = _call(wsgi, "DELETE", "/projects/x", {**jar, "X-Cubbi-CSRF": wrong})
    assert st == 403 and b"CSRF" in text
    assert _call(wsgi, "DELETE", "/projects/github.com/a/b",
                 {**jar, "X-Cubbi-CSRF": csrf})[0] == 404  # through: no such project
    assert _call(wsgi, "GET", "/projects", {**jar, "Origin": "http://cubbi:3001"})[0] == 403
    # sign-in from another origin, with a bad token, without one
    assert _call(wsgi, "POST", "/auth/browser", {"Origin": "http://cubbi:3001"},
                 {"token": tok})[0] == 403
    assert _call(wsgi, "POST", "/auth/browser", {}, {"token": tok + "x"})[0] == 401
    assert _call(wsgi, "POST", "/auth/browser", {}, {"token": 1})[0] == 400
    # sign out needs the CSRF token too, then the cookie is dead
    assert _call(wsgi, "DELETE", "/auth/browser", jar)[0] == 403
    assert _call(wsgi, "DELETE", "/auth/browser", {**jar, "X-Cubbi-CSRF": csrf})[0] == 200
    assert _call(wsgi, "GET", "/projects", jar)[0] == 401
    # https (the browser's Origin says so, or the proxy's header): a Secure cookie
    for hdr in ({"Origin": "https://cubbi:3000"}, {"X-Forwarded-Proto": "https"}):
        st, hdrs, _ = _call(wsgi, "POST", "/auth/browser", hdr, {"token": tok})
        assert st == 200 and "secure" in dict(hdrs)["Set-Cookie"].lower()


def test_the_page_allows_no_inline_script(tmp_path):
    wsgi, _ = _app(tmp_path)
    st, hdrs, page = _call(wsgi, "GET", "/")
    hdrs = dict(hdrs)
    assert st == 200 and hdrs["Content-Type"].startswith("text/html")
    csp = dict(d.strip().split(" ", 1) for d in hdrs["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    html = page.decode()
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"\son\w+\s*=", html)  # no inline event handlers
    assert '<base href="/">' in html
    for f in ("ui/app.js", "ui/app.css", "ui/vendor/xterm.js", "ui/vendor/addon-fit.js",
              "ui/vendor/xterm.css", "ui/vendor/LICENSE.xterm"):
        assert _call(wsgi, "GET", "/" + f)[0] == 200, f
    for f in ("ui/../web.py", "ui/index.html", "ui/nothing.js"):
        assert _call(wsgi, "GET", "/" + f)[0] == 404, f


def test_the_page_under_a_base_path(tmp_path):
    wsgi, service = _app(tmp_path, base_path="/team/cubbi/")
    st, hdrs, _ = _call(wsgi, "GET", "/team/cubbi?x=1")
    assert st == 301 and dict(hdrs)["Location"] == "/team/cubbi/?x=1"
    st, _, page = _call(wsgi, "GET", "/team/cubbi/")
    assert st == 200 and b'<base href="/team/cubbi/">' in page
    assert _call(wsgi, "GET", "/team/cubbi/ui/app.js")[0] == 200
    assert _call(wsgi, "GET", "/ui/app.js")[0] == 200  # a proxy that strips the prefix
    tok = service.state.create_token("alice")["token"]
    st, hdrs, _ = _call(wsgi, "POST", "/team/cubbi/auth/browser", {}, {"token": tok})
    assert st == 200 and "Path=/team/cubbi/;" in dict(hdrs)["Set-Cookie"] + ";"


def test_the_vendored_xterm_is_pinned_with_its_licence():
    import os

    from conftest import ROOT

    vendor = os.path.join(ROOT, "server", "web", "vendor")
    versions = open(os.path.join(vendor, "VERSIONS")).read()
    refresh = open(os.path.join(vendor, "refresh")).read()
    for pkg, var in (("@xterm/xterm", "XTERM"), ("@xterm/addon-fit", "FIT")):
        pinned = re.search(rf"^{var}=(\S+)", refresh, re.M).group(1)
        assert re.search(rf"^{re.escape(pkg)} {re.escape(pinned)} sha256 [0-9a-f]{{64}}$",
                         versions, re.M), (pkg, pinned, versions)
    for lic in ("LICENSE.xterm", "LICENSE.addon-fit"):
        assert "Permission is hereby granted" in open(os.path.join(vendor, lic)).read()

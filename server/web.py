"""The service's web page, and how a browser signs in.

- GET / is the page (server/web/index.html; its scripts and styles, with
  the vendored xterm.js, under /ui/): the user's sessions, create, close,
  logs, terminals.  No inline script: the Content-Security-Policy allows
  scripts from the service only.
- A browser signs in once: POST /auth/browser with an API token (or, later,
  an OIDC callback calling Browser.sign_in(user)) makes a browser session
  in the state database (serverstate: stored hashed, revocable) and sets
  the cookie cubbi_browser on it: HttpOnly, SameSite=Strict, Secure when
  the page is on https, its Path the base path.  DELETE /auth/browser signs
  out: the row goes, so the cookie is refused wherever it was copied.  The
  token never goes into a URL, the page's storage or a log line.
- A request with the cookie (and no Authorization header) is the user's
  when: its Origin, if it sends one, is the service's own (the request's
  Host) or one of server.origins; and, unless it is a GET or HEAD, it
  carries the page's CSRF token in X-Cubbi-CSRF (an HMAC of the cookie's
  secret, given to the page at sign-in and by GET /auth/browser).  A page
  on another origin, even another port of the same host (same site, so
  SameSite lets the cookie through), cannot read that token.
- A WebSocket upgrade from an Origin that is not allowed is refused with
  403 before the handshake (limits.handler calls Origins.allowed), whatever
  credential it carries.  Clients that send no Origin (cubbi-connect) and
  Authorization-header clients are unaffected.
- server.base_path: the service behind a proxy under a path prefix.  A path
  under the prefix is served with the prefix taken off (so a proxy may pass
  the prefix on or strip it), the page's <base href> is the prefix, and the
  page's URLs are all relative to it (wss:// follows https://).
"""

import hashlib
import hmac
import html
import os
import urllib.parse

from cubbi_tools.errors import AuthError, Forbidden, UsageError

COOKIE = "cubbi_browser"
CSRF_HEADER = "X-Cubbi-CSRF"
SAFE_METHODS = ("GET", "HEAD")
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
DEFAULT_LIFETIME = 12 * 3600
# no inline script, no eval; xterm.js sets styles from script (style-src
# 'unsafe-inline' is for those), connections only to the service itself
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store"}


def base_path(conf):
    """server.base_path as '' or '/a/b' (UsageError naming the key)."""
    raw = (conf.get("server") or {}).get("base_path") or ""
    if not isinstance(raw, str) or any(c in raw for c in "?#\\ \"'<>") or "//" in raw:
        raise UsageError(f"server.base_path {raw!r}: expected a path such as /cubbi")
    raw = raw.strip("/")
    return "/" + raw if raw else ""


def _origin(text, where=None):
    """'scheme://host[:port]' of text, lower case, without a default port
    (None when it is not an http(s) origin)."""
    try:
        p = urllib.parse.urlsplit(text.strip())
        port = p.port
    except ValueError:
        p = None
    if p is None or p.scheme not in ("http", "https") or not p.hostname or (
            where and (p.path not in ("", "/") or p.query or p.fragment or p.username)):
        if where:
            raise UsageError(f"{where} {text!r}: expected an origin such as "
                             "https://cubbi.example.com")
        return None
    default = {"http": 80, "https": 443}[p.scheme]
    host = p.hostname if ":" not in p.hostname else f"[{p.hostname}]"
    return f"{p.scheme}://{host}" + (f":{port}" if port and port != default else "")


class Origins:
    """Which Origin a browser request may come from: the service's own (the
    scheme and Host the browser used) or one of server.origins (the public
    URL when a proxy in front rewrites Host)."""

    def __init__(self, conf):
        extra = (conf.get("server") or {}).get("origins") or []
        if isinstance(extra, str):
            extra = [extra]
        if not isinstance(extra, list):
            raise UsageError("server.origins: expected a list of origins such as "
                             "https://cubbi.example.com")
        self.extra = {_origin(str(o), "server.origins") for o in extra}

    def allowed(self, environ):
        """True when the request sends no Origin (not a browser page) or an
        allowed one."""
        sent = environ.get("HTTP_ORIGIN")
        if sent is None:
            return True
        origin = _origin(sent)
        if origin is None:  # "null", a file: page, garbage
            return False
        if origin in self.extra:
            return True
        own = _origin(f"{origin.split('://')[0]}://{environ.get('HTTP_HOST') or ''}")
        return own is not None and origin == own


def csrf_token(cookie):
    """The CSRF token of a browser session: an HMAC of its cookie, so the
    page can send it and a page that cannot read it cannot."""
    return hmac.new(cookie.encode(), b"cubbi-csrf", hashlib.sha256).hexdigest()[:40]


class Browser:
    """Browser sessions: sign_in(user) from any sign-in (a pasted token
    here, an OIDC callback later), user(request) for each request."""

    def __init__(self, state, conf):
        srv = conf.get("server") or {}
        self.state = state
        self.origins = Origins(conf)
        self.base = base_path(conf)
        try:
            self.lifetime = int(srv.get("browser_lifetime") or DEFAULT_LIFETIME)
        except (TypeError, ValueError):
            raise UsageError("server.browser_lifetime: expected a number of seconds") from None

    def sign_in(self, user, token=None):
        """Sign the requesting browser in as USER: a new browser session in
        the database and its cookie on the response.  token: the API token
        it signed in with (revoking it signs the browser out).  Returns the
        page's {user, csrf}."""
        from bottle import request, response

        cookie = self.state.open_browser(user, self.lifetime, token=token)
        secure = (request.urlparts.scheme == "https"
                  or (request.get_header("X-Forwarded-Proto") or "").lower() == "https"
                  or (request.get_header("Origin") or "").lower().startswith("https://"))
        response.set_cookie(COOKIE, cookie, path=self.base + "/", httponly=True,
                            samesite="strict", secure=secure, max_age=self.lifetime)
        response.set_header("Cache-Control", "no-store")
        return {"user": user, "csrf": csrf_token(cookie), "lifetime": self.lifetime}

    def sign_out(self, req):
        from bottle import response

        cookie = req.get_cookie(COOKIE)
        self.user(req)  # the cookie, its Origin and its CSRF token, as for any change
        self.state.close_browser(cookie)
        response.delete_cookie(COOKIE, path=self.base + "/", httponly=True, samesite="strict")
        return {"signed_out": True}

    def whoami(self, req):
        cookie = req.get_cookie(COOKIE)
        user = self.user(req)
        return {"user": user, "csrf": csrf_token(cookie)}

    def user(self, req):
        """The user of a request carrying the cookie (AuthError, Forbidden)."""
        cookie = req.get_cookie(COOKIE)
        if not cookie:
            raise AuthError("not signed in")
        if not self.origins.allowed(req.environ):
            raise Forbidden(f"requests from {req.get_header('Origin')} are refused: not this "
                            "service's origin (server.origins)")
        try:
            user = self.state.user_for_browser(cookie)
        except AuthError:
            raise AuthError("signed out or expired: sign in again") from None
        if req.method not in SAFE_METHODS:
            sent = req.get_header(CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), csrf_token(cookie).encode()):
                raise Forbidden(f"missing or wrong CSRF token ({CSRF_HEADER}): "
                                "reload the page")
        return user


class BrowserAuth:
    """The service's auth provider, and the browser cookie for requests
    that carry no Authorization header."""

    def __init__(self, auth, browser):
        self.auth = auth
        self.browser = browser

    def user(self, req):
        if req.get_header("Authorization") or not req.get_cookie(COOKIE):
            return self.auth.user(req)
        return self.browser.user(req)


def under_base_path(app, base):
    """WSGI: a path under BASE is served with BASE taken off; BASE itself
    is redirected to BASE/ (the page's relative URLs need the slash)."""
    if not base:
        return app

    def wsgi(environ, start_response):
        path = environ.get("PATH_INFO") or ""
        if path == base:
            qs = environ.get("QUERY_STRING")
            start_response("301 Moved Permanently",
                           [("Location", base + "/" + (f"?{qs}" if qs else "")),
                            ("Content-Length", "0")])
            return [b""]
        if path.startswith(base + "/"):
            environ["PATH_INFO"] = path[len(base):]
            environ["SCRIPT_NAME"] = (environ.get("SCRIPT_NAME") or "") + base
        return app(environ, start_response)

    return wsgi


def routes(app, api, body, browser):
    """The page, its files and /auth/browser on app; api and body are
    make_app's route wrapper and JSON body reader."""
    import bottle
    from bottle import request

    page = _page(browser.base)

    @app.get("/")
    def index():
        return bottle.HTTPResponse(page, status=200, headers={
            "Content-Type": "text/html; charset=utf-8", **PAGE_HEADERS})

    @app.get("/ui/<name:path>")
    def asset(name):
        resp = bottle.static_file(name, root=HERE)
        if resp.status_code >= 400 or name == "index.html":  # none outside web/
            return bottle.HTTPResponse(_json({"error": f"no file {name!r} in the page",
                                              "kind": "not_found", "status": 404}),
                                       status=404, headers={"Content-Type": "application/json"})
        for key, value in PAGE_HEADERS.items():
            if key != "Cache-Control":
                resp.set_header(key, value)
        resp.set_header("Cache-Control", "no-cache")
        return resp

    @app.get("/auth/browser")
    @api(authenticated=False)
    def who():
        return browser.whoami(request)

    @app.post("/auth/browser")
    @api(authenticated=False)
    def sign_in():
        if not browser.origins.allowed(request.environ):
            raise Forbidden(f"sign-in from {request.get_header('Origin')} refused: not this "
                            "service's origin (server.origins)")
        token = body().get("token")
        if not isinstance(token, str) or not token.strip():
            raise UsageError('sign in with {"token": "cubbi_..."}: an API token '
                             "(cubbi-server token create USER)")
        token = token.strip()
        try:
            user = browser.state.user_for_token(token)
        except AuthError:
            raise AuthError("invalid or revoked token; ask the service admin for a new one "
                            "(cubbi-server token create USER)") from None
        return browser.sign_in(user, token=token)

    @app.delete("/auth/browser")
    @api(authenticated=False)
    def sign_out():
        return browser.sign_out(request)


def _json(rec):
    import json

    return json.dumps(rec)


def _page(base):
    with open(os.path.join(HERE, "index.html"), encoding="utf-8") as fh:
        text = fh.read()
    return text.replace("{{base}}", html.escape(base + "/", quote=True))

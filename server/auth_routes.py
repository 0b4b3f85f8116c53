"""The sign-in routes (/auth/*) and the OpenID Connect auth layer.

    GET  /auth/config    what a client needs: provider, issuer, client id,
                         scopes, flows (no token needed)
    GET  /auth/login     start the authorization code flow (PKCE, state,
                         nonce): a redirect to the provider.  A CLI adds
                         ?redirect_uri=http://127.0.0.1:PORT/...&state=S
                         (loopback only)
    GET  /auth/callback  the provider's redirect back: the code is
                         exchanged here with the client secret; then
                         signed_in() decides what happens with the tokens
    POST /auth/token     {"code"}: a CLI's tokens, once, for the one-time
                         code its loopback got; {"device_code"}: a device
                         sign-in's tokens once approved (202 while pending)
    POST /auth/device    start a device sign-in (RFC 8628)
    POST /auth/refresh   {"refresh_token"}: new tokens
    POST /auth/logout    {"refresh_token"} and the bearer access token:
                         revoked at the provider, refused here from now on

The logic is cubbi_tools.oidc; these stay thin.
"""

from urllib.parse import urlencode, urlsplit

from bottle import HTTPResponse, request, response

from cubbi_tools.errors import AuthError, UsageError


class OIDCAuth:
    """Bearer tokens: the service's API tokens (cubbi_...) as TokenAuth
    checks them, anything else an access token of the OpenID provider."""

    def __init__(self, state, conf, api_tokens):
        from cubbi_tools.oidc import Provider

        self.state = state
        self.api_tokens = api_tokens  # app.TokenAuth
        self.provider = Provider(conf.get("auth") or {})
        self.provider.load()  # at start: an unreachable provider stops the server here
        self._known = set()

    def user(self, req):
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing token: send Authorization: Bearer TOKEN (sign in with "
                            "cubbi -r NAME auth)")
        from cubbi_tools.serverstate import TOKEN_PREFIX

        if token.startswith(TOKEN_PREFIX):
            return self.api_tokens.user(req)
        claims = self.provider.verify(token)
        name = self.provider.user_name(claims)
        if name not in self._known:
            self.state.add_user(name)
            self._known.add(name)
        return name


def signed_in(app, state, provider, claims):
    """A sign-in started from a browser (/auth/login without a CLI's
    redirect): the browser gets a browser session of the page (its
    HttpOnly cookie, server/web.py) as the provider's user, and goes back
    to the page.  The provider's tokens are not kept: the page needs none."""
    name = provider.user_name(claims)
    state.add_user(name)
    browser = app.config["cubbi.browser"]
    browser.sign_in(name)
    response.status = 302  # on the response that carries the cookie
    response.set_header("Location", browser.base + "/")  # what the browser sees, prefix and all
    return ""


def _loopback(uri):
    p = urlsplit(uri or "")
    try:
        port = p.port
    except ValueError:
        port = None
    return (p.scheme == "http" and p.hostname in ("127.0.0.1", "::1", "localhost")
            and port and not p.username and not p.fragment)


def _callback_url(provider):
    if provider.conf["redirect_uri"]:
        return provider.conf["redirect_uri"]
    parts = request.urlparts
    return f"{parts.scheme}://{parts.netloc}" + request.script_name.rstrip("/") + "/auth/callback"


def _back(client, params):
    """Redirect the browser to the CLI's loopback with PARAMS and its state."""
    sep = "&" if "?" in client["redirect_uri"] else "?"
    loc = client["redirect_uri"] + sep + urlencode({**params, "state": client["state"]})
    raise HTTPResponse(status=302, headers={"Location": loc, "Cache-Control": "no-store"})


def install(app, auth, api, body):
    """Add the /auth routes to APP; AUTH is the service's auth layer, API the
    JSON route decorator, BODY the bounded JSON body reader of make_app."""
    provider = getattr(auth, "provider", None)

    def need_oidc():
        if provider is None:
            raise UsageError("this service signs in with API tokens only (auth.provider: token); "
                             "ask its admin for one (cubbi-server token create USER)")
        return provider

    @app.get("/auth/config")
    @api(authenticated=False)
    def auth_config():
        if provider is None:
            return {"provider": "token", "flows": [], "api_tokens": True}
        return {"provider": "oidc", "issuer": provider.issuer, "client_id": provider.client_id,
                "scopes": provider.conf["scopes"], "flows": provider.flows(), "api_tokens": True}

    @app.get("/auth/login")
    @api(authenticated=False)
    def auth_login():
        p = need_oidc()
        q = request.query
        client = None
        if q.get("redirect_uri"):
            if not _loopback(q.get("redirect_uri")) or not q.get("state"):
                raise UsageError("redirect_uri must be http://127.0.0.1:PORT/... (a CLI's loopback) "
                                 "and come with a state")
            client = {"redirect_uri": q.get("redirect_uri"), "state": q.get("state")[:256]}
        url = p.login(_callback_url(p), client)
        raise HTTPResponse(status=302, headers={"Location": url, "Cache-Control": "no-store"})

    @app.get("/auth/callback")
    @api(authenticated=False)
    def auth_callback():
        p = need_oidc()
        params = {k: request.query.get(k) for k in ("code", "state", "error")}
        try:
            tokens, claims, client = p.callback(params)
        except AuthError as exc:
            client = getattr(exc, "client", None)
            if not client:
                raise
            _back(client, {"error": str(exc)})  # the CLI says why, at once
        from cubbi_tools.oidc import client_tokens

        if client:
            _back(client, {"code": p.handoffs.put(client_tokens(tokens, claims))})
        return signed_in(app, auth.state, p, claims)

    @app.post("/auth/token")
    @api(authenticated=False)
    def auth_token():
        p = need_oidc()
        data = body()
        response.set_header("Cache-Control", "no-store")
        if data.get("code"):
            return p.handoffs.take(data["code"])
        if data.get("device_code"):
            from cubbi_tools.oidc import client_tokens

            tokens, claims = p.device_poll(str(data["device_code"]))
            if tokens is None:
                response.status = 202
                return claims
            return client_tokens(tokens, claims)
        raise UsageError('POST /auth/token needs {"code": ...} or {"device_code": ...}')

    @app.post("/auth/device")
    @api(authenticated=False)
    def auth_device():
        return need_oidc().device_start()

    @app.post("/auth/refresh")
    @api(authenticated=False)
    def auth_refresh():
        p = need_oidc()
        rt = body().get("refresh_token")
        if not isinstance(rt, str) or not rt:
            raise UsageError('POST /auth/refresh needs {"refresh_token": ...}')
        from cubbi_tools.oidc import client_tokens

        tokens, claims = p.refresh(rt)
        kept = client_tokens(tokens, claims)
        kept["refresh_token"] = kept["refresh_token"] or rt  # a provider that does not rotate
        response.set_header("Cache-Control", "no-store")
        return kept

    @app.post("/auth/logout")
    @api(authenticated=False)
    def auth_logout():
        p = need_oidc()
        data = body()
        header = request.get_header("Authorization") or ""
        scheme, _, access = header.partition(" ")
        revoked = {}
        rt = data.get("refresh_token")
        if isinstance(rt, str) and rt:
            revoked["refresh_token"] = p.revoke(rt, "refresh_token")
        if scheme.lower() == "bearer" and access.strip():
            revoked["access_token"] = p.revoke(access.strip(), "access_token")
        if not revoked:
            raise UsageError("POST /auth/logout needs the access token (Authorization: Bearer) "
                             'or {"refresh_token": ...}')
        return {"signed_out": True, "revoked_at_provider": revoked}

"""OpenID Connect for the service (auth.provider: oidc, alias authentik):
the service is the provider's confidential client.

    Provider(auth_conf)      the parsed auth section; load() fetches the
                             discovery document (at start) and caches it
    verify(token)            the claims of an access token: a JWT checked
                             against the JWKS (signature, iss, aud/azp,
                             exp/nbf with a small skew), an opaque one by
                             introspection (RFC 7662); AuthError / Forbidden
    user_name(claims)        the service's user for a stable `sub`
    login / callback         the authorization code flow with PKCE, state
                             and nonce (requests-oauthlib), the code
                             exchanged here with the client secret
    refresh / revoke         the token endpoint and revocation (RFC 7009)
    device_start / device_poll   the device authorization grant (RFC 8628)
    Handoffs                 one-time codes under which a signed-in CLI
                             fetches its tokens (never in a URL)

It reads no settings (the service passes the auth section) and imports
requests, requests-oauthlib and PyJWT only when used.  Errors are AuthError
(HTTP 401, exit 5) or Forbidden (403, exit 5), one line each; nothing here
ever puts a token or the client secret in a message.

(Over 500 lines: one client of one provider: the token checks and the
flows share its discovery document, keys, caches and error wording.)
"""

import hashlib
import os
import re
import secrets
import time
from urllib.parse import urlsplit

from .errors import AuthError, Forbidden, TooMany, UsageError

ALIASES = ("oidc", "authentik")
DEFAULT_SCOPES = ["openid", "profile", "email", "offline_access"]
SKEW = 30  # seconds of clock difference allowed on exp / nbf / iat (auth.clock_skew)
PENDING_TTL = 600  # seconds a started sign-in may take
HANDOFF_TTL = 60
MAX_PENDING = 1000
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_PREFIX = "oidc-"


class Unreachable(AuthError):
    """The provider did not answer (HTTP 401 on the wire, exit 5, as the
    other sign-in failures)."""


def _loopback_http(url):
    p = urlsplit(url)
    return p.scheme == "http" and (p.hostname or "") in ("127.0.0.1", "::1", "localhost")


def check_conf(auth):
    """The auth section's OIDC keys, checked (UsageError naming the key)."""
    out = {}
    url = str(auth.get("url") or "").strip().rstrip("/")
    p = urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise UsageError("auth.url: the issuer URL of the OpenID provider, e.g. "
                         "https://authentik.example/application/o/cubbi/")
    if p.scheme == "http" and not _loopback_http(url):
        raise UsageError(f"auth.url {url!r}: the provider must be https:// (plain http only "
                         "on loopback, for tests)")
    out["issuer"] = url
    for key in ("client_id", "client_secret"):
        value = auth.get(key)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"auth.{key} is not set: the service's client at the provider "
                             "(client_secret may be ${VAR})")
        out[key] = value.strip()
    scopes = auth.get("scopes") or DEFAULT_SCOPES
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, list) or "openid" not in scopes:
        raise UsageError("auth.scopes: a list of scopes that includes openid")
    out["scopes"] = [str(s) for s in scopes]
    allow = auth.get("allow") or {}
    if not isinstance(allow, dict) or set(allow) - {"groups", "email_domains"}:
        raise UsageError("auth.allow: a mapping with groups: [...] and/or email_domains: [...]")
    out["groups"] = [str(g) for g in allow.get("groups") or []]
    out["domains"] = [str(d).lower().lstrip("@") for d in allow.get("email_domains") or []]
    redirect = auth.get("redirect_uri")
    out["redirect_uri"] = str(redirect).strip() if redirect else None
    out["introspect"] = bool(auth.get("introspect", False))
    cache = auth.get("introspection_cache", 10)
    if not isinstance(cache, (int, float)) or cache < 0:
        raise UsageError("auth.introspection_cache: seconds >= 0")
    out["cache"] = float(cache)
    out["timeout"] = float(auth.get("timeout") or 10)
    skew = auth.get("clock_skew", SKEW)
    if not isinstance(skew, (int, float)) or not 0 <= skew <= 300:
        raise UsageError("auth.clock_skew: seconds from 0 to 300")
    out["skew"] = float(skew)
    return out


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_jwt(token):
    return token.count(".") == 2 and all(token.split("."))


class Provider:
    def __init__(self, auth):
        self.conf = check_conf(auth)
        self.issuer = self.conf["issuer"]
        self.client_id = self.conf["client_id"]
        self.meta = None
        self._jwks = {}
        self._jwks_at = 0.0
        self._cache = {}  # token hash -> (claims, until)
        self._revoked = {}  # token hash -> exp: access tokens signed out here
        self._pending = {}  # state -> dict
        self.handoffs = Handoffs()

    # -- transport ----------------------------------------------------------
    def _http(self, method, url, **kw):
        import requests

        kw.setdefault("timeout", self.conf["timeout"])
        try:
            return requests.request(method, url, **kw)
        except requests.RequestException as exc:
            host = urlsplit(url).netloc
            raise Unreachable(f"cannot reach the OpenID provider at {host} "
                            f"({type(exc).__name__}); try again later") from None

    def _json(self, resp, what):
        try:
            data = resp.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise AuthError(f"the OpenID provider's {what} answered HTTP {resp.status_code} "
                            "without JSON")
        return data

    def load(self):
        """Fetch and cache the discovery document (at the service's start)."""
        if self.meta is not None:
            return self.meta
        url = self.issuer + "/.well-known/openid-configuration"
        resp = self._http("GET", url)
        if resp.status_code != 200:
            raise AuthError(f"the OpenID provider has no discovery document at {url} "
                            f"(HTTP {resp.status_code}); check auth.url")
        meta = self._json(resp, "discovery document")
        if str(meta.get("issuer") or "").rstrip("/") != self.issuer:
            raise AuthError(f"the discovery document at {url} names issuer "
                            f"{meta.get('issuer')!r}, not auth.url {self.issuer!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not meta.get(key):
                raise AuthError(f"the discovery document at {url} has no {key}")
        if any(u.startswith("http://") and not _loopback_http(u)
               for u in (meta["token_endpoint"], meta["jwks_uri"])):
            raise AuthError("the OpenID provider's endpoints must be https://")
        # tokens carry the issuer exactly as the provider writes it (Authentik's ends in /)
        self.issuers = sorted({str(meta["issuer"]), self.issuer, self.issuer + "/"})
        if _loopback_http(self.issuer):  # tests: oauthlib refuses plain http otherwise
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        self.meta = meta
        return meta

    def flows(self):
        flows = ["authorization_code"]
        if (self.meta or {}).get("device_authorization_endpoint"):
            flows.append("device_code")
        return flows

    def _client_auth(self):
        return (self.client_id, self.conf["client_secret"])

    # -- checking tokens ----------------------------------------------------
    def _keys(self, refresh=False):
        now = time.monotonic()
        if self._jwks and not refresh:
            return self._jwks
        if refresh and now - self._jwks_at < 10:  # an unknown kid refetches, at most every 10 s
            return self._jwks
        resp = self._http("GET", self.load()["jwks_uri"])
        data = self._json(resp, "JWKS")
        import jwt

        keys = {}
        for k in data.get("keys") or []:
            if k.get("kty") == "RSA" and k.get("use", "sig") == "sig":
                try:
                    keys[k.get("kid")] = jwt.PyJWK(k, algorithm="RS256")
                except jwt.PyJWTError:
                    continue
        self._jwks, self._jwks_at = keys, now
        return keys

    def _key_for(self, kid):
        keys = self._keys()
        if kid not in keys:
            keys = self._keys(refresh=True)
        if kid not in keys and not (kid is None and len(keys) == 1):
            raise AuthError("the token is signed with a key the OpenID provider does not list")
        return keys[kid] if kid in keys else next(iter(keys.values()))

    def decode_jwt(self, token, audience=None, nonce=None):
        """The claims of a JWT signed by the provider, checked."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid token: not a JWT") from None
        if header.get("alg") != "RS256":
            raise AuthError(f"invalid token: signed with {header.get('alg')!r}, expected RS256")
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(token, key.key, algorithms=["RS256"], issuer=self.issuers,
                                leeway=self.conf["skew"], options={"verify_aud": False,
                                                      "require": ["exp", "iss", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("the access token has expired; sign in again "
                            "(cubbi refreshes it by itself)") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid token: issued by another provider than auth.url") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud] if aud else []
        want = audience or self.client_id
        if want not in auds and claims.get("azp") != want:
            raise AuthError("invalid token: issued to another client than auth.client_id")
        if claims.get("azp") and claims["azp"] != want and len(auds) > 1:
            raise AuthError("invalid token: authorized party is another client")
        if nonce is not None and claims.get("nonce") != nonce:
            raise AuthError("the sign-in's nonce does not match; start the sign-in again")
        return claims

    def introspect(self, token):
        url = self.load().get("introspection_endpoint")
        if not url:
            raise AuthError("the OpenID provider offers no token introspection and the token "
                            "is not a JWT")
        resp = self._http("POST", url, data={"token": token, "token_type_hint": "access_token"},
                          auth=self._client_auth())
        if resp.status_code in (401, 403):
            raise AuthError("the OpenID provider refused the service's client credentials for "
                            "introspection (check auth.client_id / auth.client_secret)")
        data = self._json(resp, "introspection endpoint")
        if not data.get("active"):
            raise AuthError("the access token is not active (expired, revoked or unknown); "
                            "sign in again")
        if data.get("iss") and str(data["iss"]).rstrip("/") != self.issuer:
            raise AuthError("invalid token: issued by another provider than auth.url")
        if data.get("client_id") and data["client_id"] != self.client_id:
            raise AuthError("invalid token: issued to another client than auth.client_id")
        if data.get("exp") and float(data["exp"]) + self.conf["skew"] < time.time():
            raise AuthError("the access token has expired")
        return data

    def userinfo(self, token):
        url = self.load().get("userinfo_endpoint")
        if not url:
            return {}
        resp = self._http("GET", url, headers={"Authorization": f"Bearer {token}"})
        if resp.status_code != 200:
            raise AuthError("the OpenID provider's userinfo refused the access token")
        return self._json(resp, "userinfo endpoint")

    def verify(self, token):
        """The claims of access token TOKEN (with sub), or AuthError / Forbidden."""
        h = token_hash(token)
        now = time.time()
        if h in self._revoked:
            raise AuthError("the access token was signed out; sign in again")
        hit = self._cache.get(h)
        if hit and hit[1] > now:
            if isinstance(hit[0], AuthError):  # refused a moment ago: not asked again
                raise AuthError(str(hit[0]))
            claims = hit[0]
        else:
            try:
                claims = self._check(token)
            except AuthError as exc:
                if not isinstance(exc, (Forbidden, Unreachable)):
                    self._trim(self._cache, now)
                    self._cache[h] = (exc, now + min(self.conf["cache"], 5))
                raise
            until = now + self.conf["cache"]
            if claims.get("exp"):
                until = min(until, float(claims["exp"]) + self.conf["skew"])
            self._trim(self._cache, now)
            self._cache[h] = (claims, until)
        self.check_allowed(claims)
        return claims

    def _check(self, token):
        """verify's work for a token not in the cache."""
        if looks_like_jwt(token):
            claims = self.decode_jwt(token)
            if self.conf["introspect"]:
                self.introspect(token)
        else:
            data = self.introspect(token)
            claims = dict(data)
            if not claims.get("sub"):
                claims.update(self.userinfo(token))
        if self.conf["groups"] and "groups" not in claims or (
                self.conf["domains"] and "email" not in claims):
            info = self.userinfo(token)
            if info.get("sub") not in (None, claims.get("sub")):
                raise AuthError("the provider's userinfo names another user")
            claims = {**info, **claims}
        if not claims.get("sub"):
            raise AuthError("the provider did not say who the token belongs to (no sub)")
        return claims

    def check_allowed(self, claims):
        groups, domains = self.conf["groups"], self.conf["domains"]
        if not groups and not domains:
            return
        theirs = claims.get("groups") or []
        if isinstance(theirs, str):
            theirs = [theirs]
        if groups and set(map(str, theirs)) & set(groups):
            return
        email = str(claims.get("email") or "").lower()
        if (domains and "@" in email and claims.get("email_verified", True) is not False
                and email.rsplit("@", 1)[1] in domains):
            return
        who = claims.get("preferred_username") or claims.get("sub")
        raise Forbidden(f"{who} is signed in but not allowed on this service (auth.allow: not "
                        "in its groups or e-mail domains); ask the service admin")

    @staticmethod
    def user_name(claims):
        """The service's user for claims' stable sub: oidc-SUB (a hash of it
        when it does not fit a user name).  preferred_username is display only."""
        sub = str(claims["sub"])
        if re.fullmatch(r"[A-Za-z0-9_.@-]{1,59}", sub):
            return USER_PREFIX + sub
        return USER_PREFIX + hashlib.sha256(sub.encode()).hexdigest()[:40]

    @staticmethod
    def _trim(table, now, cap=10000):
        if len(table) >= cap:
            for k in [k for k, v in table.items() if (v[1] if isinstance(v, tuple) else v) <= now]:
                table.pop(k, None)
            while len(table) >= cap:
                table.pop(next(iter(table)))

    # -- the flows ----------------------------------------------------------
    def _session(self, redirect_uri=None, token=None):
        from requests_oauthlib import OAuth2Session

        return OAuth2Session(self.client_id, redirect_uri=redirect_uri, scope=self.conf["scopes"],
                             token=token)

    def _oauth_error(self, exc, what):
        """AuthError for an oauthlib error at the token endpoint."""
        code = getattr(exc, "error", None) or type(exc).__name__
        if code == "invalid_client":
            return AuthError(f"the OpenID provider refused the service's client credentials "
                             f"during {what} (check auth.client_id / auth.client_secret)")
        if code == "invalid_grant":
            return AuthError(f"the provider refused the {what}: the grant is expired, revoked "
                             "or already used; sign in again")
        desc = getattr(exc, "description", None) or ""
        return AuthError(f"the OpenID provider refused the {what}: {code}"
                         + (f" ({desc})" if desc else ""))

    def login(self, redirect_uri, client=None):
        """The provider's authorization URL for a new sign-in that comes back
        to REDIRECT_URI (the service's /auth/callback); CLIENT is kept with
        it for the callback (the CLI's loopback redirect and state)."""
        import base64

        meta = self.load()
        now = time.time()
        self._pending = {k: v for k, v in self._pending.items() if v["expires"] > now}
        if len(self._pending) >= MAX_PENDING:
            raise TooMany("too many sign-ins in progress; try again in a few minutes")
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        nonce = secrets.token_urlsafe(16)
        state = secrets.token_urlsafe(24)
        url, _ = self._session(redirect_uri).authorization_url(
            meta["authorization_endpoint"], state=state, nonce=nonce,
            code_challenge=challenge, code_challenge_method="S256")
        self._pending[state] = {"verifier": verifier, "nonce": nonce, "redirect_uri": redirect_uri,
                                "client": client, "expires": now + PENDING_TTL}
        return url

    def callback(self, params):
        """(tokens, claims of the ID token, the sign-in's CLIENT) for the
        provider's redirect back with PARAMS (code and state, or error)."""
        state = params.get("state") or ""
        pending = self._pending.pop(state, None)
        if not pending or pending["expires"] < time.time():
            raise AuthError("unknown, expired or already used sign-in state; start the sign-in "
                            "again")
        try:
            return self._finish(params, pending)
        except AuthError as exc:
            exc.client = pending["client"]  # the CLI waiting on its loopback hears of it
            raise

    def _finish(self, params, pending):
        if params.get("error"):
            err = str(params["error"])[:64]
            if err == "access_denied":
                raise AuthError("the sign-in was denied at the OpenID provider")
            raise AuthError(f"the OpenID provider refused the sign-in: {err}")
        if not params.get("code"):
            raise AuthError("the provider's redirect carries no code")
        from oauthlib.oauth2 import OAuth2Error

        try:
            tokens = self._session(pending["redirect_uri"]).fetch_token(
                self.meta["token_endpoint"], code=params["code"],
                client_secret=self.conf["client_secret"], code_verifier=pending["verifier"],
                timeout=self.conf["timeout"])
        except OAuth2Error as exc:
            raise self._oauth_error(exc, "sign-in") from None
        except OSError as exc:
            raise AuthError(f"cannot reach the OpenID provider ({type(exc).__name__})") from None
        claims = self._id_claims(tokens, pending["nonce"])
        return tokens, claims, pending["client"]

    def _id_claims(self, tokens, nonce=None):
        """The claims of a fresh token response: its access token checked
        as every request's is (allowlist included), its ID token's
        signature, audience and nonce."""
        if not tokens.get("access_token"):
            raise AuthError("the OpenID provider returned no access token")
        claims = self.verify(tokens["access_token"])
        if tokens.get("id_token"):
            idc = self.decode_jwt(tokens["id_token"], nonce=nonce)
            if idc["sub"] != claims["sub"]:
                raise AuthError("the ID token and the access token name different users")
            claims = {**claims, **idc}
        elif nonce is not None:
            raise AuthError("the OpenID provider returned no ID token (is openid in auth.scopes?)")
        return claims

    def refresh(self, refresh_token):
        from oauthlib.oauth2 import OAuth2Error

        try:
            tokens = self._session().refresh_token(
                self.load()["token_endpoint"], refresh_token=refresh_token,
                auth=self._client_auth(), timeout=self.conf["timeout"])
        except OAuth2Error as exc:
            raise self._oauth_error(exc, "refresh") from None
        except OSError as exc:
            raise AuthError(f"cannot reach the OpenID provider ({type(exc).__name__})") from None
        return tokens, self._id_claims(tokens)

    def revoke(self, token, hint):
        """Revoke TOKEN at the provider (RFC 7009) where it can; access tokens
        are also refused here from now on (a JWT stays valid elsewhere until
        it expires).  True when the provider revoked it."""
        if hint == "access_token":
            try:  # only a token that is ours takes a place in the list (it is bounded)
                claims = self.verify(token)
            except AuthError:
                claims = None
            if claims is not None:
                now = time.time()
                self._trim(self._revoked, now)
                self._revoked[token_hash(token)] = float(claims.get("exp") or now + 86400) + 60
                self._cache.pop(token_hash(token), None)
        url = self.load().get("revocation_endpoint")
        if not url:
            return False
        resp = self._http("POST", url, data={"token": token, "token_type_hint": hint},
                          auth=self._client_auth())
        if resp.status_code in (401, 403):
            raise AuthError("the OpenID provider refused the service's client credentials for "
                            "revocation (check auth.client_id / auth.client_secret)")
        return resp.status_code == 200

    def device_start(self):
        url = self.load().get("device_authorization_endpoint")
        if not url:
            raise AuthError("the OpenID provider offers no device sign-in; use the browser "
                            "sign-in")
        resp = self._http("POST", url, data={"client_id": self.client_id,
                                             "scope": " ".join(self.conf["scopes"])},
                          auth=self._client_auth())
        data = self._json(resp, "device authorization endpoint")
        if resp.status_code != 200:
            if data.get("error") == "invalid_client":
                raise AuthError("the OpenID provider refused the service's client credentials "
                                "(check auth.client_id / auth.client_secret)")
            raise AuthError(f"the OpenID provider refused a device sign-in: {data.get('error')}")
        keep = ("device_code", "user_code", "verification_uri", "verification_uri_complete",
                "expires_in", "interval")
        return {k: data[k] for k in keep if k in data}

    def device_poll(self, device_code):
        """The tokens once the user approved; {"pending": True, "interval": N}
        while they have not."""
        resp = self._http("POST", self.load()["token_endpoint"],
                          data={"grant_type": DEVICE_GRANT, "device_code": device_code,
                                "client_id": self.client_id}, auth=self._client_auth())
        data = self._json(resp, "token endpoint")
        err = data.get("error")
        if err in ("authorization_pending", "slow_down"):
            return None, {"pending": True, "slow_down": err == "slow_down"}
        if err == "access_denied":
            raise AuthError("the sign-in was denied at the OpenID provider")
        if err == "expired_token":
            raise AuthError("the device code expired before it was approved; start again")
        if err == "invalid_client":
            raise AuthError("the OpenID provider refused the service's client credentials "
                            "(check auth.client_id / auth.client_secret)")
        if err or resp.status_code != 200:
            raise AuthError(f"the OpenID provider refused the device sign-in: {err}")
        if data.get("expires_in") and not data.get("expires_at"):
            data["expires_at"] = time.time() + float(data["expires_in"])
        return data, self._id_claims(data)


def client_tokens(tokens, claims):
    """What a client keeps of a token response: never the ID token's raw
    form beyond what it needs."""
    expires_at = tokens.get("expires_at")
    if not expires_at and tokens.get("expires_in"):
        expires_at = time.time() + float(tokens["expires_in"])
    return {"access_token": tokens["access_token"],
            "refresh_token": tokens.get("refresh_token"),
            "expires_at": int(expires_at) if expires_at else None,
            "user": claims.get("preferred_username") or claims.get("sub")}


class Handoffs:
    """One-time codes (60 s) under which the CLI fetches the tokens of a
    sign-in that ended at the service's callback: the tokens never travel
    in a URL or through the browser."""

    def __init__(self):
        self._items = {}

    def put(self, value):
        now = time.time()
        self._items = {k: v for k, v in self._items.items() if v[1] > now}
        if len(self._items) >= MAX_PENDING:
            raise TooMany("too many sign-ins in progress; try again in a few minutes")
        code = secrets.token_urlsafe(32)
        self._items[code] = (value, now + HANDOFF_TTL)
        return code

    def take(self, code):
        item = self._items.pop(str(code or ""), None)
        if not item or item[1] < time.time():
            raise AuthError("unknown, expired or already used sign-in code; sign in again")
        return item[0]


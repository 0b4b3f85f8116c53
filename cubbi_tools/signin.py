"""Signing in to a remote whose service uses OpenID Connect (cubbi-remote
login NAME, cubbi -r NAME auth), and keeping the tokens fresh.

The service is the provider's client and holds the client secret; the CLI
drives what the user sees and never talks to the provider's token endpoint:

  browser   a loopback listener on 127.0.0.1, the browser sent to the
            service's /auth/login?redirect_uri=LOOPBACK&state=S; after the
            provider's sign-in the service redirects the browser to the
            loopback with a one-time code (the state checked here), which
            POST /auth/token turns into the tokens
  device    POST /auth/device: the URL and code go to stderr; POST
            /auth/token {"device_code"} is polled until the user approved

The tokens (access, refresh, expiry, user) are one JSON secret,
`remote:NAME:oidc`, in the secret store (keyring, else the 0600 file),
written once when complete: a failed sign-in leaves the store as it was.
RemoteService.token() calls fresh() on every command: a token near expiry
is refreshed through POST /auth/refresh.

Stdlib only: a remote command must start as fast as a local one.
"""

import json
import os
import sys
import time

from .errors import AuthError, UsageError

REFRESH_MARGIN = 60  # refresh an access token this long before it expires (at most a fifth of its life)
TIMEOUT = 300  # seconds a sign-in may take (CUBBI_AUTH_TIMEOUT)


def secret_name(remote):
    return f"remote:{remote}:oidc"


def load(remote):
    """The stored sign-in of REMOTE (a dict), or None."""
    from . import secrets

    raw = secrets.get(secret_name(remote))
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("access_token") else None


def save(remote, tokens):
    from . import secrets

    keep = {k: tokens.get(k) for k in ("access_token", "refresh_token", "expires_at", "user")}
    if keep["expires_at"]:
        keep["lifetime"] = max(0, int(keep["expires_at"] - time.time()))
    if not isinstance(keep["access_token"], str) or not keep["access_token"]:
        raise AuthError(f"remote {remote!r}: the service returned no access token")
    secrets.put(secret_name(remote), json.dumps(keep))
    return keep


def forget(remote):
    from . import secrets

    return secrets.delete(secret_name(remote))


def describe(remote):
    """{auth, expires, user} of REMOTE for cubbi-remote list: never a token."""
    data = load(remote)
    if not data:
        return None
    exp = data.get("expires_at")
    return {"auth": "oidc", "user": data.get("user"),
            "expires": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp)) if exp else None)}


def _dead(remote):
    return AuthError(f"remote {remote!r}: your sign-in has expired; run cubbi -r {remote} auth")


def fresh(service, force=False):
    """The access token of SERVICE's stored sign-in, refreshed when it is
    within REFRESH_MARGIN of expiry (or FORCE, after a 401); None when the
    remote has no sign-in.  A refresh the service refuses: AuthError saying
    to sign in again."""
    data = load(service.remote)
    if data is None:
        return None
    exp = data.get("expires_at")
    margin = min(REFRESH_MARGIN, (data.get("lifetime") or 0) / 5)
    if not force and (not exp or exp - margin > time.time()):
        return data["access_token"]
    if not data.get("refresh_token"):
        raise _dead(service.remote)
    try:
        new = service.request("POST", "/auth/refresh", body={"refresh_token": data["refresh_token"]},
                              auth=False)
    except AuthError:
        now = load(service.remote)  # another command may have refreshed it (and rotated it) meanwhile
        if now and now.get("refresh_token") != data["refresh_token"]:
            return now["access_token"]
        raise _dead(service.remote) from None
    new["user"] = new.get("user") or data.get("user")
    return save(service.remote, new)["access_token"]


# -- signing in -------------------------------------------------------------
def _say(text):
    sys.stderr.write(f"cubbi: {text}\n")
    sys.stderr.flush()


def _timeout():
    try:
        return float(os.environ.get("CUBBI_AUTH_TIMEOUT") or TIMEOUT)
    except ValueError:
        raise UsageError("CUBBI_AUTH_TIMEOUT: expected seconds") from None


def can_open_browser():
    """Whether a browser can be shown here: $BROWSER, a display, or macOS."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def login(service, device=False):
    """Sign in to SERVICE (a RemoteService) and store the tokens; returns
    what describe() shows."""
    conf = service.request("GET", "/auth/config", auth=False)
    if conf.get("provider") != "oidc":
        raise UsageError(f"remote {service.remote!r} signs in with API tokens only; store one "
                         f"with cubbi-remote add --force {service.remote} {service.url} --token -")
    flows = conf.get("flows") or []
    use_device = device or not can_open_browser()
    if use_device and "device_code" not in flows:
        if device:
            raise UsageError(f"the provider of remote {service.remote!r} offers no device "
                             "sign-in; run without --device where a browser can be opened")
        use_device = False
    tokens = _device(service) if use_device else _browser(service)
    save(service.remote, tokens)
    return describe(service.remote)


def _browser(service):
    import http.server
    import secrets
    import threading
    import webbrowser
    from urllib.parse import parse_qs, urlencode, urlsplit

    state = secrets.token_urlsafe(24)
    got = {}
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            parts = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path != "/callback":
                self.send_error(404)
                return
            if q.get("state") != state:
                got.setdefault("error", "the sign-in came back with another state (a replayed "
                                        "or forged redirect); start again")
                ok = False
            elif not q.get("code"):
                got.setdefault("error", " ".join(str(q.get("error") or "no code").split())[:300])
                ok = False
            else:
                got.setdefault("code", q["code"])
                ok = True
            text = ("Signed in: you can close this window and return to the terminal." if ok
                    else "Sign-in failed: see the terminal.")
            body = f"<!DOCTYPE html><title>cubbi</title><p>{text}</p>".encode()
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            done.set()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        redirect = f"http://127.0.0.1:{httpd.server_address[1]}/callback"
        url = f"{service.url}/auth/login?" + urlencode({"redirect_uri": redirect, "state": state})
        _say(f"opening the sign-in page of remote {service.remote!r} in your browser; if it "
             f"does not open, visit {url}")
        try:
            webbrowser.open(url)
        except Exception:  # a broken $BROWSER: the URL is on stderr
            pass
        if not done.wait(_timeout()):
            raise AuthError(f"remote {service.remote!r}: no sign-in within {int(_timeout())} s; "
                            f"run cubbi -r {service.remote} auth again (or with --device)")
    finally:
        httpd.shutdown()
        httpd.server_close()
    if "code" not in got:
        raise AuthError(f"remote {service.remote!r}: {got.get('error')}")
    return service.request("POST", "/auth/token", body={"code": got["code"]}, auth=False)


def _device(service):
    start = service.request("POST", "/auth/device", body={}, auth=False)
    where = start.get("verification_uri_complete") or start.get("verification_uri")
    _say(f"to sign in to remote {service.remote!r}, open {start.get('verification_uri')} and "
         f"enter the code {start.get('user_code')}"
         + (f" (or open {where})" if where != start.get("verification_uri") else ""))
    interval = max(1.0, float(start.get("interval") or 5))
    deadline = time.monotonic() + min(_timeout(), float(start.get("expires_in") or TIMEOUT))
    while time.monotonic() < deadline:
        time.sleep(interval)  # RFC 8628: the client polls at the interval it was given
        answer = service.request("POST", "/auth/token",
                                 body={"device_code": start.get("device_code")}, auth=False)
        if not answer.get("pending"):
            return answer
        if answer.get("slow_down"):
            interval += 5
    raise AuthError(f"remote {service.remote!r}: the code was not approved in time; run "
                    f"cubbi -r {service.remote} auth again")


def logout(service):
    """Revoke the stored sign-in at the service's provider and forget it.
    Returns whether there was one.  The local copy goes even when the
    service cannot be reached (the user asked to be signed out here)."""
    data = load(service.remote)
    if data is None:
        return False
    try:
        service.request("POST", "/auth/logout", body={"refresh_token": data.get("refresh_token")},
                        auth=False, bearer=data["access_token"])
    except AuthError:
        pass  # already dead at the provider
    finally:
        forget(service.remote)
    return True

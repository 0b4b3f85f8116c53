"""The Cubbi Service as a Bottle application.

Each route parses its request, calls cubbi_tools.service.Service (the same
library the commands use) and returns JSON.  Errors are JSON too, always:
{"error": message, "kind": usage|not_found|engine|auth|failure|http|too_many,
"status": code}; the remote client turns `kind` back into the exception the
local commands raise, so exit codes match.

Served by gevent's WSGI server with gevent-websocket (cubbi_tools/commands/
server.py patches the standard library first): log streams and terminals are
greenlets, and a client that goes away is noticed within one heartbeat.

(Over 500 lines: the session, image and project routes with the helpers
every route shares (the api decorator, bounded bodies, streams, /health,
serving); the sign-in, web page and MCP routes are modules of their own:
auth_routes.py, web.py, mcp_routes.py.)
"""

import functools
import json
import sys
import traceback

import bottle
from bottle import HTTPResponse, request, response

from cubbi_tools.errors import AuthError, CubbiError, UsageError, to_wire
from cubbi_tools.session import FILTER_KEYS

from . import openapi

HTTP_MESSAGES = {
    400: "bad request", 401: "missing or invalid token: send Authorization: Bearer TOKEN",
    403: "forbidden", 404: "no such endpoint; see /openapi.json",
    405: "method not allowed; see /openapi.json", 413: "request body too large",
    429: "too many open streams or terminals",
    500: "internal server error", 503: "service unavailable",
}


class TokenAuth:
    """Bearer API tokens from the state database.  An OAuth provider plugs in
    the same way: an object whose user(request) returns a user name or raises
    AuthError."""

    def __init__(self, state):
        self.state = state

    def user(self, req):
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("missing token: send Authorization: Bearer TOKEN "
                            "(add it with cubbi-remote add NAME URL --token -)")
        try:
            return self.state.user_for_token(token.strip())
        except AuthError:
            raise AuthError("invalid or revoked token; ask the service admin for a new one "
                            "(cubbi-server token create USER)") from None


def _oidc_auth(state, conf):
    from .auth_routes import OIDCAuth

    return OIDCAuth(state, conf, TokenAuth(state))


# auth.provider -> the auth layer (state, conf); oidc also takes API tokens
AUTH_PROVIDERS = {"token": lambda state, conf: TokenAuth(state),
                  "oidc": _oidc_auth, "authentik": _oidc_auth}


def authenticator(conf, state):
    """The auth layer named by auth.provider (UsageError for another name)."""
    provider = (conf.get("auth") or {}).get("provider") or "token"
    if provider not in AUTH_PROVIDERS:
        raise UsageError(f"auth.provider {provider!r}: expected one of "
                         f"{', '.join(sorted(AUTH_PROVIDERS))}")
    return AUTH_PROVIDERS[provider](state, conf)


def error_body(status, message, kind="http"):
    return json.dumps({"error": message, "kind": kind, "status": status})


def json_error(status, message, kind="http"):
    headers = {"Content-Type": "application/json"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="cubbi"'
    return HTTPResponse(error_body(status, message, kind), status=status, headers=headers)


def serving(app, conf):
    """(WSGI application, gevent handler class) of the server: app behind the
    body limit, and WebSockets with the message limit (server/limits.py)."""
    from . import limits, web

    srv = conf["server"]
    auth = app.config["cubbi.auth"]

    def authorized(environ):
        """None for a valid token (or browser cookie), limits.PUBLIC for the
        sign-in routes (no token yet: a small body), else the refusal (the
        body is not read): AuthError, or Forbidden for a cookie from
        another origin or without its CSRF token."""
        if environ.get("PATH_INFO", "").startswith("/auth/"):
            return limits.PUBLIC
        try:
            # kept for the route (api()): one check per request, not two (an OIDC
            # token's may ask the provider); no client can set a WSGI key
            environ["cubbi.user"] = auth.user(bottle.BaseRequest(environ))
        except CubbiError as exc:
            return exc
        return None

    bounded = limits.bounded_body(app, int(srv["max_body"]), authorized,
                                  body_timeout=float(srv["body_timeout"]))
    return (web.under_base_path(bounded, web.base_path(conf)),
            limits.handler(int(srv["max_message"]), max_fragments=int(srv["max_fragments"]),
                           header_timeout=float(srv["header_timeout"]),
                           idle_timeout=float(srv["idle_timeout"]),
                           max_connections=int(srv["max_connections"]),
                           max_body=int(srv["max_body"]),
                           origin_ok=web.Origins(conf).allowed))


def make_app(service, conf=None):
    from .limits import Peers

    conf = conf or service.conf
    srv = conf["server"]
    max_body = int(srv.get("max_body") or 4 * 1024 * 1024)
    heartbeat = float(srv.get("heartbeat") or 15)
    max_output = int(srv.get("max_exec_output") or 16 * 1024 * 1024)
    max_time = float(srv.get("max_exec_time") or 3600)
    from . import web

    browser = web.Browser(service.state, conf)  # the page's cookie (server/web.py)
    provider_auth = authenticator(conf, service.state)  # API tokens, or those and OIDC's
    auth = web.BrowserAuth(provider_auth, browser)
    peers = Peers({"streams": int(srv.get("max_streams_per_user") or 16),
                   "terminals": int(srv.get("max_terminals_per_user") or 8),
                   "execs": int(srv.get("max_execs_per_user") or 8)})
    app = bottle.Bottle(catchall=True, autojson=True)
    app.config["cubbi.peers"] = peers
    app.config["cubbi.auth"] = auth

    for status in (400, 401, 403, 404, 405, 413, 429, 500, 502, 503):
        app.error_handler[status] = _http_error(status)

    def api(authenticated=True):
        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kw):
                try:
                    if authenticated:  # checked already when a body came (serving())
                        kw["user"] = request.environ.get("cubbi.user") or auth.user(request)
                    return fn(*args, **kw)
                except CubbiError as exc:
                    wire = to_wire(exc)
                    if wire["status"] >= 500:  # the engine's failure: why, for the operator
                        _log_failure(wire)
                    return json_error(wire["status"], wire["error"], wire["kind"])
                except HTTPResponse:
                    raise
                except Exception as exc:  # a bug: one JSON line out, the traceback in the log
                    traceback.print_exc(file=sys.stderr)
                    return json_error(500, f"internal error: {type(exc).__name__}", "failure")
            return wrapper
        return deco

    def body():
        length = request.content_length
        if length > max_body:
            raise HTTPResponse(error_body(413, f"request body too large (over {max_body} bytes)"),
                               status=413, headers={"Content-Type": "application/json"})
        raw = request.body.read(max_body + 1)
        if len(raw) > max_body:
            raise HTTPResponse(error_body(413, f"request body too large (over {max_body} bytes)"),
                               status=413, headers={"Content-Type": "application/json"})
        try:
            data = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError(f"malformed JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError("the request body must be a JSON object")
        return data

    # -- service -------------------------------------------------------------
    @app.get("/health")
    @api(authenticated=False)
    def health():
        """Without a token: up or down only (the engine answers or not);
        with a valid one, the engine's error and the caller's own open
        streams, terminals and execs (never another user's)."""
        engine = "ok"
        try:
            service.engine.api.get("/_ping", timeout=5)
        except CubbiError as exc:
            engine = str(exc)
        try:
            user = auth.user(request)
        except AuthError:
            return {"status": "up" if engine == "ok" else "down"}
        return {"status": "up" if engine == "ok" else "down", "engine": engine,
                **{kind: peers.count(kind, user) for kind in ("streams", "terminals", "execs")},
                "logging": service.logging_health()}

    @app.get("/openapi.json")
    def openapi_doc():
        return openapi.DOCUMENT

    # -- sessions -----------------------------------------------------------
    @app.get("/sessions")
    @api()
    def list_sessions(user):
        q = request.query
        filters = {k: q.get(k) for k in FILTER_KEYS if q.get(k)}
        return {"sessions": service.sessions(user, all=_flag(q.get("all")), filters=filters)}

    @app.post("/sessions")
    @api()
    def create_session(user):
        return _created(service.create(user, body()))

    @app.get("/sessions/<ref>")
    @api()
    def get_session(user, ref):
        wait = request.query.get("wait")
        if wait:  # never longer than server.max_wait; a stream while it waits
            timeout = _number(wait, "wait")
            return _while_connected(request.environ, peers, user,
                                    lambda: service.wait_ready(user, ref, timeout=timeout))
        return service.session(user, ref)

    @app.delete("/sessions/<ref>")
    @api()
    def close_session(user, ref):
        return service.close(user, ref)

    @app.get("/sessions/<ref>/logs")
    @api()
    def session_logs(user, ref):
        q = request.query
        tail = q.get("tail")
        since = q.get("since")
        items = service.logs(user, ref, follow=_flag(q.get("follow")),
                             tail=_number(tail, "tail", int) if tail else None,
                             since=_number(since, "since", int) if since else None)
        response.content_type = "application/x-ndjson"
        return _stream(items, peers, user, heartbeat)

    @app.get("/sessions/<ref>/egress")
    @api()
    def session_egress(user, ref):
        return {"refused": service.egress_log(user, ref)}

    @app.get("/events")
    @api()
    def session_events(user):
        q = request.query
        since, until = q.get("since"), q.get("until")
        items = service.events(user, filters={k: q.get(k) for k in FILTER_KEYS if q.get(k)},
                               since=_number(since, "since", int) if since else None,
                               until=_number(until, "until", int) if until else None)
        response.content_type = "application/x-ndjson"
        return _stream(items, peers, user, heartbeat)

    @app.post("/sessions/<ref>/connect")
    @api()
    def exec_session(user, ref):
        data = body()
        command = data.get("command")
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise UsageError('"command" must be a non-empty list of strings')
        stdin = data.get("stdin") or ""
        if not isinstance(stdin, str):
            raise UsageError('"stdin" must be a string')
        peers.take("execs", user)  # TooMany at server.max_execs_per_user
        try:
            out = service.run(user, ref, command, stdin.encode(), max_output=max_output,
                              watch=_watch(request.environ, max_time), size=_json_size)
        finally:
            peers.give("execs", user)
        out["stdout"] = out["stdout"].decode(errors="replace")
        out["stderr"] = out["stderr"].decode(errors="replace")
        return out

    @app.get("/sessions/<ref>/connect")
    @api(authenticated=False)
    def terminal(ref):
        ws = request.environ.get("wsgi.websocket")
        if ws is None:
            raise UsageError("GET /sessions/{id}/connect is a WebSocket terminal: send an "
                             "Upgrade: websocket request (or POST a command for exec mode)")
        from . import terminal as term

        term.serve(ws, request, auth, service, ref, peers)
        return ""

    from . import auth_routes

    auth_routes.install(app, provider_auth, api, body)

    # -- images ---------------------------------------------------------------
    @app.get("/images")
    @api()
    def list_images(user):
        return {"images": service.images()}

    @app.get("/images/<name:path>")
    @api()
    def show_image(user, name):
        return service.image(name)

    # -- projects -------------------------------------------------------------
    @app.get("/projects")
    @api()
    def list_projects(user):
        return {"projects": service.projects(user)}

    @app.post("/projects")
    @api()
    def add_project(user):
        return _created(service.put_project(user, body()))

    @app.get("/projects/<pid:path>")
    @api()
    def get_project(user, pid):
        return service.project(user, pid)

    @app.put("/projects/<pid:path>")
    @api()
    def update_project(user, pid):
        return service.put_project(user, body(), pid=pid)

    @app.delete("/projects/<pid:path>")
    @api()
    def delete_project(user, pid):
        return service.delete_project(user, pid)

    # -- MCP servers (cubbi-mcp -r): each user's own (server/mcp_routes.py) ------
    from . import mcp_routes

    mcp_routes.install(app, api, body, service)

    # -- the web page and browser sign-in (server/web.py) ----------------------
    app.config["cubbi.browser"] = browser  # browser.sign_in(user): any sign-in's last step
    web.routes(app, api, body, browser)
    return app


def _http_error(status):
    def handler(err):
        response.content_type = "application/json"
        message = HTTP_MESSAGES.get(status, "error")
        if status == 500 and err.exception is not None:
            traceback.print_exception(type(err.exception), err.exception,
                                      err.exception.__traceback__, file=sys.stderr)
        elif status not in (404, 405, 500) and isinstance(err.body, str) and err.body:
            message = err.body
        if status == 401:
            response.set_header("WWW-Authenticate", 'Bearer realm="cubbi"')
        return error_body(status, message)
    return handler


def _log_failure(wire):
    """One line on the server's log for an answer of 500 or more: the access
    log has its status, this its reason (the engine's message, one line)."""
    text = " ".join(str(wire["error"]).split())[:300]
    sys.stderr.write(f"cubbi-server: {request.method} {request.path}: {wire['status']} "
                     f"{wire['kind']}: {text}\n")


def _created(rec):
    response.status = 201
    return rec


def _flag(value):
    return str(value or "").lower() in ("1", "true", "yes", "on")


def _number(text, name, kind=float):
    import math

    try:
        value = kind(text)
        if value < 0 or not math.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        raise UsageError(f"?{name}={text!r}: expected a number >= 0") from None


def _json_size(data):
    """The bytes DATA (exec output) takes in the JSON answer, escapes and
    all (server.max_exec_output counts these): a NUL is 6, not 1."""
    return len(json.dumps(data.decode(errors="replace"))) - 2


def _while_connected(environ, peers, user, fn):
    """fn() in its own greenlet, counted as one of user's streams
    (server.max_streams_per_user), and killed (its engine connection with
    it) when the client goes away first."""
    import gevent

    from .limits import SOCKET

    peers.take("streams", user)
    try:
        worker = gevent.spawn(fn)
        watcher = gevent.spawn(_until_gone, environ.get(SOCKET))
        try:
            gevent.wait([worker, watcher], count=1)
        finally:
            watcher.kill(block=False)
        if not worker.ready():  # the client went away: nobody to answer
            worker.kill(block=True, timeout=5)
            return ""
        return worker.get()
    finally:
        peers.give("streams", user)


def _until_gone(client):
    """Return when the client's socket reads as closed (a pipelined request
    does not count: then wait for ever)."""
    import socket

    import gevent
    from gevent.socket import wait_read

    if client is None:
        gevent.sleep(1e9)
    try:
        wait_read(client.fileno())
        if client.recv(1, socket.MSG_PEEK):
            gevent.sleep(1e9)
    except OSError:
        pass


def _watch(environ, max_time):
    """service.run's watch: a greenlet that cuts the exec's connection when
    the HTTP client goes away (its socket reads as closed) or after max_time
    seconds (server.max_exec_time), so the command is stopped."""
    from .limits import SOCKET

    def watch(conn):
        import socket

        import gevent
        from gevent.socket import wait_read

        why = []
        client = environ.get(SOCKET)

        def run():
            deadline = gevent.Timeout(max_time)
            deadline.start()
            try:
                while client is not None:
                    wait_read(client.fileno())
                    if client.recv(1, socket.MSG_PEEK):
                        break  # a pipelined request: not gone; only the deadline is left
                    why.append("client_gone")
                    break
                if not why:
                    gevent.sleep(max_time + 1)
            except gevent.Timeout as t:
                if t is not deadline:
                    raise
                why.append("time_limit")
            except OSError:
                why.append("client_gone")
            finally:
                deadline.close()
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # frames() ends; run() stops the command
            except OSError:
                pass

        worker = gevent.spawn(run)

        def unwatch():
            worker.kill(block=True, timeout=5)
            return why[0] if why else None

        return unwatch

    return watch


def _stream(items, peers, user, heartbeat):
    """JSON lines from a (blocking) iterator, read in its own greenlet so a
    blank heartbeat line can go out while it waits: a write to a client that
    went away fails, the response is closed, and the reader (with its Docker
    connection) is killed.  Nothing outlives the request."""
    import gevent
    from gevent.queue import Empty, Queue

    done = object()
    queue = Queue(maxsize=1000)

    def reader():
        try:
            for item in items:
                queue.put(item)
        except CubbiError as exc:
            queue.put(to_wire(exc))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()
            queue.put(done)

    peers.take("streams", user)  # TooMany at server.max_streams_per_user
    worker = gevent.spawn(reader)

    def lines():
        try:
            while True:
                try:
                    item = queue.get(timeout=heartbeat)
                except Empty:
                    yield b"\n"
                    continue
                if item is done:
                    return
                yield (json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        finally:
            worker.kill(block=True, timeout=5)
            peers.give("streams", user)

    return lines()

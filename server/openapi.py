"""The OpenAPI document of the service, kept here and nowhere else; served
at /openapi.json, and tests/test_server_api.py checks its paths and methods
against the app's routes."""

_ERR = {"description": "error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "session id, unique id prefix, or name"}]
_PID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "project id (normalised URL, e.g. github.com/hello/private) or any URL form"}]

_MCP = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "MCP server name"}]


def _ok(desc, schema=None, ctype="application/json"):
    body = {"description": desc}
    if schema:
        body["content"] = {ctype: {"schema": schema}}
    return body


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes):
    return {str(c): _ERR for c in codes}


_AUTH = (401,)
DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "Cubbi Service", "version": "1",
             "description": "Sessions (AI tools in ephemeral containers), images and projects. "
                            "Every endpoint but /health and /openapi.json needs "
                            "Authorization: Bearer TOKEN (a request with a body and no valid "
                            "token gets 401 before its body is read). Errors are always JSON. "
                            "Past server.max_connections any request gets 503."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "kind", "status"], "properties": {
                "error": {"type": "string"},
                "kind": {"type": "string", "enum": ["usage", "not_found", "auth", "forbidden",
                                                   "engine", "too_many", "failure", "http"]},
                "status": {"type": "integer"}}},
            "Session": {"type": "object", "description": "the record of cubbi-ls --json "
                        "(man cubbi-ls: SESSION RECORD)", "properties": {
                            k: {} for k in ("id", "name", "image", "status", "reason", "created",
                                            "created_epoch", "container_id", "project", "mount",
                                            "networks", "ports", "owner", "remote",
                                            "allow_hosts", "idle_timeout", "node")}},
            "CreateRequest": {"type": "object", "required": ["image"], "description":
                              "cubbi_tools.engine.CreateRequest.to_dict(); mount, volumes, "
                              "labels and files are refused, uid/gid/owner are set by the "
                              "server, and its policy (cubbi-service.yaml(5)) decides "
                              "networks, images, ports, limits and privileges; ssh_keys "
                              "(OpenSSH public key lines) are the owner's keys that "
                              "cubbi-ssh may log in with; constraints (KEY==VALUE) place a "
                              "session on a swarm's nodes where policy.constraints allows",
                              "properties": {k: {} for k in (
                                  "image", "name", "env", "networks", "ports", "cpus", "memory",
                                  "pids_limit", "project", "hardened", "files", "labels",
                                  "ssh_keys", "allow_hosts", "no_network", "constraints")}},
            "LogLine": {"type": "object", "properties": {
                "session": {"type": "string"}, "stream": {"type": "string"},
                "time": {"type": "string"}, "line": {"type": "string"}}},
            "Event": {"type": "object", "description": "a session lifecycle event "
                                                       "(cubbi-events(1))", "properties": {
                "event": {"type": "string", "enum": ["created", "initializing", "running",
                                                     "failed", "closed", "oom", "died"]},
                "time": {"type": "string"}, "id": {"type": "string"},
                "name": {"type": "string"}, "image": {"type": ["string", "null"]},
                "project": {"type": ["string", "null"]}, "owner": {"type": ["string", "null"]},
                "reason": {"type": "string"}, "exit_code": {"type": ["integer", "null"]}}},
            "Exec": {"type": "object", "required": ["command"], "properties": {
                "command": {"type": "array", "items": {"type": "string"}},
                "stdin": {"type": "string"}}},
            "ExecResult": {"type": "object", "description": "stdout and stderr are the "
                           "output decoded as UTF-8 (invalid bytes as U+FFFD); a command "
                           "stopped by the service (output over server.max_exec_output, "
                           "counted as this JSON sends it, or running past "
                           "server.max_exec_time) has exit_code null, and error and kind "
                           "(output_limit, time_limit) saying why", "properties": {
                "exit_code": {"type": "integer", "nullable": True}, "stdout": {"type": "string"},
                "stderr": {"type": "string"}, "error": {"type": "string"},
                "kind": {"type": "string", "enum": ["output_limit", "time_limit",
                                                   "client_gone"]}}},
            "Project": {"type": "object", "description": "the record of cubbi-project --json; "
                        "the credential is never returned", "properties": {
                "id": {"type": "string"}, "url": {"type": "string"}, "host": {"type": "string"},
                "auth": {"type": "string", "enum": ["ssh_key", "token", "none"]},
                "added": {"type": "string"}, "updated": {"type": "string"}}},
            "ProjectInput": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string"},
                "auth": {"type": "string", "enum": ["ssh_key", "token", "none"]},
                "ssh_key": {"type": "string", "description": "with auth ssh_key; stored encrypted"},
                "token": {"type": "string", "description": "with auth token; stored encrypted"}}},
            "MCPServer": {"type": "object", "description": "the record of cubbi-mcp --json; "
                          "secret values (names saying key, token, secret, password, auth) "
                          "show as ********", "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string", "enum": ["container", "remote", "local"]},
                "image": {"type": "string"}, "command": {"type": "string", "nullable": True},
                "args": {"type": "array", "items": {"type": "string"}},
                "url": {"type": "string"}, "env": {"type": "object"},
                "headers": {"type": "object"}, "added": {"type": "string"},
                "status": {"type": "string"}}},
            "MCPInput": {"type": "object", "required": ["name", "kind"], "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string", "enum": ["container", "remote", "local"]},
                "image": {"type": "string", "description": "container: an image the policy allows"},
                "command": {"type": "string"}, "url": {"type": "string"},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "argv": {"type": "array", "items": {"type": "string"}},
                "force": {"type": "boolean"}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/health": {"get": {"summary": "liveness: {status: up|down} without a token; with a "
                                       "valid one, also the engine's status and the caller's "
                                       "own open streams, terminals and execs", "security": [],
                            "responses": {"200": _ok("up or down")}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [],
                                  "responses": {"200": _ok("the document")}}},
        # sign-in (auth.provider: oidc); with API tokens only they answer 400
        "/auth/config": {"get": {"summary": "{provider, issuer, client_id, scopes, flows}: "
                                            "how a client signs in", "security": [],
                                 "responses": {"200": _ok("the sign-in settings")}}},
        "/auth/login": {"get": {"summary": "start a sign-in: a redirect to the provider (a "
                                           "CLI adds redirect_uri=http://127.0.0.1:PORT/... "
                                           "and state)", "security": [], "parameters": [
            {"name": k, "in": "query", "schema": {"type": "string"}}
            for k in ("redirect_uri", "state")],
            "responses": {"302": _ok("to the provider"), **_errors(400, 429, 401)}}},
        "/auth/callback": {"get": {"summary": "the provider's redirect back (code, state)",
                                   "security": [], "parameters": [
            {"name": k, "in": "query", "schema": {"type": "string"}}
            for k in ("code", "state", "error")],
            "responses": {"200": _ok("signed in"), "302": _ok("to the CLI's loopback"),
                          **_errors(400, 401, 403)}}},
        "/auth/token": {"post": {"summary": "tokens for a one-time sign-in code {code} or an "
                                            "approved device code {device_code} (202 pending)",
                                 "security": [],
                                 "responses": {"200": _ok("the tokens"), "202": _ok("pending"),
                                               **_errors(400, 401, 403, 413)}}},
        "/auth/device": {"post": {"summary": "start a device sign-in (RFC 8628)", "security": [],
                                  "responses": {"200": _ok("device_code, user_code, "
                                                           "verification_uri"),
                                                **_errors(400, 401)}}},
        "/auth/refresh": {"post": {"summary": "new tokens for {refresh_token}", "security": [],
                                   "responses": {"200": _ok("the tokens"),
                                                 **_errors(400, 401, 403, 413)}}},
        "/auth/logout": {"post": {"summary": "revoke the bearer access token and "
                                             "{refresh_token} at the provider", "security": [],
                                  "responses": {"200": _ok("signed out"),
                                                **_errors(400, 401, 413)}}},
        "/sessions": {
            "get": {"summary": "list your sessions", "parameters": [
                {"name": k, "in": "query", "schema": {"type": "string"}}
                for k in ("all", "image", "name", "status", "project")],
                "responses": {"200": _ok("{sessions: [Session]}"), **_errors(401, 503)}},
            "post": {"summary": "create a session",
                     "requestBody": {"content": {"application/json": {"schema": _ref("CreateRequest")}}},
                     "responses": {"201": _ok("the session", _ref("Session")),
                                   **_errors(400, 401, 403, 404, 408, 409, 413, 429, 503)}},
        },
        "/sessions/{id}": {
            "get": {"summary": "one session; ?wait=SECONDS waits until it is ready (a wait "
                               "counts against server.max_streams_per_user: 429 past it)",
                    "parameters": _ID + [{"name": "wait", "in": "query",
                                          "schema": {"type": "number"}}],
                    "responses": {"200": _ok("the session", _ref("Session")),
                                  **_errors(400, 401, 404, 409, 429, 503)}},
            "delete": {"summary": "close a session (remove its container)", "parameters": _ID,
                       "responses": {"200": _ok("the closed session", _ref("Session")),
                                     **_errors(401, 404, 503)}},
        },
        "/sessions/{id}/logs": {
            "get": {"summary": "the session's log as JSON lines (blank lines are heartbeats)",
                    "parameters": _ID + [{"name": k, "in": "query", "schema": {"type": "string"}}
                                         for k in ("follow", "tail", "since")],
                    "responses": {"200": _ok("JSON lines", _ref("LogLine"), "application/x-ndjson"),
                                  **_errors(400, 401, 404, 429, 503)}},
        },
        "/sessions/{id}/egress": {
            "get": {"summary": "{refused: [{session, time, host, port, url}]}: what the "
                               "session's egress proxy refused (a session made with "
                               "allow_hosts; 404 for one without)",
                    "parameters": _ID,
                    "responses": {"200": _ok("the refused requests"),
                                  **_errors(401, 404, 503)}},
        },
        "/events": {
            "get": {"summary": "your sessions' lifecycle events as JSON lines, as they happen "
                               "(blank lines are heartbeats); since/until are epoch seconds "
                               "(until ends the stream), image/name/status/project filter as "
                               "GET /sessions does, status being the event",
                    "parameters": [{"name": k, "in": "query", "schema": {"type": "string"}}
                                   for k in ("since", "until", "image", "name", "status",
                                             "project")],
                    "responses": {"200": _ok("JSON lines", _ref("Event"), "application/x-ndjson"),
                                  **_errors(400, 401, 429, 503)}},
        },
        "/sessions/{id}/connect": {
            "get": {"summary": "WebSocket terminal (Upgrade: websocket): ?tty=1&rows=&cols=&term= "
                               "for a TTY, ?cmd=JSON-list for a command; binary frames carry "
                               "stdin, and output prefixed by a stream byte (1 stdout, 2 stderr); "
                               "text frames carry {type: resize|eof|stop|exit|error} (an error "
                               "with status 429 past server.max_terminals_per_user); a frame or "
                               "message over server.max_message closes the socket with 1009, "
                               "one of more than server.max_fragments frames with 1008",
                    "parameters": _ID, "responses": {"101": _ok("switching protocols"),
                                                     **_errors(400)}},
            "post": {"summary": "exec mode: run a command without a TTY (at most "
                                "server.max_execs_per_user at once: 429 past it)",
                     "parameters": _ID,
                     "requestBody": {"content": {"application/json": {"schema": _ref("Exec")}}},
                     "responses": {"200": _ok("its result", _ref("ExecResult")),
                                   **_errors(400, 401, 404, 408, 409, 413, 429, 503)}},
        },
        "/images": {"get": {"summary": "available images",
                            "responses": {"200": _ok("{images: [...]}"), **_errors(401, 503)}}},
        "/images/{name}": {"get": {"summary": "one image", "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _ok("the image"), **_errors(401, 404, 503)}}},
        "/projects": {
            "get": {"summary": "your projects",
                    "responses": {"200": _ok("{projects: [Project]}"), **_errors(401)}},
            "post": {"summary": "add a project",
                     "requestBody": {"content": {"application/json": {"schema": _ref("ProjectInput")}}},
                     "responses": {"201": _ok("the project", _ref("Project")),
                                   **_errors(400, 401, 408, 409, 413)}},
        },
        "/mcp": {
            "get": {"summary": "your MCP servers (cubbi-mcp)",
                    "responses": {"200": _ok("{servers: [MCPServer]}"), **_errors(401, 503)}},
            "post": {"summary": "add an MCP server (secret values are stored encrypted)",
                     "requestBody": {"content": {"application/json": {"schema": _ref("MCPInput")}}},
                     "responses": {"201": _ok("the server", _ref("MCPServer")),
                                   **_errors(400, 401, 403, 413, 503)}},
        },
        "/mcp/{name}": {
            "get": {"summary": "one MCP server", "parameters": _MCP,
                    "responses": {"200": _ok("the server", _ref("MCPServer")),
                                  **_errors(400, 401, 404, 503)}},
            "delete": {"summary": "stop and remove an MCP server", "parameters": _MCP,
                       "responses": {"200": _ok("the removed server", _ref("MCPServer")),
                                     **_errors(400, 401, 404, 503)}},
        },
        "/mcp/{name}/{action}": {
            "post": {"summary": "start, stop or restart a container MCP server",
                     "parameters": _MCP + [{"name": "action", "in": "path", "required": True,
                                            "schema": {"type": "string",
                                                       "enum": ["start", "stop", "restart"]}}],
                     "responses": {"200": _ok("the server", _ref("MCPServer")),
                                   **_errors(400, 401, 404, 503)}},
        },
        "/mcp/{name}/logs": {
            "get": {"summary": "a container MCP server's log (?tail=N, ?proxy=1 its proxy's)",
                    "parameters": _MCP + [{"name": k, "in": "query", "schema": {"type": "string"}}
                                          for k in ("tail", "proxy")],
                    "responses": {"200": _ok("{lines: [string]}"), **_errors(400, 401, 404, 503)}},
        },
        "/projects/{id}": {
            "get": {"summary": "one project", "parameters": _PID,
                    "responses": {"200": _ok("the project", _ref("Project")),
                                  **_errors(400, 401, 404)}},
            "put": {"summary": "replace a project's details", "parameters": _PID,
                    "requestBody": {"content": {"application/json": {"schema": _ref("ProjectInput")}}},
                    "responses": {"200": _ok("the project", _ref("Project")),
                                  **_errors(400, 401, 408, 413)}},
            "delete": {"summary": "remove a project and its credentials", "parameters": _PID,
                       "responses": {"200": _ok("the removed project", _ref("Project")),
                                     **_errors(400, 401, 404)}},
        },
        # the web page and browser sign-in (server/web.py)
        "/": {"get": {"summary": "the web page: sessions, logs and terminals in a browser",
                      "security": [], "responses": {"200": _ok("the page (text/html)")}}},
        "/ui/{name}": {"get": {"summary": "the page's scripts, styles and vendored xterm.js",
                               "security": [], "parameters": [
                                   {"name": "name", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                               "responses": {"200": _ok("the file"), **_errors(404)}}},
        "/auth/browser": {
            "get": {"summary": "the signed-in browser's user and CSRF token (cookie "
                               "cubbi_browser)", "security": [],
                    "responses": {"200": _ok("{user, csrf}"), **_errors(401, 403)}},
            "post": {"summary": "sign a browser in with an API token: sets the HttpOnly, "
                                "SameSite=Strict cookie cubbi_browser; later requests with it "
                                "send the CSRF token in X-Cubbi-CSRF unless GET",
                     "security": [],
                     "requestBody": {"content": {"application/json": {"schema": {
                         "type": "object", "required": ["token"],
                         "properties": {"token": {"type": "string"}}}}}},
                     "responses": {"200": _ok("{user, csrf, lifetime}"),
                                   **_errors(400, 401, 403, 413)}},
            "delete": {"summary": "sign the browser out: its session is deleted on the "
                                  "service (needs X-Cubbi-CSRF)", "security": [],
                       "responses": {"200": _ok("{signed_out: true}"), **_errors(401, 403)}},
        },
    },
}

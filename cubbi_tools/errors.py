"""Exceptions that reach the user as one line on stderr and an exit code.

Exit codes (DESIGN.md): 0 ok, 1 failure, 2 usage, 3 not found,
4 Docker engine unreachable, 5 not authenticated / forbidden.
A request the service's policy refuses is Forbidden (HTTP 403, exit 5); a
per-user cap reached is TooMany (HTTP 429, exit 1: a failure, try later).
"""

OK = 0
FAILURE = 1
USAGE = 2
NOT_FOUND = 3
ENGINE = 4
AUTH = 5


class CubbiError(Exception):
    """A failure the user can act on; str(self) is the one line shown."""

    code = FAILURE

    def wire_status(self):
        """The HTTP status of this failure on the wire (see WIRE)."""
        return OTHER[0]


class UsageError(CubbiError):
    code = USAGE


class NotFound(CubbiError):
    code = NOT_FOUND


class EngineUnreachable(CubbiError):
    code = ENGINE


class AuthError(CubbiError):
    code = AUTH


class Forbidden(AuthError):
    """Signed in, but the service's policy does not allow it (HTTP 403): exit 5."""


class TooMany(CubbiError):
    """A per-user cap of the service reached (HTTP 429): exit 1."""


# -- the wire: how an error crosses HTTP (server/app.py, server/terminal.py)
# and comes back as the same exception, so the same exit code, on the client
# (remote.py, terminal.py).  A body is {"error": message, "kind": kind,
# "status": HTTP status}.
WIRE = [(UsageError, 400, "usage"), (NotFound, 404, "not_found"), (Forbidden, 403, "forbidden"),
        (AuthError, 401, "auth"), (EngineUnreachable, 503, "engine"),
        (TooMany, 429, "too_many")]
OTHER = (409, "failure")  # any other CubbiError (not an int: docs lists int constants)
STATUS_KINDS = {**{status: kind for _, status, kind in WIRE}}


def status_kind(exc):
    """(HTTP status, kind) for a CubbiError."""
    for cls, status, kind in WIRE:
        if isinstance(exc, cls):
            return status, kind
    return exc.wire_status(), OTHER[1]


def to_wire(exc):
    """The JSON body of a CubbiError: {"error", "kind", "status"}."""
    status, kind = status_kind(exc)
    return {"error": str(exc), "kind": kind, "status": status}


def from_wire(body, status=None, default=None):
    """The CubbiError a wire body (a dict, or anything else when the answer
    was not one) stands for; without a kind, the HTTP STATUS decides."""
    body = body if isinstance(body, dict) else {}
    kind = body.get("kind")
    if kind is None:
        kind = STATUS_KINDS.get(status)
    cls = next((c for c, _, k in WIRE if k == kind), CubbiError)
    return cls(body.get("error") or default or f"HTTP {status}")

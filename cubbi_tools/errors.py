"""Exceptions that reach the user as one line on stderr and an exit code.

Exit codes (DESIGN.md): 0 ok, 1 failure, 2 usage, 3 not found,
4 Docker engine unreachable, 5 not authenticated / forbidden.
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


class UsageError(CubbiError):
    code = USAGE


class NotFound(CubbiError):
    code = NOT_FOUND


class EngineUnreachable(CubbiError):
    code = ENGINE


class AuthError(CubbiError):
    code = AUTH

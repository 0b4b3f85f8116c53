"""The one backend interface: what commands (and the service) call, and what
engine.LocalEngine and remote.RemoteService both implement, with the same
signatures (tests/test_architecture.py compares them).

Commands never ask which backend they have; where the two differ, the
backend says so through this interface (`project_setup` lends local
credentials or not, `create` refuses host paths on a remote, `index` is
None when references are resolved on the other side).  Only type checkers
and the tests import this module: `typing` costs ~5 ms, which the hot
commands do not pay.
"""

from typing import Any, Iterator, Protocol


class Backend(Protocol):
    remote: "str | None"  # the remote's name; None for the local engine

    def list(self, all=False, filters=None, labels=(), status=True) -> list:
        """Session records (session.py), filtered by session.FILTER_KEYS."""

    def index(self) -> "list | None":
        """Every session, to resolve many references with one request, or
        None when each reference is resolved on the backend's side."""

    def resolve(self, ref, records=None) -> dict:
        """The session a reference (id, name, unique prefix) names."""

    def create(self, req, progress=None) -> dict:
        """Create a session from a validate.CreateRequest."""

    def close(self, ref, records=None) -> dict:
        """Remove a session; its record."""

    def logs(self, rec, follow=False, tail=None, since=None, deadline=None) -> Iterator[dict]:
        """{session, stream, time, line} per log line."""

    def egress_log(self, rec) -> list:
        """{session, time, host, port, url} of each request its egress proxy refused."""

    def events(self, since=None, until=None, filters=None, labels=()) -> Iterator[dict]:
        """Lifecycle event records (session.event_record), as they happen."""

    def wait_ready(self, rec, timeout=600) -> dict:
        """The record once the session's init reports ready."""

    def connect(self, rec, command=None, tty=False, use_stdin=True, stdout=None) -> int:
        """Run command (or the image's tool / a login shell) in the session."""

    def project_setup(self, url) -> tuple:
        """(clone URL, project id, env, files) of a session cloning URL."""

    def images(self, errors=None, offline=False) -> list:
        """The image records (cubbi-image list --json)."""

    def image(self, name) -> dict:
        """One image record (cubbi-image show --json)."""

    @property
    def mcp(self) -> Any:
        """The MCP servers: all_servers, get, add, remove, start, stop,
        restart, logs (mcpserve.Servers locally, per user on a service)."""

    @property
    def projects(self) -> Any:
        """The stored projects: all_projects, get, add, remove."""

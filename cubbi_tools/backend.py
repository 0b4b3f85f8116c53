"""Which backend a command talks to: the local engine, or a remote service.

`-r NAME` (cli.REMOTE), else $CUBBI_REMOTE (the dispatcher sets it for
`cubbi -r NAME SUB`), else the ad-hoc remote of $CUBBI_REMOTE_URL (with
$CUBBI_REMOTE_TOKEN), else the config's remote.default; `local` (or nothing)
is the local engine.  A NAME configured with cubbi-remote add always means
that remote, its URL and its stored token; $CUBBI_REMOTE_URL stands in only
for a name that is not configured (see remote.endpoint).  Both backends have one interface (engine.LocalEngine,
remote.RemoteService), so commands never ask which one they have, except to
connect (a local exec of the docker CLI vs the service's WebSocket)."""

import os


def remote_name(args=None):
    name = getattr(args, "remote", None) or os.environ.get("CUBBI_REMOTE")
    if not name and os.environ.get("CUBBI_REMOTE_URL"):
        return os.environ["CUBBI_REMOTE_URL"]  # the environment's ad-hoc remote, named by its URL
    if not name:
        from . import config

        name = config.peek("remote.default")
    if not name:
        return None  # the local engine, without importing the remote client
    from .remote import LOCAL

    return None if name == LOCAL else name


def get(args=None):
    name = remote_name(args)
    if name:
        from .remote import RemoteService

        return RemoteService(name)
    from .engine import LocalEngine

    return LocalEngine()

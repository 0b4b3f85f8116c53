"""Which backend a command talks to: the local engine, or a remote service.

`-r NAME` (cli.REMOTE), else $CUBBI_REMOTE (the dispatcher sets it for
`cubbi -r NAME SUB`), else the config's remote.default; `local` (or nothing)
is the local engine.  Both backends have one interface (engine.LocalEngine,
remote.RemoteService), so commands never ask which one they have, except to
connect (a local exec of the docker CLI vs the service's WebSocket)."""

import os


def remote_name(args=None):
    name = getattr(args, "remote", None) or os.environ.get("CUBBI_REMOTE")
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

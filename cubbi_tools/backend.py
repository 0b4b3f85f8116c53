"""Which backend a command talks to: the local engine, or a remote service."""


def get(args=None):
    from .engine import LocalEngine

    return LocalEngine()

"""Which backend a command talks to, and the settings it runs with: the
local engine, or a remote service.

`-r NAME` (cli.REMOTE), else $CUBBI_REMOTE (the dispatcher sets it for
`cubbi -r NAME SUB`), else the ad-hoc remote of $CUBBI_REMOTE_URL (with
$CUBBI_REMOTE_TOKEN), else the config's remote.default; `local` (or nothing)
is the local engine.  A NAME configured with cubbi-remote add always means
that remote, its URL and its stored token; $CUBBI_REMOTE_URL stands in only
for a name that is not configured (see endpoint below).

This is the edge where the user's settings for infrastructure are read
(docker.socket, docker.network, images.*, ui.colors) and passed down as
parameters; the layers below read none (ARCHITECTURE.md).  Both backends
implement interface.Backend, so commands never ask which one they have.
"""

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
    """The backend the command's switches and the environment select."""
    name = remote_name(args)
    if name:
        from .remote import RemoteService

        url, ad_hoc = endpoint(name)
        return RemoteService(name, url, ad_hoc=ad_hoc)
    return local()


def configured_url(name):
    """The URL of the configured remote NAME, or None."""
    from . import config

    url = config.lookup(config.load(), f"remote.endpoints.{name}.url")
    return str(url) if url else None


def endpoint(name):
    """(url, ad_hoc) for remote NAME.  A configured remote (cubbi-remote add)
    is always its own URL with its stored token: $CUBBI_REMOTE_URL never
    redirects it.  Any other name is the ad-hoc remote of the environment,
    $CUBBI_REMOTE_URL with $CUBBI_REMOTE_TOKEN (scripts, CI: no config or
    secret store needed); without it, NotFound."""
    from .errors import NotFound
    from .remote import ENV_URL, check_url

    url = configured_url(name) if "://" not in name else None
    if url:
        return url, False
    if os.environ.get(ENV_URL):
        return check_url(os.environ[ENV_URL], ENV_URL), True
    raise NotFound(f"no remote {name!r}; add it with cubbi-remote add {name} URL "
                   "(see cubbi-remote list)")


def local_only(args, what, hint):
    """The local engine, for WHAT that works on the local engine only; with
    a remote selected, a UsageError (exit 2) saying so, and HINT."""
    from .errors import UsageError

    if remote_name(args):
        raise UsageError(f"{what} works on the local engine only (-r local); {hint}")
    return local()


def docker_host():
    """The Docker engine: $DOCKER_HOST, else the config's docker.socket,
    else the default (dockerapi.DEFAULT_HOST)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    from . import config

    sock = config.peek("docker.socket")
    if sock:
        return sock if "://" in sock else "unix://" + sock
    return None


def image_settings():
    """images.base, images.ca_cert (a list) and images.mirror of the config."""
    from . import config

    certs = config.peek("images.ca_cert")
    certs = [] if not certs else [certs] if isinstance(certs, str) else [str(c) for c in certs]
    return {"base": config.peek("images.base"), "ca_certs": certs,
            "mirror": config.peek("images.mirror")}


def local():
    """The local engine, with the user's settings."""
    from . import config
    from .engine import LocalEngine

    # network and images are read when a session is created, not by cubbi-ls
    return LocalEngine(docker_host(), network=lambda: config.peek("docker.network"),
                       images=image_settings, verbose=_flag("ui.verbose", False),
                       logging=lambda: config.peek("logging.providers"))


def colors():
    """ui.colors (True without a config, or when it cannot be read): for
    output.Printer(colors=backend.colors), which asks only on a terminal."""
    return _flag("ui.colors", True)


def _flag(key, default):
    """A ui.* switch of the config; DEFAULT when it cannot be read (a bad
    value is for cubbi-config to report, not for every command)."""
    from . import config
    from .errors import CubbiError

    try:
        return bool(config.peek(key, default))
    except CubbiError:
        return default

import sys

from .. import cli
from ..errors import NotFound, UsageError
from ..output import Printer, json_line, message

PROG = "cubbi-remote"
COLUMNS = [("name", "NAME"), ("url", "URL"), ("default", "DEFAULT"), ("auth", "AUTH"),
           ("expires", "EXPIRES")]


def _check_name(name):
    import re

    from ..remote import LOCAL

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
        raise UsageError(f"invalid remote name {name!r}: use letters, digits, '_', '.', '-'")
    if name == LOCAL:
        raise UsageError(f"{LOCAL!r} is reserved: -r {LOCAL} means the local engine")
    return name


def _read_token(args):
    if args.token != "-":
        return args.token
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"token for {args.name}: ").strip()
    return sys.stdin.readline().strip()


def add(args):
    from .. import config, secrets
    from ..errors import CubbiError
    from ..remote import check_url
    from ..secrets import token_secret

    name = _check_name(args.name)
    url = check_url(args.url)

    def refuse_existing(data):
        exists = name in (config.lookup(data, "remote.endpoints") or {})
        if exists and not args.force:
            raise CubbiError(f"remote {name} exists; use --force to replace it or "
                             f"cubbi-remote remove {name}")
        return exists

    refuse_existing(config.load())  # before asking for a token
    token = _read_token(args) if args.token is not None else None
    if args.token is not None and not token:
        raise UsageError("empty token")
    with config.edit() as data:
        exists = refuse_existing(data)  # (or added meanwhile)
        if exists:
            config.unset_in(data, f"remote.endpoints.{name}")
        config.set_in(data, f"remote.endpoints.{name}.url", url)
        config.set_in(data, f"remote.endpoints.{name}.auth_method", "token")
        if args.default:
            config.set_in(data, "remote.default", name)
    if token:
        secrets.put(token_secret(name), token)
    elif exists:  # the old token never goes to the new URL
        secrets.delete(token_secret(name))
    if exists:  # nor the old sign-in
        from ..signin import forget

        forget(name)
    rec = _record(name, url, config.load(fresh=True))
    if args.json:
        json_line(rec)
    else:
        message(("replaced" if exists else "added") + f" remote {name} ({url})"
                + ("; token stored in " + secrets.where() if token else
                   f"; no token yet: sign in with cubbi -r {name} auth (or add --token)"), PROG)
    return 0


def _record(name, url, data):
    """A remote as listed: its sign-in (auth oidc, user, expiry) or API
    token (auth token), never the token itself."""
    from .. import config, secrets, signin
    from ..secrets import token_secret

    api_token = bool(secrets.get(token_secret(name)))
    rec = {"name": name, "url": url,
           "default": config.lookup(data, "remote.default") == name,
           "token": api_token, "auth": "token" if api_token else "none",
           "user": None, "expires": None}
    rec.update(signin.describe(name) or {})
    return rec


def _remote(args):
    """The RemoteService of NAME (else -r / CUBBI_REMOTE / remote.default)."""
    from .. import backend
    from ..remote import RemoteService

    name = args.name or backend.remote_name(None)
    if not name:
        raise UsageError("which remote? cubbi-remote login NAME (or cubbi -r NAME auth)")
    url, ad_hoc = backend.endpoint(name)
    if ad_hoc:
        raise UsageError(f"sign in to a configured remote: cubbi-remote add {name} URL first")
    return RemoteService(name, url)


def login(args):
    from .. import secrets, signin

    if args.logout:
        return logout(args)
    service = _remote(args)
    rec = signin.login(service, device=args.device)
    if args.json:
        json_line({"name": service.remote, **rec})
    else:
        until = f", until {rec['expires']}, refreshed by itself" if rec.get("expires") else ""
        message(f"signed in to remote {service.remote} as {rec.get('user')} (tokens in "
                f"{secrets.where()}{until})", PROG)
    return 0


def logout(args):
    from .. import signin

    service = _remote(args)
    had = signin.logout(service)
    if args.json:
        json_line({"name": service.remote, "signed_out": had})
    else:
        message(f"signed out of remote {service.remote}" if had else
                f"remote {service.remote} had no sign-in here", PROG)
    return 0


def list_(args):
    from .. import config

    data = config.load()
    endpoints = config.lookup(data, "remote.endpoints") or {}
    out = Printer(cli.output_format(args), COLUMNS, key="name")
    for name in sorted(endpoints):
        out.add(_record(name, (endpoints[name] or {}).get("url"), data))
    out.close()
    return 0


def remove(args):
    from .. import config, secrets
    from ..secrets import token_secret

    name = args.name
    with config.edit() as data:
        if name not in (config.lookup(data, "remote.endpoints") or {}):
            raise NotFound(f"no remote {name!r}; see cubbi-remote list")
        config.unset_in(data, f"remote.endpoints.{name}")
        if config.lookup(data, "remote.default") == name:
            config.unset_in(data, "remote.default")
    secrets.delete(token_secret(name))
    from ..signin import forget

    forget(name)
    if args.json:
        json_line({"name": name, "removed": True})
    else:
        message(f"removed remote {name}", PROG)
    return 0


def default(args):
    from .. import config
    from ..remote import LOCAL

    name = args.name
    with config.edit() as data:
        if name == LOCAL:
            if config.lookup(data, "remote.default") is not None:
                config.unset_in(data, "remote.default")
        else:
            if name not in (config.lookup(data, "remote.endpoints") or {}):
                raise NotFound(f"no remote {name!r}; see cubbi-remote list")
            config.set_in(data, "remote.default", name)
    if args.json:
        json_line({"default": None if name == LOCAL else name})
    else:
        message("commands now use the local engine" if name == LOCAL else
                f"commands now use remote {name} (override with -r local)", PROG)
    return 0


def run(args):
    return {"add": add, "list": list_, "ls": list_, "remove": remove, "rm": remove,
            "default": default, "login": login, "logout": logout}[args.subcommand](args)


_NAME = cli.Arg("name", "the remote's name", complete="remote", metavar="NAME")
_OPT_NAME = cli.Arg("name", "the remote's name (default: -r NAME, $CUBBI_REMOTE, remote.default)",
                    nargs="?", complete="remote", metavar="NAME")
COMMAND = cli.Command(
    PROG, "manage the Cubbi Services that -r NAME talks to", run,
    description="Remotes live in the config's remote section (remote.endpoints.NAME.url, "
                "remote.default); their API tokens go to the secret store, never the "
                "config file. Every command takes -r NAME (or CUBBI_REMOTE=NAME, or "
                "cubbi -r NAME SUB) to work against that service instead of the local engine; "
                "with remote.default set, that remote is used unless -r local.",
    subcommands={
        "add": ("add a remote: add NAME URL [--token TOKEN | --token -]", [
            cli.Opt("--token", kind="value", metavar="TOKEN",
                    help="the API token (from cubbi-server token create); - reads it from "
                         "stdin (or asks on a terminal), so it stays out of shell history"),
            cli.Opt("--default", help="also make it the default remote"),
            cli.Opt("-f", "--force", help="replace an existing remote NAME, its URL and its "
                                          "token (without --token the old token is removed)"),
            cli.JSON], [_NAME, cli.Arg("url", "the service URL, http(s)://HOST[:PORT]",
                                       metavar="URL")]),
        "list": ("list the remotes, how they sign in (auth oidc, token or none) and when a "
                 "sign-in expires (never their tokens)", [cli.JSON, cli.Opt(
            "-q", "--quiet", help="print remote names only")], []),
        "remove": ("remove a remote and its token", [cli.JSON], [_NAME]),
        "default": ("use NAME when no -r is given (local: the local engine)", [cli.JSON],
                    [_NAME]),
        "login": ("sign in to NAME through its OpenID provider (cubbi -r NAME auth)", [
            cli.Opt("--device", help="sign in on another device: print a URL and a code "
                                     "(the default when no browser can be opened)"),
            cli.Opt("--logout", help="sign out instead (as cubbi-remote logout)"),
            cli.JSON], [_OPT_NAME]),
        "logout": ("sign out of NAME: revoke the tokens at its provider and forget them",
                   [cli.JSON], [_OPT_NAME]),
    },
    sections=[
        ("CHOOSING A REMOTE",
         "-r NAME, else CUBBI_REMOTE=NAME, else the ad-hoc remote of CUBBI_REMOTE_URL, else "
         "remote.default, else the local engine; -r local (or CUBBI_REMOTE=local) is always "
         "the local engine. A NAME added here always means that remote: its URL and its "
         "stored token, whatever the environment says. CUBBI_REMOTE_URL and "
         "CUBBI_REMOTE_TOKEN go together, for scripts and CI without a config: that URL "
         "gets that token and no stored one. They are used when no -r or CUBBI_REMOTE is "
         "given (then remote.default is not), and for a NAME that is not configured."),
        ("SIGNING IN",
         "A service with auth.provider: oidc (Authentik, or any OpenID Connect provider) "
         "signs users in: cubbi-remote login NAME (or cubbi -r NAME auth) opens the "
         "service's sign-in page in a browser and waits on a loopback port "
         "(127.0.0.1) for the redirect back; with --device, or when no browser can be "
         "opened (no $BROWSER, no display), it prints a URL and a code on stderr to "
         "enter on any device. The service holds the client secret and exchanges the "
         "codes; the access and refresh tokens go to the secret store (keyring, else "
         "secrets.yaml, mode 0600), never the config file. Every command refreshes the "
         "access token when it is about to expire or the service answers 401, and asks "
         "you to run cubbi -r NAME auth only when the refresh token is dead too. "
         "cubbi-remote logout NAME (cubbi -r NAME auth --logout) revokes the tokens at "
         "the provider and forgets them. CUBBI_AUTH_TIMEOUT (seconds, default 300) "
         "bounds a sign-in. API tokens keep working beside sign-ins (scripts, CI)."),
        ("EXIT STATUS", "0 ok; 1 add of a NAME that exists (use --force); 2 usage (bad "
                        "name, bad URL or port, empty token; login to a service without "
                        "sign-in); 3 remove or default of an unknown NAME; 4 the service "
                        "cannot be reached; 5 sign-in failed (denied, timed out, the "
                        "provider unreachable or refusing the service, a user outside the "
                        "service's allowlist) or expired."),
    ],
    examples=[
        ("cubbi-server token create alice | cubbi-remote add team https://cubbi.example --token -",
         "add a remote with a token from stdin"),
        ("cubbi -r team ls", "list your sessions there"),
        ("cubbi -r team auth", "sign in through the service's OpenID provider (a browser)"),
        ("cubbi-remote login team --device", "sign in with a code on another device"),
        ("cubbi-remote default team", "use it by default; -r local goes back to the local engine"),
        ("cubbi-remote add --force team https://new.example --token -",
         "point team at another URL, with a new token"),
        ("CUBBI_REMOTE_URL=https://cubbi.example CUBBI_REMOTE_TOKEN=$T cubbi-ls",
         "one command against a service that is not configured"),
    ],
    see_also=["cubbi-server", "cubbi-config"],
)


def main():
    COMMAND.main()

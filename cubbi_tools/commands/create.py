import os
import sys

from .. import backend, cli, session as S
from ..errors import CubbiError
from ..output import Printer, message

PROG = "cubbi-create"


def build_request(args, engine=None):
    """The CreateRequest for these switches, with config defaults applied,
    for ENGINE (default: the backend the switches select)."""
    from .. import config, envs, toolstate
    from ..engine import CreateRequest
    from ..sshaccess import public_keys
    from ..errors import NotFound, UsageError

    _apply_target(args)
    cfg = config.load()
    defaults = config.defaults(cfg)
    image = args.image if args.image is not None else defaults.get("image") or "goose"
    mount = None
    if args.mount is not None and not args.mount.strip():
        raise UsageError("--mount: give a directory, or use --no-mount")
    if args.mount and args.no_mount:
        raise UsageError("--mount and --no-mount exclude each other")
    if args.mount:
        mount = os.path.abspath(os.path.expanduser(args.mount))
        if not os.path.isdir(mount):
            raise NotFound(f"--mount {args.mount}: no such directory")
    elif not args.no_mount and defaults.get("mount_local", True) and not getattr(args, "project", None):
        mount = os.getcwd()
    volumes = []
    for spec in args.volume:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/") \
                or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise UsageError(f"-v {spec!r}: expected HOST:CONTAINER[:ro] with an absolute CONTAINER path")
        if parts[0].startswith((".", "/", "~")):
            parts[0] = os.path.abspath(os.path.expanduser(parts[0]))
            if not os.path.exists(parts[0]):
                raise NotFound(f"-v {spec}: no such file or directory {parts[0]}")
        volumes.append(":".join(parts))
    if args.name is not None and not args.name.strip():
        raise UsageError("--name: give a name, or leave the switch out for IMAGE-ID")
    if any(not n.strip() for n in args.network):
        raise UsageError("--network: give a Docker network name (see docker network ls)")
    allow = ([] if args.no_network else defaults.get("allow_hosts") or []) + args.allow_host
    # an allowlist or --no-network keeps the session off shared networks: the
    # defaults are left out then, an explicit --network is refused (check_egress)
    fenced = bool(allow) or args.no_network
    networks = list(dict.fromkeys(([] if fenced else defaults.get("networks") or [])
                                  + args.network))
    env = envs.session_env(args.env, args.env_file,
                           config_env=lambda skip: config.session_env(cfg, skip))
    constraints = list(getattr(args, "constraint", None) or [])
    if constraints:
        from .. import backend as B

        if not B.remote_name(args):
            raise UsageError("--constraint places sessions on a swarm's nodes: only through "
                             "a cubbi-server in swarm mode (-r REMOTE)")
    CreateRequest(image=image, ports=args.port, memory=args.memory, cpus=args.cpus,
                  pids_limit=args.pids_limit, mount=mount, networks=networks,
                  idle_timeout=args.idle_timeout, disk=args.disk,
                  allow_hosts=allow, no_network=args.no_network,
                  project=getattr(args, "project", None),
                  mcp=[] if args.no_mcp else args.mcp or defaults.get("mcp") or [],
                  ).check()  # before reading any file or asking for the project
    project, files = None, {}
    if getattr(args, "project", None):
        if args.mount:
            raise UsageError("--project and --mount exclude each other: the repository is /app")
        engine = engine or backend.get(args)
        project, _, project_env, files = engine.project_setup(args.project)
        env.update(project_env)
    servers = _mcp_names(args, defaults)
    return CreateRequest(
        image=image, name=args.name, env=env, networks=networks, mount=mount,
        mount_explicit=bool(args.mount),
        volumes=volumes, ports=args.port, cpus=args.cpus or defaults["cpus"],
        memory=args.memory or defaults["memory"], owner=_owner(),
        pids_limit=args.pids_limit or defaults["pids_limit"],
        hardened=args.hardened or defaults["hardened"],
        idle_timeout=args.idle_timeout or defaults["idle_timeout"], disk=args.disk,
        log_max_size=defaults["log_max_size"], log_max_files=defaults["log_max_files"],
        project=project, files=files, mcp=servers, constraints=constraints,
        allow_hosts=allow, no_network=args.no_network,
        ssh_keys=public_keys(config.value(cfg, "ssh.public_key")),
        state_dir=toolstate.state_dir(project=getattr(args, "project", None), mount=mount),
    ).check()


def _mcp_names(args, defaults):
    """The MCP servers of the session: --mcp NAME..., else defaults.mcp,
    none with --no-mcp.  On the local engine an unknown name is NotFound
    here, before anything starts (a service checks its own)."""
    from .. import backend as B
    from ..errors import UsageError

    if args.mcp and args.no_mcp:
        raise UsageError("--mcp and --no-mcp exclude each other")
    if args.no_mcp:
        return []
    names = list(dict.fromkeys(n.strip() for n in args.mcp)) if args.mcp else \
        list(defaults.get("mcp") or [])
    if any(not n for n in names):
        raise UsageError("--mcp: give an MCP server name (see cubbi-mcp list)")
    if names and not B.remote_name(args):
        from .. import mcp

        for name in names:
            mcp.find(name)
    return names


def _apply_target(args):
    """TARGET, as `cubbi DIR` / `cubbi URL` give it: a directory is --mount,
    anything else a repository URL for --project."""
    from ..errors import UsageError

    target = getattr(args, "target", None)
    if not target:
        return
    if os.path.isdir(target):
        if args.mount:
            raise UsageError(f"{target}: give the directory once (TARGET or --mount)")
        args.mount = target
    else:
        if getattr(args, "project", None):
            raise UsageError(f"{target}: give the repository once (TARGET or --project)")
        args.project = target


def _owner():
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return os.environ.get("USER")


def _print(fmt, rec):
    out = Printer(fmt, S.TABLE_COLUMNS, colors=backend.colors)
    out.add(S.human(rec) if fmt == "table" else rec)
    out.close()


def _current(engine, rec):
    """rec as the engine sees it now (its failure reason), or rec itself."""
    try:
        return engine.resolve(rec["id"])
    except CubbiError:
        return rec


def wants_connect(args):
    from .. import config

    if args.no_connect or args.json or args.quiet:
        return False
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    return bool(config.peek("defaults.connect", True))


def run(args):
    engine = backend.get(args)
    req = build_request(args, engine)
    connect = wants_connect(args)
    rec = engine.create(req, progress=lambda m: message(m, PROG))
    fmt = cli.output_format(args)
    if connect:
        message(f"created session {rec['id']} ({rec['name']}); connecting", PROG)
    if args.run or connect or args.wait:
        try:
            rec = engine.wait_ready(rec)  # the record printed below says "running"
        except CubbiError:
            if not connect:  # the failed session's record (status, reason), then the error
                _print(fmt, _current(engine, rec))
            raise
    if not connect:
        _print(fmt, rec)
    code = 0
    if args.run:
        sys.stdout.flush()
        code = engine.connect(rec, ["/bin/sh", "-lc", args.run], use_stdin=False,
                              stdout=sys.stderr.buffer)
    if args.run and code:
        message(f"--run command exited with status {code}; session {rec['id']} kept", PROG)
    if connect:
        sys.stdout.flush()
        return engine.connect(rec, tty=True)
    return code


COMMAND = cli.Command(
    "cubbi-create", "create a session: an AI tool in an ephemeral container", run,
    description="Creates a session from an image definition (built-in or your own), a "
                "directory holding one, or any local Docker image with /bin/sh. The "
                "current directory is mounted at /app unless --no-mount; the session "
                "user has your uid/gid. On a terminal it connects once the session is "
                "ready; otherwise it prints the session record and returns.",
    options=[
        cli.REMOTE,
        cli.Opt("-i", "--image", kind="value", metavar="NAME", complete="image",
                help="image definition name, directory, or Docker image (default: defaults.image); "
                     "a definition is built on first use as cubbi/NAME:latest (a directory: "
                     "cubbi/NAME-HASH:latest, HASH from its path)"),
        cli.Opt("-n", "--name", kind="value", help="session name (default: IMAGE-ID)"),
        cli.Opt("-e", "--env", kind="multi", metavar="KEY=VALUE",
                help="set an environment variable in the session (CUBBI_* are cubbi's own "
                     "and refused; PATH, LD_* and the like are yours to set locally, a service "
                     "refuses them); repeatable"),
        cli.Opt("--env-file", kind="multi", metavar="FILE", complete="file",
                help="read KEY=VALUE lines from FILE (dotenv syntax; a line that is not "
                     "is an error naming it); repeatable"),
        cli.Opt("--network", kind="multi", metavar="NET", complete="network",
                help="also join Docker network NET (a local session joins cubbi-network too; "
                     "on a remote, your own network and only what its policy.networks "
                     "allows); repeatable"),
        cli.Opt("-m", "--mount", kind="value", metavar="DIR", complete="dir",
                help="mount DIR at /app (default: the current directory)"),
        cli.Opt("--no-mount", help="mount nothing at /app"),
        cli.Opt("--project", kind="value", metavar="URL", complete="project",
                help="clone this git repository into /app (with its stored credential, see "
                     "cubbi-project; anonymously when none); mounts nothing"),
        cli.Opt("-v", "--volume", kind="multi", metavar="HOST:CONTAINER[:ro]", complete="file",
                help="bind-mount a host path or named volume; repeatable"),
        cli.Opt("-p", "--port", kind="multi", metavar="[[IP:]HOST:]PORT",
                help="publish a container port (on 127.0.0.1 unless IP, an IPv4 or IPv6 "
                     "address such as 0.0.0.0 or [::1], or localhost, is given; a free "
                     "host port unless HOST is given; /udp for UDP); repeatable"),
        cli.Opt("--mcp", kind="multi", metavar="NAME", complete="sh:cubbi-mcp list -q",
                help="attach MCP server NAME (see cubbi-mcp), started on demand; repeatable "
                     "(default: defaults.mcp)"),
        cli.Opt("--no-mcp", help="attach no MCP server, not even the defaults"),
        cli.Opt("--allow-host", kind="multi", metavar="HOST[:PORT]",
                help="let the session reach HOST (on PORT, else HTTP 80 and HTTPS 443; "
                     "*.example.com for any name under it) and nothing else: it sits on a "
                     "network of its own whose only way out is a filtering proxy (see "
                     "EGRESS); repeatable, added to defaults.allow_hosts and to the image's "
                     "allow_hosts"),
        cli.Opt("--no-network", help="no network at all (connect and exec still work)"),
        cli.Opt("--cpus", kind="value", metavar="N", help="CPU limit, e.g. 1.5 (0.01 at least)"),
        cli.Opt("--memory", kind="value", metavar="SIZE", help="memory limit, e.g. 2g (6m at least)"),
        cli.Opt("--pids-limit", kind="value", metavar="N", type=int, help="process count limit"),
        cli.Opt("--idle-timeout", kind="value", metavar="DURATION",
                help="close the session once unused for DURATION (30s, 15m, 2h, 1d): no "
                     "cubbi-connect, exec, terminal or cubbi-logs -f attached and under a tenth "
                     "of a CPU busy; its tool state stays (default: defaults.idle_timeout; "
                     "a remote's policy may set or cap it)"),
        cli.Opt("--disk", kind="value", metavar="SIZE",
                help="limit the session's disk (its writable layer) to SIZE, e.g. 10g; refused "
                     "with the reason (exit 1) when the engine's storage driver cannot enforce "
                     "it (see DISK LIMIT)"),
        cli.Opt("--hardened", help="no-new-privileges and a minimal capability set, for untrusted work"),
        cli.Opt("--constraint", kind="multi", metavar="KEY==VALUE",
                help="place the session on a swarm's nodes (KEY==VALUE or KEY!=VALUE, e.g. "
                     "node.labels.zone==eu): through a cubbi-server in swarm mode only, "
                     "where its policy.constraints allows KEY; repeatable"),
        cli.Opt("--run", kind="value", metavar="CMD",
                help="once ready, run CMD in the session (sh -lc) as the session user; its "
                     "output goes to stderr and its status is cubbi-create's"),
        cli.Opt("--wait", help="return only when the session is ready; if its init failed, "
                               "print its record (status failed, reason) and exit 1"),
        cli.Opt("--no-connect", help="do not connect (the default off a terminal)"),
        cli.JSON, cli.QUIET,
    ],
    examples=[
        ("cubbi-create --image aider", "an aider session on the current directory, connected"),
        ("id=$(cubbi-create -q --no-connect --image debian:bookworm)", "a plain session for a script"),
        ("cubbi-create --no-connect --run 'make test' --image ci", "run the tests in a fresh session"),
        ("cubbi-create --allow-host api.anthropic.com --allow-host pypi.org --image claude-code",
         "a session that reaches only its model API and PyPI"),
    ],
    args=[cli.Arg("target", "a directory to mount at /app (as --mount), or a repository URL "
                            "to clone into /app (as --project); what `cubbi DIR` and "
                            "`cubbi URL` pass", nargs="?", complete="dir", metavar="TARGET")],
    sections=[
        ("IDLE SESSIONS",
         "With --idle-timeout (or defaults.idle_timeout) the session's init watches it: every "
         "fifth of the timeout (1 to 30 s) it counts the session as used when a process the "
         "engine started in it runs (cubbi-connect, cubbi-connect -- CMD, a server's terminal "
         "or exec, cubbi-ssh), when its processes used more than a tenth of a CPU since the "
         "last look, or when cubbi-logs -f (locally or through a server) follows its log. "
         "A plain `docker logs -f` cannot be seen from inside the container and does not "
         "count. Unused that long, the init ends and the engine removes the container (it is "
         "made with AutoRemove): the session is closed as cubbi-close closes it, cubbi-ls no "
         "longer lists it, cubbi-events reports it closed, and its tool state (the project's "
         "persistent configs, on the host) stays. Every session records how long it has been "
         "unused, which cubbi-prune --idle reads; a session made without a timeout is never "
         "closed by itself. On a remote the service's policy.idle_timeout gives the default "
         "and the largest timeout a client may ask for."),
        ("DISK LIMIT",
         "--disk SIZE is the engine's --storage-opt size=SIZE on the session's writable "
         "layer (bind mounts such as /app are the host's and are not counted). Whether the "
         "engine can enforce it depends on its storage driver (docker info: Storage Driver, "
         "Backing Filesystem): overlay2 only on xfs mounted with the pquota option; btrfs, "
         "zfs, devicemapper and windowsfilter always; vfs and others never. A limit the "
         "driver cannot enforce is refused before anything starts, with the reason on one "
         "stderr line and exit status 1, never ignored. The usual Debian engine (overlay2 on "
         "ext4) cannot: leave --disk out there, or move /var/lib/docker to an xfs filesystem "
         "mounted with pquota."),
        ("EGRESS",
               "With --allow-host (or defaults.allow_hosts) the session sits alone on an "
               "internal Docker network of its own, cubbi-egress-ID, with no route out and "
               "no resolver for outside names. Its only way out is its own proxy container "
               "(tinyproxy, cubbi/egress-proxy, built on first use), also joined to an "
               "outward network: locally the session network (docker.network, default "
               "cubbi-network), on a remote the user's network. It resolves names and "
               "passes HTTP and HTTPS (CONNECT) only to the allowed hosts and ports; "
               "HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy and NO_PROXY point the "
               "session's tools at it, and tools that ignore them cannot get out. Raw IP "
               "addresses, other hosts and UDP get nowhere; a name lookup in the session "
               "fails within about a second (its resolver waits 1 s, once). An image may declare the hosts "
               "its tool needs (allow_hosts in cubbi_image.yaml); they are added once the "
               "session has an allowlist. What the proxy refused: cubbi-logs --egress ID. "
               "The proxy and the network go with the session: cubbi-close removes both; "
               "when the session ends by itself (--idle-timeout) its proxy, which watches "
               "it, ends within about ten seconds and the engine removes it, and the network "
               "is removed by the next cubbi-create on that engine (once a minute old) or a "
               "server's sweep. --network, "
               "--port and --mcp are refused with an allowlist or --no-network, which would "
               "join the session to a shared network; defaults.networks is left out then "
               "(as --no-network leaves out defaults.allow_hosts). --project is refused with "
               "--no-network (the repository is cloned over the network). A --project repository is cloned "
               "inside the session, through the proxy: allow its host, and store an HTTPS "
               "token for it rather than an SSH key (SSH does not pass an HTTP proxy). "
               "On a remote the service's "
               "policy.allow_hosts bounds the list (cubbi-service.yaml(5))."),
    ],
    see_also=["cubbi-connect", "cubbi-ls", "cubbi-close", "cubbi-config", "cubbi-logs",
              "cubbi-prune"],
)


def main():
    COMMAND.main()

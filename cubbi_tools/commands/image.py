import sys

from .. import cli
from ..output import Printer, message

PROG = "cubbi-image"

LIST_COLUMNS = [("name", "NAME"), ("source", "SOURCE"), ("version", "VERSION"),
                ("built", "BUILT"), ("size_mb", "SIZE MB"), ("description", "DESCRIPTION")]
BUILD_COLUMNS = [("name", "NAME"), ("tag", "TAG"), ("size_mb", "SIZE MB"),
                 ("seconds", "SECONDS"), ("base", "BASE")]


def _human(rec):
    out = dict(rec)
    if rec.get("size"):
        out["size_mb"] = round(rec["size"] / 1e6)
    if rec.get("built") and rec.get("stale"):
        out["built"] = "stale"
    return out


def do_list(args):
    from .. import backend

    errors = []
    out = Printer(cli.output_format(args), LIST_COLUMNS, key="name")
    for rec in backend.get(args).images(errors=errors, offline=args.offline):
        out.add(_human(rec) if out.fmt == "table" else rec)
    out.close()
    for err in errors:
        message(f"skipped: {err}", PROG)
    return 1 if errors else 0


def do_show(args):
    from .. import backend

    rec = backend.get(args).image(args.name)
    fmt = cli.output_format(args)
    if fmt != "table":
        Printer(fmt, key="name").add(rec)
        return 0
    lines = [f"name:         {rec['name']}",
             f"description:  {rec.get('description') or '-'}",
             f"version:      {rec.get('version') or '-'}",
             f"maintainer:   {rec.get('maintainer') or '-'}",
             f"source:       {rec['source']} ({rec['path']})",
             f"image:        {rec['tag']} "
             + ("(not built)" if not rec["built"] else
                f"({rec['image_id'][7:19]}, {round((rec['size'] or 0) / 1e6)} MB"
                + (", older than its definition" if rec.get("stale") else "") + ")"),
             f"command:      {rec['init'].get('command') or '(a login shell)'}"]
    if rec["init"].get("pre_command"):
        lines.append(f"pre_command:  {rec['init']['pre_command']}")
    if rec["ports"]:
        lines.append("ports:        " + ", ".join(str(p) for p in rec["ports"]))
    sys.stdout.write("\n".join(lines) + "\n")
    if rec["environment"]:
        sys.stdout.write("\nenvironment:\n")
        from ..output import table

        table([{"name": e["name"],
                "req": "required" if e["required"] else "",
                "default": e["default"] if e["default"] is not None else "",
                "desc": (e["description"] or "") + (" (sensitive)" if e["sensitive"] else "")}
               for e in rec["environment"]],
              [("name", "NAME"), ("req", "REQUIRED"), ("default", "DEFAULT"),
               ("desc", "DESCRIPTION")])
    if rec["persistent_configs"]:
        sys.stdout.write("\npersistent_configs:\n")
        for pc in rec["persistent_configs"]:
            sys.stdout.write(f"  {pc['source']} -> {pc['target']} ({pc['type']})"
                             + (f"  {pc['description']}" if pc.get("description") else "") + "\n")
    if rec.get("allow_hosts"):
        sys.stdout.write("\nallow_hosts: " + ", ".join(rec["allow_hosts"]) + "\n")
    return 0


def do_build(args):
    from .. import backend, images

    engine = _local(args)
    defn = images.definition(args.name)
    settings = engine.image_settings
    result = images.build(engine.api, defn, base=args.base or settings.get("base"),
                          ca_certs=args.ca_cert or settings.get("ca_certs"),
                          no_cache=args.no_cache, tag=args.tag,
                          progress=lambda m: message(m, PROG), colors=backend.colors)
    message(f"built {result['tag']} in {result['seconds']} s "
            f"({round((result['size'] or 0) / 1e6)} MB)", PROG)
    fmt = cli.output_format(args)
    out = Printer(fmt, BUILD_COLUMNS, key="tag")
    out.add(_human(result) if fmt == "table" else result)
    out.close()
    return 0


def do_validate(args):
    from .. import images
    from ..imagedef import InvalidDefinition

    _local(args)
    fmt = cli.output_format(args)
    try:
        defn = images.definition(args.name)
    except InvalidDefinition as exc:
        if fmt == "json":  # a record for scripts too, then the lines on stderr
            Printer(fmt, key="name").add({
                "name": exc.name, "path": exc.path, "valid": False,
                "problems": [p.record() if hasattr(p, "record") else
                             {"file": None, "field": None, "message": str(p)}
                             for p in exc.problems]})
        raise
    rec = {"name": defn["name"], "path": defn["path"], "valid": True,
           "digest": images.digest(defn["path"])}
    if fmt == "table":
        sys.stdout.write(f"{defn['path']}: valid image definition {defn['name']!r}\n")
    else:
        Printer(fmt, key="name").add(rec)
    return 0


def do_bootstrap(args):
    import time

    from .. import baseos

    engine = _local(args)
    api = engine.api
    started = time.time()
    if not args.force and baseos.image_exists(api, args.tag):
        message(f"{args.tag} exists; use --force to make it again", PROG)
    else:
        baseos.bootstrap_base(api, tag=args.tag, suite=args.suite,
                              mirror=args.mirror or engine.image_settings.get("mirror"),
                              progress=lambda m: message(m, PROG))
    info = api.inspect_image(args.tag)
    rec = {"tag": args.tag, "id": info["Id"], "size": info.get("Size"),
           "seconds": round(time.time() - started, 1)}
    fmt = cli.output_format(args)
    out = Printer(fmt, [("tag", "TAG"), ("size_mb", "SIZE MB"), ("seconds", "SECONDS")], key="tag")
    out.add(_human(rec) if fmt == "table" else rec)
    out.close()
    return 0


HANDLERS = {"list": do_list, "show": do_show, "build": do_build, "validate": do_validate,
            "bootstrap-base": do_bootstrap}


def run(args):
    return HANDLERS[args.subcommand](args)


def _local(args):
    """The local engine: build, validate and bootstrap-base read definitions
    and build on this host; with a remote selected (-r, CUBBI_REMOTE,
    remote.default) they would act on the wrong engine, so they refuse
    (exit 2)."""
    from .. import backend

    return backend.local_only(args, f"{PROG} {args.subcommand}",
                              "build on the server host, or use an image name the server knows")


QUIET = cli.Opt("-q", "--quiet", help="print names (build: tags) only, one per line")
NAME = cli.Arg("name", "an image definition: a name from cubbi-image list, or a directory "
                       "holding cubbi_image.yaml and a Dockerfile", complete="image",
               metavar="NAME|DIR")

COMMAND = cli.Command(
    "cubbi-image", "list, show, validate and build session images", run,
    description="An image definition is a folder with a Dockerfile and a cubbi_image.yaml "
                "(name, description, version, maintainer, init {pre_command, command}, "
                "environment, ports, volumes, persistent_configs, mcp, allow_hosts: the "
                "HOST[:PORT]s its tool needs, added to a session's egress allowlist when it has "
                "one). Definitions are found by "
                "name in ~/.config/cubbi/images/ (yours, first) and in the built-in images "
                "(base, goose, aider, claude-code, opencode, codex), or given as a directory. "
                "cubbi-create --image NAME builds cubbi/NAME:latest on first use (a "
                "definition given as a directory: cubbi/NAME-HASH:latest, HASH from its "
                "path, so it never replaces a named one); "
                "cubbi-image build rebuilds it. Every built-in Dockerfile starts FROM the "
                "build argument BASE_IMAGE (--base; default debian:bookworm-slim, or a "
                "Debian base made locally with bootstrap-base when no registry answers) and "
                "installs the extra CA certificates of --ca-cert before apt, pip and npm run. "
                "A definition of your own (a directory, or ~/.config/cubbi/images/NAME) gets "
                "BASE_IMAGE only from --base or images.base: otherwise its Dockerfile's own "
                "'ARG BASE_IMAGE=...' default is the base (the fallback to a local Debian base "
                "applies when that default is debian:bookworm-slim), and a Dockerfile that "
                "declares no BASE_IMAGE is built as it is. "
                "With a remote (-r NAME, CUBBI_REMOTE, remote.default) list and show ask the "
                "service; build, validate and bootstrap-base work on the local engine only and "
                "refuse a remote (exit 2).",
    options=[cli.REMOTE],
    subcommands={
        "list": ("list image definitions and whether their image is built",
                 [cli.JSON, QUIET,
                  cli.Opt("--offline", help="do not ask the Docker engine whether images are built")],
                 []),
        "show": ("show one image definition", [cli.JSON], [NAME]),
        "build": ("build the image of a definition (cubbi/NAME:latest; a definition given "
                  "as a directory: cubbi/NAME-HASH:latest)", [
            cli.Opt("--base", kind="value", metavar="IMAGE",
                    help="base image for FROM (build argument BASE_IMAGE; default images.base, "
                         "else, for a built-in definition, debian:bookworm-slim falling back to "
                         "cubbi/base-os:bookworm, for your own the Dockerfile's ARG BASE_IMAGE "
                         "default)"),
            cli.Opt("--ca-cert", kind="multi", metavar="FILE", complete="file",
                    help="a PEM CA certificate (or bundle) to trust during the build and in the "
                         "image, for TLS-intercepting proxies; repeatable (default images.ca_cert)"),
            cli.Opt("--no-cache", help="build every step again"),
            cli.Opt("-t", "--tag", kind="value", metavar="TAG",
                    help="tag the image TAG instead of cubbi/NAME:latest (cubbi/NAME-HASH:latest "
                         "for a definition given as a directory, HASH from its path)"),
            cli.JSON, QUIET], [NAME]),
        "validate": ("check a definition's cubbi_image.yaml, folder name and Dockerfile, "
                     "listing every problem on stderr, one per line (exit 2 when invalid, 3 "
                     "when the folder holds no cubbi_image.yaml); with --json also one record "
                     "{name, path, valid: false, problems: [{file, field, message}]} on stdout "
                     "(field null when the problem is not a field's)",
                     [cli.JSON, QUIET], [NAME]),
        "bootstrap-base": ("make a Debian base image locally, without a registry "
                           "(debootstrap, needs root)", [
            cli.Opt("--tag", kind="value", metavar="TAG", default="cubbi/base-os:bookworm",
                    help="the image to make (default cubbi/base-os:bookworm)"),
            cli.Opt("--suite", kind="value", metavar="SUITE", default="bookworm",
                    help="Debian suite (default bookworm)"),
            cli.Opt("--mirror", kind="value", metavar="URL",
                    help="Debian mirror (default images.mirror, else http://deb.debian.org/debian)"),
            cli.Opt("--force", help="make it again even when the image exists"),
            cli.JSON, QUIET], []),
    },
    examples=[
        ("cubbi-image list", "definitions, where they come from, and whether they are built"),
        ("cubbi-image build aider --ca-cert /etc/ssl/certs/ca-certificates.crt",
         "build aider behind a TLS-intercepting proxy, trusting the host's CA bundle"),
        ("cubbi-image bootstrap-base && cubbi-image build base --base cubbi/base-os:bookworm",
         "no registry: make a Debian base locally, then build on it"),
        ("cubbi-image validate ./my-tool && cubbi-create --image ./my-tool",
         "check your own definition, then start a session from it"),
    ],
    sections=[
        ("IMAGE DEFINITIONS",
         "Put your own in ~/.config/cubbi/images/NAME/ (Dockerfile + cubbi_image.yaml, "
         "NAME equal to the name field) or anywhere and pass the directory. Start the "
         "Dockerfile with 'ARG BASE_IMAGE=debian:bookworm-slim' and 'FROM ${BASE_IMAGE}' "
         "(your default stays unless --base or images.base is given); "
         "the build context always holds a cubbi-ca/ folder with the --ca-cert files "
         "(COPY cubbi-ca/ /usr/local/share/ca-certificates/cubbi/, then run "
         "update-ca-certificates). The image needs /bin/sh; cubbi's init does the rest."),
        ("SESSION SETUP",
         "A session of a definition: required variables that are unset fail it (cubbi-ls "
         "shows failed, the reason names the variable); defaults fill unset variables; "
         "persistent_configs are symlinked to ~/.cubbi/projects/HASH/config on the host "
         "(mounted at /cubbi-config, CUBBI_CONFIG_DIR and CUBBI_IMAGE_CONFIG_DIR set) so "
         "tool state survives across sessions of the same project; init.pre_command runs "
         "once as the session user; /app/.cubbi/init.sh of the project runs next; "
         "cubbi-connect with no command starts init.command (else a login shell)."),
        ("EXIT STATUS",
         "0 done; 1 the build or bootstrap failed (the build's own error is shown); "
         "2 usage error or an invalid definition (the message names the file and field); "
         "3 no such definition (a folder without cubbi_image.yaml), file or base image; 4 the Docker engine is unreachable."),
    ],
    see_also=["cubbi-create", "cubbi-config"],
)


def main():
    COMMAND.main()

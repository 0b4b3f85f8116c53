"""Images: image definitions (images/<name>/ with cubbi_image.yaml and a
Dockerfile), plain local Docker images, building, and a locally made Debian
base for engines that reach no registry."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .dockerapi import APIError, json_stream
from .errors import CubbiError, NotFound
from .validate import check_image_ref, looks_like_path, short_name

BASE_OS_TAG = "cubbi/base-os:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def _say(progress, text):
    if progress is not None:
        progress(text)
    else:
        sys.stderr.write(f"cubbi: {text}\n")
        sys.stderr.flush()


def image_exists(api, ref):
    try:
        api.inspect_image(ref)
    except APIError as exc:
        if exc.status != 404:
            raise
        return False
    return True


# -- a Debian base made locally ------------------------------------------
def bootstrap_base(api=None, tag=BASE_OS_TAG, suite="bookworm", mirror=None, progress=None):
    """Make a minimal Debian image without any registry: debootstrap
    --variant=minbase into a temporary directory, then import it as TAG
    through the Engine API.  Needs root and debootstrap on the host."""
    from .dockerapi import DockerAPI

    check_image_ref(tag, "--tag")
    api = api or DockerAPI()
    mirror = mirror or DEFAULT_MIRROR
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None)
    if not debootstrap:
        raise CubbiError("bootstrapping a base image needs debootstrap on this host: "
                         "apt-get install debootstrap")
    if os.geteuid() != 0:
        raise CubbiError("bootstrapping a base image needs root (debootstrap creates device "
                         "nodes and chowns files); run it with sudo")
    repo, _, tagname = tag.rpartition(":")
    if not repo or "/" in tagname:
        repo, tagname = tag, "latest"
    root = tempfile.mkdtemp(prefix="cubbi-rootfs-", dir=os.environ.get("TMPDIR") or "/var/tmp")
    try:
        _say(progress, f"bootstrapping Debian {suite} from {mirror} with debootstrap "
                       f"(minbase, about 30 s)")
        log = os.path.join(root + ".log")
        with open(log, "wb") as fh:
            proc = subprocess.run([debootstrap, "--variant=minbase", suite, root, mirror],
                                  stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            with open(log, "rb") as fh:
                tail = fh.read().decode(errors="replace").strip().splitlines()[-3:]
            raise CubbiError(f"debootstrap of {suite} from {mirror} failed "
                             f"(exit {proc.returncode}): {' / '.join(tail)}")
        _tidy_rootfs(root, suite, mirror)
        _say(progress, f"importing the root filesystem as {tag}")
        _import_dir(api, root, repo, tagname, changes=[
            'CMD ["/bin/bash"]',
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
        ])
    finally:
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)
        try:
            os.unlink(root + ".log")
        except OSError:
            pass
    _say(progress, f"made {tag}")
    return tag


def _tidy_rootfs(root, suite, mirror):
    """What debootstrap leaves that an image should not carry."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "tmp"):
        path = os.path.join(root, sub)
        if not os.path.isdir(path):
            continue
        for entry in os.listdir(path):
            full = os.path.join(path, entry)
            if entry in ("partial", "lock"):
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.unlink(full)
    with open(os.path.join(root, "etc/apt/sources.list"), "w") as fh:
        fh.write(f"deb {mirror} {suite} main\n")
        if suite not in ("sid", "unstable"):
            fh.write(f"deb {mirror} {suite}-updates main\n")
    # like the official images: no docs/man pages, no recommends
    os.makedirs(os.path.join(root, "etc/dpkg/dpkg.cfg.d"), exist_ok=True)
    with open(os.path.join(root, "etc/dpkg/dpkg.cfg.d/cubbi-nodoc"), "w") as fh:
        fh.write("path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
                 "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n")
    os.makedirs(os.path.join(root, "etc/apt/apt.conf.d"), exist_ok=True)
    with open(os.path.join(root, "etc/apt/apt.conf.d/90cubbi"), "w") as fh:
        fh.write('APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')


def _unmount_below(root):
    try:
        with open("/proc/mounts") as fh:
            points = [line.split()[1] for line in fh]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _import_dir(api, root, repo, tag, changes=()):
    """tar a directory (numeric owners, no /dev, /proc, /sys contents) into
    POST /images/create?fromSrc=-."""
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", root,
         "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-c", "."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        resp = api.import_image(tar.stdout, repo, tag, changes=changes)
        error = None
        for item in json_stream(resp):
            if item.get("error"):
                error = item.get("errorDetail", {}).get("message") or item["error"]
    finally:
        tar.stdout.close()
        err = tar.stderr.read().decode(errors="replace").strip()
        tar.stderr.close()
        rc = tar.wait()
    if rc != 0:
        raise CubbiError(f"tar of {root} failed (exit {rc}): {err}")
    if error:
        raise CubbiError(f"importing {repo}:{tag} failed: {error}")


def ensure_base_os(api, tag=BASE_OS_TAG, progress=None):
    """TAG when it exists locally, else bootstrap it."""
    if image_exists(api, tag):
        return tag
    import fcntl

    # one bootstrap at a time on this host: concurrent runs wait, then reuse it
    lock = os.path.join(tempfile.gettempdir(), "cubbi-bootstrap-base.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if image_exists(api, tag):
            return tag
        return bootstrap_base(api, tag=tag, progress=progress)


# -- image definitions ------------------------------------------------------
DEFAULT_BASE = "debian:bookworm-slim"
TAG_REPO = "cubbi"
L_NAME = "cubbi.image.name"
L_DIGEST = "cubbi.image.digest"
L_DEFINITION = "cubbi.image.definition"
L_BASE = "cubbi.image.base"
CA_DIR = "cubbi-ca"


def builtin_dir():
    """The built-in definitions: images/ beside the package in a checkout,
    else the copy installed inside the package (cubbi_tools/builtin_images)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(os.path.dirname(here), "images"),
                 os.path.join(here, "builtin_images")):
        if os.path.isdir(path) and any(
                os.path.isfile(os.path.join(path, n, "cubbi_image.yaml"))
                for n in os.listdir(path)):
            return path
    return None


def user_dir():
    from .files import config_dir

    return os.path.join(config_dir(), "images")


def search_dirs():
    """[(source, directory)]: the user's own definitions shadow built-in ones."""
    out = [("user", user_dir())]
    b = builtin_dir()
    if b:
        out.append(("builtin", b))
    return out


def find_definition(name, paths=True):
    """The definition NAME names: a directory path (unless paths=False: the
    service never reads its own disk for a client), or a folder name in the
    user's or the built-in images; None when it names none."""
    from . import imagedef

    if paths and looks_like_path(name):
        path = os.path.abspath(os.path.expanduser(name))
        if not os.path.isdir(path):
            raise NotFound(f"{name}: no such directory")
        defn = imagedef.load(path)
        defn["source"] = "path"
        return defn
    if not imagedef.valid_name(name):
        return None
    for source, root in search_dirs():
        path = os.path.join(root, name)
        if imagedef.is_definition_dir(path):
            defn = imagedef.load(path, expect_name=name)
            defn["source"] = source
            return defn
    return None


def definition(name):
    """find_definition, or NotFound naming where definitions are found."""
    defn = find_definition(name)
    if defn is None:
        raise NotFound(f"no image definition {name!r}; see cubbi-image list (or give a "
                       "directory holding a cubbi_image.yaml)")
    return defn


def definitions(errors=None):
    """Every definition found by name, user's first (a user one shadows a
    built-in of the same name).  A broken one raises InvalidDefinition, or
    is skipped and its error appended to ERRORS when that list is given."""
    from . import imagedef

    seen, out = set(), []
    for source, root in search_dirs():
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for name in names:
            path = os.path.join(root, name)
            if name in seen or not imagedef.is_definition_dir(path):
                continue
            seen.add(name)
            try:
                defn = imagedef.load(path, expect_name=name)
            except imagedef.InvalidDefinition as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                continue
            defn["source"] = source
            out.append(defn)
    return out


def tag_for(defn):
    return f"{TAG_REPO}/{defn['name']}:latest"


def _context_files(directory):
    """Relative paths of the build context, honouring simple .dockerignore
    patterns (fnmatch on the path and its parent folders); .git never."""
    import fnmatch

    patterns = []
    try:
        with open(os.path.join(directory, ".dockerignore")) as fh:
            patterns = [ln.strip().strip("/") for ln in fh
                        if ln.strip() and not ln.startswith("#") and not ln.startswith("!")]
    except OSError:
        pass

    def ignored(rel):
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns)

    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/")
            if not ignored(rel):
                out.append(rel)
    return out


def digest(directory):
    """A hash of the definition's build context: tells a stale image."""
    import hashlib

    h = hashlib.sha256()
    for rel in _context_files(directory):
        if rel.rsplit("/", 1)[-1].lower() == "readme.md":  # docs do not change the image
            continue
        full = os.path.join(directory, rel)
        h.update(rel.encode() + b"\0")
        if os.path.islink(full):
            h.update(b"link:" + os.readlink(full).encode())
        else:
            with open(full, "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
    return "sha256:" + h.hexdigest()[:32]


def _context_tar(directory, ca_certs):
    """The build context as tar bytes; the extra CA certificates go into
    cubbi-ca/ (always present, maybe empty), which every Dockerfile copies."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in _context_files(directory):
            tar.add(os.path.join(directory, rel), arcname=rel, recursive=False)
        names = set(tar.getnames())
        if CA_DIR not in names:
            info = tarfile.TarInfo(CA_DIR)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for i, (path, data) in enumerate(ca_certs):
            base = os.path.splitext(os.path.basename(path))[0] or "ca"
            # one certificate per file: update-ca-certificates (openssl rehash)
            # skips a file holding a whole bundle
            for j, pem in enumerate(_pem_blocks(data)):
                info = tarfile.TarInfo(f"{CA_DIR}/cubbi-extra-{i}-{base}-{j}.crt")
                info.size = len(pem)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(pem))
    return buf.getvalue()


def _pem_blocks(data):
    import re

    return [m.group(0) + b"\n" for m in re.finditer(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)]


def read_ca_certs(paths):
    """[(path, bytes)] for --ca-cert files; NotFound / UsageError when a file
    is missing or holds no PEM certificate."""
    from .errors import UsageError

    out = []
    for path in paths:
        full = os.path.abspath(os.path.expanduser(path))
        try:
            with open(full, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise NotFound(f"--ca-cert {path}: no such file") from None
        except OSError as exc:
            raise CubbiError(f"--ca-cert {path}: cannot read: {exc.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise UsageError(f"--ca-cert {path}: not a PEM certificate (no BEGIN CERTIFICATE)")
        out.append((full, data))
    return out


def pull(api, ref):
    """Pull REF; raise CubbiError with the engine's reason when it fails."""
    error = None
    for item in json_stream(api.pull(ref)):
        if item.get("error"):
            error = (item.get("errorDetail") or {}).get("message") or item["error"]
    if error:
        raise CubbiError(error)


def resolve_base(api, base=None, progress=None):
    """The base image to build FROM: BASE (--base, else images.base, read by
    the caller) when given (it must exist or be pullable), else
    debian:bookworm-slim, falling back to a locally bootstrapped
    cubbi/base-os:bookworm when that cannot be pulled."""
    explicit = base
    base = explicit or DEFAULT_BASE
    if image_exists(api, base):
        return base
    if not explicit and image_exists(api, BASE_OS_TAG):
        _say(progress, f"base image {base} is not here; using {BASE_OS_TAG}, made locally earlier")
        return BASE_OS_TAG
    _say(progress, f"base image {base} is not here; pulling it")
    try:
        pull(api, base)
        return base
    except CubbiError as exc:
        reason = str(exc)
    if explicit:
        raise NotFound(f"base image {base} is not available locally and cannot be pulled "
                       f"({reason}); make one without a registry with 'cubbi-image "
                       f"bootstrap-base' and build with --base {BASE_OS_TAG}")
    _say(progress, f"cannot pull {base} ({reason}); making {BASE_OS_TAG} locally with "
                   "debootstrap instead")
    return ensure_base_os(api, progress=progress)


def build(api, defn, base=None, ca_certs=None, no_cache=False, tag=None,
          progress=None, log=None, colors=True):
    """Build DEFN through the Engine API; stream its output to log (default
    stderr, in colour when output.use_color(stderr, colors)).  base and
    ca_certs (paths) come from the caller (--base, images.base, ...).
    Returns {name, tag, id, size, base, seconds}."""
    import time

    started = time.time()
    if tag:
        check_image_ref(tag, "--tag")
    tag = tag or tag_for(defn)
    certs = read_ca_certs(ca_certs or [])
    base = resolve_base(api, base, progress)
    definition = {k: v for k, v in defn.items() if k not in ("path", "source")}
    labels = {L_NAME: defn["name"], L_DIGEST: digest(defn["path"]),
              L_DEFINITION: json.dumps(definition, separators=(",", ":")), L_BASE: base}
    buildargs = {"BASE_IMAGE": base}
    for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if os.environ.get(key):
            buildargs[key] = os.environ[key]
    params = {"t": tag, "buildargs": json.dumps(buildargs), "labels": json.dumps(labels),
              "rm": "1", "forcerm": "1", "nocache": "1" if no_cache else None}
    _say(progress, f"building {tag} from {defn['path']} on {base}"
                   + (f" with {len(certs)} extra CA certificate file(s)" if certs else ""))
    write = log or _stderr_raw
    from .output import use_color

    plain = log is not None or not use_color(sys.stderr, colors)
    error, image_id = None, None
    for item in json_stream(api.build(_context_tar(defn["path"], certs), params)):
        if item.get("stream"):
            write(_ANSI.sub("", item["stream"]) if plain else item["stream"])
        elif item.get("status"):
            write(item["status"] + ("\n" if not item["status"].endswith("\n") else ""))
        if item.get("aux", {}).get("ID"):
            image_id = item["aux"]["ID"]
        if item.get("error") or item.get("errorDetail"):
            error = (item.get("errorDetail") or {}).get("message") or item.get("error")
    if error:
        raise CubbiError(f"building {tag} failed: {error.strip()}")
    info = api.inspect_image(tag)
    return {"name": defn["name"], "tag": tag, "id": image_id or info["Id"],
            "size": info.get("Size"), "base": base,
            "seconds": round(time.time() - started, 1)}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colour and cursor codes a build step prints


def _stderr_raw(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def inspect(api, ref):
    """The engine's inspect record of image REF, or None when it has none."""
    try:
        return api.inspect_image(ref)
    except APIError as exc:
        if exc.status != 404:
            raise
        return None


def record(defn, info=None):
    """The JSON record of a definition (cubbi-image list/show --json, the
    service's /images): sensitive defaults masked, whether and how it is built."""
    from . import imagedef

    rec = imagedef.public(defn)
    rec["tag"] = tag_for(defn)
    rec["built"] = info is not None
    rec["image_id"] = info.get("Id") if info else None
    rec["size"] = info.get("Size") if info else None
    rec["created"] = info.get("Created") if info else None
    rec["stale"] = None
    if info:
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(L_DIGEST):
            rec["stale"] = labels[L_DIGEST] != digest(defn["path"])
    return rec


def session_meta(defn):
    """What a session needs of a definition (stored as /cubbi/image.json)."""
    return {k: v for k, v in defn.items() if k not in ("path", "source")}


# -- resolving --image ------------------------------------------------------
def ensure_image(engine, name, progress=None):
    """(docker image reference, image metadata) for --image NAME: a
    definition (name or directory) gives cubbi/<name>:latest, built on first
    use; a plain local Docker image works as it is; else NotFound."""
    api = engine.api
    defn = find_definition(name, paths=engine.image_paths)
    if defn is not None:
        tag = tag_for(defn)
        info = inspect(api, tag)
        if info is None:
            _say(progress, f"image {tag} is not built yet; building it from {defn['path']} "
                           "(first use, this can take minutes)")
            settings = engine.image_settings
            build(api, defn, base=settings.get("base"), ca_certs=settings.get("ca_certs"),
                  progress=progress,
                  log=(lambda text: [_say(progress, ln) for ln in text.rstrip("\n").split("\n")
                                     if ln.strip()]) if progress else None)
        else:
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(L_DIGEST) and labels[L_DIGEST] != digest(defn["path"]):
                _say(progress, f"note: {defn['path']} changed since {tag} was built; "
                               f"rebuild it with 'cubbi-image build {name}'")
        return tag, session_meta(defn)
    info = inspect(api, check_image_ref(name))
    if info is None:
        raise NotFound(f"unknown image {name!r}: no image definition and no local Docker "
                       "image by that name; see cubbi-image list or docker images")
    labels = (info.get("Config") or {}).get("Labels") or {}
    meta = {}
    if labels.get(L_DEFINITION):
        try:
            meta = json.loads(labels[L_DEFINITION])
        except ValueError:
            meta = {}
    return name, meta


# -- the session's image setup, as init hooks -------------------------------
def _q(text):
    import shlex

    return shlex.quote(str(text))


def session_files(image_meta, image_ref):
    """{container path: (bytes, mode, uid, gid)} that the init needs for this
    image: hooks in /cubbi/hooks/ (sourced in name order by cubbi-init.sh)
    and /cubbi/command (what cubbi-connect starts)."""
    meta = image_meta or {}
    name = meta.get("name") or short_name(image_ref, "image")
    files = {"/cubbi/hooks/20-image-env.sh": _env_hook(meta, name),
             "/cubbi/hooks/60-persistent-configs.sh": _persist_hook(meta, name)}
    init = meta.get("init") or {}
    if init.get("pre_command"):
        files["/cubbi/hooks/69-image-pre-command.sh"] = (
            "# the image's init.pre_command, as the session user\n"
            "say \"running the image's pre_command\"\n"
            f"as_user /bin/sh -c {_q(init['pre_command'])} "
            "|| fail \"the image's init.pre_command exited with status $?\"\n")
    out = {path: (text.encode(), 0o600, 0, 0) for path, text in files.items()}
    if init.get("command"):
        out["/cubbi/command"] = (
            f"# what cubbi-connect starts (init.command of {name})\n{init['command']}\n".encode(),
            0o644, 0, 0)
    return out


def _env_hook(meta, name):
    lines = [f"# cubbi: the environment of image {name} (from its cubbi_image.yaml)",
             "_cubbi_isset() { ( [ -r \"$C/env\" ] && . \"$C/env\" >/dev/null 2>&1; "
             "eval \"test -n \\\"\\${$1:-}\\\"\" ); }",
             "if [ -d /cubbi-config ]; then",
             "    printf 'export CUBBI_CONFIG_DIR=/cubbi-config CUBBI_IMAGE_CONFIG_DIR=%s\\n' "
             f"{_q('/cubbi-config/' + name)} >> \"$C/env\"",
             "fi"]
    for var in meta.get("environment") or []:
        if var.get("default") is not None:
            line = f"export {var['name']}={_q(var['default'])}"
            lines.append(f"_cubbi_isset {var['name']} || printf '%s\\n' {_q(line)} >> \"$C/env\"")
    for var in meta.get("environment") or []:
        if var.get("required"):
            what = f" ({var['description']})" if var.get("description") else ""
            reason = (f"required variable {var['name']} is not set{what}; pass it with "
                      f"-e {var['name']}=VALUE or --env-file")
            lines.append(f"_cubbi_isset {var['name']} || fail {_q(reason)}")
    return "\n".join(lines) + "\n"


_PERSIST_FUNCS = r'''
# _pc_mkdirs DIR: create DIR and its missing parents; those under the
# user's home, /app or /cubbi-config belong to the session user
_pc_mkdirs() {
    [ -d "$1" ] && return 0
    _pc_mkdirs "$(dirname "$1")" || return 1
    mkdir "$1" || return 1
    case "$1" in
        "$user_home"/*|/app/*|/cubbi-config/*) chown "$CUBBI_UID:$CUBBI_GID" "$1";;
    esac
}
# _pc_link TYPE SOURCE TARGET: SOURCE becomes a symlink to TARGET (kept in
# /cubbi-config); the first time, TARGET is seeded with what the image has
_pc_link() {
    _pc_s=$2
    case "$_pc_s" in "~/"*) _pc_s="$user_home/${_pc_s#\~/}";; esac
    # never replace /, the project, cubbi's own folders, a home, or any
    # mount point (a host folder): rm -rf there would delete the user's files
    case "$_pc_s" in
        /|/app|/cubbi|/cubbi/*|/cubbi-config|/cubbi-config/*|"$user_home"|*/.|*/./*|*/..|*/../*)
            say "refused to link $_pc_s: cubbi does not replace that path"; return 1;;
    esac
    case /app/ in "$_pc_s"/*) say "refused to link $_pc_s: it holds /app"; return 1;; esac
    if [ -e "$_pc_s" ] && cut -d' ' -f5 /proc/self/mountinfo 2>/dev/null | grep -qxF "$_pc_s"; then
        say "refused to link $_pc_s: it is a mount point"; return 1
    fi
    _pc_mkdirs "$(dirname "$3")" || return 1
    if [ "$1" = directory ]; then
        if [ ! -d "$3" ]; then
            _pc_mkdirs "$3" || return 1
            if [ -d "$_pc_s" ] && [ ! -L "$_pc_s" ]; then
                cp -a "$_pc_s/." "$3/" && chown -R "$CUBBI_UID:$CUBBI_GID" "$3"
            fi
        fi
    elif [ ! -e "$3" ] && [ -f "$_pc_s" ] && [ ! -L "$_pc_s" ]; then
        cp -a "$_pc_s" "$3" && chown "$CUBBI_UID:$CUBBI_GID" "$3"
    fi
    if [ -L "$_pc_s" ]; then
        rm -f "$_pc_s"
    elif [ -e "$_pc_s" ]; then
        case "$_pc_s" in
            /app/*) say "kept $_pc_s: it exists in the project, so it is not linked to $3"
                    return 0;;
        esac
        rm -rf "$_pc_s" || return 1
    fi
    _pc_mkdirs "$(dirname "$_pc_s")" || return 1
    ln -s "$3" "$_pc_s" || return 1
    chown -h "$CUBBI_UID:$CUBBI_GID" "$_pc_s" 2>/dev/null
    return 0
}
'''


def _persist_hook(meta, name):
    lines = [f"# cubbi: the project's persistent tool state for image {name}",
             _PERSIST_FUNCS.strip(),
             "if [ -d /cubbi-config ]; then",
             f"    _pc_mkdirs {_q('/cubbi-config/' + name)} "
             f"|| fail {_q('cannot create /cubbi-config/' + name)}"]
    for pc in meta.get("persistent_configs") or []:
        lines.append(f"    _pc_link {pc['type']} {_q(pc['source'])} {_q(pc['target'])} "
                     f"|| fail {_q('cannot link ' + pc['source'] + ' to ' + pc['target'])}")
    if meta.get("persistent_configs"):
        lines += ["else",
                  "    say \"no persistent storage (no project and no mount): tool state is not kept\""]
    lines.append("fi")
    return "\n".join(lines) + "\n"

"""Images: image definitions (images/<name>/ with cubbi_image.yaml and a
Dockerfile), plain local Docker images, and building them.  A Debian base
made locally is baseos.py; the session's image hooks are imagehooks.py."""

import json
import os
import re
import sys

from .baseos import BASE_OS_TAG, ensure_base_os, image_exists  # noqa: F401 (image_exists: the service's)
from .dockerapi import APIError, json_stream
from .errors import CubbiError, NotFound
from .output import say
from .validate import check_image_ref, looks_like_path

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
    """cubbi/NAME:latest for a definition found by name; one given as a
    directory gets cubbi/NAME-HASH:latest (HASH: 8 hex digits of its real
    path), so `cubbi-image build ./dir` of a `name: base` never replaces
    cubbi/base:latest."""
    if defn.get("source") == "path":
        import hashlib

        where = hashlib.sha256(os.path.realpath(defn["path"]).encode()).hexdigest()[:8]
        return f"{TAG_REPO}/{defn['name']}-{where}:latest"
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
        say(progress, f"base image {base} is not here; using {BASE_OS_TAG}, made locally earlier")
        return BASE_OS_TAG
    say(progress, f"base image {base} is not here; pulling it")
    try:
        pull(api, base)
        return base
    except CubbiError as exc:
        reason = str(exc)
    if explicit:
        raise NotFound(f"base image {base} is not available locally and cannot be pulled "
                       f"({reason}); make one without a registry with 'cubbi-image "
                       f"bootstrap-base' and build with --base {BASE_OS_TAG}")
    say(progress, f"cannot pull {base} ({reason}); making {BASE_OS_TAG} locally with "
                   "debootstrap instead")
    return ensure_base_os(api, progress=progress)


def dockerfile_base(directory):
    """(whether the Dockerfile declares ARG BASE_IMAGE before its first
    FROM, its default or None)."""
    try:
        with open(os.path.join(directory, "Dockerfile"), encoding="utf-8",
                  errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return True, None
    for line in lines:
        words = line.strip().split(None, 1)
        if not words or words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and len(words) == 2:
            name, _, default = words[1].strip().partition("=")
            if name.strip() == "BASE_IMAGE":
                return True, default.strip().strip("\"'") or None
    return False, None


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
    uses_base, own = True, None
    if not base and defn.get("source") != "builtin":
        uses_base, own = dockerfile_base(defn["path"])
    # a definition of your own keeps its own ARG BASE_IMAGE=... default (the
    # fallback to a local Debian base applies when that is cubbi's default)
    base = resolve_base(api, base or (own if own != DEFAULT_BASE else None),
                        progress) if uses_base else None
    definition = {k: v for k, v in defn.items() if k not in ("path", "source")}
    labels = {L_NAME: defn["name"], L_DIGEST: digest(defn["path"]),
              L_DEFINITION: json.dumps(definition, separators=(",", ":"))}
    buildargs = {}
    if base:
        labels[L_BASE] = buildargs["BASE_IMAGE"] = base
    for key in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if os.environ.get(key):
            buildargs[key] = os.environ[key]
    params = {"t": tag, "buildargs": json.dumps(buildargs), "labels": json.dumps(labels),
              "rm": "1", "forcerm": "1", "nocache": "1" if no_cache else None}
    say(progress, f"building {tag} from {defn['path']}" + (f" on {base}" if base else "")
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
            say(progress, f"image {tag} is not built yet; building it from {defn['path']} "
                           "(first use, this can take minutes)")
            settings = engine.image_settings
            build(api, defn, base=settings.get("base"), ca_certs=settings.get("ca_certs"),
                  progress=progress,
                  log=(lambda text: [say(progress, ln) for ln in text.rstrip("\n").split("\n")
                                     if ln.strip()]) if progress else None)
        else:
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(L_DIGEST) and labels[L_DIGEST] != digest(defn["path"]):
                say(progress, f"note: {defn['path']} changed since {tag} was built; "
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

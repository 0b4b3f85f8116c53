"""A Debian base image made locally, for engines that reach no registry:
debootstrap into a temporary directory, then an import through the Engine
API (cubbi-image bootstrap-base, and the fallback of images.resolve_base).
"""

import os
import shutil
import subprocess
import tempfile

from .dockerapi import APIError, json_stream
from .errors import CubbiError
from .output import say
from .validate import check_image_ref

BASE_OS_TAG = "cubbi/base-os:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


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
        say(progress, f"bootstrapping Debian {suite} from {mirror} with debootstrap "
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
        say(progress, f"importing the root filesystem as {tag}")
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
    say(progress, f"made {tag}")
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
    POST /images/create?fromSrc=-.  The image's / gets mode 0755: a
    temporary directory is 0700, and on storage drivers that keep the
    layer's own root (vfs, btrfs, zfs) a 0700 / locks every non-root user
    out of everything, /bin/sh and /dev/null included."""
    os.chmod(root, 0o755)
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

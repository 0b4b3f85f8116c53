"""A directory imported as an image (cubbi-image bootstrap-base, the test
images) keeps the mode of its top: a temporary directory is 0700, and on a
storage driver without overlay (vfs, as in Docker-in-Docker; btrfs; zfs) that
mode becomes the container's /, so every non-root user is locked out of
/bin/sh and /dev/null.  The import gives / the mode 0755."""

import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

REPO = "cubbi-test/rootmode"


def _layer_root_modes(ref):
    """The mode of ./ in each layer of the saved image."""
    saved = subprocess.run(["docker", "image", "save", ref], capture_output=True, check=True).stdout
    outer = tarfile.open(fileobj=io.BytesIO(saved))
    manifest = json.load(outer.extractfile("manifest.json"))
    modes = []
    for layer in manifest[0]["Layers"]:
        inner = tarfile.open(fileobj=outer.extractfile(layer))
        for member in inner:
            if member.name in (".", "./"):
                modes.append(member.mode & 0o7777)
    return modes


def test_an_imported_directory_gives_the_image_a_searchable_root(engine, tmp_path):
    from cubbi_tools import baseos

    busybox = shutil.which("busybox")
    assert busybox, "tests need a static busybox on the host: apt-get install busybox-static"
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "echo"):
        os.symlink("busybox", root / "bin" / applet)
    os.chmod(root, 0o700)
    tag = os.urandom(4).hex()
    try:
        baseos._import_dir(engine, str(root), REPO, tag)
        assert _layer_root_modes(f"{REPO}:{tag}") == [0o755]
        proc = subprocess.run(["docker", "run", "--rm", "-u", "1000:1000", f"{REPO}:{tag}",
                               "/bin/sh", "-c", "cat /dev/null && echo reached"],
                              capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, "reached\n"), proc.stderr
    finally:
        subprocess.run(["docker", "image", "rm", "-f", f"{REPO}:{tag}"], capture_output=True)

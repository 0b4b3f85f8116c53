"""The standalone binary's start-up beside a virtualenv install (not a test).

    bench/bench_binary.sh [--runs N] [--onefile]

Times `cubbi-ls --json` (a link to the binary, with the sessions the engine
has now) and `cubbi --help`, from dist/cubbi/cubbi (dist/build's one-folder
build) and, with --onefile, dist/cubbi-onefile too, beside the same
commands of a fresh non-editable install in a throwaway virtualenv (what
./install gives; bench_session.py's install()).  Target: the binary
within 1.5x of the venv.  Build first: dist/build [--onefile]."""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_session as B  # noqa: E402  (Timer, install, row, sh)

TARGET = 1.5


def links(binary, where):
    """A folder of cubbi-* links to BINARY (cubbi --install-links)."""
    B.sh(binary, "--install-links", where)
    return os.path.join(where, "bin")


def main(argv=None):
    p = argparse.ArgumentParser(description="the cubbi binary vs a venv install")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--onefile", action="store_true", help="also time dist/cubbi-onefile")
    a = p.parse_args(argv)
    builds = [("one-folder", os.path.join(B.ROOT, "dist", "cubbi", "cubbi"))]
    if a.onefile:
        builds.append(("one-file", os.path.join(B.ROOT, "dist", "cubbi-onefile")))
    for _, path in builds:
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: no {path}: run dist/build first")
    work = tempfile.mkdtemp(prefix="cubbi-bench-bin-")
    venv_bin, why = B.install(work)
    if not venv_bin:
        sys.exit(f"bench: cannot install into a virtualenv: {why}")
    timer = B.Timer(a.runs)
    n = len(B.sh("docker", "ps", "-q", "--filter", "label=cubbi.session=true").split())
    print(f"interpreter of the venv: {sys.executable} (Python {sys.version.split()[0]}); "
          f"{n} running sessions; load average before: {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} cores; timing: {timer.name()}")
    print(f"{'':<44} {'binary (ms)':>16}   {'venv (ms)':>16}   ratio")
    for label, path in builds:
        bindir = links(path, os.path.join(work, label))
        ls_bin, help_bin, ls_venv, help_venv = timer.time([
            [os.path.join(bindir, "cubbi-ls"), "--json"], [path, "--help"],
            [os.path.join(venv_bin, "cubbi-ls"), "--json"],
            [os.path.join(venv_bin, "cubbi"), "--help"]])
        B.row(f"{label}: cubbi-ls --json", ls_bin, ls_venv, TARGET)
        B.row(f"{label}: cubbi --help", help_bin, help_venv, TARGET)


if __name__ == "__main__":
    main()

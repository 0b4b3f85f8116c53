"""`ssh cubbi-x true` beside `cubbi-connect x -- true` (not a test).

    bench/bench_ssh.sh [--runs N] [--image IMAGE]

One session of an image with sshd (default: the tests' cubbi-test/sshd:*,
made by tests/test_ssh.py), a throwaway key and cubbi config; its Host
block from cubbi-ssh-config; then both commands timed the same way as
bench_session.py (hyperfine -N when installed).  ssh pays for cubbi-ssh
--proxy (a cubbi start and an exec, as cubbi-connect) plus the SSH
handshake; a second row shows ssh over a ControlMaster (ssh -O), what
editors keep open.  Runs bin/ from the checkout; removes its session."""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_session as B  # noqa: E402  (Timer, env, row)


def image():
    out = B.sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "cubbi-test/sshd")
    return (out.split() or [None])[0]


def main(argv=None):
    p = argparse.ArgumentParser(description="ssh vs cubbi-connect into one session")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--image", default=None)
    a = p.parse_args(argv)
    img = a.image or image()
    if not img:
        sys.exit("bench: needs an image with sshd: run tests/test_ssh.py once, or give --image")
    work = tempfile.mkdtemp(prefix="cubbi-bench-ssh-")
    key = os.path.join(work, "id_ed25519")
    B.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    e = B.env()
    e.pop("SSH_AUTH_SOCK", None)
    os.environ.update({"CUBBI_CONFIG_DIR": B.CONFIG_DIR})
    os.environ.pop("SSH_AUTH_SOCK", None)
    B.sh("cubbi-config", "set", "ssh.public_key", key + ".pub", env=e)
    name = f"bs-{os.getpid()}"
    sid = B.sh("cubbi-create", "--image", img, "--name", name, "--no-mount", "--no-connect",
               "--wait", "-q", env=e).strip()
    timer = B.Timer(a.runs)
    try:
        cfg = os.path.join(work, "ssh_config")
        with open(cfg, "w") as fh:
            fh.write(B.sh("cubbi-ssh-config", sid, env=e))
        control = os.path.join(work, "cm")
        B.sh("ssh", "-F", cfg, "-o", "ControlMaster=yes", "-o", f"ControlPath={control}",
             "-o", "ControlPersist=120", "-fN", f"cubbi-{name}", env=e)
        print(f"image {img}; load average before: {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} cores; timing: {timer.name()}")
        print(f"{'':<44} {'ssh (ms)':>16}   {'connect (ms)':>16}   ratio")
        ssh, conn, mux = timer.time([
            ["ssh", "-F", cfg, f"cubbi-{name}", "true"],
            ["cubbi-connect", sid, "--", "true"],
            ["ssh", "-F", cfg, "-o", f"ControlPath={control}", "-o", "ControlMaster=no",
             f"cubbi-{name}", "true"]])
        B.row(f"ssh cubbi-{name} true / cubbi-connect -- true", ssh, conn)
        B.row("the same ssh over a ControlMaster (ssh -O)", mux, conn)
        subprocess.run(["ssh", "-F", cfg, "-o", f"ControlPath={control}", "-O", "exit",
                        f"cubbi-{name}"], capture_output=True, env=e)
    finally:
        subprocess.run(["cubbi-close", sid], capture_output=True, env=e)


if __name__ == "__main__":
    main()

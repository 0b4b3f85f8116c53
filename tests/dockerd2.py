"""A second Docker engine for fault tests, which may be stopped and started
again without touching the shared one that every other test uses.

Its own socket, --data-root, --exec-root and --pidfile under a temp
directory (so its own managed containerd too), no iptables rules and no
default bridge, in a network namespace of its own (unshare --net): the
networks it makes (cubbi-network) cannot clash with the shared engine's
bridges or routes, and nothing it runs reaches past it.  Images come from
the shared engine (docker save | docker load).
"""

import os
import signal
import subprocess
import time


class SecondEngine:
    def __init__(self, workdir):
        self.workdir = workdir
        self.sock = os.path.join(workdir, "docker.sock")
        self.url = "unix://" + self.sock
        self.log = os.path.join(workdir, "dockerd.log")
        self.proc = None

    def start(self, timeout=60):
        """Start dockerd and wait until it answers /_ping."""
        from cubbi_tools.dockerapi import DockerAPI
        from cubbi_tools.errors import CubbiError

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "--", "dockerd", "-H", self.url,
                 "--data-root", os.path.join(self.workdir, "data"),
                 "--exec-root", os.path.join(self.workdir, "exec"),
                 "--pidfile", os.path.join(self.workdir, "docker.pid"),
                 "--iptables=false", "--ip-forward=false", "--ip-masq=false",
                 "--bridge=none", "--cgroup-parent", "/cubbi-fault-tests"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        api = DockerAPI(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                api.get("/_ping", timeout=2)
                return self
            except CubbiError:
                # the socket appears when dockerd is ready: poll it briefly
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the second dockerd did not start: {self.tail()}")

    def tail(self, n=20):
        try:
            with open(self.log, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=60):
        """Stop dockerd (SIGTERM, as systemctl stop does) and wait until it
        and its containerd are gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def docker(self, *args, **kw):
        return subprocess.run(["docker", "-H", self.url, *args], capture_output=True, text=True,
                              **kw)

    def load_image(self, ref):
        """Copy image REF from the shared engine into this one."""
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", self.url, "load"], stdin=save.stdout,
                              capture_output=True, text=True)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"could not copy {ref} into the second dockerd: {load.stderr}")

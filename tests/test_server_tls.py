"""An https:// remote: cubbi-server behind a TLS-terminating proxy, as the
README asks for anything beyond loopback (Debian's stunnel4 here), with a
test CA made with openssl in the test.  The client trusts it through
SSL_CERT_FILE (OpenSSL's own variable, which Python's default context
honours); without it the certificate is refused with one clear line.
The commands (ls, create, connect -- CMD, logs, close) work over https, and
the WebSocket terminal over wss, interactive and resized in a real pty."""

import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN, cubbi_env, one_line_error
from ptyterm import Terminal
from serverproc import stop_process



def _openssl(*args, cwd):
    if not shutil.which("openssl"):
        pytest.fail("the TLS tests make their CA with openssl: apt-get install openssl")
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stderr)


def make_ca(d):
    """A test CA and a certificate for localhost/127.0.0.1 signed by it:
    (ca.pem, server.pem, server.key) in d."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=cubbi test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as fh:
        fh.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                 "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
                 "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return tuple(os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TLSProxy:
    """stunnel4 terminating TLS on 127.0.0.1:port and forwarding to target."""

    def __init__(self, workdir, cert, key, target_port):
        self.workdir, self.cert, self.key, self.target = workdir, cert, key, target_port
        self.proc = None

    def start(self, ca, timeout=20):
        exe = shutil.which("stunnel4") or shutil.which("stunnel")
        if not exe:
            pytest.fail("the TLS tests need Debian's stunnel4 on the host: "
                        "apt-get install stunnel4 (./install --dev installs it)")
        for _ in range(5):  # a port another process took meanwhile: pick another
            self.port = _free_port()
            conf = os.path.join(self.workdir, "stunnel.conf")
            with open(conf, "w") as fh:
                fh.write(f"foreground = yes\npid =\ndebug = notice\n[cubbi]\n"
                         f"accept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{self.target}\n"
                         f"cert = {self.cert}\nkey = {self.key}\n")
            self.log = os.path.join(self.workdir, "stunnel.log")
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen([exe, conf], stdout=log, stderr=subprocess.STDOUT)
            if self._ready(ca, timeout):
                return self
            text = open(self.log).read()
            self.stop()
            if "Address already in use" not in text:
                break
        pytest.fail(f"stunnel did not start:\n{open(self.log).read()}")

    def _ready(self, ca, timeout):
        """A TLS handshake with the CA succeeds (True), or stunnel ended /
        the deadline passed (False)."""
        ctx = ssl.create_default_context(cafile=ca)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost"):
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def stop(self):
        stop_process(self.proc)


@pytest.fixture(scope="module")
def tls(engine, tmp_path_factory, start_module_server):
    """A cubbi-server on loopback behind stunnel4: {url, ca, server}."""
    d = str(tmp_path_factory.mktemp("tls"))
    ca, cert, key = make_ca(d)
    srv = start_module_server()
    proxy = TLSProxy(d, cert, key, srv.port).start(ca)
    yield {"url": f"https://localhost:{proxy.port}", "ca": ca, "server": srv, "proxy": proxy}
    proxy.stop()


@pytest.fixture
def remote(tls, cubbi):
    r = cubbi("cubbi-remote", "add", "tls", tls["url"], "--token", "-",
              input=tls["server"].token("alice"), env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    return {"CUBBI_REMOTE": "tls", "CUBBI_SECRETS": "file", "SSL_CERT_FILE": tls["ca"]}


def test_commands_and_the_terminal_work_over_https_and_wss(cubbi, tls, remote, busybox_image,
                                                          prefix):
    r = cubbi("cubbi-ls", "--json", env=remote)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-tls", "--json",
              "--no-connect", "--wait", env=remote)
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["remote"] == "tls" and rec["status"] == "running", rec
    r = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*", env=remote)
    assert [x["id"] for x in r.json()] == [rec["id"]], r
    # connect -- CMD: stdin, both streams and the status over the wss terminal
    r = cubbi("cubbi-connect", rec["id"], "--", "sh", "-c", "tr a-z A-Z; echo err >&2; exit 3",
              input="over tls\n", env=remote)
    assert (r.exit_code, r.stdout, r.stderr) == (3, "OVER TLS\n", "err\n"), r
    r = cubbi("cubbi", "-r", "tls", "connect", rec["id"], "--", "id", "-u",
              env={k: v for k, v in remote.items() if k != "CUBBI_REMOTE"})
    assert (r.exit_code, r.stdout) == (0, "1000\n"), r
    r = cubbi("cubbi-logs", "--json", rec["id"], env=remote)
    assert r.exit_code == 0 and any(x["line"] == "cubbi-init: ready" for x in r.json()), r
    # the interactive terminal over wss, resized
    env = cubbi_env({"CUBBI_CONFIG_DIR": str(cubbi.config_dir), "TERM": "xterm", **remote})
    with Terminal([os.path.join(BIN, "cubbi-connect"), rec["id"]], env, rows=31, cols=97) as t:
        t.expect(rb"[$#] ")
        start = len(t.screen)
        t.type('echo "[size $(stty size) $(tty)]"\n')
        assert t.expect(rb"\[size (\d+ \d+) /dev/pts/\d+\]", start=start).group(1) == b"31 97"
        t.resize(44, 132)
        deadline = time.monotonic() + 15
        size = None
        while size != b"44 132" and time.monotonic() < deadline:
            start = len(t.screen)
            t.type('echo "[size $(stty size) $(tty)]"\n')
            size = t.expect(rb"\[size (\d+ \d+) ", start=start).group(1)
        assert size == b"44 132", t.text()
        t.type("exit 6\n")
        assert t.wait(30) == 6, t.text()
    r = cubbi("cubbi-close", rec["id"], env=remote)
    assert r.exit_code == 0, r
    r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", env=remote)
    assert r.stdout == "", r
    # what went through the proxy was TLS: the plain port of the proxy speaks no HTTP
    with socket.create_connection(("127.0.0.1", tls["proxy"].port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = s.recv(100)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer


def test_a_certificate_the_client_does_not_trust_is_refused(cubbi, tls, remote, busybox_image,
                                                           prefix):
    untrusted = {k: v for k, v in remote.items() if k != "SSL_CERT_FILE"}
    for argv in (["cubbi-ls"], ["cubbi-create", "--image", busybox_image, "--name",
                                f"{prefix}-no", "--no-connect"],
                 ["cubbi-connect", "x", "--", "true"]):
        r = cubbi(*argv, env=untrusted)
        one_line_error(r, 4, "certificate verify failed", tls["url"])
    # nothing was made on the server
    r = cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*", env=remote)
    assert r.exit_code == 0 and r.stdout == "", r
    # the WebSocket client refuses it too (wss with the default trust)
    from cubbi_tools.remote import RemoteService
    from cubbi_tools.errors import EngineUnreachable

    svc = RemoteService("tls", url=tls["url"], token="cubbi_x_y")
    with pytest.raises(EngineUnreachable, match="certificate verify failed"):
        svc.websocket({"id": "x"}, ["true"])


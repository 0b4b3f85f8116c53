"""The web page in a real headless Chromium (Debian's chromium and
chromium-driver, driven with selenium; no browser download), against a real
cubbi-server and engine started here: sign in with a pasted token, create a
session, type in its terminal and read the screen back, resize the window
and see `stty size` follow, several terminals in tabs, follow the log,
close the session and see it leave the list, sign out.  Then what a page
on another origin (another port of the same host: same site, so the
SameSite=Strict cookie still goes with its requests) cannot do, and the
page behind a TLS proxy under a path prefix (https, wss, Secure cookie).

One browser for the module.  A failed test says why in pytest's output
(a CI run keeps nothing else): a wait that timed out names what the page
showed then (its error lines, each session row's status, each terminal's
state), and the test's report has the page again, the browser's console
(the page logs each failed request there), the tail of each log of the
test's servers and TLS proxy, and where each server's requests wait (its
SIGUSR1 stacks), all taken before the fixtures are torn down.  It also leaves a screenshot in
$CUBBI_TEST_SCREENSHOTS (default: a cubbi-web-screenshots folder in the
system's temp directory) and names it.  CUBBI_WEB_DOCS=DIR also saves the
README's two screenshots there (docs/web-sessions.png, docs/web-terminal.png).
"""

import http.client
import json
import os
import re
import shutil
import tempfile
import threading
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# what works on a machine whose network is closed (no Google lookups)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]
WAIT = 60


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """The TLS test's CA, certificate and key ({ca, cert, key}), made before
    the browser starts so that it trusts the key from the start."""
    from test_server_tls import make_ca

    ca, cert, key = make_ca(str(tmp_path_factory.mktemp("tls")))
    return {"ca": ca, "cert": cert, "key": key}


def spki_hash(cert):
    """base64 SHA-256 of a certificate's public key (Chromium's
    --ignore-certificate-errors-spki-list)."""
    import base64
    import hashlib
    import subprocess

    pub = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser(tls_files):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}: apt-get install chromium "
                    "chromium-driver (./install --dev installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium-manager never downloads a browser
    profile = tempfile.mkdtemp(prefix="cubbi-web-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # the TLS test's certificate is trusted, not an error let through: with
    # accept_insecure_certs each new connection's certificate error waited
    # for the browser's go-ahead, under load longer than the server's
    # header_timeout (10 s) kept the silent connection, and the request
    # on it failed (a load of the page seen so, a close suspected)
    for flag in FLAGS + [f"--user-data-dir={profile}",
                         f"--ignore-certificate-errors-spki-list={spki_hash(tls_files['cert'])}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, for failures
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def report_on_failure(request):
    """A failed browser test's report has what a screenshot and the
    server's files would show (pytest prints it with the failure): the
    page's state, the browser's console, the tails of the test's logs and
    where its servers' requests wait; taken before the fixtures are torn
    down (sessions closed, servers stopped).  A screenshot is saved too."""
    if "browser" not in request.fixturenames:
        yield
        return
    driver = request.getfixturevalue("browser")
    logs, servers = _logs(request)
    _safely(lambda: driver.get_log("browser"))  # the console from here on is this test's

    def report():
        out = [f"the page: {_safely(lambda: page_state(driver))}",
               f"the browser's console:\n{_safely(lambda: console(driver))}"]
        out += [f"the last lines of {path}:\n{tail(path)}" for path in logs()]
        out += [f"where the requests of the server on {srv.url} wait:\n"
                f"{_safely(lambda: waiting(srv))}" for srv in servers()]
        d = os.environ.get("CUBBI_TEST_SCREENSHOTS") or os.path.join(
            tempfile.gettempdir(), "cubbi-web-screenshots")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, re.sub(r"[^\w.-]", "_", request.node.name) + ".png")
        out.append(f"screenshot of the failed page: {path}" if _safely(
            lambda: driver.save_screenshot(path)) is True else "no screenshot")
        return "\n--- ".join(out)

    request.node.on_failure = [("the page, its console and its servers", report)]
    yield


def _safely(fn):
    try:
        return fn()
    except Exception as exc:  # the browser may be what failed
        return f"(not available: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def _logs(request):
    """A function listing the log files of the test's servers (server.log)
    and of anything else it ran in its temp dir (the TLS proxy's
    stunnel.log), once the test has run."""
    web = request.getfixturevalue("web") if "web" in request.fixturenames else None
    starter = (request.getfixturevalue("start_server")
               if "start_server" in request.fixturenames else None)
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None

    def servers():
        found = ([web["server"]] if web else []) + (list(starter.started) if starter else [])
        return [srv for srv in found if srv.proc and srv.proc.poll() is None]

    def found():
        paths = [web["server"].log] if web else []
        paths += [srv.log for srv in starter.started] if starter else []
        paths += sorted(str(p) for p in tmp.rglob("*.log")) if tmp else []
        return [p for p in dict.fromkeys(paths) if os.path.exists(p)]

    return found, servers


CHECKOUT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def ours_frame(line):
    """Whether a dump's frame line is in the checkout's own code (not a
    package in a venv that may live in the checkout too)."""
    path = os.path.realpath(line.strip().split(":", 1)[0])
    return path.startswith(CHECKOUT + os.sep) and "site-packages" not in path


def waiting(srv, timeout=10):
    """The stacks of the server's greenlets that are in the checkout's code
    (a request under way, a terminal), from its SIGUSR1 dump; idle
    connections and the server's own loop are left out."""
    import signal

    from cubbi_tools.commands.server import STACKS_END

    def dumps():
        with open(srv.log, encoding="utf-8", errors="replace") as fh:
            return fh.read().count(STACKS_END)

    before = dumps()
    os.kill(srv.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while dumps() == before:
        if time.monotonic() > deadline:
            return "(no answer to SIGUSR1)"
        time.sleep(0.05)
    with open(srv.log, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    dump = text[text.rindex("(SIGUSR1):"):text.rindex(STACKS_END)]
    blocks = ["- " + b for b in dump.split("\n- ")[1:]]
    ours = [b for b in blocks if "in read_requestline" not in b and "in serve_forever" not in b
            and any(ours_frame(line) for line in b.splitlines()[1:])]
    return "\n".join(b.rstrip() for b in ours) or "(nothing under way)"


QUICK_LIST = re.compile(r'"GET (/[^/ ]+)*/sessions\?all=1 HTTP/1.1" 200 \d+ 0\.')


def tail(path, lines=40):
    """The last lines of a log; of the page's lists every 2 s, those that
    were answered (200) within a second are left out and counted."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        kept = [line for line in fh if not QUICK_LIST.search(line)]
    with open(path, encoding="utf-8", errors="replace") as fh:
        quick = sum(1 for line in fh if QUICK_LIST.search(line))
    return "".join(kept[-lines:]).rstrip() + f"\n({quick} quick lists of the page left out)"


# what the page shows: its error lines, sign-in state, rows and terminals
PAGE_STATE = """
    const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
    const main = document.getElementById('main');
    return {url: location.href, signed_in: !!main && !main.hidden,
            list_error: text('list-error'), close_error: text('close-error'),
            create_error: text('create-error'),
            signin_error: text('signin-error'),
            rows: Array.from(document.querySelectorAll('#sessions tbody tr'), (tr) =>
                `${tr.dataset.name} (${tr.dataset.id}): ${tr.dataset.status}` +
                (tr.dataset.error ? ` [${tr.dataset.error}]` : '')),
            terminals: Array.from(document.querySelectorAll('#panes .pane'), (p) =>
                `${p.dataset.session}: ${p.dataset.state}`)};
"""


def page_state(driver):
    return driver.execute_script(PAGE_STATE)


def console(driver):
    """The browser's console since the last look, the test's start (the
    page's own warnings, failed requests), one line each."""
    entries = driver.get_log("browser")
    return "\n".join(f"{e.get('level')} {e.get('message')}" for e in entries[-60:]) or "(empty)"


@pytest.fixture(scope="module")
def web(engine, busybox_image, start_module_server):
    """A cubbi-server for the page, and alice's token."""
    srv = start_module_server()
    return {"server": srv, "url": srv.url, "token": srv.token("alice")}


# -- helpers -------------------------------------------------------------------
def until(driver, what, fn, timeout=WAIT):
    """fn(driver)'s first truthy value, polled until the deadline; past it,
    a TimeoutException that says what the page showed then."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: fn(d))
    except TimeoutException:
        raise TimeoutException(f"waited {timeout}s for {what}; the page then: "
                               f"{_safely(lambda: page_state(driver))}") from None


def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def visible(driver, css):
    found = by_css(driver, css)
    return found[0] if found and found[0].is_displayed() else None


def sign_in(driver, url, token):
    driver.delete_all_cookies()
    driver.get(url)
    field = until(driver, "the sign-in form", lambda d: visible(d, "#token"))
    field.send_keys(token)
    visible(driver, "#signin-button").click()
    until(driver, "the session list", lambda d: visible(d, "#sessions"))


def row(driver, name):
    found = by_css(driver, f'#sessions tbody tr[data-name="{name}"]')
    return found[0] if found else None


def create(driver, image, name):
    visible(driver, "#create-image").clear()
    visible(driver, "#create-image").send_keys(image)
    visible(driver, "#create-name").send_keys(name)
    visible(driver, "#create-button").click()

    def made(d):
        error = by_css(d, "#create-error")[0].text
        if error:
            pytest.fail(f"the page could not create {name}: {error}")
        r = row(d, name)
        return r is not None and r.get_attribute("data-status") == "running" and r

    return until(driver, f"session {name} running in the list", made)


def close(driver, name):
    """Click the row's Close and wait for the row to go; the page's reason
    when the service could not close it fails the test at once."""
    row(driver, name).find_element("css selector", "button.close-session").click()

    def gone(d):
        error = by_css(d, "#close-error")[0].text
        if error:
            pytest.fail(f"the page could not close {name}: {error}")
        return row(d, name) is None

    until(driver, f"{name} gone from the list", gone)
    assert visible(driver, "#sessions"), page_state(driver)  # gone, not signed out


def open_terminal(driver, name):
    row(driver, name).find_element("css selector", "button.open-terminal").click()
    panes = by_css(driver, "#panes .pane")
    pane = panes[-1]
    until(driver, "the terminal's WebSocket", lambda d: pane.get_attribute("data-state") == "open")
    return pane


def screen(driver, pane):
    """The lines the terminal shows (xterm.js's DOM renderer)."""
    lines = driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.xterm-rows > div'))"
        ".map(d => d.textContent)", pane)
    return [line.replace("\u00a0", " ").rstrip() for line in lines]


def type_in(pane, text):
    pane.find_element("css selector", ".xterm-helper-textarea").send_keys(text)


def on_screen(driver, pane, pattern):
    """The first match of pattern on a line of the screen, waited for."""
    rx = re.compile(pattern)
    return until(driver, f"{pattern!r} on the terminal screen",
                 lambda d: next((m for line in screen(d, pane) if (m := rx.fullmatch(line))),
                                None))


def api(url, method, path, token=None, cookie=None, headers=None, body=None):
    """(status, JSON body) of one request to the service."""
    import urllib.parse

    p = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if cookie:
        hdrs["Cookie"] = f"cubbi_browser={cookie}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, (json.loads(data) if data.strip() else None)


def names(url, token):
    st, body = api(url, "GET", "/sessions?all=1", token=token)
    assert st == 200, body
    return {s["name"] for s in body["sessions"]}


def docs_shot(driver, name):
    d = os.environ.get("CUBBI_WEB_DOCS")
    if d:
        driver.save_screenshot(os.path.join(d, name))


# -- the page --------------------------------------------------------------------
def test_sign_in_terminal_resize_tabs_log_close(browser, web, busybox_image, prefix):
    d, url, token = browser, web["url"], web["token"]
    d.set_window_size(1200, 900)
    sign_in(d, url + "/", token)
    cookie = d.get_cookie("cubbi_browser")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert not cookie["secure"]  # plain http on loopback; the TLS test sees Secure
    assert d.execute_script("return document.cookie") == ""  # out of the page's reach

    name = f"{prefix}-web"
    create(d, busybox_image, name)
    create(d, busybox_image, f"{prefix}-two")
    assert {name, f"{prefix}-two"} <= names(url, token)
    docs_shot(d, "web-sessions.png")

    pane = open_terminal(d, name)
    type_in(pane, "echo hello-$RANDOM\n")
    said = on_screen(d, pane, r"hello-(\d+)")  # the output line, not the command's
    assert said.group(1)

    # paste (a paste event, as the clipboard gives it), colours, Ctrl-C
    d.execute_script("""
        const dt = new DataTransfer();
        dt.setData('text/plain', 'echo pasted-$((40+2))\\n');
        arguments[0].dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt,
                                                               bubbles: true}));
    """, pane.find_element("css selector", ".xterm-helper-textarea"))
    on_screen(d, pane, r"pasted-42")
    type_in(pane, "printf '\\033[31mred-%s\\033[0m\\n' text\n")
    on_screen(d, pane, r"red-text")
    assert d.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.xterm-rows span'))"
        ".filter(s => s.textContent.includes('red-text')).map(s => s.className)", pane) \
        == ["xterm-fg-1"]
    type_in(pane, "echo sleep-$((1+1)); sleep 300; echo not-interrupted\n")
    from selenium.webdriver.common.keys import Keys

    # once the command line runs: a ^C typed while the shell still edits
    # the line is read by its line editor, not turned into SIGINT
    on_screen(d, pane, r"sleep-2")
    type_in(pane, Keys.CONTROL + "c")
    type_in(pane, "echo after-$((2*3))-ctrl-c\n")
    on_screen(d, pane, r"after-6-ctrl-c")  # long before the sleep would end

    # the window's size reaches the TTY
    rows, cols = int(pane.get_attribute("data-rows")), int(pane.get_attribute("data-cols"))
    d.set_window_size(800, 600)
    until(d, "the terminal fitted to the smaller window",
          lambda _: int(pane.get_attribute("data-cols")) < cols
          and int(pane.get_attribute("data-rows")) < rows)
    small = (int(pane.get_attribute("data-rows")), int(pane.get_attribute("data-cols")))
    type_in(pane, "clear; stty size\n")
    on_screen(d, pane, rf"{small[0]} {small[1]}")
    d.set_window_size(1200, 900)
    until(d, "the terminal fitted to the larger window",
          lambda _: int(pane.get_attribute("data-cols")) > small[1])

    # a second terminal in a tab of its own: another shell
    second = open_terminal(d, name)
    assert len(by_css(d, "#tabs .tab")) == 2 and second.is_displayed() and not pane.is_displayed()
    type_in(second, "echo $$ > /tmp/second; echo tab-two-$((6*7))\n")
    on_screen(d, second, r"tab-two-42")
    if os.environ.get("CUBBI_WEB_DOCS"):
        type_in(second, "top\n")
        on_screen(d, second, r"\s*PID\s+PPID\s+USER.*")
        docs_shot(d, "web-terminal.png")
        type_in(second, "q")
    by_css(d, "#tabs .tab")[0].click()
    assert pane.is_displayed() and not second.is_displayed()

    # follow the log: the stream is open until Stop (logged when it ends)
    sid = row(d, name).get_attribute("data-id")
    row(d, name).find_element("css selector", "button.follow-log").click()
    until(d, "the log panel", lambda _: visible(d, "#logs-text"))
    visible(d, "#logs-stop").click()
    until(d, "the followed log in the access log", lambda _: log_lines(
        web["server"], f"GET /sessions/{sid}/logs?follow=1&tail=200 HTTP/1.1\" 200"))

    # a reload ends the page's shells (the service stops them) and opens none
    type_in(pane, "echo pid-$$\n")
    pid = on_screen(d, pane, r"pid-(\d+)").group(1)
    d.refresh()
    until(d, "the session list after the reload", lambda _: row(d, name))
    assert not by_css(d, "#tabs .tab")
    pane = open_terminal(d, name)
    type_in(pane, f"while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; echo gone-{pid}\n")
    on_screen(d, pane, rf"gone-{pid}")

    # close from the page: it leaves the list (and the service)
    close(d, name)
    assert name not in names(url, token)
    assert not by_css(d, "#panes .pane")  # its terminals went with it

    # the token is in no URL, page, storage or log line
    assert token not in d.current_url and token not in d.page_source
    assert d.execute_script("return localStorage.length + sessionStorage.length") == 0
    with open(web["server"].log, encoding="utf-8", errors="replace") as fh:
        log = fh.read()
    assert token not in log and token.rsplit("_", 1)[1] not in log
    assert cookie["value"] not in log and cookie["value"] not in d.page_source


def test_sign_out_ends_the_browser_session_on_the_service(browser, web):
    d, url = browser, web["url"]
    sign_in(d, url + "/", web["token"])
    cookie = d.get_cookie("cubbi_browser")["value"]
    assert api(url, "GET", "/sessions", cookie=cookie)[0] == 200
    visible(d, "#sign-out").click()
    until(d, "the sign-in form again", lambda _: visible(d, "#token"))
    # the old cookie, replayed from anywhere, is refused: the session is gone on the service
    st, body = api(url, "GET", "/sessions", cookie=cookie)
    assert st == 401 and body["kind"] == "auth", body
    d.refresh()
    until(d, "the sign-in form after a reload", lambda _: visible(d, "#token"))


def test_a_close_the_service_refuses_is_said_and_can_be_made_again(browser, engine, busybox_image,
                                                                   start_server, tmp_path,
                                                                   prefix):
    """The engine refuses the remove: the row does not stay "closing" with
    the reason gone at the next list (as a CI run once saw a row stay,
    with nothing to say why); it shows its status again, the reason stays
    on the page, and Close works once the engine does."""
    from engine_proxy import EngineProxy

    proxy = EngineProxy(str(tmp_path / "engine.sock"))
    try:
        srv = start_server(env={"DOCKER_HOST": proxy.url})
        d = browser
        sign_in(d, srv.url + "/", srv.token("alice"))
        name = f"{prefix}-kept"
        create(d, busybox_image, name)
        proxy.refuse = (r"^DELETE /(v[\d.]+/)?containers/", 400, "the engine says no, for now")
        row(d, name).find_element("css selector", "button.close-session").click()
        error = until(d, "the close's error on the page",
                      lambda _: by_css(d, "#close-error")[0].text)
        assert name in error and "the engine says no, for now" in error, error
        assert proxy.refused
        lists = len(log_lines(srv, "GET /sessions?all=1 HTTP/1.1\" 200"))
        until(d, "two more lists", lambda _: len(
            log_lines(srv, "GET /sessions?all=1 HTTP/1.1\" 200")) >= lists + 2)
        r = row(d, name)
        assert r.get_attribute("data-status") == "running", page_state(d)
        assert "says no" in r.get_attribute("data-error")
        assert by_css(d, "#close-error")[0].text == error  # not wiped by the lists
        proxy.refuse = None
        close(d, name)  # clicked again: gone, and the old error with it
        assert not by_css(d, "#close-error")[0].text
    finally:
        proxy.stop()


# -- another origin ----------------------------------------------------------------
@pytest.fixture(scope="module")
def other_origin():
    """A page on another port of the same host: another origin, the same site."""
    import http.server

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title><p>another origin</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def log_lines(server, needle):
    with open(server.log, encoding="utf-8", errors="replace") as fh:
        return [line for line in fh if needle in line]


def test_another_origin_gets_neither_the_websocket_nor_a_session(browser, web, other_origin,
                                                                 busybox_image, prefix):
    d, url, token = browser, web["url"], web["token"]
    sign_in(d, url + "/", token)
    name = f"{prefix}-mine"
    create(d, busybox_image, name)
    cookie = d.get_cookie("cubbi_browser")["value"]

    d.get(other_origin)
    # the same site: the browser sends the cookie, and the service refuses the origin
    ws = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const ws = new WebSocket(arguments[0]);
        let opened = false;
        ws.onopen = () => { opened = true; };
        ws.onclose = (e) => done({opened, code: e.code});
    """, url.replace("http://", "ws://") + f"/sessions/{name}/connect?tty=1")
    assert ws == {"opened": False, "code": 1006}, ws
    assert log_lines(web["server"], f"GET /sessions/{name}/connect?tty=1 HTTP/1.1\" 403"), \
        "the upgrade was not refused with 403"

    sneaky = f"{prefix}-sneaky"
    for kind, script in (
        ("no-cors", "fetch(arguments[0] + '/sessions', {method: 'POST', mode: 'no-cors', "
                    "credentials: 'include', headers: {'Content-Type': 'text/plain'}, "
                    "body: arguments[1]}).then(() => done('sent'), e => done(String(e)));"),
        ("form", "const f = document.createElement('form'); f.method = 'POST'; "
                 "f.action = arguments[0] + '/sessions'; f.enctype = 'text/plain'; "
                 "const i = document.createElement('input'); i.name = arguments[1]; "
                 "f.append(i); document.body.append(f); f.submit(); done('sent');"),
    ):
        before = len(log_lines(web["server"], "POST /sessions HTTP/1.1\" 403"))
        out = d.execute_async_script("const done = arguments[arguments.length - 1]; " + script,
                                     url, json.dumps({"image": busybox_image, "name": sneaky}))
        assert out == "sent", (kind, out)
        until(d, f"the {kind} POST refused with 403 (the cookie went with it)",
              lambda _: len(log_lines(web["server"], "POST /sessions HTTP/1.1\" 403")) > before,
              timeout=20)
        d.get(other_origin)
    assert sneaky not in names(url, token)

    # from no page at all (curl with a stolen cookie): no CSRF token, no change
    st, body = api(url, "POST", "/sessions", cookie=cookie,
                   body={"image": busybox_image, "name": sneaky})
    assert st == 403 and "CSRF" in body["error"], body
    st, body = api(url, "DELETE", f"/sessions/{name}", cookie=cookie)
    assert st == 403 and name in names(url, token), body
    # a bearer-token client is unaffected by all of it
    st, body = api(url, "DELETE", f"/sessions/{name}", token=token,
                   headers={"Origin": other_origin.rstrip("/")})
    assert st == 200, body


# -- behind a TLS proxy under a path prefix ----------------------------------------------
def test_behind_a_tls_proxy_under_a_path_prefix(browser, tls_files, engine, busybox_image,
                                                start_server, tmp_path, prefix):
    # prefix after start_server: its sessions are closed before the server
    # cleans up the user's network, even when the test fails half way
    from test_server_tls import TLSProxy

    ca, cert, key = tls_files["ca"], tls_files["cert"], tls_files["key"]
    srv = start_server(config_text=(
        "server:\n  heartbeat: 1\n  base_path: /cubbi\nstate:\n  database: server.db\n"
        "policy:\n  images:\n    any_local: true\n"))
    proxy = TLSProxy(str(tmp_path), cert, key, srv.port).start(ca)
    try:
        base = f"https://localhost:{proxy.port}/cubbi"
        d = browser
        sign_in(d, base, srv.token("alice"))  # redirected to /cubbi/
        assert d.current_url == base + "/"
        cookie = d.get_cookie("cubbi_browser")
        assert cookie["secure"] and cookie["path"] == "/cubbi/", cookie
        name = f"{prefix}-tls"
        sid = create(d, busybox_image, name).get_attribute("data-id")
        pane = open_terminal(d, name)  # wss://localhost:PORT/cubbi/sessions/...
        type_in(pane, "echo over-$((20+3))-wss\n")
        on_screen(d, pane, r"over-23-wss")
        close(d, name)
        # the terminal went through the proxy under the prefix (logged when it ended)
        until(d, "the terminal's line in the access log",
              lambda _: log_lines(srv, f"GET /cubbi/sessions/{sid}/connect?tty=1"), timeout=20)
    finally:
        proxy.stop()

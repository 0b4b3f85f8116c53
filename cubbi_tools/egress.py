"""A session's egress allowlist on the engine (cubbi-create --allow-host).

A session with an allowlist sits alone on an internal network of its own
(cubbi-egress-SID: `internal`, so the engine forwards nothing out of it and
its embedded DNS answers no outside name; `inhibit_ipv4`, so the host has no
address on it either).  Its only way out is a proxy
container, cubbi-egress-SID: tinyproxy (Debian's package, the image in
data/egress-proxy), on that network under the alias cubbi-egress and on the
outward network (the one the session would otherwise have joined).  The
proxy resolves names and passes HTTP and HTTPS (CONNECT) only to the
allowed HOST[:PORT]s (tinyproxy's URL filter, default deny); the session's
HTTP(S)_PROXY point at it.  Raw IPs, other hosts, DNS and UDP get nowhere.

One proxy per session: its allowlist is the session's, its log is the
session's egress log (egress_log: what it refused), and it goes with the
session: LocalEngine.close removes it and its network; a session that ends
by itself (--idle-timeout: the engine removes it) is watched by its proxy
(WATCH: once it has seen the session's alias SESSION_ALIAS resolve on the
internal network, MISSES lookups in a row that find nothing end tinyproxy,
and the engine removes the proxy, made with AutoRemove); the network left
is swept by the next create (reaper.sweep, helpers_only) or a server's
sweep.  Nothing secret is in its config, labels or environment: host names
only.
"""

import os
import re
import time

from .dockerapi import APIError
from .errors import CubbiError

LABEL = "cubbi.egress"
L_SESSION = "cubbi.egress.session"
L_ROLE = "cubbi.egress.role"
L_OWNER = "cubbi.egress.owner"
PREFIX = "cubbi-egress-"
ALIAS = "cubbi-egress"
PORT = 3128
DIR = "/cubbi-egress"
READY = "Reloading config file finished"  # tinyproxy read its config and the filter
START_TIMEOUT = float(os.environ.get("CUBBI_EGRESS_START_TIMEOUT") or 30)
NO_PROXY = "localhost,127.0.0.1,::1"
SESSION_ALIAS = "cubbi-session"  # the session's name on its own internal network
WATCH_EVERY, MISSES = 2, 3
# the proxy's entry: tinyproxy, ended once its session is gone (the engine's DNS
# no longer knows the session's alias on the network they share)
WATCH = f"""\
tinyproxy -d -c {DIR}/tinyproxy.conf &
pid=$!
trap 'kill $pid 2>/dev/null' TERM INT HUP
seen=0 miss=0
while kill -0 $pid 2>/dev/null; do
    if timeout 3 getent hosts {SESSION_ALIAS} >/dev/null 2>&1; then
        seen=1 miss=0
    elif [ $seen = 1 ]; then
        miss=$((miss + 1))
        if [ $miss -ge {MISSES} ]; then
            echo "cubbi-egress: the session is gone; stopping" >&2
            kill $pid
            break
        fi
    fi
    sleep {WATCH_EVERY} & wait $!
done
wait $pid
"""

CONFIG = f"""\
# cubbi: a session's egress proxy (cubbi_tools/egress.py); tinyproxy.conf(5)
Port {PORT}
Timeout 600
LogLevel Connect
MaxClients 100
DisableViaHeader Yes
Filter "{DIR}/filter"
FilterURLs On
FilterType ere
FilterDefaultDeny Yes
"""
# tinyproxy's refusals: a URL or CONNECT target its filter denies, a CONNECT port
_REFUSED = re.compile(r'Proxying refused on filtered (?:url|domain) "([^"]*)"'
                      r'|Refused CONNECT method on port (\d+)')


def names(sid):
    """{network, proxy} of session SID's egress."""
    return {"network": PREFIX + sid, "proxy": PREFIX + sid}


def session_env(proxy_url=None):
    """The variables that send a session's HTTP(S) through its proxy."""
    url = proxy_url or f"http://{ALIAS}:{PORT}"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY}


def filter_rules(hosts):
    """tinyproxy filter lines (extended regexes on the request's URL; a
    CONNECT's is HOST:PORT) letting through exactly HOSTS (HOST[:PORT],
    checked by validate.allow_hosts): no port is HTTP on 80 and HTTPS on 443."""
    from .validate import parse_allow_host

    lines = []
    for entry in hosts:
        host, port = parse_allow_host(entry)
        if host.startswith("*."):
            name = r"([a-z0-9-]+\.)+" + re.escape(host[2:])
        else:
            name = re.escape(host)
        if port is None:
            lines += [f"^http://{name}(:80)?/", f"^{name}:443$"]
        else:
            lines += [f"^http://{name}:{port}/", f"^{name}:{port}$"]
            if port == 80:
                lines.append(f"^http://{name}/")
    return "".join(line + "\n" for line in lines)


def proxy_image(engine, progress=None):
    """cubbi's egress proxy image, built on first use (tag from its definition's digest)."""
    from .mcpserve import builtin_image

    return builtin_image(engine, "egress-proxy", "the egress proxy image", progress)


def start(engine, sid, hosts, outward, owner=None, progress=None, timeout=None):
    """Make session SID's internal network (names(sid)["network"], the one
    the session joins) and its proxy for HOSTS, the proxy also on network
    OUTWARD, and start the proxy in the background: the returned Starting's
    wait() returns once it has read its filter (the session's own create
    runs meanwhile).  Nothing is left behind when it fails."""
    api = engine.api
    tag = proxy_image(engine, progress)
    n = names(sid)
    labels = {LABEL: "true", L_SESSION: sid}
    if owner:
        labels[L_OWNER] = owner
    try:
        api.post("/networks/create", body={
            "Name": n["network"], "CheckDuplicate": True, "Driver": "bridge", "Internal": True,
            # no address on the host's side of the bridge: else the engine's host
            # answers the session at the gateway address (its services on 0.0.0.0)
            "Options": {"com.docker.network.bridge.inhibit_ipv4": "true"},
            "Labels": dict(labels, **{L_ROLE: "network"})})
        cid = api.create_container(n["proxy"], {
            "Image": tag, "User": "65534:65534", "Labels": dict(labels, **{L_ROLE: "proxy"}),
            "Cmd": ["/bin/sh", f"{DIR}/run.sh"],
            # it ends itself when its session is gone (WATCH): the engine removes it then
            "HostConfig": {"NetworkMode": n["network"], "RestartPolicy": {"Name": "no"},
                           "AutoRemove": True,
                           "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
                           "Memory": 128 * 1024 ** 2, "PidsLimit": 256,
                           "LogConfig": {"Type": "json-file",
                                         "Config": {"max-size": "10m", "max-file": "2"}}},
            "NetworkingConfig": {"EndpointsConfig": {n["network"]: {"Aliases": [ALIAS]}}},
        })["Id"]
        from .files import tar_bytes

        # only the session's network may use it (not the outward one's containers)
        subnets = [c.get("Subnet") for c in
                   (api.network(n["network"]).get("IPAM") or {}).get("Config") or []]
        config = CONFIG + "".join(f"Allow {s}\n" for s in subnets if s)
        api.put_archive(cid, "/", tar_bytes({
            f"{DIR}/tinyproxy.conf": (config.encode(), 0o644, 0, 0),
            f"{DIR}/run.sh": (WATCH.encode(), 0o644, 0, 0),
            f"{DIR}/filter": (filter_rules(hosts).encode(), 0o644, 0, 0)}))
        try:
            api.connect_network(outward, cid)
        except APIError as exc:
            if exc.status == 404:
                from .errors import NotFound

                raise NotFound(f"no Docker network {outward!r} for the egress proxy; create "
                               f"it with 'docker network create {outward}'") from None
            raise
    except BaseException:
        stop(api, sid)
        raise
    return Starting(api, sid, cid, timeout or START_TIMEOUT)


class Starting:
    """A proxy being started in a thread: wait() re-raises its failure
    (having removed the proxy and network), join() only waits."""

    def __init__(self, api, sid, cid, timeout):
        import threading

        self.error = None
        self._thread = threading.Thread(target=self._run, args=(api, sid, cid, timeout),
                                        daemon=True)
        self._thread.start()

    def _run(self, api, sid, cid, timeout):
        try:
            api.start(cid)
            wait_ready(api, cid, timeout)
        except BaseException as exc:  # re-raised by wait() in the caller's thread
            self.error = exc
            try:
                stop(api, sid)
            except CubbiError:
                pass

    def join(self):
        self._thread.join()

    def wait(self):
        self.join()
        if self.error is not None:
            raise self.error


def wait_ready(api, cid, timeout):
    from .dockerapi import Deadline
    from .mcpserve import last_lines

    deadline = time.monotonic() + timeout
    reason = f"it did not read its configuration within {timeout:g} s"
    seen = b""  # what it printed: an exited proxy is removed by the engine (AutoRemove)
    try:
        for _, data in api.logs(cid, follow=True, timestamps=False, deadline=deadline):
            seen = (seen + data)[-4000:]
            if READY.encode() in seen:
                return
        reason = "it exited"
    except Deadline:
        pass
    printed = " | ".join(ln.strip() for ln in seen.decode(errors="replace").splitlines()
                         if ln.strip())
    raise CubbiError(f"the egress proxy failed to start: {reason}; its last log lines: "
                     f"{last_lines(api, cid) or printed[-1000:] or 'no output'}")


def stop(api, sid):
    """Remove session SID's proxy and network (each may be gone already)."""
    n = names(sid)
    for call, what in ((api.remove, n["proxy"]), (api.remove_network, n["network"])):
        try:
            call(what)
        except APIError as exc:
            # 409 on the proxy: the engine is removing it already (it ended itself);
            # a swarm's network removed meanwhile answers 500 "not found"
            if exc.status != 404 and not (exc.status == 409 and call == api.remove) \
                    and "not found" not in str(exc):
                raise


def parse_refusal(line):
    """{host, port, url} of a refusal in one line of tinyproxy's log, or None."""
    m = _REFUSED.search(line)
    if not m:
        return None
    if m.group(2):
        return {"host": None, "port": int(m.group(2)), "url": None}
    url = m.group(1)
    hostport = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else url
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        host, port = hostport, (443 if url.startswith("https://") else 80) if "://" in url else None
    return {"host": host.strip("[]"), "port": int(port) if port else None, "url": url}


def egress_log(api, rec):
    """The session's refused requests, oldest first: {session, time, host,
    port, url}.  NotFound when the session has no egress proxy."""
    from .errors import NotFound

    try:
        frames = api.logs(names(rec["id"])["proxy"], timestamps=True)
        text = b"".join(data for _, data in frames).decode(errors="replace")
    except APIError as exc:
        if exc.status == 404:
            raise NotFound(f"session {rec['id']} has no egress allowlist (cubbi-create "
                           "--allow-host): nothing is filtered") from None
        raise
    out = []
    for line in text.splitlines():
        ts, _, rest = line.partition(" ")
        hit = parse_refusal(rest)
        if hit:
            when = ts[:26] + "Z" if "." in ts else ts
            out.append(dict({"session": rec["id"], "time": when}, **hit))
    return out

"""Log forwarding: the `logging.providers` of cubbi-service.yaml (and of
the user's config.yaml for local sessions) as what a session's container
gets.  Plain data and one TCP probe; settings are read by the caller.

  fluentd   the container's Docker log driver becomes fluentd: address,
            a tag cubbi.OWNER.IMAGE.ID, the session's labels (id, name,
            owner, image, project) in every record, async connect and
            non-blocking delivery with a bounded buffer, so a slow or
            absent collector never blocks or stops a session (lines past
            the buffer are dropped: Docker's mode=non-blocking).
  syslog    the same with Docker's syslog driver, RFC 5424 (micro), over
            tcp or udp.  Docker dials a tcp collector when the container
            starts and refuses to start it when none answers, so the
            address is probed first (PROBE_TIMEOUT): a collector that is
            down leaves the session on the engine's default driver, with
            a warning.
  langfuse  no driver: its URL and keys go to the session's tools as the
            specification's variables (and the Langfuse SDK's own names),
            through the session's 0600 env file like every secret.

One driver per session: the first fluentd or syslog provider listed.
Docker 20.10 and newer keep a local copy of what a remote driver sends
(dual logging), so cubbi-logs reads a session's log whatever its driver.
"""

import re
import socket
from urllib.parse import urlsplit

TYPES = ("fluentd", "syslog", "langfuse")
PROBE_TIMEOUT = 1.0
BUFFER = "4m"  # Docker's max-buffer-size for mode=non-blocking
LABELS = ("cubbi.session.id", "cubbi.session.name", "cubbi.owner", "cubbi.image", "cubbi.project")
LANGFUSE_ENV = {  # the spec's names, then the Langfuse SDK's
    "url": ("LANGFUSE_URL", "LANGFUSE_HOST"),
    "public_key": ("LANGFUSE_INIT_PROJECT_PUBLIC_KEY", "LANGFUSE_PUBLIC_KEY"),
    "secret_key": ("LANGFUSE_INIT_PROJECT_SECRET_KEY", "LANGFUSE_SECRET_KEY"),
}
_DEFAULT_PORT = {"fluentd": 24224, "syslog": 514}


def parse(raw, where="logging.providers", types=TYPES):
    """The providers as a list of dicts {type, ...}, checked; ValueError
    naming the entry otherwise."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list of providers ({{type: fluentd, url: ...}})")
    out = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{here}: expected a mapping with a type")
        kind = item.get("type")
        if kind not in types:
            hint = ("; langfuse is services.langfuse.url, .public_key and .secret_key here"
                    if "langfuse" not in types else "")
            raise ValueError(f"{here}.type: expected one of {', '.join(types)}, not {kind!r}{hint}")
        allowed = {"type", "url"} | ({"public_key", "secret_key"} if kind == "langfuse" else set())
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ValueError(f"{here}: unknown field {unknown[0]!r} (a {kind} provider takes "
                             f"{', '.join(sorted(allowed))})")
        url = item.get("url")
        if not isinstance(url, str) or not url:
            raise ValueError(f"{here}.url: required")
        entry = {"type": kind, "url": url}
        if kind == "langfuse":
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"{here}.url: expected an http(s) URL")
            for key in ("public_key", "secret_key"):
                if item.get(key) is not None:
                    entry[key] = str(item[key])
        else:
            address(kind, url, here)  # checked here; kept as written
        out.append(entry)
    return out


def address(kind, url, where):
    """(transport, host, port) of a collector's URL: tcp://HOST:PORT,
    udp://HOST:PORT (syslog), HOST:PORT, or http://HOST:PORT (the spec's
    fluentd example; fluentd's forward protocol is tcp)."""
    text = url if "://" in url else "tcp://" + url
    parts = urlsplit(text)
    scheme = {"http": "tcp", "https": "tcp"}.get(parts.scheme, parts.scheme)
    if scheme not in (("tcp", "udp") if kind == "syslog" else ("tcp",)):
        raise ValueError(f"{where}.url: {url!r}: expected tcp://HOST:PORT"
                         + (" or udp://HOST:PORT" if kind == "syslog" else ""))
    try:
        port = parts.port or _DEFAULT_PORT[kind]
    except ValueError:
        raise ValueError(f"{where}.url: {url!r}: bad port") from None
    if not parts.hostname:
        raise ValueError(f"{where}.url: {url!r}: no host")
    return scheme, parts.hostname, port


def reachable(provider, timeout=PROBE_TIMEOUT):
    """Whether a collector answers (tcp: a connection; udp: always)."""
    transport, host, port = address(provider["type"], provider["url"], provider["type"])
    if transport != "tcp":
        return True
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _tag_part(text):
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text or "-"))[:40] or "-"


def log_config(providers, sid, image, owner=None, probe=reachable):
    """(Docker HostConfig.LogConfig or None, warnings) for one session."""
    warnings = []
    for p in providers:
        if p["type"] == "langfuse":
            continue
        transport, host, port = address(p["type"], p["url"], p["type"])
        tag = f"cubbi.{_tag_part(owner or 'local')}.{_tag_part(image)}.{sid}"
        config = {"tag": tag, "labels": ",".join(LABELS), "mode": "non-blocking",
                  "max-buffer-size": BUFFER}
        if p["type"] == "fluentd":
            config.update({"fluentd-address": f"tcp://{host}:{port}",
                           "fluentd-async": "true", "fluentd-buffer-limit": "65536",
                           "fluentd-sub-second-precision": "true"})
        else:
            if not probe(p):
                warnings.append(f"warning: the syslog collector {p['url']} does not answer; this "
                                "session logs to the engine's default driver only")
                return None, warnings
            # RFC 5424's APP-NAME holds 48 characters: the owner and image are
            # shortened, the session id never is
            config.update({"syslog-address": f"{transport}://{host}:{port}",
                           "syslog-format": "rfc5424micro",
                           "tag": f"cubbi.{_tag_part(owner or 'local')[:12]}."
                                  f"{_tag_part(image)[:20]}.{sid}"})
        return {"Type": p["type"], "Config": config}, warnings
    return None, warnings


def session_env(providers):
    """The variables a langfuse provider gives every session."""
    env = {}
    for p in providers:
        if p["type"] == "langfuse":
            for key, names in LANGFUSE_ENV.items():
                if p.get(key):
                    for name in names:
                        env[name] = p[key]
    return env


def health(providers):
    """[{type, url, status}] for /health: up, down, or n/a (langfuse)."""
    def status(p):
        if p["type"] == "langfuse" or address(p["type"], p["url"], p["type"])[0] != "tcp":
            return "n/a"  # nothing to connect to: not checked
        return "up" if reachable(p) else "down"

    return [{"type": p["type"], "url": p["url"], "status": status(p)} for p in providers]

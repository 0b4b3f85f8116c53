"""Pure session logic: references, records from container entries, the
switch parsers, the failure tally.  No engine here."""

import io
import time

import pytest

from cubbi_tools import cli, session as S
from cubbi_tools.commands.logs import parse_since
from cubbi_tools.validate import short_name as _short_image
from cubbi_tools.engine import (LocalEngine, _log_record, check_image_ref,
                                parse_memory, parse_port)
from cubbi_tools.session import matches as _matches, parse_filters
from cubbi_tools.errors import CubbiError, NotFound, UsageError
from cubbi_tools.refs import BadLine, each_session, refs_from


class Pipe(io.StringIO):
    def isatty(self):
        return False


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_refs_from_arguments_win_over_stdin():
    assert list(refs_from(["a", "b"], Pipe("c\n"))) == ["a", "b"]


def test_refs_from_stdin_bare_ids_json_and_bad_lines():
    text = 'abc\n\n{"id": "def", "x": 1}\nhas space\n{oops\n{"name": "x"}\n["abc"]\n{"id": 5}\n'
    got = list(refs_from([], Pipe(text)))
    assert got[:2] == ["abc", "def"]
    bad = got[2:]
    assert all(isinstance(b, BadLine) for b in bad)
    assert [b.lineno for b in bad] == [4, 5, 6, 7, 8]
    assert str(bad[1]) == "stdin line 5: not valid JSON"


def test_refs_from_a_terminal_is_a_usage_error():
    with pytest.raises(UsageError):
        list(refs_from([], Tty("")))
    assert list(refs_from([], Tty(""), allow_empty=True)) == []


def _rec(sid, name, cid=None):
    return {"id": sid, "name": name, "container_id": cid or (sid * 8)[:64]}


class FakeList(LocalEngine):
    """resolve() and each_session() are pure given the records."""

    def __init__(self, records):
        self.records = records

    def list(self, all=False, filters=None, labels=(), status=True):
        return self.records


RECS = [_rec("ab12cd34", "alpha"), _rec("ab99ee00", "beta"), _rec("ff000000", "ab12cd34x")]


@pytest.mark.parametrize("ref,want", [
    ("ab12cd34", "alpha"), ("ab12", "alpha"), ("alpha", "alpha"), ("beta", "beta"),
    ("f", "ab12cd34x"), ("ab12cd34x", "ab12cd34x"),
])
def test_resolve(ref, want):
    assert FakeList(RECS).resolve(ref)["name"] == want


def test_resolve_ambiguous_and_unknown():
    with pytest.raises(UsageError, match="ambiguous.*ab12cd34, ab99ee00"):
        FakeList(RECS).resolve("ab")
    with pytest.raises(NotFound, match="'zz'"):
        FakeList(RECS).resolve("zz")
    with pytest.raises(UsageError):
        FakeList(RECS).resolve("  ")


def test_each_session_reports_and_carries_on(capsys):
    tally = cli.Tally("cubbi-x")
    got = list(each_session(FakeList(RECS), [], tally, Pipe("alpha\nzz\n{bad\nab\nbeta\n")))
    assert [r["name"] for r in got] == ["alpha", "beta"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("cubbi-x: ") for line in err)
    assert tally.code() == 1  # not found (3), bad line (1), ambiguous (2): mixed


@pytest.mark.parametrize("codes,want", [((), 0), ((3, 3), 3), ((2,), 2), ((3, 1), 1), ((4, 3), 1)])
def test_tally_code(codes, want, capsys):
    t = cli.Tally("p")
    for c in codes:
        e = CubbiError("x")
        e.code = c
        t.failed("r", e)
    assert t.code() == want


def test_tally_json_hook_and_internal_errors(capsys):
    seen = []
    t = cli.Tally("p", on_fail=lambda ref, exc: seen.append(ref))
    t.failed("r1", ValueError("boom"))
    assert seen == ["r1"] and t.code() == 1
    assert capsys.readouterr().err == "p: r1: internal error: ValueError: boom\n"


@pytest.mark.parametrize("text,want", [
    ("8000", ("127.0.0.1", "", 8000, "tcp")),
    ("8080:8000", ("127.0.0.1", "8080", 8000, "tcp")),
    ("0.0.0.0:8080:8000/udp", ("0.0.0.0", "8080", 8000, "udp")),
    ("127.0.0.1::53/udp", ("127.0.0.1", "", 53, "udp")),
    ("localhost:0:82", ("127.0.0.1", "0", 82, "tcp")),
    ("[::1]:0:84", ("::1", "0", 84, "tcp")),
    ("::1:0:84", ("::1", "0", 84, "tcp")),
])
def test_parse_port(text, want):
    assert parse_port(text) == want


@pytest.mark.parametrize("text", ["http", "0", "70000", "80/icmp", "a:80", "", "80/sctp",
                                  "70000:80", "999.1.1.1:0:80", "127.0.0.300:0:81",
                                  "host:0:80", "[::g]:0:80", "1.2.3.4:-1:80", "+80"])
def test_parse_port_rejects(text):
    with pytest.raises(UsageError, match="--port"):
        parse_port(text)


@pytest.mark.parametrize("text,want", [("512m", 512 << 20), ("2g", 2 << 30), ("1.5G", 3 << 29),
                                       ("8388608", 8 << 20), ("64mb", 64 << 20), (None, None)])
def test_parse_memory(text, want):
    assert parse_memory(text) == want


@pytest.mark.parametrize("text", ["0", "1024", "5m", "lots", "1e999g"])
def test_parse_memory_rejects(text):
    with pytest.raises(UsageError, match="memory"):
        parse_memory(text)


@pytest.mark.parametrize("ref,ok", [
    ("busybox", True), ("cubbi-test/busybox:latest", True), ("localhost:5000/a/b:1.2", True),
    ("a@sha256:" + "0" * 64, True), ("UPPER/Case", False), ("Bad Tag", False), ("", False),
    ("a//b", False), ("a:", False), ("-a", False)])
def test_image_references(ref, ok):
    if ok:
        assert check_image_ref(ref) == ref
    else:
        with pytest.raises(UsageError):
            check_image_ref(ref)


def test_filters_are_checked():
    assert parse_filters(["status=running", "name=x*"]) == {"status": "running", "name": "x*"}
    for bad in ("status=bogus", "colour=red", "name"):
        with pytest.raises(UsageError):
            parse_filters([bad])


def test_env_file_lines(tmp_path):
    from cubbi_tools.envs import read_env_file

    f = tmp_path / "e"
    f.write_text("# c\nA=1\nexport B='two words'\nC=${A}x\n")
    assert read_env_file(str(f)) == {"A": "1", "B": "two words", "C": "1x"}
    for text, line in (("A=1\n{bad\n", 2), ('A="open\n', 1), ("A B=1\n", 1)):
        f.write_text(text)
        with pytest.raises(UsageError, match=f"{f} line {line}"):
            read_env_file(str(f))
    with pytest.raises(UsageError, match="directory"):
        read_env_file(str(tmp_path))


def test_parse_since():
    now = time.time()
    assert abs(parse_since("10m") - (now - 600)) < 5
    assert parse_since("1700000000") == 1700000000
    assert parse_since("2026-01-02T03:04:05Z") == 1767323045
    with pytest.raises(UsageError):
        parse_since("yesterday")


def test_status_of_entries():
    assert S.status_of({"State": "running", "Status": "Up 1 minute (healthy)"}) == ("running", False)
    assert S.status_of({"State": "running", "Status": "Up 2 s (health: starting)"}) == ("initializing", True)
    assert S.status_of({"State": "running", "Status": "Up 2 s"}) == ("running", False)
    assert S.status_of({"State": "exited", "Status": "Exited (0)"}) == ("stopped", False)
    assert S.status_of({"State": "created"}) == ("created", False)


def test_init_state_reads_the_last_marker():
    assert S.init_state(["x", "cubbi-init: ready"]) == ("running", None)
    assert S.init_state(["cubbi-init: failed: no git"]) == ("failed", "no git")
    assert S.init_state(["booting"]) == ("initializing", None)


def test_record_from_a_list_entry():
    entry = {
        "Id": "c" * 64, "Created": 1767323045, "State": "running", "Status": "Up (healthy)",
        "Image": "sha256:x", "Names": ["/cubbi-demo"],
        "Labels": {"cubbi.session": "true", "cubbi.session.id": "1234abcd",
                   "cubbi.session.name": "demo", "cubbi.image": "aider", "cubbi.mount": "/src",
                   "cubbi.owner": "ann"},
        "NetworkSettings": {"Networks": {"cubbi-network": {}, "extra": {}}},
        "Ports": [{"PrivatePort": 80, "PublicPort": 32768, "IP": "127.0.0.1", "Type": "tcp"},
                  {"PrivatePort": 80, "PublicPort": 32768, "IP": "127.0.0.1", "Type": "tcp"},
                  {"PrivatePort": 9000, "Type": "tcp"}],
    }
    rec = S.from_entry(entry)
    assert set(rec) == set(S.FIELDS)
    assert rec["id"] == "1234abcd" and rec["name"] == "demo" and rec["image"] == "aider"
    assert rec["created"] == "2026-01-02T03:04:05Z" and rec["status"] == "running"
    assert rec["networks"] == ["cubbi-network", "extra"] and rec["mount"] == "/src"
    assert rec["ports"] == [{"container": 80, "host": 32768, "host_ip": "127.0.0.1", "protocol": "tcp"}]
    assert rec["project"] is None and rec["remote"] is None and rec["owner"] == "ann"
    assert rec["allow_hosts"] is None and rec["idle_timeout"] is None
    entry["Labels"].update({"cubbi.egress.allow": "web1,api.io:8443",
                            "cubbi.idle_timeout": "300"})
    rec = S.from_entry(entry)
    assert rec["allow_hosts"] == ["web1", "api.io:8443"] and rec["idle_timeout"] == 300


def test_record_of_a_session_made_elsewhere():
    rec = S.from_entry({"Id": "d" * 64, "Names": ["/old"], "Labels": {"cubbi.session": "true"},
                        "Image": "goose:latest", "State": "exited"})
    assert (rec["id"], rec["name"], rec["image"], rec["status"]) == ("dddddddd", "old", "goose:latest", "stopped")


def test_log_record_splits_the_timestamp():
    rec = {"id": "s1"}
    assert _log_record(rec, "stdout", "2026-11-27T08:01:02.123456789Z hello world") == \
        {"session": "s1", "stream": "stdout", "time": "2026-11-27T08:01:02.123456Z", "line": "hello world"}
    assert _log_record(rec, "stderr", "no stamp")["time"] is None


def test_filters_and_names():
    rec = {"name": "t1-a", "image": "aider", "status": "running", "project": None}
    assert _matches(rec, {"name": "t1*", "image": "aider"})
    assert not _matches(rec, {"name": "t2*"})
    assert not _matches(rec, {"project": "x"})
    assert _matches(rec, {"image": "aider:latest"})
    assert _matches({"image": "r/x:latest"}, {"image": "r/x"})
    assert not _matches({"image": "r/x:1"}, {"image": "r/x"})
    proj = {"project": "https://github.com/x/y"}
    assert _matches(proj, {"project": "github.com/x/y"})
    assert _matches(proj, {"project": "git@github.com:x/y.git"})
    assert not _matches(proj, {"project": "github.com/x/z"})
    assert _short_image("registry.example/team/aider:1.2") == "aider"
    assert _short_image("/") == "session"


def test_sessions_made_in_one_second_keep_their_creation_order():
    from cubbi_tools import session as S

    def entry(sid, ns):
        return {"Id": sid * 8, "Created": 1795765673,
                "Labels": {S.L_ID: sid, S.L_CREATED: str(ns)}}

    later, earlier = entry("aaaa", 2_000), entry("ffff", 1_000)
    assert sorted([later, earlier], key=S.order_key) == [earlier, later]
    # sessions made by the original cubbi have no such label: seconds, then id
    old = {"Id": "b" * 64, "Created": 1795765672, "Labels": {S.L_ID: "bbbb"}}
    assert sorted([later, old], key=S.order_key)[0] is old

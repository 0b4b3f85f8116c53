"""API fuzzing of a running cubbi-server with schemathesis, shared by
tests/test_server_fuzz.py (a bounded run in CI) and bench/fuzz_server.py
(a longer one).

fuzz(url, token, per_operation, image) loads the server's own /openapi.json,
generates cases for every operation (positive: data the document allows;
negative: data it does not), sends each to the server and checks the answer
against the document: no status >= 500, and the status code, content type
and body as documented.  Every failure is collected (nothing stops at the
first), so one run reports them all.

What the fuzzer may make is bounded here, in one place (`_tame`):
- POST /sessions creates real containers: the image is always IMAGE (the
  tiny busybox test image), and every session that comes back 201 is closed
  at once, so at most one fuzzed session lives at a time;
- no created session joins a Docker network other than the session network
  (`networks` is dropped), publishes a port (`ports` dropped) or names a
  project to clone (`project` dropped): nothing is reached but loopback;
- followed log streams (?follow) never end, so follow is not sent, an
  event stream always has ?until=now (unless it is not a number), and
  ?wait is capped at 5 seconds.
"""

import collections
import time

import requests

CHECKS = None  # filled in by _checks(): imported late, schemathesis is heavy


def _checks():
    global CHECKS
    if CHECKS is None:
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                      response_schema_conformance,
                                                      status_code_conformance)

        CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]
    return CHECKS


class Report:
    """What a run saw: cases sent, responses by status, and the failures
    (operation, check title, status, the request)."""

    def __init__(self):
        self.cases = 0
        self.statuses = collections.Counter()
        self.failures = []
        self.created = 0
        self.seconds = 0.0

    def add(self, other):
        self.cases += other.cases
        self.statuses.update(other.statuses)
        self.failures += other.failures
        self.created += other.created
        self.seconds += other.seconds

    @property
    def server_errors(self):
        return sum(n for s, n in self.statuses.items() if s >= 500)

    def summary(self):
        codes = " ".join(f"{s}:{n}" for s, n in sorted(self.statuses.items()))
        return (f"{self.cases} cases, {self.server_errors} responses >= 500, "
                f"{len(self.failures)} failures, {self.created} sessions created "
                f"({codes}) in {self.seconds:.1f} s")

    def failure_lines(self):
        return [f"{op}: {title} (status {status}) {req}" for op, title, status, req in self.failures]


def _tame(case, image):
    """Keep what a fuzzed request can make on the host within the bounds
    above (see the module's doc)."""
    op = f"{case.method.upper()} {case.path}"
    if op == "POST /sessions" and isinstance(case.body, dict):
        case.body["image"] = image
        for key in ("networks", "ports", "project"):
            case.body.pop(key, None)
    query = case.query if isinstance(case.query, dict) else None
    if query is not None:
        if op == "GET /sessions/{id}/logs":
            query.pop("follow", None)
        if op == "GET /events":  # a stream without until never ends: until now
            try:
                int(query.get("until", "0"))
                query["until"] = str(int(time.time()))
            except (TypeError, ValueError):
                pass  # not a number: the server must refuse it with 400
        if op == "GET /sessions/{id}" and "wait" in query:
            try:
                query["wait"] = min(float(query["wait"]), 5.0)
            except (TypeError, ValueError):
                pass  # not a number: the server must refuse it with 400


def fuzz(url, token, per_operation, image, modes=("positive", "negative"), seed=None,
         progress=None, only=None, document=None):
    """Fuzz the server at URL; TOKEN None sends no valid token (only what
    the fuzzer makes up).  SEED None: the same cases every run (CI); an
    int: that run's cases (bench/fuzz_server.py prints it).  ONLY: one
    operation ("GET /projects/{id}"); DOCUMENT: an OpenAPI dict to fuzz by
    instead of the server's own.  Returns a Report."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = (schemathesis.openapi.from_dict(document) if document is not None
              else schemathesis.openapi.from_url(url + "/openapi.json"))
    report = Report()
    http = requests.Session()
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()
        if only and op.label != only:
            continue
        for mode in modes:
            gen = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
            seen = Report()
            t0 = time.monotonic()

            @settings(max_examples=per_operation, deadline=None, database=None,
                      phases=[Phase.generate], derandomize=seed is None,
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @given(case=op.as_strategy(generation_mode=gen))
            def one(case):
                _tame(case, image)
                resp = case.call(base_url=url, session=http, headers=auth, timeout=60)
                seen.cases += 1
                seen.statuses[resp.status_code] += 1
                if case.method.upper() == "POST" and case.path == "/sessions" \
                        and resp.status_code == 201:
                    seen.created += 1
                    http.delete(f"{url}/sessions/{resp.json()['id']}", headers=auth, timeout=60)
                try:
                    case.validate_response(resp, checks=_checks(), headers=auth)
                except BaseException as exc:  # a Failure, or a group of them
                    group = getattr(exc, "exceptions", None) or [exc]
                    req = f"{case.method.upper()} {resp.request.url} body={_short(case.body)}"
                    for f in group:
                        seen.failures.append((op.label, getattr(f, "title", type(f).__name__),
                                              resp.status_code, req))

            if seed is not None:
                from hypothesis import seed as hseed

                one = hseed(seed)(one)
            try:
                one()
            except Unsatisfiable:
                pass  # nothing in this operation can be made invalid (negative mode)
            seen.seconds = time.monotonic() - t0
            report.add(seen)
            if progress:
                progress(f"{op.label} [{mode}{'' if token else ', no token'}]: {seen.summary()}")
    report.seconds = time.monotonic() - started
    return report


def _short(body, limit=200):
    text = repr(body)
    return text if len(text) <= limit else text[:limit] + "..."


def close_all(url, token):
    """Close every session of TOKEN's user (the fuzzer's leftovers): returns
    how many were closed."""
    auth = {"Authorization": f"Bearer {token}"}
    sessions = requests.get(f"{url}/sessions?all=1", headers=auth, timeout=60).json()["sessions"]
    for s in sessions:
        requests.delete(f"{url}/sessions/{s['id']}", headers=auth, timeout=60)
    return len(sessions)

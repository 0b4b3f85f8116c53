"""API fuzzing in CI: schemathesis against a real cubbi-server's own
/openapi.json, with a valid token and without, a bounded number of cases
(tests/apifuzz.py; the same cases every run).  Pass: no response of 500 or
above, and every status code, content type and body as the document says.
bench/fuzz_server.py is the longer run.

Fuzzed POST /sessions makes real containers: always from the busybox test
image, each closed as soon as it is made, and the user's sessions are
closed again at the end (and checked gone).
"""

import sys

import pytest

import apifuzz

# cases per operation and generation mode (positive, negative): about 300
# in all, well under a minute on 2 cores
WITH_TOKEN = 6
WITHOUT_TOKEN = 4


@pytest.fixture(scope="module")
def fuzz_token(server):
    tok = server.token("fuzzer")
    yield tok
    apifuzz.close_all(server.url, tok)
    assert apifuzz.close_all(server.url, tok) == 0, "a fuzzed session outlived its close"


def _check(report):
    sys.stderr.write(f"api fuzzing: {report.summary()}\n")
    assert report.cases > 0
    assert report.server_errors == 0 and not report.failures, "\n".join(report.failure_lines())


def test_fuzz_with_a_valid_token(server, fuzz_token, busybox_image):
    report = apifuzz.fuzz(server.url, fuzz_token, WITH_TOKEN, busybox_image)
    _check(report)
    # the fuzzer reached past the token check: real records, refusals and sessions
    assert report.statuses[200] and report.statuses[400] and report.statuses[404], report.summary()
    assert report.created > 0, report.summary()


def test_fuzz_without_a_token(server, fuzz_token, busybox_image):
    report = apifuzz.fuzz(server.url, None, WITHOUT_TOKEN, busybox_image)
    _check(report)
    assert report.created == 0 and report.statuses[401], report.summary()


def test_the_fuzzer_sees_an_undocumented_status(server, fuzz_token, busybox_image):
    """The check can fail: with 400 taken out of the document for GET
    /projects/{id} (its refusal of an id that is no URL), the run reports it."""
    import requests

    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    del document["paths"]["/projects/{id}"]["get"]["responses"]["400"]
    report = apifuzz.fuzz(server.url, fuzz_token, 4, busybox_image, modes=("positive",),
                          only="GET /projects/{id}", document=document)
    assert any("Undocumented" in title and status == 400
               for _, title, status, _ in report.failures), report.summary()

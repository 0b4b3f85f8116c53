"""The service's state: hashed tokens and encrypted credentials at rest,
and a restart that loses nothing."""

import json
import os
import sqlite3

from conftest import served_session


# -- state: hashed tokens, encrypted credentials, restarts --------------------------
def test_secrets_at_rest_and_a_restart_loses_nothing(server, alice, busybox_image, prefix):
    canary = "ghp_canary" + os.urandom(6).hex()
    st, proj = alice.call("POST", "/projects", {"url": "git@example.com:team/private.git",
                                                "auth": "token", "token": canary})
    assert st == 201, proj
    assert proj["id"] == "example.com/team/private" and proj["auth"] == "token"
    assert canary not in json.dumps(proj)
    st, again = alice.call("GET", "/projects/example.com/team/private")
    assert st == 200 and canary not in json.dumps(again)
    rec = served_session(alice, busybox_image, f"{prefix}-restart")
    secret_part = alice.token.rsplit("_", 1)[1]
    raw = open(server.database, "rb").read()
    for wal in (server.database + "-wal",):
        if os.path.exists(wal):
            raw += open(wal, "rb").read()
    assert canary.encode() not in raw and secret_part.encode() not in raw
    db = sqlite3.connect(server.database)
    assert db.execute("SELECT count(*) FROM projects WHERE secret IS NOT NULL").fetchone()[0] >= 1
    db.close()

    server.stop()
    server.start()
    st, body = alice.call("GET", "/sessions")
    assert st == 200 and rec["id"] in [r["id"] for r in body["sessions"]]
    st, body = alice.call("GET", "/projects")
    assert [p["id"] for p in body["projects"]] == ["example.com/team/private"]
    from cubbi_tools.serverstate import State

    state = State(server.database, server.env["TEST_PROJECT_KEY"])
    assert state.project("alice", "example.com/team/private", with_secret=True)["secret"] == canary

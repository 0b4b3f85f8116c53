"""Users of the service: one user's sessions and projects are invisible to
another, the owner comes from the token, a local session is never served,
and the admin commands (tokens, user removal) on a real cubbi-server."""

import os
import sqlite3

import pytest

from conftest import served_session
from serverproc import Client


# -- one user's sessions are invisible to another -------------------------------
def test_another_users_session_is_404(server, alice, bob, busybox_image, prefix):
    rec = served_session(alice, busybox_image, f"{prefix}-alice")
    assert rec["owner"] == "alice"
    sid = rec["id"]
    st, body = bob.call("GET", "/sessions?all=1")
    assert st == 200 and sid not in [r["id"] for r in body["sessions"]]
    for method, path in [("GET", f"/sessions/{sid}"), ("GET", f"/sessions/{rec['name']}"),
                         ("DELETE", f"/sessions/{sid}"), ("GET", f"/sessions/{sid}/logs")]:
        st, body = bob.call(method, path)
        assert st == 404, (method, path, body)
    st, body = bob.call("POST", f"/sessions/{sid}/connect", {"command": ["id"]})
    assert st == 404
    from cubbi_tools.errors import NotFound
    from cubbi_tools.remote import RemoteService

    with pytest.raises(NotFound, match="no session") as info:  # exit 3, as for a missing one
        RemoteService("b", url=server.url, token=bob.token).connect(rec, ["id"], use_stdin=False)
    assert type(info.value) is NotFound and info.value.code == 3
    # still alive for its owner
    st, body = alice.call("GET", f"/sessions/{sid}")
    assert st == 200 and body["status"] == "running"


def test_owner_comes_from_the_token_not_the_body(alice, engine, busybox_image, prefix):
    for labels in ({"cubbi.owner": "bob", "team": "x"}, {"cubbi.served": "x"},
                   {"cubbi.session": "true"}):
        st, body = alice.call("POST", "/sessions", {"image": busybox_image,
                                                    "name": f"{prefix}-own", "labels": labels})
        assert st == 400 and body["error"] == ('"labels": the service does not take labels '
                                               "from clients"), body
    st, rec = alice.call("POST", "/sessions", {
        "image": busybox_image, "name": f"{prefix}-own", "owner": "bob", "uid": 0})
    assert st == 201, rec
    assert rec["owner"] == "alice"
    labels = engine.get(f"/containers/{rec['container_id']}/json")["Config"]["Labels"]
    assert labels["cubbi.owner"] == "alice" and len(labels["cubbi.served"]) == 24, labels


def test_a_local_session_of_the_same_owner_name_is_not_served(server, cubbi, busybox_image,
                                                              prefix, tmp_path):
    """cubbi-create without -r labels cubbi.owner with the local account; a
    server user of that name must not reach it (it may mount a host folder)."""
    from cubbi_tools.commands.create import _owner

    (tmp_path / "f").write_text("host file\n")
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-local", "--json",
              "--mount", str(tmp_path), "--no-connect", "--wait", cwd=str(tmp_path))
    assert r.exit_code == 0, r
    (local,) = r.json()
    assert local["owner"] == _owner() and local["remote"] is None, local
    twin = Client(server.url, server.token(local["owner"]))
    st, body = twin.call("GET", "/sessions?all=1")
    assert st == 200 and local["id"] not in [x["id"] for x in body["sessions"]], body
    for ref in (local["id"], local["name"], local["container_id"][:12]):
        for method, path in [("GET", f"/sessions/{ref}"), ("GET", f"/sessions/{ref}?wait=5"),
                             ("GET", f"/sessions/{ref}/logs"), ("DELETE", f"/sessions/{ref}")]:
            st, body = twin.call(method, path)
            assert st == 404 and body["kind"] == "not_found", (method, path, body)
        st, body = twin.call("POST", f"/sessions/{ref}/connect",
                             {"command": ["sh", "-c", "echo x > /app/f"]})
        assert st == 404, body
    # the commands with -r: nothing listed, connect is "not found" (3)
    r = cubbi("cubbi-remote", "add", "twin", server.url, "--token", "-", input=twin.token,
              env={"CUBBI_SECRETS": "file"})
    assert r.exit_code == 0, r
    env = {"CUBBI_SECRETS": "file"}
    r = cubbi("cubbi-ls", "-r", "twin", "--all", "-q", "--filter", f"name={prefix}*", env=env)
    assert r.exit_code == 0 and r.stdout == "", r
    for argv in (["cubbi-connect", "-r", "twin", local["name"], "--", "sh", "-c",
                  "echo x > /app/f"], ["cubbi-logs", "-r", "twin", local["id"]],
                 ["cubbi-close", "-r", "twin", local["id"]]):
        r = cubbi(*argv, env=env)
        assert r.exit_code == 3, (argv, r)
    assert (tmp_path / "f").read_text() == "host file\n"
    r = cubbi("cubbi-ls", "--all", "-q", "--filter", f"name={prefix}*")
    assert r.stdout.split() == [local["id"]], r  # still there, locally


def test_projects_are_per_user(alice, bob):
    alice.call("POST", "/projects", {"url": "https://example.org/a/b"})
    st, body = bob.call("GET", "/projects/example.org/a/b")
    assert st == 404
    st, body = bob.call("DELETE", "/projects/example.org/a/b")
    assert st == 404
    st, body = alice.call("PUT", "/projects/example.org/a/b",
                          {"url": "https://example.org/a/b", "auth": "ssh_key"})
    assert st == 400 and "ssh_key" in body["error"]
    st, body = alice.call("DELETE", "/projects/example.org/a/b")
    assert st == 200 and body["removed"]


# -- the admin commands: tokens, removing a user ---------------------------------
def _admin(cubbi, server):
    """cubbi-server's admin commands on the test server's config and database."""
    from conftest import BIN

    def admin(*argv):
        return cubbi(os.path.join(BIN, "cubbi-server"), *argv, "--config", server.config,
                     env={"TEST_PROJECT_KEY": server.env["TEST_PROJECT_KEY"]})
    return admin


def test_admin_tokens_list_revoke(server, cubbi):
    admin = _admin(cubbi, server)
    r = admin("token", "create", "dora", "--label", "laptop", "--json")
    assert r.exit_code == 0, r
    (tok,) = r.json()
    c = Client(server.url, tok["token"])
    assert c.call("GET", "/sessions")[0] == 200
    listed = admin("token", "list", "dora", "--json")
    assert [t["id"] for t in listed.json()] == [tok["id"]] and tok["token"] not in listed.stdout
    assert admin("token", "revoke", tok["id"]).exit_code == 0
    assert c.call("GET", "/sessions")[0] == 401
    assert admin("token", "revoke", tok["id"]).exit_code == 3
    assert admin("token", "create").exit_code == 2
    assert admin("token", "create", "bad user!").exit_code == 2


def test_removing_a_user_closes_their_sessions_and_deletes_their_projects(
        server, cubbi, engine, busybox_image, prefix):
    admin = _admin(cubbi, server)
    user = f"gone-{prefix}"
    erin = Client(server.url, server.token(user))
    rec = served_session(erin, busybox_image, f"{prefix}-erin")
    canary = "ghp_gone" + os.urandom(5).hex()
    st, proj = erin.call("POST", "/projects", {"url": "https://git.example.net/e/r.git",
                                               "auth": "token", "token": canary})
    assert st == 201, proj

    def rows():
        with sqlite3.connect(server.database) as db:
            return [db.execute(q, (user,)).fetchone()[0] for q in (
                "SELECT COUNT(*) FROM users WHERE name = ?",
                "SELECT COUNT(*) FROM tokens WHERE user = ?",
                "SELECT COUNT(*) FROM projects WHERE owner = ?")]

    def alive():
        return bool(engine.containers(all=True, labels=[f"cubbi.session.id={rec['id']}"]))

    # refused without --yes: nothing changes, the token still works
    r = admin("user", "remove", user)
    assert r.exit_code == 2 and r.stderr.strip() == (
        f"cubbi-server: user {user} has 1 session and 1 project; to close and delete them "
        f"with the user, confirm with --yes: cubbi-server user remove {user} --yes"), r
    assert rows() == [1, 1, 1] and alive() and erin.call("GET", "/sessions")[0] == 200
    r = admin("user", "remove", user, "--yes")
    assert r.exit_code == 0 and r.stdout == "", r
    assert r.stderr.strip() == (
        f"cubbi-server: removed user {user}: 1 token; closed 1 session ({rec['id']}); "
        "deleted 1 project (git.example.net/e/r) with their credentials"), r
    assert canary not in r.stderr
    assert rows() == [0, 0, 0] and not alive()
    assert erin.call("GET", "/sessions")[0] == 401
    # a new token for the same name starts empty
    again = Client(server.url, server.token(user))
    assert again.call("GET", "/sessions?all=1") == (200, {"sessions": []})
    assert again.call("GET", "/projects") == (200, {"projects": []})
    # a user with nothing needs no --yes; an unknown one is 3
    r = admin("user", "remove", user, "--json")
    assert r.exit_code == 0 and r.json() == [{"user": user, "removed": True, "tokens": 1,
                                              "projects": [], "sessions": []}], r
    assert admin("user", "remove", user).exit_code == 3


def test_a_removed_users_leftover_session_is_not_the_new_users(server, busybox_image, prefix):
    """Even a session that outlived its user (made before the removal, or the
    close failed) is not inherited: its cubbi.served key was the old row's."""
    from cubbi_tools.serverstate import State

    user = f"heir-{prefix}"
    old = Client(server.url, server.token(user))
    rec = served_session(old, busybox_image, f"{prefix}-heir")
    State(server.database, server.env["TEST_PROJECT_KEY"]).remove_user(user)  # no closing
    new = Client(server.url, server.token(user))
    assert new.call("GET", "/sessions?all=1") == (200, {"sessions": []})
    assert new.call("GET", f"/sessions/{rec['id']}")[0] == 404


def test_a_project_with_an_ssh_key_clones_over_ssh_as_the_local_command_stores_it(alice):
    """cubbi-project -r R add host/x/y --ssh-key K: the service stores the
    ssh clone URL (git@host:x/y.git), as the local command does, so the
    session uses the key; a token keeps https."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    st, rec = alice.call("POST", "/projects", {"url": "git.example/team/keyed", "auth": "ssh_key",
                                               "ssh_key": key})
    assert st == 201 and rec["url"] == "git@git.example:team/keyed.git", rec
    st, rec = alice.call("POST", "/projects", {"url": "ssh://git@git.example/team/tok",
                                               "auth": "token", "token": "t0ken"})
    assert st == 201 and rec["url"] == "https://git.example/team/tok", rec
    from cubbi_tools import projects

    assert projects.clone_url("git.example/team/keyed", "ssh_key") == \
        ("git.example/team/keyed", "git@git.example:team/keyed.git")

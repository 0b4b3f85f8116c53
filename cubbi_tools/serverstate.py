"""The service's own state in SQLite (stdlib sqlite3): users, API tokens,
projects.  Sessions are not here: Docker labels stay their only store.

- Tokens are shown once at creation and stored as HMAC-SHA256(salt, secret)
  with a per-token random salt; a token is `cubbi_<id>_<secret>` so the row is
  found by id and compared in constant time.
- Project credentials (SSH key, token) are encrypted at rest with Fernet
  (AES-128-CBC + HMAC, from `cryptography`) under a key derived from the
  service config's projects.storage.key.  Without one, a random key is made
  once in DB.key (mode 0600) beside the database, so a restart loses nothing.
- A signed-in browser is a row of its own (browsers): its cookie is
  `cubbib_<id>_<secret>`, stored hashed as a token is, with an expiry, and
  tied to its user and to the token it signed in with (when it did): removing
  the user, revoking the token or signing out deletes the row, and the cookie
  means nothing from then on.
- Each user row has a random key, made with the row: the sessions the
  service makes for the user carry it (label cubbi.served), so a session
  made locally with the same cubbi.owner, another service's, or one left
  by a removed user of the same name is never theirs.

One connection per State, kept open: the server runs in gevent greenlets
on one thread, and every statement here takes well under a millisecond
(sqlite calls do not yield, so greenlets never interleave inside one).
"""

import base64
import datetime
import hashlib
import hmac
import os
import secrets
import sqlite3

from .errors import AuthError, CubbiError, NotFound, UsageError

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    key TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    label TEXT,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'git',
    auth_type TEXT NOT NULL DEFAULT 'none',
    secret BLOB,
    public_key TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE IF NOT EXISTS mcp_servers (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    meta TEXT NOT NULL,
    secrets BLOB,
    created TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS browsers (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    token TEXT REFERENCES tokens(id) ON DELETE CASCADE,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    created TEXT NOT NULL,
    expires INTEGER NOT NULL
);
"""

TOKEN_PREFIX = "cubbi_"
BROWSER_PREFIX = "cubbib_"
USER_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(salt, secret):
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def check_user_name(name):
    if not name or len(name) > 64 or not set(name) <= USER_CHARS:
        raise UsageError(f"invalid user name {name!r}: use letters, digits, '_', '.', '@', '-'")
    return name


class State:
    def __init__(self, path, key=None):
        self.path = path
        self._key = key
        self._fernet = None
        self._conn = None
        d = os.path.dirname(os.path.abspath(path))
        # private from the first write: a folder made here is 0700, the
        # database is made under umask 077 (0600), and sqlite gives its
        # -wal/-shm the database's mode whenever it makes them again
        old = os.umask(0o077)
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            with self._db() as db:
                db.executescript(SCHEMA)
                self._migrate(db)
            for f in (path, path + "-wal", path + "-shm"):
                if os.path.exists(f):
                    os.chmod(f, 0o600)  # one made before this version
        except (OSError, sqlite3.Error) as exc:
            raise CubbiError(f"cannot open the server database {path}: {exc}") from None
        finally:
            os.umask(old)

    def _db(self):
        """The connection (opened once; autocommit, so each statement sees
        what other processes, e.g. `cubbi-server token create`, wrote)."""
        if self._conn is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA foreign_keys=ON")
            db.row_factory = sqlite3.Row
            self._conn = db
        return _Kept(self._conn)

    @staticmethod
    def _migrate(db):
        """A database made before users had a key gets the column, and a key
        for each user (their older sessions, unlabelled, stay out of reach)."""
        if "key" not in [r[1] for r in db.execute("PRAGMA table_info(users)")]:
            db.execute("ALTER TABLE users ADD COLUMN key TEXT")
        for (name,) in db.execute("SELECT name FROM users WHERE key IS NULL").fetchall():
            db.execute("UPDATE users SET key = ? WHERE name = ? AND key IS NULL",
                       (secrets.token_hex(12), name))

    # -- users and tokens ------------------------------------------------
    def add_user(self, name):
        check_user_name(name)
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO users (name, created, key) VALUES (?, ?, ?)",
                       (name, _now(), secrets.token_hex(12)))
        return {"user": name}

    def user_key(self, name):
        """The random key of user name's row (None when there is no such
        user): the value of the cubbi.served label on their sessions."""
        with self._db() as db:
            row = db.execute("SELECT key FROM users WHERE name = ?", (name,)).fetchone()
        return row["key"] if row else None

    def users(self):
        with self._db() as db:
            rows = db.execute(
                "SELECT u.name, u.created, COUNT(t.id) AS tokens FROM users u "
                "LEFT JOIN tokens t ON t.user = u.name GROUP BY u.name ORDER BY u.name").fetchall()
        return [{"user": r["name"], "created": r["created"], "tokens": r["tokens"]} for r in rows]

    def remove_user(self, name):
        """Remove user name with their tokens and projects (and so the
        projects' encrypted credentials), in one transaction."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                tokens = db.execute("DELETE FROM tokens WHERE user = ?", (name,)).rowcount
                projects = [r["id"] for r in db.execute(
                    "SELECT id FROM projects WHERE owner = ? ORDER BY id", (name,))]
                db.execute("DELETE FROM projects WHERE owner = ?", (name,))
                db.execute("DELETE FROM mcp_servers WHERE owner = ?", (name,))
                if not db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                    raise NotFound(f"no user {name!r}; see cubbi-server user list")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return {"user": name, "removed": True, "tokens": tokens, "projects": projects}

    def create_token(self, user, label=None):
        """A new token for user (created on demand); the secret is returned
        once and never stored."""
        self.add_user(user)
        tid = secrets.token_hex(6)
        secret = secrets.token_hex(32)
        salt = secrets.token_bytes(16)
        with self._db() as db:
            db.execute("INSERT INTO tokens (id, user, salt, hash, label, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (tid, user, salt, _digest(salt, secret), label, _now()))
        return {"id": tid, "user": user, "label": label,
                "token": f"{TOKEN_PREFIX}{tid}_{secret}"}

    def tokens(self, user=None):
        q = "SELECT id, user, label, created FROM tokens"
        args = ()
        if user:
            q += " WHERE user = ?"
            args = (user,)
        with self._db() as db:
            rows = db.execute(q + " ORDER BY created, id", args).fetchall()
        return [dict(r) for r in rows]

    def revoke_token(self, tid):
        with self._db() as db:
            if not db.execute("DELETE FROM tokens WHERE id = ?", (tid,)).rowcount:
                raise NotFound(f"no token {tid!r}; see cubbi-server token list")
        return {"id": tid, "revoked": True}

    def user_for_token(self, token):
        """The user a bearer token belongs to; AuthError when it is unknown."""
        if not token or not token.startswith(TOKEN_PREFIX):
            raise AuthError("invalid token")
        tid, sep, secret = token[len(TOKEN_PREFIX):].partition("_")
        if not sep or not secret:
            raise AuthError("invalid token")
        with self._db() as db:
            row = db.execute("SELECT user, salt, hash FROM tokens WHERE id = ?", (tid,)).fetchone()
        if row is None or not hmac.compare_digest(_digest(row["salt"], secret), row["hash"]):
            raise AuthError("invalid token")
        return row["user"]

    # -- signed-in browsers (server/web.py) ------------------------------
    def open_browser(self, user, lifetime, token=None):
        """A new browser session for user, valid for lifetime seconds: its
        cookie value (shown once, stored hashed).  token: the API token it
        signed in with, so revoking that token signs the browser out too."""
        import time

        tid = None
        if token is not None:
            if self.user_for_token(token) != user:
                raise AuthError("invalid token")
            tid = token[len(TOKEN_PREFIX):].partition("_")[0]
        elif not self.user_key(user):
            raise AuthError(f"no user {user!r}")
        bid = secrets.token_hex(8)
        secret = secrets.token_hex(32)
        salt = secrets.token_bytes(16)
        now = int(time.time())
        with self._db() as db:
            db.execute("DELETE FROM browsers WHERE expires <= ?", (now,))
            db.execute("INSERT INTO browsers (id, user, token, salt, hash, created, expires) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (bid, user, tid, salt, _digest(salt, secret), _now(),
                        now + int(lifetime)))
        return f"{BROWSER_PREFIX}{bid}_{secret}"

    def _browser_row(self, cookie):
        import time

        if not cookie or not cookie.startswith(BROWSER_PREFIX):
            return None
        bid, sep, secret = cookie[len(BROWSER_PREFIX):].partition("_")
        if not sep or not secret:
            return None
        with self._db() as db:
            row = db.execute("SELECT id, user, salt, hash, expires FROM browsers WHERE id = ?",
                             (bid,)).fetchone()
        if (row is None or row["expires"] <= time.time()
                or not hmac.compare_digest(_digest(row["salt"], secret), row["hash"])):
            return None
        return row

    def user_for_browser(self, cookie):
        """The user a browser's cookie signs in; AuthError when it is unknown,
        expired or signed out."""
        row = self._browser_row(cookie)
        if row is None:
            raise AuthError("signed out or expired")
        return row["user"]

    def close_browser(self, cookie):
        """Sign a browser out: its row goes, so the cookie is refused from
        now on wherever it was copied to.  True when there was one."""
        row = self._browser_row(cookie)
        if row is None:
            return False
        with self._db() as db:
            db.execute("DELETE FROM browsers WHERE id = ?", (row["id"],))
        return True

    def browsers(self, user=None):
        """The signed-in browsers (id, user, created, expiry), never a secret."""
        q, args = "SELECT id, user, token, created, expires FROM browsers", ()
        if user:
            q, args = q + " WHERE user = ?", (user,)
        with self._db() as db:
            return [dict(r) for r in db.execute(q + " ORDER BY created, id", args).fetchall()]

    # -- projects ----------------------------------------------------------
    def _cipher(self):
        if self._fernet is None:
            from cryptography.fernet import Fernet

            key = self._key
            if not key:
                key = self._key_file()
            raw = hashlib.sha256(b"cubbi-projects\0" + key.encode()).digest()
            self._fernet = Fernet(base64.urlsafe_b64encode(raw))
        return self._fernet

    def _key_file(self):
        path = self.path + ".key"
        try:
            with open(path, encoding="ascii") as fh:
                return fh.read().strip()
        except FileNotFoundError:
            pass
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key

    def encrypt(self, text):
        return self._cipher().encrypt(text.encode()) if text else None

    def decrypt(self, blob):
        if not blob:
            return None
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher().decrypt(blob).decode()
        except InvalidToken:
            raise CubbiError("a project credential cannot be decrypted: the server's "
                             "projects.storage.key changed; set it back or store the "
                             "credential again") from None

    def put_project(self, owner, pid, url, type="git", auth_type="none", secret=None,
                    public_key=None, replace=True):
        now = _now()
        with self._db() as db:
            exists = db.execute("SELECT created FROM projects WHERE owner = ? AND id = ?",
                                (owner, pid)).fetchone()
            if exists and not replace:
                raise CubbiError(f"project {pid!r} exists; update it with PUT /projects/{pid}")
            db.execute(
                "INSERT OR REPLACE INTO projects (owner, id, url, type, auth_type, secret, "
                "public_key, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (owner, pid, url, type, auth_type, self.encrypt(secret), public_key,
                 exists["created"] if exists else now, now))
        return self.project(owner, pid)

    def project(self, owner, pid, with_secret=False):
        with self._db() as db:
            row = db.execute("SELECT * FROM projects WHERE owner = ? AND id = ?",
                             (owner, pid)).fetchone()
        if row is None:
            raise NotFound(f"no project {pid!r}; see cubbi-project list")
        return self._project_record(row, with_secret)

    def projects(self, owner):
        with self._db() as db:
            rows = db.execute("SELECT * FROM projects WHERE owner = ? ORDER BY id",
                              (owner,)).fetchall()
        return [self._project_record(r) for r in rows]

    def delete_project(self, owner, pid):
        rec = self.project(owner, pid)
        with self._db() as db:
            db.execute("DELETE FROM projects WHERE owner = ? AND id = ?", (owner, pid))
        rec["removed"] = True
        return rec

    def _project_record(self, row, with_secret=False):
        """The record of cubbi-project --json (id, url, host, auth, added),
        never the credential unless with_secret (for the session setup)."""
        rec = {"id": row["id"], "url": row["url"], "host": row["id"].split("/", 1)[0],
               "auth": row["auth_type"], "added": row["created"], "updated": row["updated"]}
        if with_secret:
            rec["secret"] = self.decrypt(row["secret"])
        return rec

    def raw_project_secret(self, owner, pid):
        """The stored ciphertext (for tests proving encryption at rest)."""
        with self._db() as db:
            row = db.execute("SELECT secret FROM projects WHERE owner = ? AND id = ?",
                             (owner, pid)).fetchone()
        return row["secret"] if row else None


    # -- MCP servers (cubbi-mcp -r): definitions, their secret values encrypted --
    def put_mcp(self, owner, name, meta, secrets, replace=False):
        """Store definition META of owner's MCP server NAME (secret values
        already taken out, in SECRETS, encrypted here); True when replaced."""
        import json

        with self._db() as db:
            exists = db.execute("SELECT created FROM mcp_servers WHERE owner = ? AND name = ?",
                                (owner, name)).fetchone()
            if exists and not replace:
                from .mcp import exists_error

                raise exists_error(name)
            db.execute("INSERT OR REPLACE INTO mcp_servers (owner, name, meta, secrets, created) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (owner, name, json.dumps(meta), self.encrypt(json.dumps(secrets))
                        if secrets else None, exists["created"] if exists else _now()))
        return bool(exists)

    def mcp(self, owner, name, with_secrets=False):
        """(meta, {secret name: value} or None) of owner's server NAME."""
        import json

        with self._db() as db:
            row = db.execute("SELECT * FROM mcp_servers WHERE owner = ? AND name = ?",
                             (owner, name)).fetchone()
        if row is None:
            raise NotFound(f"no MCP server {name!r}; see cubbi-mcp list")
        secrets_ = json.loads(self.decrypt(row["secrets"]) or "{}") if with_secrets else None
        return json.loads(row["meta"]), secrets_

    def mcp_names(self, owner):
        with self._db() as db:
            return [r["name"] for r in db.execute(
                "SELECT name FROM mcp_servers WHERE owner = ? ORDER BY name", (owner,))]

    def delete_mcp(self, owner, name):
        meta, _ = self.mcp(owner, name)
        with self._db() as db:
            db.execute("DELETE FROM mcp_servers WHERE owner = ? AND name = ?", (owner, name))
        return meta


class _Kept:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        return False

"""Users' SSH public keys, kept by the hub in ``<data dir>/ssh-keys.sqlite``.

A key identifies its owner (the SSH front asks "whose key is this?"), so a key may be registered
once in the whole hub. Each row remembers when its hub user was created: the API treats a row
whose user is gone or was re-created as stale, so keys never pass to a new user of the same name.

Keys are registered with proof of possession (a signed challenge, ``proven = 1``). Rows stored
before that existed (schema version 0, migrated to ``proven = 0``) keep working until someone
proves possession of the key: the prover takes it over. Each challenge nonce is accepted once.

The hub is a single process with one event loop; every query is a primary-key or index lookup
(``fingerprint`` is UNIQUE, ``user`` is indexed), a few microseconds, so they run inline on one
connection guarded by a lock.
"""

import asyncio
import base64
import binascii
import functools
import secrets
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .files import write_atomic
from .sshkeys import fingerprint

MAX_KEYS_PER_USER = 32

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ssh_keys (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    user_created TEXT NOT NULL,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ssh_keys_user ON ssh_keys (user);
"""
# version 0 -> 1: proof of possession (existing rows stay unproven), used challenges, the HMAC secret
_ADD_PROVEN = "ALTER TABLE ssh_keys ADD COLUMN proven INTEGER NOT NULL DEFAULT 0;"
_MIGRATE_1 = """
CREATE TABLE IF NOT EXISTS used_challenges (nonce TEXT PRIMARY KEY, expires INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS used_challenges_expires ON used_challenges (expires);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "user, user_created, type, blob, fingerprint, comment, created_at, proven"


class KeyStoreError(Exception):
    """A key that cannot be added; the message is for humans."""


class KeyExistsError(KeyStoreError):
    pass


class KeyLimitError(KeyStoreError):
    pass


class ChallengeUsedError(KeyStoreError):
    pass


@dataclass(frozen=True)
class KeyRow:
    user: str
    user_created: str
    type: str
    blob: str  # base64
    fingerprint: str
    comment: str
    created_at: str
    proven: bool = True


def _row(values):
    *fields, proven = values
    return KeyRow(*fields, proven=bool(proven))


def utc_iso(when=None):
    """ISO 8601 UTC timestamp (``...Z``) of ``when`` (naive = UTC, as JupyterHub stores it) or now."""
    when = when or datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="microseconds") + "Z"


class SSHKeyStore:
    """SQLite table of SSH public keys; the connection opens on first use."""

    def __init__(self, path, max_keys_per_user=MAX_KEYS_PER_USER):
        self.path = Path(path)
        self.max_keys_per_user = max_keys_per_user
        self._lock = threading.Lock()
        self._db = None
        self._secret = None
        self._executor = None

    async def call(self, method, *args, **kwargs):
        """Run one of this store's methods on its own thread, so that a slow disk or a busy SQLite
        lock never holds up the hub's event loop (``await store.call("owner_of", blob)``)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlhub-ssh-keys")
        work = functools.partial(getattr(self, method), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def __deepcopy__(self, memo):
        # traitlets deep-copies config values (extra_handlers holds the store): share, don't copy
        return self

    def _connect(self):
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch(mode=0o600)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._migrate(db)
            self._db = db
        return self._db

    @staticmethod
    def _migrate(db):
        """Create the tables, or bring a store of an earlier schema up to :data:`SCHEMA_VERSION`."""
        db.executescript(_SCHEMA)
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version >= SCHEMA_VERSION:
            return
        columns = {row[1] for row in db.execute("PRAGMA table_info(ssh_keys)")}
        add_proven = "" if "proven" in columns else _ADD_PROVEN
        db.executescript(
            f"BEGIN IMMEDIATE; {add_proven} {_MIGRATE_1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )

    def _query(self, sql, args=()):
        with self._lock:
            return [_row(row) for row in self._connect().execute(sql, args).fetchall()]

    def list(self, user):
        return self._query(f"SELECT {_COLUMNS} FROM ssh_keys WHERE user = ? ORDER BY id", (user,))

    def owner_of(self, blob):
        """The row of this key (base64 blob), or ``None``: one lookup of the UNIQUE fingerprint index."""
        try:
            key_fingerprint = fingerprint(base64.b64decode(blob, validate=True))
        except (binascii.Error, ValueError):
            return None
        rows = self._query(
            f"SELECT {_COLUMNS} FROM ssh_keys WHERE fingerprint = ? AND blob = ?", (key_fingerprint, blob)
        )
        return rows[0] if rows else None

    def get(self, fingerprint):
        rows = self._query(f"SELECT {_COLUMNS} FROM ssh_keys WHERE fingerprint = ?", (fingerprint,))
        return rows[0] if rows else None

    def challenge_secret(self):
        """The HMAC key of this hub's challenges: 32 random bytes, made once and kept in the store."""
        if self._secret is None:
            with self._lock:
                db = self._connect()
                db.execute(
                    "INSERT OR IGNORE INTO settings (name, value) VALUES ('challenge_secret', ?)",
                    (secrets.token_hex(32),),
                )
                (value,) = db.execute("SELECT value FROM settings WHERE name = 'challenge_secret'").fetchone()
                self._secret = bytes.fromhex(value)
        return self._secret

    def add(self, user, user_created, key, nonce, expires):
        """Register ``key`` (a :class:`mlhubspawner.sshkeys.PublicKey`) for ``user``, possession proven
        with the challenge ``nonce`` (valid until ``expires``, Unix seconds).

        Returns ``(row, taken_over)``: the new row and the unproven (legacy) row it replaced, or
        ``None``. Raises :class:`ChallengeUsedError` if the nonce was used before,
        :class:`KeyExistsError` if the key is registered with proof already and
        :class:`KeyLimitError` past the per-user limit; then nothing changes.
        """
        row = KeyRow(
            user=user,
            user_created=user_created,
            type=key.type,
            blob=key.blob_b64,
            fingerprint=key.fingerprint,
            comment=key.comment,
            created_at=utc_iso(),
            proven=True,
        )
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM used_challenges WHERE expires < ?", (int(time.time()),))
                try:
                    db.execute("INSERT INTO used_challenges (nonce, expires) VALUES (?, ?)", (nonce, expires))
                except sqlite3.IntegrityError:
                    raise ChallengeUsedError("this challenge was used already: get a new one") from None
                found = db.execute(
                    f"SELECT {_COLUMNS} FROM ssh_keys WHERE fingerprint = ?", (row.fingerprint,)
                ).fetchone()
                taken_over = _row(found) if found else None
                if taken_over is not None:
                    if taken_over.proven:
                        raise KeyExistsError("this key is already registered")
                    db.execute("DELETE FROM ssh_keys WHERE fingerprint = ?", (row.fingerprint,))
                (count,) = db.execute("SELECT COUNT(*) FROM ssh_keys WHERE user = ?", (user,)).fetchone()
                if count >= self.max_keys_per_user:
                    raise KeyLimitError(
                        f"at most {self.max_keys_per_user} SSH keys per user: delete one first"
                    )
                db.execute(
                    f"INSERT INTO ssh_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (
                        row.user,
                        row.user_created,
                        row.type,
                        row.blob,
                        row.fingerprint,
                        row.comment,
                        row.created_at,
                    ),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return row, taken_over

    def delete(self, user, fingerprint):
        """Delete one key of ``user``; whether it existed."""
        with self._lock:
            cursor = self._connect().execute(
                "DELETE FROM ssh_keys WHERE user = ? AND fingerprint = ?", (user, fingerprint)
            )
            return cursor.rowcount > 0

    def delete_user(self, user, keep_created=None):
        """Delete the keys of ``user`` (except those added while it had ``keep_created``); how many."""
        with self._lock:
            if keep_created is None:
                cursor = self._connect().execute("DELETE FROM ssh_keys WHERE user = ?", (user,))
            else:
                cursor = self._connect().execute(
                    "DELETE FROM ssh_keys WHERE user = ? AND user_created != ?", (user, keep_created)
                )
            return cursor.rowcount

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def read_or_create_token(path):
    """The API token in ``path``; a new random one (32 bytes, hex, mode 0600) if the file is missing."""
    path = Path(path)
    if not path.exists():
        write_atomic(path, secrets.token_hex(32) + "\n", 0o600)
    token = path.read_text().strip()
    if len(token) < 32:
        raise ValueError(
            f"{path} holds no usable token (expected 64 hex characters); delete it to get a new one"
        )
    return token

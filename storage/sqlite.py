"""SQLite backend: the embedded default.

One sqlite3 connection lives in one dedicated worker thread; every operation is a plain function
run there through loop.run_in_executor, so the event loop never blocks on disk and there is no
locking to think about: operations run one after another, in the order they were issued. Each
write operation is a whole transaction inside one such function, which also means that cancelling
the awaiting task cannot leave a transaction half done (the function completes or rolls back).

WAL lets readers in other processes (`xmppd users` while the server runs) proceed during writes;
synchronous=NORMAL is durable against process crashes and only risks the last transactions on power
loss, the usual trade for WAL. Transactions are explicit (the connection is in autocommit mode and
we issue BEGIN IMMEDIATE ourselves), so a write never has to upgrade a read lock.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from storage.base import Storage, check_credentials, decode_json, encode_json
from storage.errors import StorageError
from storage.model import RosterItem, ScramCredentials
from storage.schema import Migration, load_migrations

T = TypeVar("T")

# Every table holding a user's data besides `accounts` (whose credentials go by ON DELETE CASCADE).
# A migration that adds such a table adds it here; the contract suite checks that deleting an
# account leaves no row of the user in any table with (host, username) columns.
_USER_TABLES = ("roster_versions", "roster_items", "kv", "archive", "offline_messages")

_BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock


class _Connection:
    """The connection and its thread. Everything touching `_db` runs in that thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xmppd-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def _connect(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions, we BEGIN and COMMIT ourselves.
        db = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        self._db = db

    async def open(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._closed = True
            raise StorageError(f"sqlite: cannot open {self._path}: {exc}") from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:  # closed while this call was queued
            raise StorageError("storage is closed")
        return fn(self._db)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) in the worker thread; sqlite3 errors become StorageError."""
        if self._closed:
            raise StorageError("storage is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite: {exc}") from exc

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Queued after any call already submitted, so those finish first.
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)


@contextmanager
def _transaction(db: sqlite3.Connection, kind: str = "IMMEDIATE") -> Iterator[None]:
    db.execute(f"BEGIN {kind}")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # some errors make SQLite roll back by itself
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _split_script(script: str) -> list[str]:
    """Split a migration file into statements (sqlite3 runs one per execute; executescript would
    COMMIT our open transaction first)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = [ln for ln in buffer.splitlines() if ln.strip() and not ln.strip().startswith("--")]
    if rest:
        raise StorageError(f"incomplete SQL statement at the end of a migration: {rest[0]!r}")
    return statements


def _read_version(db: sqlite3.Connection) -> int:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    return int(db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


class SqliteStorage(Storage):
    backend: ClassVar[str] = "sqlite"

    def __init__(self, path: str, migrations: Sequence[Migration] | None = None) -> None:
        super().__init__(load_migrations("sqlite") if migrations is None else migrations)
        self.path = path
        self._conn = _Connection(path)
        self.accounts = SqliteAccounts(self._conn)
        self.rosters = SqliteRosters(self._conn)
        self.kv = SqliteKeyValue(self._conn)
        from storage.sqlite_offline import SqliteOffline  # it imports this module

        self.offline = SqliteOffline(self._conn)
        from storage.sqlite_archive import SqliteArchive  # it imports this module

        self.archive = SqliteArchive(self._conn)

    async def open(self) -> None:
        await self._conn.open()

    async def close(self) -> None:
        await self._conn.close()

    async def schema_version(self) -> int:
        return await self._conn.run(_read_version)

    async def _apply(self, migration: Migration) -> bool:
        statements = _split_script(migration.sql)

        def apply(db: sqlite3.Connection) -> bool:
            # BEGIN IMMEDIATE takes the write lock first: another process migrating at the same
            # time waits, then sees the new version and skips.
            with _transaction(db):
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version ("
                    " version INTEGER PRIMARY KEY,"
                    " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
                    ") STRICT"
                )
                current = _read_version(db)
                if current >= migration.version:
                    return False
                if current != migration.version - 1:
                    raise StorageError(f"cannot apply migration {migration.version} to schema {current}")
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (migration.version,))
                return True

        return await self._conn.run(apply)


class SqliteAccounts:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def create(self, host: str, username: str, credentials: Sequence[ScramCredentials]) -> bool:
        check_credentials(credentials)

        def create(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                cur = db.execute(
                    "INSERT INTO accounts (host, username) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (host, username),
                )
                if cur.rowcount == 0:
                    return False
                _insert_credentials(db, host, username, credentials)
                return True

        return await self._conn.run(create)

    async def credentials(self, host: str, username: str, hash_name: str) -> ScramCredentials | None:
        def get(db: sqlite3.Connection) -> ScramCredentials | None:
            row = db.execute(
                "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
                " WHERE host = ? AND username = ? AND hash_name = ?",
                (host, username, hash_name),
            ).fetchone()
            if row is None:
                return None
            return ScramCredentials(hash_name, bytes(row[0]), row[1], bytes(row[2]), bytes(row[3]))

        return await self._conn.run(get)

    async def set_credentials(
        self, host: str, username: str, credentials: Sequence[ScramCredentials]
    ) -> bool:
        check_credentials(credentials)

        def replace(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                found = db.execute(
                    "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username)
                ).fetchone()
                if found is None:
                    return False
                db.execute("DELETE FROM scram_credentials WHERE host = ? AND username = ?", (host, username))
                _insert_credentials(db, host, username, credentials)
                return True

        return await self._conn.run(replace)

    async def delete(self, host: str, username: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                for table in _USER_TABLES:
                    db.execute(f"DELETE FROM {table} WHERE host = ? AND username = ?", (host, username))
                cur = db.execute("DELETE FROM accounts WHERE host = ? AND username = ?", (host, username))
                return cur.rowcount > 0

        return await self._conn.run(delete)

    async def exists(self, host: str, username: str) -> bool:
        def exists(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username)
            ).fetchone()
            return row is not None

        return await self._conn.run(exists)

    async def list(self, host: str | None = None) -> builtins.list[tuple[str, str]]:
        def list_(db: sqlite3.Connection) -> builtins.list[tuple[str, str]]:
            if host is None:
                rows = db.execute("SELECT host, username FROM accounts ORDER BY host, username")
            else:
                rows = db.execute(
                    "SELECT host, username FROM accounts WHERE host = ? ORDER BY username", (host,)
                )
            return [(h, u) for h, u in rows]

        return await self._conn.run(list_)


def _insert_credentials(
    db: sqlite3.Connection, host: str, username: str, credentials: Sequence[ScramCredentials]
) -> None:
    db.executemany(
        "INSERT INTO scram_credentials"
        " (host, username, hash_name, salt, iterations, stored_key, server_key)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (host, username, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key)
            for c in credentials
        ],
    )


_ROSTER_COLUMNS = "jid, name, subscription, ask, pending_in, approved, group_names, listed"
# One statement, so the version and the items come from the same snapshot; a user whose roster was
# written has a version row, and the LEFT JOIN gives one row of NULL items when the roster is empty.
_ROSTER_SELECT = (
    "SELECT v.version, "
    + ", ".join("i." + column for column in _ROSTER_COLUMNS.split(", "))
    + " FROM roster_versions v LEFT JOIN roster_items i ON i.host = v.host AND i.username = v.username"
    " WHERE v.host = ? AND v.username = ? ORDER BY i.added_version"
)


def _roster_item(row: Sequence[Any]) -> RosterItem:
    jid, name, subscription, ask, pending_in, approved, groups, listed = row
    return RosterItem(
        jid=jid,
        name=name,
        subscription=subscription,
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(json.loads(groups)),
        listed=bool(listed),
    )


class SqliteRosters:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        def items(db: sqlite3.Connection) -> tuple[int, list[RosterItem]]:
            rows = db.execute(_ROSTER_SELECT, (host, username)).fetchall()
            if not rows:
                return 0, []
            return rows[0][0], [_roster_item(row[1:]) for row in rows if row[1] is not None]

        return await self._conn.run(items)

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        def item(db: sqlite3.Connection) -> RosterItem | None:
            row = db.execute(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                (host, username, contact),
            ).fetchone()
            return None if row is None else _roster_item(row)

        return await self._conn.run(item)

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        groups = json.dumps(list(item.groups), ensure_ascii=False)

        def put(db: sqlite3.Connection) -> int:
            with _transaction(db):
                version = int(_bump_version(db, host, username))
                db.execute(
                    f"INSERT INTO roster_items (host, username, {_ROSTER_COLUMNS}, added_version)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (host, username, jid) DO UPDATE SET"
                    " name = excluded.name, subscription = excluded.subscription, ask = excluded.ask,"
                    " pending_in = excluded.pending_in, approved = excluded.approved,"
                    " group_names = excluded.group_names, listed = excluded.listed",
                    (
                        host,
                        username,
                        item.jid,
                        item.name,
                        item.subscription,
                        item.ask,
                        item.pending_in,
                        item.approved,
                        groups,
                        item.listed,
                        version,
                    ),
                )
                return version

        return await self._conn.run(put)

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        def remove(db: sqlite3.Connection) -> int | None:
            with _transaction(db):
                cur = db.execute(
                    "DELETE FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                    (host, username, contact),
                )
                if cur.rowcount == 0:
                    return None
                return _bump_version(db, host, username)

        return await self._conn.run(remove)


def _bump_version(db: sqlite3.Connection, host: str, username: str) -> int:
    # fetchall: step the statement to its end so it is finished before COMMIT.
    rows = db.execute(
        "INSERT INTO roster_versions (host, username, version) VALUES (?, ?, 1)"
        " ON CONFLICT (host, username) DO UPDATE SET version = version + 1 RETURNING version",
        (host, username),
    ).fetchall()
    return int(rows[0][0])


class SqliteKeyValue:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def get(self, host: str, username: str, store: str, key: str) -> Any | None:
        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT value FROM kv WHERE host = ? AND username = ? AND store = ? AND key = ?",
                (host, username, store, key),
            ).fetchone()
            return None if row is None else str(row[0])

        text = await self._conn.run(get)
        return None if text is None else decode_json(text)

    async def set(self, host: str, username: str, store: str, key: str, value: Any | None) -> None:
        if value is None:

            def delete(db: sqlite3.Connection) -> None:
                db.execute(
                    "DELETE FROM kv WHERE host = ? AND username = ? AND store = ? AND key = ?",
                    (host, username, store, key),
                )

            await self._conn.run(delete)
            return
        text = encode_json(value)

        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO kv (host, username, store, key, value) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (host, username, store, key) DO UPDATE SET value = excluded.value",
                (host, username, store, key, text),
            )

        await self._conn.run(upsert)

    async def all(self, host: str, username: str, store: str) -> dict[str, Any]:
        def all_(db: sqlite3.Connection) -> list[tuple[str, str]]:
            return db.execute(
                "SELECT key, value FROM kv WHERE host = ? AND username = ? AND store = ? ORDER BY key",
                (host, username, store),
            ).fetchall()

        return {key: decode_json(text) for key, text in await self._conn.run(all_)}


async def open_sqlite(path: str, *, migrations: Sequence[Migration] | None = None) -> SqliteStorage:
    """Open (creating the file and its directory if needed) an SQLite database; ":memory:" works too."""
    storage = SqliteStorage(path, migrations)
    await storage.open()
    return storage

"""PostgreSQL backend: an asyncpg pool.

Every connection of the pool has its search_path set to the configured schema when it connects,
so the queries name tables without a schema and one database can hold several xmppd instances (or
test runs) side by side. asyncpg prepares and caches each statement per connection, so the hot
queries cost one round trip.

Writes that touch several rows run in a transaction. Roster changes lock the user's
roster_versions row first, whatever they do next, so concurrent changes to one roster queue up
behind each other instead of deadlocking.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg

from storage.base import Storage, check_credentials, decode_json, encode_json
from storage.errors import StorageError
from storage.model import RosterItem, ScramCredentials
from storage.postgres_archive import PostgresArchive
from storage.postgres_offline import PostgresOffline
from storage.schema import Migration, load_migrations

# Every table holding a user's data besides `accounts` (whose credentials go by ON DELETE CASCADE),
# in the order rows are locked: roster_versions first, as the roster writes do. A migration that
# adds such a table adds it here; the contract suite checks that deleting an account leaves no
# row of the user in any table with (host, username) columns.
_USER_TABLES = ("roster_versions", "roster_items", "kv", "archive", "offline_messages")

CONNECT_TIMEOUT = 10.0  # seconds; a server that does not answer should fail startup quickly

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresStorage(Storage):
    backend: ClassVar[str] = "postgresql"

    def __init__(self, schema: str = "public", migrations: Sequence[Migration] | None = None) -> None:
        super().__init__(load_migrations("postgres") if migrations is None else migrations)
        if not schema:
            raise ValueError("the PostgreSQL schema name must not be empty")
        self.schema = schema
        self._pool: Any = None
        self._closed = False
        self.accounts = PostgresAccounts(self)
        self.rosters = PostgresRosters(self)
        self.kv = PostgresKeyValue(self)
        self.offline = PostgresOffline(self)
        self.archive = PostgresArchive(self)

    async def open(self, dsn: str, pool_size: int = 10) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        try:
            self._pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT,
                server_settings={"search_path": quote_identifier(self.schema)},
            )
        except _DRIVER_ERRORS as exc:
            self._closed = True
            raise StorageError(f"postgresql: cannot connect: {exc}") from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection for one operation; driver errors become StorageError."""
        if self._closed or self._pool is None:
            raise StorageError("storage is closed")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"postgresql: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            await self._pool.close()

    async def schema_version(self) -> int:
        async with self.connection() as conn:
            return await _read_version(conn)

    async def _apply(self, migration: Migration) -> bool:
        async with self.connection() as conn, conn.transaction():
            # Held until the transaction ends: a concurrent `xmppd migrate` on the same schema waits
            # here, then sees the new version and skips.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"xmppd migrate {self.schema}")
            exists = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema)
            if exists is None:
                await conn.execute(f"CREATE SCHEMA {quote_identifier(self.schema)}")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await _read_version(conn)
            if current >= migration.version:
                return False
            if current != migration.version - 1:
                raise StorageError(f"cannot apply migration {migration.version} to schema {current}")
            await conn.execute(migration.sql)  # no arguments: the simple protocol runs the whole script
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", migration.version)
            return True


async def _read_version(conn: Any) -> int:
    # to_regclass resolves through the search_path and gives NULL when the schema or table is missing.
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


class PostgresAccounts:
    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage

    async def create(self, host: str, username: str, credentials: Sequence[ScramCredentials]) -> bool:
        check_credentials(credentials)
        async with self._storage.connection() as conn, conn.transaction():
            created = await conn.fetchval(
                "INSERT INTO accounts (host, username) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                host,
                username,
            )
            if created is None:
                return False
            await _insert_credentials(conn, host, username, credentials)
            return True

    async def credentials(self, host: str, username: str, hash_name: str) -> ScramCredentials | None:
        async with self._storage.connection() as conn:
            row = await conn.fetchrow(
                "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
                " WHERE host = $1 AND username = $2 AND hash_name = $3",
                host,
                username,
                hash_name,
            )
        if row is None:
            return None
        return ScramCredentials(hash_name, row[0], row[1], row[2], row[3])

    async def set_credentials(
        self, host: str, username: str, credentials: Sequence[ScramCredentials]
    ) -> bool:
        check_credentials(credentials)
        async with self._storage.connection() as conn, conn.transaction():
            # FOR UPDATE: two concurrent replacements take turns instead of colliding on the keys.
            found = await conn.fetchval(
                "SELECT 1 FROM accounts WHERE host = $1 AND username = $2 FOR UPDATE", host, username
            )
            if found is None:
                return False
            await conn.execute(
                "DELETE FROM scram_credentials WHERE host = $1 AND username = $2", host, username
            )
            await _insert_credentials(conn, host, username, credentials)
            return True

    async def delete(self, host: str, username: str) -> bool:
        async with self._storage.connection() as conn, conn.transaction():
            for table in _USER_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE host = $1 AND username = $2", host, username)
            deleted = await conn.fetchval(
                "DELETE FROM accounts WHERE host = $1 AND username = $2 RETURNING true", host, username
            )
            return deleted is not None

    async def exists(self, host: str, username: str) -> bool:
        async with self._storage.connection() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM accounts WHERE host = $1 AND username = $2", host, username
            )
        return found is not None

    async def list(self, host: str | None = None) -> builtins.list[tuple[str, str]]:
        async with self._storage.connection() as conn:
            if host is None:
                rows = await conn.fetch("SELECT host, username FROM accounts ORDER BY host, username")
            else:
                rows = await conn.fetch(
                    "SELECT host, username FROM accounts WHERE host = $1 ORDER BY username", host
                )
        return [(row[0], row[1]) for row in rows]


async def _insert_credentials(
    conn: Any, host: str, username: str, credentials: Sequence[ScramCredentials]
) -> None:
    if not credentials:
        return
    await conn.executemany(
        "INSERT INTO scram_credentials"
        " (host, username, hash_name, salt, iterations, stored_key, server_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    " WHERE v.host = $1 AND v.username = $2 ORDER BY i.added_version"
)


def _roster_item(row: Sequence[Any]) -> RosterItem:
    jid, name, subscription, ask, pending_in, approved, groups, listed = row
    return RosterItem(
        jid=jid,
        name=name,
        subscription=subscription,
        ask=ask,
        pending_in=pending_in,
        approved=approved,
        groups=tuple(groups),
        listed=listed,
    )


class PostgresRosters:
    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        async with self._storage.connection() as conn:
            rows = await conn.fetch(_ROSTER_SELECT, host, username)
        if not rows:
            return 0, []
        return int(rows[0][0]), [_roster_item(tuple(row)[1:]) for row in rows if row[1] is not None]

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        async with self._storage.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_ROSTER_COLUMNS} FROM roster_items WHERE host = $1 AND username = $2 AND jid = $3",
                host,
                username,
                contact,
            )
        return None if row is None else _roster_item(tuple(row))

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        async with self._storage.connection() as conn, conn.transaction():
            version = int(
                await conn.fetchval(
                    "INSERT INTO roster_versions (host, username, version) VALUES ($1, $2, 1)"
                    " ON CONFLICT (host, username) DO UPDATE SET version = roster_versions.version + 1"
                    " RETURNING version",
                    host,
                    username,
                )
            )
            await conn.execute(
                f"INSERT INTO roster_items (host, username, {_ROSTER_COLUMNS}, added_version)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (host, username, jid) DO UPDATE SET"
                " name = excluded.name, subscription = excluded.subscription, ask = excluded.ask,"
                " pending_in = excluded.pending_in, approved = excluded.approved,"
                " group_names = excluded.group_names, listed = excluded.listed",
                host,
                username,
                item.jid,
                item.name,
                item.subscription,
                item.ask,
                item.pending_in,
                item.approved,
                list(item.groups),
                item.listed,
                version,
            )
            return version

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        async with self._storage.connection() as conn, conn.transaction():
            # Lock the version row before the item, in the same order as put().
            current = await conn.fetchval(
                "SELECT version FROM roster_versions WHERE host = $1 AND username = $2 FOR UPDATE",
                host,
                username,
            )
            if current is None:  # never written: there is no item to remove
                return None
            deleted = await conn.fetchval(
                "DELETE FROM roster_items WHERE host = $1 AND username = $2 AND jid = $3 RETURNING true",
                host,
                username,
                contact,
            )
            if deleted is None:
                return None
            return int(
                await conn.fetchval(
                    "UPDATE roster_versions SET version = version + 1"
                    " WHERE host = $1 AND username = $2 RETURNING version",
                    host,
                    username,
                )
            )


class PostgresKeyValue:
    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage

    async def get(self, host: str, username: str, store: str, key: str) -> Any | None:
        async with self._storage.connection() as conn:
            text = await conn.fetchval(
                "SELECT value FROM kv WHERE host = $1 AND username = $2 AND store = $3 AND key = $4",
                host,
                username,
                store,
                key,
            )
        return None if text is None else decode_json(text)

    async def set(self, host: str, username: str, store: str, key: str, value: Any | None) -> None:
        if value is None:
            async with self._storage.connection() as conn:
                await conn.execute(
                    "DELETE FROM kv WHERE host = $1 AND username = $2 AND store = $3 AND key = $4",
                    host,
                    username,
                    store,
                    key,
                )
            return
        text = encode_json(value)  # asyncpg passes json as text both ways
        async with self._storage.connection() as conn:
            await conn.execute(
                "INSERT INTO kv (host, username, store, key, value) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (host, username, store, key) DO UPDATE SET value = excluded.value",
                host,
                username,
                store,
                key,
                text,
            )

    async def all(self, host: str, username: str, store: str) -> dict[str, Any]:
        async with self._storage.connection() as conn:
            rows = await conn.fetch(
                "SELECT key, value FROM kv WHERE host = $1 AND username = $2 AND store = $3 ORDER BY key",
                host,
                username,
                store,
            )
        return {row[0]: decode_json(row[1]) for row in rows}


async def open_postgres(
    dsn: str,
    *,
    schema: str = "public",
    pool_size: int = 10,
    migrations: Sequence[Migration] | None = None,
) -> PostgresStorage:
    """Connect a pool to the database; the schema is created by migrate() if it does not exist."""
    storage = PostgresStorage(schema, migrations)
    await storage.open(dsn, pool_size)
    return storage

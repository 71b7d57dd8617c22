"""PostgresStorage: the stores on one pool (storage/postgres/connection.py), the schema version
and migrations.

Writes that touch several rows run in a transaction. Roster changes lock the user's
roster_versions row first, whatever they do next, so concurrent changes to one roster queue up
behind each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from storage.base import Storage
from storage.documents import KV, MAPS, JsonKeyValue, JsonMaps
from storage.errors import StorageError
from storage.postgres.accounts import PostgresAccounts
from storage.postgres.archive import PostgresArchive
from storage.postgres.connection import Pool, quote_identifier
from storage.postgres.documents import PostgresDocuments
from storage.postgres.offline import PostgresOffline
from storage.postgres.rosters import PostgresRosters
from storage.schema import Migration, load_migrations

__all__ = ["PostgresStorage", "open_postgres"]


class PostgresStorage(Storage):
    backend: ClassVar[str] = "postgresql"

    def __init__(self, schema: str = "public", migrations: Sequence[Migration] | None = None) -> None:
        super().__init__(load_migrations("postgres") if migrations is None else migrations)
        if not schema:
            raise ValueError("the PostgreSQL schema name must not be empty")
        self.schema = schema
        self._pool = Pool(schema)
        self.accounts = PostgresAccounts(self._pool)
        self.rosters = PostgresRosters(self._pool)
        self.kv = JsonKeyValue(PostgresDocuments(self._pool, KV))
        self.maps = JsonMaps(PostgresDocuments(self._pool, MAPS))
        self.offline = PostgresOffline(self._pool)
        self.archive = PostgresArchive(self._pool)

    async def open(self, dsn: str, pool_size: int = 10) -> None:
        await self._pool.open(dsn, pool_size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled connection for one operation; driver errors become StorageError."""
        async with self._pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        await self._pool.close()

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            return await read_version(conn)

    async def _apply(self, migration: Migration) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
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
            current = await read_version(conn)
            if current >= migration.version:
                return False
            if current != migration.version - 1:
                raise StorageError(f"cannot apply migration {migration.version} to schema {current}")
            await conn.execute(migration.sql)  # no arguments: the simple protocol runs the whole script
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", migration.version)
            return True


async def read_version(conn: Any) -> int:
    """The highest applied migration; 0 for an empty database (or schema)."""
    # to_regclass resolves through the search_path and gives NULL when the schema or table is missing.
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


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

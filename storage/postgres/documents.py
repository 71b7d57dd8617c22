"""The JSON document tables (kv, maps) on PostgreSQL: storage.documents.DocumentRows on the pool.
The value columns are `json`, which asyncpg passes as text both ways."""

from __future__ import annotations

from collections.abc import Sequence

from storage.documents import DocumentTable, Write, write_groups
from storage.postgres.connection import Pool
from storage.rows import numbered


class PostgresDocuments:
    def __init__(self, pool: Pool, table: DocumentTable) -> None:
        self._pool = pool
        self._sql = table.statements(numbered)

    async def get(self, scope: Sequence[str], key: str) -> str | None:
        async with self._pool.connection() as conn:
            text: str | None = await conn.fetchval(self._sql.get, *scope, key)
        return text

    async def upsert(self, scope: Sequence[str], key: str, text: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(self._sql.upsert, *scope, key, text)

    async def delete(self, scope: Sequence[str], key: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(self._sql.delete, *scope, key)

    async def write_many(self, writes: Sequence[Write]) -> None:
        if len(writes) == 1:
            # One statement is a transaction of its own: one round trip instead of three (a
            # batch writer's batch is often a single write when traffic is light).
            scope, key, text = writes[0]
            if text is None:
                await self.delete(scope, key)
            else:
                await self.upsert(scope, key, text)
            return
        async with self._pool.connection() as conn, conn.transaction():
            for is_delete, rows in write_groups(writes):
                await conn.executemany(self._sql.delete if is_delete else self._sql.upsert, rows)

    async def all(self, scope: Sequence[str]) -> list[tuple[str, str]]:
        async with self._pool.connection() as conn:
            rows = await conn.fetch(self._sql.all, *scope)
        return [(row[0], row[1]) for row in rows]

    async def keys(self, scope: Sequence[str]) -> list[str]:
        async with self._pool.connection() as conn:
            rows = await conn.fetch(self._sql.keys, *scope)
        return [row[0] for row in rows]

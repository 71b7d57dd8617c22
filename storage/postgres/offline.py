"""PostgreSQL implementation of the XEP-0160 offline message store (storage.base.OfflineStore).

A push takes a transaction-scoped advisory lock on the user before it counts and inserts, so
concurrent pushes to one user queue up: the limit holds exactly, and the user's ids commit in
the order they were drawn (delivery reads the queue by increasing id and would otherwise skip
an id that commits after a larger one).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from storage.model import OfflineMessage
from storage.postgres.connection import Pool
from storage.rows import offline_message


class PostgresOffline:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def push(self, host: str, username: str, stanza: str, limit: int | None) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('xmppd offline ' || $1 || '/' || $2, 0))",
                host,
                username,
            )
            if limit is not None:
                count = await conn.fetchval(
                    "SELECT count(*) FROM offline_messages WHERE host = $1 AND username = $2", host, username
                )
                if count >= limit:
                    return None
            id_ = await conn.fetchval(
                "INSERT INTO offline_messages (host, username, stanza) VALUES ($1, $2, $3) RETURNING id",
                host,
                username,
                stanza,
            )
            return int(id_)

    async def fetch(
        self, host: str, username: str, *, after: int = 0, limit: int = 100
    ) -> builtins.list[OfflineMessage]:
        async with self._pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, stanza FROM offline_messages WHERE host = $1 AND username = $2 AND id > $3"
                " ORDER BY id LIMIT $4",
                host,
                username,
                after,
                limit,
            )
        return [offline_message(tuple(row)) for row in rows]

    async def delete(self, host: str, username: str, ids: Sequence[int]) -> int:
        wanted = sorted({int(id_) for id_ in ids})
        if not wanted:
            return 0
        async with self._pool.connection() as conn:
            deleted = await conn.fetchval(
                "WITH gone AS (DELETE FROM offline_messages"
                " WHERE host = $1 AND username = $2 AND id = ANY($3::bigint[]) RETURNING 1)"
                " SELECT count(*) FROM gone",
                host,
                username,
                wanted,
            )
        return int(deleted)

    async def count(self, host: str, username: str) -> int:
        async with self._pool.connection() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM offline_messages WHERE host = $1 AND username = $2", host, username
            )
        return int(value)

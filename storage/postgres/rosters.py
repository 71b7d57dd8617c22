"""Versioned rosters on PostgreSQL (storage.base.RosterStore).

Every change locks the user's roster_versions row first (the upsert that bumps it, or SELECT ...
FOR UPDATE), so concurrent changes to one roster queue up instead of deadlocking.
"""

from __future__ import annotations

from storage.model import RosterItem
from storage.postgres.connection import Pool
from storage.rows import numbered, roster_item, roster_item_select, roster_select, roster_upsert, roster_values

_SELECT_ALL = roster_select(numbered)
_SELECT_ONE = roster_item_select(numbered)
_UPSERT = roster_upsert(numbered)


class PostgresRosters:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        async with self._pool.connection() as conn:
            rows = await conn.fetch(_SELECT_ALL, host, username)
        if not rows:
            return 0, []
        return int(rows[0][0]), [roster_item(tuple(row)[1:]) for row in rows if row[1] is not None]

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(_SELECT_ONE, host, username, contact)
        return None if row is None else roster_item(tuple(row))

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            version = int(
                await conn.fetchval(
                    "INSERT INTO roster_versions (host, username, version) VALUES ($1, $2, 1)"
                    " ON CONFLICT (host, username) DO UPDATE SET version = roster_versions.version + 1"
                    " RETURNING version",
                    host,
                    username,
                )
            )
            await conn.execute(_UPSERT, *roster_values(host, username, item, list(item.groups), version))
            return version

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
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

"""Accounts and their SCRAM credentials on PostgreSQL (storage.base.AccountStore)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from storage.base import check_credentials
from storage.model import ScramCredentials
from storage.postgres.connection import Pool
from storage.rows import USER_TABLES, credential_rows, credentials_insert, credentials_record, numbered

_INSERT_CREDENTIALS = credentials_insert(numbered)


class PostgresAccounts:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(self, host: str, username: str, credentials: Sequence[ScramCredentials]) -> bool:
        check_credentials(credentials)
        async with self._pool.connection() as conn, conn.transaction():
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
        async with self._pool.connection() as conn:
            row = await conn.fetchrow(
                "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
                " WHERE host = $1 AND username = $2 AND hash_name = $3",
                host,
                username,
                hash_name,
            )
        return None if row is None else credentials_record(hash_name, tuple(row))

    async def set_credentials(
        self, host: str, username: str, credentials: Sequence[ScramCredentials]
    ) -> bool:
        check_credentials(credentials)
        async with self._pool.connection() as conn, conn.transaction():
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

    async def delete(self, host: str, username: str) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
            for table in USER_TABLES:
                await conn.execute(f"DELETE FROM {table} WHERE host = $1 AND username = $2", host, username)
            deleted = await conn.fetchval(
                "DELETE FROM accounts WHERE host = $1 AND username = $2 RETURNING true", host, username
            )
            if deleted is None:
                return None
            seq: int = await conn.fetchval(
                "INSERT INTO account_deletions (host, username) VALUES ($1, $2) RETURNING seq", host, username
            )
            return seq

    async def latest_deletion(self) -> int:
        async with self._pool.connection() as conn:
            seq: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM account_deletions")
        return seq

    async def deletions_after(self, seq: int) -> builtins.list[tuple[int, str, str]]:
        async with self._pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT seq, host, username FROM account_deletions WHERE seq > $1 ORDER BY seq", seq
            )
        return [(row[0], row[1], row[2]) for row in rows]

    async def exists(self, host: str, username: str) -> bool:
        async with self._pool.connection() as conn:
            found = await conn.fetchval(
                "SELECT 1 FROM accounts WHERE host = $1 AND username = $2", host, username
            )
        return found is not None

    async def list(self, host: str | None = None) -> builtins.list[tuple[str, str]]:
        async with self._pool.connection() as conn:
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
    if credentials:
        await conn.executemany(_INSERT_CREDENTIALS, credential_rows(host, username, credentials))

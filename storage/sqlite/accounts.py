"""Accounts and their SCRAM credentials on SQLite (storage.base.AccountStore)."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence

from storage.base import check_credentials
from storage.model import ScramCredentials
from storage.rows import USER_TABLES, credential_rows, credentials_insert, credentials_record, qmark
from storage.sqlite.connection import Connection, transaction

_INSERT_CREDENTIALS = credentials_insert(qmark)


class SqliteAccounts:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def create(self, host: str, username: str, credentials: Sequence[ScramCredentials]) -> bool:
        check_credentials(credentials)
        rows = credential_rows(host, username, credentials)

        def create(db: sqlite3.Connection) -> bool:
            with transaction(db):
                cur = db.execute(
                    "INSERT INTO accounts (host, username) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (host, username),
                )
                if cur.rowcount == 0:
                    return False
                db.executemany(_INSERT_CREDENTIALS, rows)
                return True

        return await self._conn.run(create)

    async def credentials(self, host: str, username: str, hash_name: str) -> ScramCredentials | None:
        def get(db: sqlite3.Connection) -> ScramCredentials | None:
            row = db.execute(
                "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
                " WHERE host = ? AND username = ? AND hash_name = ?",
                (host, username, hash_name),
            ).fetchone()
            return None if row is None else credentials_record(hash_name, row)

        return await self._conn.run(get)

    async def set_credentials(
        self, host: str, username: str, credentials: Sequence[ScramCredentials]
    ) -> bool:
        check_credentials(credentials)
        rows = credential_rows(host, username, credentials)

        def replace(db: sqlite3.Connection) -> bool:
            with transaction(db):
                found = db.execute(
                    "SELECT 1 FROM accounts WHERE host = ? AND username = ?", (host, username)
                ).fetchone()
                if found is None:
                    return False
                db.execute("DELETE FROM scram_credentials WHERE host = ? AND username = ?", (host, username))
                db.executemany(_INSERT_CREDENTIALS, rows)
                return True

        return await self._conn.run(replace)

    async def delete(self, host: str, username: str) -> int | None:
        def delete(db: sqlite3.Connection) -> int | None:
            with transaction(db):
                for table in USER_TABLES:
                    db.execute(f"DELETE FROM {table} WHERE host = ? AND username = ?", (host, username))
                cur = db.execute("DELETE FROM accounts WHERE host = ? AND username = ?", (host, username))
                if cur.rowcount == 0:
                    return None
                cur = db.execute("INSERT INTO account_deletions (host, username) VALUES (?, ?)", (host, username))
                return cur.lastrowid

        return await self._conn.run(delete)

    async def latest_deletion(self) -> int:
        def latest(db: sqlite3.Connection) -> int:
            seq: int = db.execute("SELECT coalesce(max(seq), 0) FROM account_deletions").fetchone()[0]
            return seq

        return await self._conn.run(latest)

    async def deletions_after(self, seq: int) -> builtins.list[tuple[int, str, str]]:
        def after(db: sqlite3.Connection) -> builtins.list[tuple[int, str, str]]:
            rows = db.execute(
                "SELECT seq, host, username FROM account_deletions WHERE seq > ? ORDER BY seq", (seq,)
            )
            return [(row[0], row[1], row[2]) for row in rows]

        return await self._conn.run(after)

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

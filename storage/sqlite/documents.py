"""The JSON document tables (kv, maps) on SQLite: storage.documents.DocumentRows, run in the
connection's thread. Each statement is one implicit transaction of its own; `write_many` is one
explicit transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.documents import DocumentTable, Write, write_groups
from storage.rows import qmark
from storage.sqlite.connection import Connection, transaction


class SqliteDocuments:
    def __init__(self, conn: Connection, table: DocumentTable) -> None:
        self._conn = conn
        self._sql = table.statements(qmark)

    async def get(self, scope: Sequence[str], key: str) -> str | None:
        sql, args = self._sql.get, (*scope, key)

        def get(db: sqlite3.Connection) -> str | None:
            row = db.execute(sql, args).fetchone()
            return None if row is None else str(row[0])

        return await self._conn.run(get)

    async def upsert(self, scope: Sequence[str], key: str, text: str) -> None:
        sql, args = self._sql.upsert, (*scope, key, text)

        def upsert(db: sqlite3.Connection) -> None:
            db.execute(sql, args)

        await self._conn.run(upsert)

    async def delete(self, scope: Sequence[str], key: str) -> None:
        sql, args = self._sql.delete, (*scope, key)

        def delete(db: sqlite3.Connection) -> None:
            db.execute(sql, args)

        await self._conn.run(delete)

    async def write_many(self, writes: Sequence[Write]) -> None:
        groups = list(write_groups(writes))
        upsert, delete = self._sql.upsert, self._sql.delete

        def write(db: sqlite3.Connection) -> None:
            with transaction(db):
                for is_delete, rows in groups:
                    db.executemany(delete if is_delete else upsert, rows)

        await self._conn.run(write)

    async def all(self, scope: Sequence[str]) -> list[tuple[str, str]]:
        sql, args = self._sql.all, tuple(scope)

        def all_(db: sqlite3.Connection) -> list[tuple[str, str]]:
            return [(str(key), str(text)) for key, text in db.execute(sql, args)]

        return await self._conn.run(all_)

    async def keys(self, scope: Sequence[str]) -> list[str]:
        sql, args = self._sql.keys, tuple(scope)

        def keys(db: sqlite3.Connection) -> list[str]:
            return [str(key) for (key,) in db.execute(sql, args)]

        return await self._conn.run(keys)

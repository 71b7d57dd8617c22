"""The message archive on SQLite (see storage/archive.py and migration 0002).

The archive id is the table's rowid, so the indexes on (host, username) and (host, username,
with_jid) end with it: each page is one index range read in id order, forwards or backwards.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from storage.archive import ArchivePage, ArchiveQuery, ArchiveRecord, datetime_ms, first_id_at
from storage.rows import ARCHIVE_COLUMNS, ARCHIVE_INSERT_COLUMNS, archive_record, archive_values, marks, qmark
from storage.sqlite.connection import Connection, transaction

_INSERT = (
    f"INSERT INTO archive ({', '.join(ARCHIVE_INSERT_COLUMNS)})"
    f" VALUES ({marks(qmark, len(ARCHIVE_INSERT_COLUMNS))})"
)


def _where(host: str, username: str, query: ArchiveQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of a query on one archive, and its arguments."""
    low, high = query.id_range()
    # With a list of ids, look each one up by rowid: the unary + keeps SQLite from choosing an
    # index range that would walk the whole archive instead.
    plus = "+" if query.ids is not None else ""
    clauses = [f"{plus}host = ?", f"{plus}username = ?", "id > ?", "id < ?"]
    args: list[Any] = [host, username, low, high]
    if query.with_jid is not None:
        clauses.append(f"{plus}with_jid = ?")
        args.append(query.with_jid)
        if query.with_resource is not None:
            clauses.append("with_resource = ?")
            args.append(query.with_resource)
    if query.ids is not None:
        clauses.append(f"id IN ({', '.join('?' * len(query.ids))})")
        args.extend(query.ids)
    return " AND ".join(clauses), args


class SqliteArchive:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def append(self, records: Sequence[ArchiveRecord]) -> None:
        rows = [archive_values(r) for r in records]
        if not rows:
            return

        def append(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.executemany(_INSERT, rows)

        await self._conn.run(append)

    async def query(self, host: str, username: str, query: ArchiveQuery) -> ArchivePage:
        if query.ids is not None and not query.ids:
            return ArchivePage([], True)
        where, args = _where(host, username, query)
        order = "DESC" if query.last else "ASC"
        sql = f"SELECT {ARCHIVE_COLUMNS} FROM archive WHERE {where} ORDER BY id {order} LIMIT ? OFFSET ?"
        params = [*args, query.limit + 1, query.offset]

        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(sql, params).fetchall()

        rows = await self._conn.run(select)
        complete = len(rows) <= query.limit
        rows = rows[: query.limit]
        if query.last:
            rows.reverse()
        return ArchivePage([archive_record(host, username, row) for row in rows], complete)

    async def count(self, host: str, username: str, query: ArchiveQuery) -> int:
        if query.ids is not None and not query.ids:
            return 0
        where, args = _where(host, username, query)
        sql = f"SELECT count(*) FROM archive WHERE {where}"

        def count(db: sqlite3.Connection) -> int:
            return int(db.execute(sql, args).fetchone()[0])

        return await self._conn.run(count)

    async def existing(self, host: str, username: str, ids: Sequence[int]) -> builtins.set[int]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        sql = (
            "SELECT id FROM archive WHERE host = ? AND username = ?"
            f" AND id IN ({', '.join('?' * len(wanted))})"
        )

        def existing(db: sqlite3.Connection) -> builtins.set[int]:
            return {row[0] for row in db.execute(sql, [host, username, *wanted])}

        return await self._conn.run(existing)

    async def delete_before(self, host: str, before: datetime) -> int:
        cutoff = first_id_at(datetime_ms(before))

        def delete(db: sqlite3.Connection) -> int:
            with transaction(db):
                # A rowid range, so only the old part of the table is visited (the unary + keeps
                # SQLite from walking the host's whole index instead).
                return db.execute("DELETE FROM archive WHERE id < ? AND +host = ?", (cutoff, host)).rowcount

        return await self._conn.run(delete)

    async def delete_archive(self, host: str, username: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            with transaction(db):
                # The archive_user index (host, username) finds exactly that owner's rows.
                return db.execute("DELETE FROM archive WHERE host = ? AND username = ?", (host, username)).rowcount

        return await self._conn.run(delete)

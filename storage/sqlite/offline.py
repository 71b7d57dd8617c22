"""SQLite implementation of the XEP-0160 offline message store (storage.base.OfflineStore).

Runs on the backend's one connection thread (see storage/sqlite/connection.py), so a push's count
and insert are one transaction that no other write can interleave with: the limit holds exactly
and ids grow in push order.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence

from storage.model import OfflineMessage
from storage.rows import offline_message
from storage.sqlite.connection import Connection, transaction

# Keep each DELETE well under SQLite's limit on bound parameters.
_DELETE_BATCH = 500


class SqliteOffline:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def push(self, host: str, username: str, stanza: str, limit: int | None) -> int | None:
        def push(db: sqlite3.Connection) -> int | None:
            with transaction(db):
                if limit is not None:
                    (count,) = db.execute(
                        "SELECT count(*) FROM offline_messages WHERE host = ? AND username = ?",
                        (host, username),
                    ).fetchone()
                    if count >= limit:
                        return None
                cur = db.execute(
                    "INSERT INTO offline_messages (host, username, stanza) VALUES (?, ?, ?)",
                    (host, username, stanza),
                )
                assert cur.lastrowid is not None
                return int(cur.lastrowid)

        return await self._conn.run(push)

    async def fetch(
        self, host: str, username: str, *, after: int = 0, limit: int = 100
    ) -> builtins.list[OfflineMessage]:
        def fetch(db: sqlite3.Connection) -> builtins.list[OfflineMessage]:
            rows = db.execute(
                "SELECT id, stanza FROM offline_messages WHERE host = ? AND username = ? AND id > ?"
                " ORDER BY id LIMIT ?",
                (host, username, after, limit),
            ).fetchall()
            return [offline_message(row) for row in rows]

        return await self._conn.run(fetch)

    async def delete(self, host: str, username: str, ids: Sequence[int]) -> int:
        wanted = sorted({int(id_) for id_ in ids})

        def delete(db: sqlite3.Connection) -> int:
            deleted = 0
            with transaction(db):
                for start in range(0, len(wanted), _DELETE_BATCH):
                    batch = wanted[start : start + _DELETE_BATCH]
                    marks = ", ".join("?" * len(batch))
                    cur = db.execute(
                        f"DELETE FROM offline_messages WHERE host = ? AND username = ? AND id IN ({marks})",
                        (host, username, *batch),
                    )
                    deleted += cur.rowcount
            return deleted

        if not wanted:
            return 0
        return await self._conn.run(delete)

    async def count(self, host: str, username: str) -> int:
        def count(db: sqlite3.Connection) -> int:
            (value,) = db.execute(
                "SELECT count(*) FROM offline_messages WHERE host = ? AND username = ?", (host, username)
            ).fetchone()
            return int(value)

        return await self._conn.run(count)

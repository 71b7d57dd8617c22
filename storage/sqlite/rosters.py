"""Versioned rosters on SQLite (storage.base.RosterStore). Group names are a JSON array in one
TEXT column; the one connection thread serialises concurrent changes."""

from __future__ import annotations

import json
import sqlite3

from storage.model import RosterItem
from storage.rows import qmark, roster_item, roster_item_select, roster_select, roster_upsert, roster_values
from storage.sqlite.connection import Connection, transaction

_SELECT_ALL = roster_select(qmark)
_SELECT_ONE = roster_item_select(qmark)
_UPSERT = roster_upsert(qmark)


def _item(row: tuple[object, ...]) -> RosterItem:
    return roster_item(row, json.loads)


class SqliteRosters:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        def items(db: sqlite3.Connection) -> tuple[int, list[RosterItem]]:
            rows = db.execute(_SELECT_ALL, (host, username)).fetchall()
            if not rows:
                return 0, []
            return rows[0][0], [_item(row[1:]) for row in rows if row[1] is not None]

        return await self._conn.run(items)

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        def item(db: sqlite3.Connection) -> RosterItem | None:
            row = db.execute(_SELECT_ONE, (host, username, contact)).fetchone()
            return None if row is None else _item(row)

        return await self._conn.run(item)

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        groups = json.dumps(list(item.groups), ensure_ascii=False)

        def put(db: sqlite3.Connection) -> int:
            with transaction(db):
                version = _bump_version(db, host, username)
                db.execute(_UPSERT, roster_values(host, username, item, groups, version))
                return version

        return await self._conn.run(put)

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        def remove(db: sqlite3.Connection) -> int | None:
            with transaction(db):
                cur = db.execute(
                    "DELETE FROM roster_items WHERE host = ? AND username = ? AND jid = ?",
                    (host, username, contact),
                )
                if cur.rowcount == 0:
                    return None
                return _bump_version(db, host, username)

        return await self._conn.run(remove)


def _bump_version(db: sqlite3.Connection, host: str, username: str) -> int:
    # fetchall: step the statement to its end so it is finished before COMMIT.
    rows = db.execute(
        "INSERT INTO roster_versions (host, username, version) VALUES (?, ?, 1)"
        " ON CONFLICT (host, username) DO UPDATE SET version = version + 1 RETURNING version",
        (host, username),
    ).fetchall()
    return int(rows[0][0])

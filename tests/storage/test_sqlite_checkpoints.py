"""The WAL is copied back by the checkpoint thread, never inside a commit (storage/sqlite/connection.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from storage.sqlite.connection import Checkpointer, Connection, transaction

ROWS = 3000
ROW = "x" * 2000  # ~1,500 pages of 4 KiB in all: past SQLite's default autocheckpoint of 1,000


def size(path: Path) -> int:
    return path.stat().st_size


def write_rows(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE t (v TEXT NOT NULL)")
    for _batch in range(ROWS // 100):
        with transaction(db):
            db.executemany("INSERT INTO t VALUES (?)", [(ROW,)] * 100)


async def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path: Path) -> None:
    path = tmp_path / "xmppd.sqlite3"
    conn = Connection(str(path))
    await conn.open()
    checkpointer = conn._checkpointer
    assert checkpointer is not None
    checkpointer.stop()  # none during the writes: what the commits do alone
    await conn.run(write_rows)
    wal = Path(f"{path}-wal")
    # Every page is still in the WAL: no commit copied it back (SQLite's default would have).
    assert size(wal) > ROWS * len(ROW)
    assert size(path) < ROWS * len(ROW) / 10

    running = Checkpointer(str(path), interval=0.01)
    try:
        assert await asyncio.to_thread(running.checkpointed.wait, 30)
    finally:
        running.stop()
    assert size(path) > ROWS * len(ROW)  # copied back into the database file
    assert await conn.run(lambda db: db.execute("SELECT count(*) FROM t").fetchone()[0]) == ROWS
    await conn.close()


async def test_closing_stops_the_checkpoint_thread(tmp_path: Path) -> None:
    conn = Connection(str(tmp_path / "xmppd.sqlite3"))
    await conn.open()
    checkpointer = conn._checkpointer
    assert checkpointer is not None and checkpointer._thread.is_alive()
    await conn.close()
    assert not checkpointer._thread.is_alive()


async def test_an_in_memory_database_has_no_checkpoint_thread() -> None:
    conn = Connection(":memory:")
    await conn.open()
    assert conn._checkpointer is None
    await conn.close()

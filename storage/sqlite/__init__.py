"""SQLite backend: the embedded default (one connection in one worker thread, WAL).

    connection.py   the connection, its thread, and `transaction`
    backend.py      SqliteStorage (schema version, migrations) and open_sqlite
    accounts.py, rosters.py, documents.py (kv and maps), offline.py, archive.py: the stores

Shared with PostgreSQL: the table lists and row mappings (storage/rows.py) and the JSON document
stores (storage/documents.py).
"""

from __future__ import annotations

from storage.sqlite.backend import SqliteStorage, open_sqlite, split_script

__all__ = ["SqliteStorage", "open_sqlite", "split_script"]

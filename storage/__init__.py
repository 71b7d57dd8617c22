"""Storage: small async interfaces by concern, behind which sit the SQLite and PostgreSQL backends.

    storage = await open_storage("sqlite", sqlite_path="data/xmppd.sqlite3")
    await storage.check_schema()          # at startup; `xmppd migrate` calls storage.migrate()
    await storage.accounts.create(host, username, credentials)
    rooms = storage.open_store("muc_rooms", MAP)   # a feature's own store, by shape (storage/shapes.py)

The backends (the packages storage.sqlite and storage.postgres) are imported when opened, so a
SQLite deployment never loads asyncpg.
"""

from __future__ import annotations

from storage.archive import ArchivePage, ArchiveQuery, ArchiveRecord, ArchiveStore
from storage.base import AccountStore, KeyValueStore, MapStore, OfflineStore, RosterStore, Storage
from storage.errors import SchemaError, StorageError
from storage.model import OfflineMessage, RosterItem, ScramCredentials
from storage.schema import LATEST_SCHEMA
from storage.shapes import ARCHIVE, KEY_VALUE, MAP, QUEUE, KeyValue, Map, Shape

__all__ = [
    "ARCHIVE",
    "BACKENDS",
    "KEY_VALUE",
    "LATEST_SCHEMA",
    "MAP",
    "QUEUE",
    "AccountStore",
    "ArchivePage",
    "ArchiveQuery",
    "ArchiveRecord",
    "ArchiveStore",
    "KeyValue",
    "KeyValueStore",
    "Map",
    "MapStore",
    "OfflineMessage",
    "OfflineStore",
    "RosterItem",
    "RosterStore",
    "SchemaError",
    "ScramCredentials",
    "Shape",
    "Storage",
    "StorageError",
    "open_storage",
]

BACKENDS = ("sqlite", "postgresql")


async def open_storage(
    backend: str,
    *,
    sqlite_path: str | None = None,
    postgres_dsn: str | None = None,
    postgres_schema: str = "public",
    pool_size: int = 10,
) -> Storage:
    """Open a backend ("sqlite" | "postgresql"). Does not touch the schema: call check_schema() or migrate().

    ValueError for an unknown backend or a missing path/DSN; StorageError when the database cannot
    be opened or reached.
    """
    if backend == "sqlite":
        if not sqlite_path:
            raise ValueError("the sqlite backend needs sqlite_path")
        from storage.sqlite import open_sqlite

        return await open_sqlite(sqlite_path)
    if backend == "postgresql":
        if not postgres_dsn:
            raise ValueError("the postgresql backend needs postgres_dsn")
        from storage.postgres import open_postgres

        return await open_postgres(postgres_dsn, schema=postgres_schema, pool_size=pool_size)
    raise ValueError(f"unknown storage backend {backend!r}: expected one of {', '.join(BACKENDS)}")

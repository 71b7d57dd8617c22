"""PostgreSQL backend: an asyncpg pool, one schema per instance.

    connection.py   the pool (search_path, driver errors as StorageError) and quote_identifier
    backend.py      PostgresStorage (schema version, migrations) and open_postgres
    accounts.py, rosters.py, documents.py (kv and maps), offline.py, archive.py: the stores

Shared with SQLite: the table lists and row mappings (storage/rows.py) and the JSON document
stores (storage/documents.py).
"""

from __future__ import annotations

from storage.postgres.backend import PostgresStorage, open_postgres
from storage.postgres.connection import CONNECT_TIMEOUT, quote_identifier

__all__ = ["CONNECT_TIMEOUT", "PostgresStorage", "open_postgres", "quote_identifier"]

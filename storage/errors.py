"""Errors raised by the storage layer, whatever the backend."""

from __future__ import annotations


class StorageError(Exception):
    """The database failed or refused an operation (unreachable, closed, constraint violated...).

    Backends translate their driver's exceptions into this one, so callers (the server, the CLI)
    never need to know sqlite3 or asyncpg exception types; the original is kept as __cause__.
    """


class SchemaError(StorageError):
    """The database schema does not match what this xmppd needs; the message tells the operator what to do."""

    def __init__(self, message: str, *, current: int, expected: int) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected


class DamagedDatabaseError(StorageError):
    """The database is damaged, or the file is not a database at all: the message names it and says
    how to restore or salvage it. Raised by the integrity check at start (Storage.check_integrity)
    and by any operation that meets the damage."""

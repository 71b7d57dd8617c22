"""Numbered schema migrations and the schema version check, shared by every backend.

Migrations live in ``storage/migrations/<engine>/NNNN_name.sql`` (package data, read with
importlib.resources), one directory per SQL dialect. Every engine carries the same numbers: a
version means the same logical schema everywhere, so ``xmppd migrate`` and the startup check can
speak of versions without knowing the backend.

The applied versions are recorded in a ``schema_version`` table that the migrator itself creates
in the same transaction as the first migration, so a failed first migration leaves an empty
database, not a half-made one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from storage.errors import SchemaError

# The schema this code is written against. Bump it together with the new migration files of every
# engine and the queries that need them; a test checks that the files agree with this number.
LATEST_SCHEMA = 5

ENGINES = ("sqlite", "postgres")

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def load_migrations(engine: str) -> tuple[Migration, ...]:
    """The migrations of one engine ("sqlite" | "postgres"), in order, checked to be 1..LATEST_SCHEMA."""
    if engine not in ENGINES:
        raise ValueError(f"unknown storage engine {engine!r}")
    folder = resources.files("storage").joinpath("migrations", engine)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    check_sequence(found, engine)
    if found[-1].version != LATEST_SCHEMA:
        raise RuntimeError(
            f"{engine} migrations end at {found[-1].version} but LATEST_SCHEMA is {LATEST_SCHEMA}"
        )
    return tuple(found)


def check_sequence(migrations: Sequence[Migration], engine: str = "test") -> None:
    """Migrations must be numbered 1, 2, 3... without gaps or duplicates (a packaging bug otherwise)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{engine} migrations are not numbered 1..N: {versions}")


def schema_problem(current: int, expected: int) -> SchemaError | None:
    """The error to raise when a database at `current` is used by code that needs `expected`."""
    if current == expected:
        return None
    if current == 0:
        message = "database is empty: run `xmppd migrate`"
    elif current < expected:
        message = f"schema version {current}, this xmppd needs {expected}: run `xmppd migrate`"
    else:
        message = f"schema version {current} is newer than this xmppd knows ({expected}): upgrade xmppd"
    return SchemaError(message, current=current, expected=expected)

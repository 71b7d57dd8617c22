"""What both engines share about the tables: which hold a user's data, their columns, the SQL that
differs only in its placeholders, and the mapping from rows to the records of storage.model.

The engines differ in how they run a statement (sqlite3 in a worker thread, an asyncpg pool), in
their placeholders (`?` or `$1`), and in a few column types (SQLite stores booleans as 0/1 and a
roster item's groups as a JSON array; PostgreSQL has boolean and text[]). Everything else about a
row is said once, here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from storage.archive import ArchiveRecord
from storage.model import OfflineMessage, RosterItem, ScramCredentials

__all__ = [
    "ARCHIVE_COLUMNS",
    "ARCHIVE_INSERT_COLUMNS",
    "CREDENTIAL_COLUMNS",
    "ROSTER_COLUMNS",
    "USER_TABLES",
    "Marks",
    "archive_record",
    "archive_values",
    "credential_rows",
    "credentials_insert",
    "credentials_record",
    "marks",
    "numbered",
    "offline_message",
    "qmark",
    "roster_item",
    "roster_item_select",
    "roster_select",
    "roster_upsert",
    "roster_values",
]

# Every table holding a user's data besides `accounts` (whose credentials go by ON DELETE CASCADE),
# in the order deleting an account visits them: roster_versions first, the row PostgreSQL's roster
# writes lock first too. A migration that adds such a table adds it here; the contract suite checks
# that deleting an account leaves no row of the user in any table with (host, username) columns.
# Per-host tables (`maps`) are not in it: they belong to the host, not to an account.
USER_TABLES = ("roster_versions", "roster_items", "kv", "archive", "offline_messages")


# --- placeholders ---------------------------------------------------------------------------------

Marks = Callable[[int], str]
"""An engine's placeholder for the n-th argument of a statement (counting from 1)."""


def qmark(n: int) -> str:
    """sqlite3's placeholder: `?` whatever the position."""
    return "?"


def numbered(n: int) -> str:
    """asyncpg's (PostgreSQL's) placeholder: `$n`."""
    return f"${n}"


def marks(mark: Marks, count: int, first: int = 1) -> str:
    """`count` placeholders from position `first`, comma-separated: "?, ?, ?" or "$3, $4, $5"."""
    return ", ".join(mark(n) for n in range(first, first + count))


# --- accounts -------------------------------------------------------------------------------------

CREDENTIAL_COLUMNS = ("host", "username", "hash_name", "salt", "iterations", "stored_key", "server_key")


def credentials_insert(mark: Marks) -> str:
    return (
        f"INSERT INTO scram_credentials ({', '.join(CREDENTIAL_COLUMNS)})"
        f" VALUES ({marks(mark, len(CREDENTIAL_COLUMNS))})"
    )


def credential_rows(
    host: str, username: str, credentials: Sequence[ScramCredentials]
) -> list[tuple[Any, ...]]:
    """The scram_credentials rows of an account, in CREDENTIAL_COLUMNS order."""
    return [
        (host, username, c.hash_name, c.salt, c.iterations, c.stored_key, c.server_key) for c in credentials
    ]


def credentials_record(hash_name: str, row: Sequence[Any]) -> ScramCredentials:
    """From (salt, iterations, stored_key, server_key); SQLite gives BLOBs as bytes or memoryview."""
    salt, iterations, stored_key, server_key = row
    return ScramCredentials(hash_name, bytes(salt), int(iterations), bytes(stored_key), bytes(server_key))


# --- rosters --------------------------------------------------------------------------------------

ROSTER_COLUMNS = ("jid", "name", "subscription", "ask", "pending_in", "approved", "group_names", "listed")


def roster_select(mark: Marks) -> str:
    """A user's version and items in one statement ($1 host, $2 username), so both come from the same
    snapshot: a user whose roster was written has a version row, and the LEFT JOIN gives one row of
    NULL items when the roster is empty. Items in the order they were first added."""
    return (
        "SELECT v.version, "
        + ", ".join("i." + column for column in ROSTER_COLUMNS)
        + " FROM roster_versions v LEFT JOIN roster_items i ON i.host = v.host AND i.username = v.username"
        + f" WHERE v.host = {mark(1)} AND v.username = {mark(2)} ORDER BY i.added_version"
    )


def roster_item_select(mark: Marks) -> str:
    """One item ($1 host, $2 username, $3 contact)."""
    return (
        f"SELECT {', '.join(ROSTER_COLUMNS)} FROM roster_items"
        f" WHERE host = {mark(1)} AND username = {mark(2)} AND jid = {mark(3)}"
    )


def roster_upsert(mark: Marks) -> str:
    """Insert or update an item with the arguments of roster_values(); an update keeps added_version,
    so the item keeps its place in the listing."""
    columns = ("host", "username", *ROSTER_COLUMNS, "added_version")
    updated = ", ".join(f"{column} = excluded.{column}" for column in ROSTER_COLUMNS[1:])
    return (
        f"INSERT INTO roster_items ({', '.join(columns)}) VALUES ({marks(mark, len(columns))})"
        f" ON CONFLICT (host, username, jid) DO UPDATE SET {updated}"
    )


def roster_values(host: str, username: str, item: RosterItem, groups: Any, version: int) -> tuple[Any, ...]:
    """The arguments of roster_upsert(); `groups` as the engine stores item.groups."""
    return (
        host,
        username,
        item.jid,
        item.name,
        item.subscription,
        item.ask,
        item.pending_in,
        item.approved,
        groups,
        item.listed,
        version,
    )


def roster_item(row: Sequence[Any], decode_groups: Callable[[Any], Iterable[str]] = tuple) -> RosterItem:
    """From a row in ROSTER_COLUMNS order; flags may be 0/1 integers. `decode_groups` turns the
    engine's group_names cell into the names (SQLite keeps a JSON array, PostgreSQL a text[])."""
    jid, name, subscription, ask, pending_in, approved, group_names, listed = row
    # Interned: the rosters of online users stay in memory (xmppd/rostercache.py), and a contact's
    # JID is in the roster of each of its contacts online. One string each instead of one per
    # row read: 40 strings, ~2.3 KB, per idle session with 20 contacts (bench/RESULTS.md).
    return RosterItem(
        jid=sys.intern(jid),
        name=name,
        subscription=sys.intern(subscription),
        ask=bool(ask),
        pending_in=bool(pending_in),
        approved=bool(approved),
        groups=tuple(decode_groups(group_names)),
        listed=bool(listed),
    )


# --- archive and offline messages -----------------------------------------------------------------

ARCHIVE_COLUMNS = "id, with_jid, with_resource, outgoing, stanza"  # what a query reads
ARCHIVE_INSERT_COLUMNS = ("host", "username", "id", "with_jid", "with_resource", "outgoing", "stanza")


def archive_values(record: ArchiveRecord) -> tuple[Any, ...]:
    """A record's values in ARCHIVE_INSERT_COLUMNS order."""
    r = record
    return (r.host, r.username, r.id, r.with_jid, r.with_resource, r.outgoing, r.stanza)


def archive_record(host: str, username: str, row: Sequence[Any]) -> ArchiveRecord:
    """From a row in ARCHIVE_COLUMNS order."""
    id_, with_jid, with_resource, outgoing, stanza = row
    return ArchiveRecord(host, username, int(id_), with_jid, with_resource, bool(outgoing), stanza)


def offline_message(row: Sequence[Any]) -> OfflineMessage:
    """From (id, stanza)."""
    id_, stanza = row
    return OfflineMessage(int(id_), str(stanza))

"""Store shapes: what a feature asks storage for, by name, without a new attribute on `Storage`.

    blocklists = storage.open_store("blocking", KEY_VALUE)   # per-account JSON documents
    rooms = storage.open_store("muc_rooms", MAP)             # per-host JSON documents
    await rooms.set("conference.example.org", "lobby", {"persistent": True})

A shape is a kind of table that already exists in every engine's schema; a name is a namespace
within it. So a feature with new data of a known shape needs neither a migration nor an edit of
the `Storage` ABC: it picks a name. `Storage.open_store(name, shape)` (storage/base.py) hands out
the store; these are the shapes and the small interfaces a store of each has.

| shape       | scoped to          | interface                                  | names                     |
|-------------|--------------------|--------------------------------------------|---------------------------|
| KEY_VALUE   | an account         | `KeyValue`                                 | any (the kv `store` column) |
| MAP         | a host             | `Map`                                      | any (the maps `store` column) |
| ARCHIVE     | an archive owner   | `storage.archive.ArchiveStore` (XEP-0313)  | "archive" only            |
| QUEUE       | an account         | `storage.base.OfflineStore` (XEP-0160)     | "offline" only            |

KEY_VALUE documents go with the account (the kv table is one of storage.rows.USER_TABLES); MAP
documents belong to the host and stay when an account is deleted. Values of both are JSON: they
come back as JSON gives them (tuples as lists, dict keys as strings), the same on every backend,
and what JSON or the database cannot hold is refused before anything is written (TypeError for
what json cannot serialise, ValueError for NaN/Infinity and for strings with lone surrogates).

An ARCHIVE is scoped to its owner, the (host, username) of a bare JID: an account (its host and
username), or a room of a component host (host: the room service's domain, username: the room's
localpart, `lobby@conference.example.org` -> ("conference.example.org", "lobby")). Archive rows do
not reference accounts, so a room's archive lives in the same table without a migration, and a
component domain is never also a user host (the config refuses it), so the two kinds of owner
cannot collide.

ARCHIVE and QUEUE have one table each with no namespace column yet, so each has exactly one name,
the one of the store it returns; another name is refused rather than silently sharing that table.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Final, Protocol

__all__ = ["ARCHIVE", "KEY_VALUE", "MAP", "QUEUE", "KeyValue", "Map", "Shape"]


class Shape(enum.Enum):
    """The kinds of store `Storage.open_store` hands out (see the module docstring)."""

    KEY_VALUE = "key-value"
    MAP = "map"
    ARCHIVE = "archive"
    QUEUE = "queue"


KEY_VALUE: Final = Shape.KEY_VALUE
MAP: Final = Shape.MAP
ARCHIVE: Final = Shape.ARCHIVE
QUEUE: Final = Shape.QUEUE


class KeyValue(Protocol):
    """Per-account JSON documents in one namespace (a KEY_VALUE store)."""

    @property
    def name(self) -> str: ...

    async def get(self, host: str, username: str, key: str) -> Any | None:
        """The value, or None when the key has none."""
        ...

    async def set(self, host: str, username: str, key: str, value: Any | None) -> None:
        """Store the value; None deletes the key (deleting a missing key is fine)."""
        ...

    async def set_many(self, entries: Sequence[tuple[str, str, str, Any | None]]) -> None:
        """`set` for each (host, username, key, value), in order, in one transaction (all or
        none): what a group commit (xmppd/batching.py) of many accounts' changes writes."""
        ...

    async def all(self, host: str, username: str) -> dict[str, Any]:
        """Every key of the account in this namespace with its value, keys in code point order."""
        ...


class Map(Protocol):
    """Per-host JSON documents in one namespace (a MAP store): room configurations, caches..."""

    @property
    def name(self) -> str: ...

    async def get(self, host: str, key: str) -> Any | None:
        """The value, or None when the key has none."""
        ...

    async def set(self, host: str, key: str, value: Any | None) -> None:
        """Store the value; None deletes the key (deleting a missing key is fine)."""
        ...

    async def all(self, host: str) -> dict[str, Any]:
        """Every key of the host in this namespace with its value, keys in code point order."""
        ...

    async def keys(self, host: str) -> list[str]:
        """The keys of the host in this namespace, in code point order (values are not read)."""
        ...

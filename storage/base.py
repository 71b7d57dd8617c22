"""The storage contract: small async interfaces by concern, and the Storage that bundles them.

Every backend implements these and is checked by the same contract test suite
(tests/storage/test_*contract.py). Callers see only these types and the records of storage.model.
A feature that needs storage of its own asks `Storage.open_store(name, shape)` for it
(storage/shapes.py) instead of adding an attribute here.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, overload

from storage.archive import ArchiveStore
from storage.errors import SchemaError, StorageError
from storage.model import OfflineMessage, RosterItem, ScramCredentials
from storage.schema import Migration, check_sequence, schema_problem
from storage.shapes import KeyValue, Map, Shape

__all__ = [
    "AccountStore",
    "KeyValueNamespace",
    "KeyValueStore",
    "MapNamespace",
    "MapStore",
    "OfflineStore",
    "RosterStore",
    "SchemaError",
    "Storage",
    "StorageError",
]


class AccountStore(Protocol):
    """Local accounts and the SCRAM credentials they log in with (one per hash function)."""

    async def create(self, host: str, username: str, credentials: Sequence[ScramCredentials]) -> bool:
        """Create the account; False (and nothing written) if it already exists."""
        ...

    async def credentials(self, host: str, username: str, hash_name: str) -> ScramCredentials | None: ...

    async def set_credentials(
        self, host: str, username: str, credentials: Sequence[ScramCredentials]
    ) -> bool:
        """Replace all credentials of the account; False if there is no such account."""
        ...

    async def delete(self, host: str, username: str) -> int | None:
        """Delete the account and every piece of data of that user, in one transaction.

        When the account existed, the deletion is logged in the same transaction and its number
        in the log (>= 1) is returned, else None; the user's data goes either way.
        """
        ...

    async def latest_deletion(self) -> int:
        """The number of the newest deletion in the log; 0 when there is none."""
        ...

    async def deletions_after(self, seq: int) -> builtins.list[tuple[int, str, str]]:
        """(number, host, username) of the deletions logged after number `seq`, oldest first."""
        ...

    async def exists(self, host: str, username: str) -> bool: ...

    async def list(self, host: str | None = None) -> builtins.list[tuple[str, str]]:
        """(host, username) pairs sorted by code point, all hosts or one."""
        ...


class RosterStore(Protocol):
    """RFC 6121 rosters with XEP-0237 versions: every change bumps the user's version by one."""

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        """(version, items) read together; (0, []) for a roster never written. Items keep the
        order in which they were first added (an update does not move an item)."""
        ...

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None: ...

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        """Insert or replace the item for item.jid; returns the new roster version."""
        ...

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        """Remove the item; the new roster version, or None (and no bump) if there was none."""
        ...


class KeyValueStore(Protocol):
    """Small per-user documents for modules (blocking list, preferences, vCard...): JSON-serialisable values.

    `store` names the module's namespace. Values come back as JSON gives them (tuples as lists,
    dict keys as strings), the same on every backend. What JSON or the database cannot hold is
    refused before anything is written: TypeError for what json cannot serialise, ValueError for
    NaN/Infinity and for strings with lone surrogates.
    """

    async def get(self, host: str, username: str, store: str, key: str) -> Any | None: ...

    async def set(self, host: str, username: str, store: str, key: str, value: Any | None) -> None:
        """Store the value; None deletes the key."""
        ...

    async def set_many(self, entries: Sequence[tuple[str, str, str, str, Any | None]]) -> None:
        """`set` for each (host, username, store, key, value), in order, in one transaction: all
        or none (a value that cannot be stored refuses the whole batch before anything is written)."""
        ...

    async def all(self, host: str, username: str, store: str) -> dict[str, Any]: ...


class MapStore(Protocol):
    """Small per-host documents (chat-room configurations, a server-wide cache...): the MAP shape's
    table, every namespace. JSON values with the same rules as KeyValueStore; documents belong to
    the host and outlive any account. Features reach it through `Storage.open_store(name, MAP)`."""

    async def get(self, host: str, store: str, key: str) -> Any | None: ...

    async def set(self, host: str, store: str, key: str, value: Any | None) -> None:
        """Store the value; None deletes the key."""
        ...

    async def all(self, host: str, store: str) -> dict[str, Any]: ...

    async def keys(self, host: str, store: str) -> list[str]: ...


class OfflineStore(Protocol):
    """XEP-0160 offline messages: a queue per user, in arrival order, with a length limit."""

    async def push(self, host: str, username: str, stanza: str, limit: int | None) -> int | None:
        """Append a message; its id, or None (and nothing written) when the user already has
        `limit` messages (None: no limit). Ids of one user grow in the order of their pushes."""
        ...

    async def fetch(
        self, host: str, username: str, *, after: int = 0, limit: int = 100
    ) -> builtins.list[OfflineMessage]:
        """Up to `limit` messages with an id above `after`, oldest first."""
        ...

    async def delete(self, host: str, username: str, ids: Sequence[int]) -> int:
        """Delete those of the user's messages; how many there were."""
        ...

    async def count(self, host: str, username: str) -> int: ...


# The one name each single-table shape answers to: the archive and offline_messages tables have no
# namespace column yet (storage/shapes.py), so another name would silently share the table.
_SINGLE_STORES = {Shape.ARCHIVE: "archive", Shape.QUEUE: "offline"}


class Storage(abc.ABC):
    """One database: the stores, the schema version, migrations.

    A backend passes its engine's migrations; tests may pass their own list to exercise upgrades.
    """

    backend: ClassVar[str]
    accounts: AccountStore
    rosters: RosterStore
    kv: KeyValueStore  # every KEY_VALUE namespace
    maps: MapStore  # every MAP namespace
    offline: OfflineStore  # the QUEUE store
    archive: ArchiveStore  # the ARCHIVE store: XEP-0313 message archives (storage/archive.py)

    def __init__(self, migrations: Sequence[Migration]) -> None:
        if not migrations:
            raise ValueError("at least one migration is needed")
        check_sequence(migrations, self.backend)
        self._migrations = tuple(migrations)
        self._stores: dict[tuple[str, Shape], KeyValue | Map] = {}

    @overload
    def open_store(self, name: str, shape: Literal[Shape.KEY_VALUE]) -> KeyValue: ...
    @overload
    def open_store(self, name: str, shape: Literal[Shape.MAP]) -> Map: ...
    @overload
    def open_store(self, name: str, shape: Literal[Shape.ARCHIVE]) -> ArchiveStore: ...
    @overload
    def open_store(self, name: str, shape: Literal[Shape.QUEUE]) -> OfflineStore: ...
    @overload
    def open_store(self, name: str, shape: Shape) -> KeyValue | Map | ArchiveStore | OfflineStore: ...

    def open_store(self, name: str, shape: Shape) -> KeyValue | Map | ArchiveStore | OfflineStore:
        """The store called `name` of that shape (storage/shapes.py), for a feature to keep its data in
        without a new attribute here or a migration. Cheap and without I/O: opening the same name
        and shape again gives the same object. KEY_VALUE and MAP take any non-empty name (two
        features must not pick the same one); ARCHIVE answers only to "archive" and QUEUE only to
        "offline". ValueError for another name, an empty one, or an unknown shape."""
        if not isinstance(shape, Shape):
            known = ", ".join(s.name for s in Shape)
            raise ValueError(f"unknown store shape {shape!r}: expected one of {known} (storage.shapes)")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a store name must be a non-empty string, not {name!r}")
        if shape is Shape.ARCHIVE or shape is Shape.QUEUE:
            single = _SINGLE_STORES[shape]
            if name != single:
                raise ValueError(
                    f"no {shape.name} store named {name!r}: the {shape.name} shape has one store, {single!r}"
                    " (its table has no namespace column yet)"
                )
            return self.archive if shape is Shape.ARCHIVE else self.offline
        store = self._stores.get((name, shape))
        if store is None:
            store = KeyValueNamespace(self.kv, name) if shape is Shape.KEY_VALUE else MapNamespace(self.maps, name)
            self._stores[(name, shape)] = store
        return store

    @property
    def latest_schema(self) -> int:
        """The version its migrations lead to: LATEST_SCHEMA unless a test passes its own."""
        return self._migrations[-1].version

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The highest applied migration; 0 for an empty database."""

    @abc.abstractmethod
    async def _apply(self, migration: Migration) -> bool:
        """In one transaction, under a lock against concurrent migrators: if the database is at
        migration.version - 1, run the migration and record it, and return True; if it is already
        at migration.version or later (someone else migrated meanwhile), change nothing and return False."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads; idempotent. Any later call raises StorageError."""

    async def migrate(self) -> list[int]:
        """Apply the pending migrations in order, each in its own transaction; returns those applied."""
        current = await self.schema_version()
        problem = schema_problem(current, self.latest_schema)
        if problem is not None and current > self.latest_schema:
            raise problem  # never run old migrations over a newer schema
        applied: list[int] = []
        for migration in self._migrations:
            if migration.version > current and await self._apply(migration):
                applied.append(migration.version)
        return applied

    async def check_schema(self) -> None:
        """Raise SchemaError, with the operator's next step in the message, unless the schema is current."""
        problem = schema_problem(await self.schema_version(), self.latest_schema)
        if problem is not None:
            raise problem

    async def check_integrity(self) -> None:
        """Raise DamagedDatabaseError (storage.errors), naming the database and what to do, if a quick
        check finds it damaged. The server runs it once at start. The default does nothing: a
        database server (PostgreSQL) checks its own pages; SQLite runs PRAGMA quick_check."""
        return

    def describe(self) -> str:
        """The database, in words for the operator (a file path, a schema): never a password."""
        return f"the {self.backend} database"

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# The views open_store hands out --------------------------------------------------------------------


class KeyValueNamespace:
    """A KEY_VALUE store: one namespace of a KeyValueStore (storage/shapes.py KeyValue)."""

    __slots__ = ("_kv", "_name")

    def __init__(self, kv: KeyValueStore, name: str) -> None:
        self._kv = kv
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def get(self, host: str, username: str, key: str) -> Any | None:
        return await self._kv.get(host, username, self._name, key)

    async def set(self, host: str, username: str, key: str, value: Any | None) -> None:
        await self._kv.set(host, username, self._name, key, value)

    async def set_many(self, entries: Sequence[tuple[str, str, str, Any | None]]) -> None:
        await self._kv.set_many([(host, username, self._name, key, value) for host, username, key, value in entries])

    async def all(self, host: str, username: str) -> dict[str, Any]:
        return await self._kv.all(host, username, self._name)

    def __repr__(self) -> str:
        return f"<KeyValueNamespace {self._name!r}>"


class MapNamespace:
    """A MAP store: one namespace of a MapStore (storage/shapes.py Map)."""

    __slots__ = ("_maps", "_name")

    def __init__(self, maps: MapStore, name: str) -> None:
        self._maps = maps
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def get(self, host: str, key: str) -> Any | None:
        return await self._maps.get(host, self._name, key)

    async def set(self, host: str, key: str, value: Any | None) -> None:
        await self._maps.set(host, self._name, key, value)

    async def all(self, host: str) -> dict[str, Any]:
        return await self._maps.all(host, self._name)

    async def keys(self, host: str) -> list[str]:
        return await self._maps.keys(host, self._name)

    def __repr__(self) -> str:
        return f"<MapNamespace {self._name!r}>"


# Helpers shared by the backends -------------------------------------------------------------------


def check_credentials(credentials: Sequence[ScramCredentials]) -> None:
    names = [c.hash_name for c in credentials]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate SCRAM hash names: {names}")

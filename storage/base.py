"""The storage contract: small async interfaces by concern, and the Storage that bundles them.

Every backend implements these and is checked by the same contract test suite
(tests/storage/test_contract.py). Callers see only these types and the records of storage.model.
"""

from __future__ import annotations

import abc
import builtins
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any, ClassVar, Protocol

from storage.archive import ArchiveStore
from storage.errors import SchemaError, StorageError
from storage.model import OfflineMessage, RosterItem, ScramCredentials
from storage.schema import Migration, check_sequence, schema_problem

__all__ = [
    "AccountStore",
    "KeyValueStore",
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

    async def delete(self, host: str, username: str) -> bool:
        """Delete the account and every piece of data of that user, in one transaction.

        Returns whether the account existed; the user's data goes either way.
        """
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

    async def all(self, host: str, username: str, store: str) -> dict[str, Any]: ...


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


class Storage(abc.ABC):
    """One database: the stores, the schema version, migrations.

    A backend passes its engine's migrations; tests may pass their own list to exercise upgrades.
    """

    backend: ClassVar[str]
    accounts: AccountStore
    rosters: RosterStore
    kv: KeyValueStore
    offline: OfflineStore
    archive: ArchiveStore  # XEP-0313 message archives (storage/archive.py)

    def __init__(self, migrations: Sequence[Migration]) -> None:
        if not migrations:
            raise ValueError("at least one migration is needed")
        check_sequence(migrations, self.backend)
        self._migrations = tuple(migrations)

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

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# Helpers shared by the backends -------------------------------------------------------------------


def check_credentials(credentials: Sequence[ScramCredentials]) -> None:
    names = [c.hash_name for c in credentials]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate SCRAM hash names: {names}")


def encode_json(value: Any) -> str:
    """The JSON text stored for a kv value; what cannot be stored is refused the same way on every backend."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: no database text can hold them
            raise ValueError(f"kv value is not valid Unicode: {exc}") from None
    return text


def decode_json(text: str) -> Any:
    return json.loads(text)

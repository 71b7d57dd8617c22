"""JSON documents: the kv store (per account) and the maps store (per host), once for every engine.

Both tables have the same form: scope columns, a namespace (`store`), a key and a JSON value. What
is the same on every engine is here: the statements (up to the placeholders), the JSON encoding
and its refusals, and the KeyValueStore and MapStore interfaces. An engine supplies only
`DocumentRows`, the five statements run its way, on JSON text.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from storage.rows import Marks, marks

__all__ = [
    "KV",
    "MAPS",
    "DocumentRows",
    "DocumentStatements",
    "DocumentTable",
    "JsonKeyValue",
    "JsonMaps",
    "Write",
    "decode_json",
    "encode_json",
    "write_groups",
]


def encode_json(value: Any) -> str:
    """The JSON text stored for a value; what cannot be stored is refused the same way on every backend."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: no database text can hold them
            raise ValueError(f"value is not valid Unicode: {exc}") from None
    return text


def decode_json(text: str) -> Any:
    return json.loads(text)


Write = tuple[Sequence[str], str, str | None]  # scope, key, JSON text (None: delete)


def write_groups(writes: Sequence[Write]) -> Iterator[tuple[bool, list[tuple[str, ...]]]]:
    """`writes` as runs of one kind, in order: (is_delete, statement arguments), so that an engine
    runs each run as one executemany and a later write of a key still wins over an earlier one."""
    for is_delete, run in itertools.groupby(writes, key=lambda write: write[2] is None):
        if is_delete:
            yield True, [(*scope, key) for scope, key, _text in run]
        else:
            yield False, [(*scope, key, text) for scope, key, text in run if text is not None]


@dataclass(frozen=True, slots=True)
class DocumentStatements:
    """The statements on one document table in one engine's placeholders; each takes the scope's
    values first, then the key, then (upsert) the JSON text."""

    get: str
    upsert: str
    delete: str
    all: str
    keys: str


@dataclass(frozen=True, slots=True)
class DocumentTable:
    """A table of JSON documents: `scope` columns (the last one the namespace), then key and value,
    with the primary key (*scope, key)."""

    table: str
    scope: tuple[str, ...]

    def statements(self, mark: Marks) -> DocumentStatements:
        width = len(self.scope)
        where = " AND ".join(f"{column} = {mark(n)}" for n, column in enumerate(self.scope, start=1))
        by_key = f"{where} AND key = {mark(width + 1)}"
        columns = ", ".join((*self.scope, "key", "value"))
        return DocumentStatements(
            get=f"SELECT value FROM {self.table} WHERE {by_key}",
            upsert=(
                f"INSERT INTO {self.table} ({columns}) VALUES ({marks(mark, width + 2)})"
                f" ON CONFLICT ({', '.join(self.scope)}, key) DO UPDATE SET value = excluded.value"
            ),
            delete=f"DELETE FROM {self.table} WHERE {by_key}",
            all=f"SELECT key, value FROM {self.table} WHERE {where} ORDER BY key",
            keys=f"SELECT key FROM {self.table} WHERE {where} ORDER BY key",
        )


KV = DocumentTable("kv", ("host", "username", "store"))  # migration 0001; a user table
MAPS = DocumentTable("maps", ("host", "store"))  # migration 0004; belongs to the host


class DocumentRows(Protocol):
    """An engine's access to one document table, on JSON text: the DocumentStatements, run."""

    async def get(self, scope: Sequence[str], key: str) -> str | None: ...

    async def upsert(self, scope: Sequence[str], key: str, text: str) -> None: ...

    async def delete(self, scope: Sequence[str], key: str) -> None: ...

    async def write_many(self, writes: Sequence[Write]) -> None:
        """Upserts and deletes (text None) in one transaction, in their order."""
        ...

    async def all(self, scope: Sequence[str]) -> list[tuple[str, str]]:
        """(key, text) pairs, keys in code point order."""
        ...

    async def keys(self, scope: Sequence[str]) -> list[str]: ...


class _Documents:
    """get/set/all/keys of JSON values over an engine's DocumentRows."""

    __slots__ = ("_rows",)

    def __init__(self, rows: DocumentRows) -> None:
        self._rows = rows

    async def _get(self, scope: Sequence[str], key: str) -> Any | None:
        text = await self._rows.get(scope, key)
        return None if text is None else decode_json(text)

    async def _set(self, scope: Sequence[str], key: str, value: Any | None) -> None:
        if value is None:
            await self._rows.delete(scope, key)
        else:
            await self._rows.upsert(scope, key, encode_json(value))  # refused before anything is written

    async def _set_many(self, entries: Sequence[tuple[Sequence[str], str, Any | None]]) -> None:
        # Every value is encoded (and refused) before anything is written.
        writes = [(scope, key, None if value is None else encode_json(value)) for scope, key, value in entries]
        if writes:
            await self._rows.write_many(writes)

    async def _all(self, scope: Sequence[str]) -> dict[str, Any]:
        return {key: decode_json(text) for key, text in await self._rows.all(scope)}


class JsonKeyValue(_Documents):
    """storage.base.KeyValueStore over the kv table."""

    __slots__ = ()

    async def get(self, host: str, username: str, store: str, key: str) -> Any | None:
        return await self._get((host, username, store), key)

    async def set(self, host: str, username: str, store: str, key: str, value: Any | None) -> None:
        await self._set((host, username, store), key, value)

    async def set_many(self, entries: Sequence[tuple[str, str, str, str, Any | None]]) -> None:
        await self._set_many([((host, username, store), key, value) for host, username, store, key, value in entries])

    async def all(self, host: str, username: str, store: str) -> dict[str, Any]:
        return await self._all((host, username, store))


class JsonMaps(_Documents):
    """storage.base.MapStore over the maps table."""

    __slots__ = ()

    async def get(self, host: str, store: str, key: str) -> Any | None:
        return await self._get((host, store), key)

    async def set(self, host: str, store: str, key: str, value: Any | None) -> None:
        await self._set((host, store), key, value)

    async def all(self, host: str, store: str) -> dict[str, Any]:
        return await self._all((host, store))

    async def keys(self, host: str, store: str) -> list[str]:
        return await self._rows.keys((host, store))

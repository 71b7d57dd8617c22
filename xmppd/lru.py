"""A mapping that keeps the `capacity` entries used most recently.

For the caches of per-account (or per-node, per-'ver') state that modules keep in front of
storage: blocklists, push registrations, PEP nodes, archive preferences and the like. A server's
accounts are unbounded but its memory is not, so each cache holds the entries in use and lets the
rest be read from storage again; least recently used is the order in which a quiet account's
state stops being worth its memory. One class instead of the same `OrderedDict`,
`move_to_end` and `popitem(last=False)` written out at every cache: what "used" means (`get`,
`put` and `setdefault` mark; `peek`, `in` and `pop` do not) is then the same everywhere.

`None` is the answer for "absent", so values are never None. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most `capacity` entries; adding one beyond that drops the least recently used.
    `capacity` may be changed; it takes effect at the next `put` or `setdefault`."""

    __slots__ = ("_entries", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Oldest first: OrderedDict moves an entry to the end and drops the first in O(1).
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value, marked used; None when absent."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value without marking it used (an update of what is cached is not a use); None
        when absent."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Add or replace, marked used; then drop the least recently used beyond `capacity`."""
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def setdefault(self, key: K, value: V) -> V:
        """What is there (marked used), else `value`, added as `put` does: for a load that awaited
        storage, during which a change may have put something newer."""
        current = self.get(key)
        if current is not None:
            return current
        self.put(key, value)
        return value

    def pop(self, key: K) -> V | None:
        """Remove and return the value; None when absent."""
        return self._entries.pop(key, None)

    def __contains__(self, key: object) -> bool:
        """Whether `key` is there; not a use."""
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

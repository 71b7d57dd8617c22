"""The pre-auth slots: streams that have not authenticated yet, oldest first, in all and by
address (issue 10). Idle connections that never authenticate must not keep users out, so they get
a budget of their own, smaller than the connection limits: when it is full, the oldest
unauthenticated stream (of the newcomer's address, or of all) makes room. Every operation is O(1):
a connection flood is exactly when this runs most."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Addressed(Protocol):
    @property
    def address(self) -> str: ...


S = TypeVar("S", bound=Addressed)


class PreAuthSlots(Generic[S]):
    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._all: dict[S, None] = {}  # insertion order: oldest first
        self._by_address: dict[str, dict[S, None]] = {}

    def add(self, stream: S) -> S | None:
        """Take a slot for `stream`; the stream to close for it, if the slots were full."""
        mine = self._by_address.get(stream.address)
        evicted: S | None = None
        if mine is not None and len(mine) >= self.per_address:
            evicted = next(iter(mine))
        elif len(self._all) >= self.total:
            evicted = next(iter(self._all))
        if evicted is not None:
            self.remove(evicted)
        self._all[stream] = None
        self._by_address.setdefault(stream.address, {})[stream] = None
        return evicted

    def remove(self, stream: S) -> None:
        """Free the slot (authenticated, or gone); nothing if it held none."""
        if stream not in self._all:
            return
        del self._all[stream]
        mine = self._by_address[stream.address]
        del mine[stream]
        if not mine:
            del self._by_address[stream.address]

    @property
    def busy(self) -> bool:
        """More than half of the slots are taken."""
        return len(self._all) * 2 > self.total

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._all))

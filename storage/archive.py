"""The message archive (XEP-0313): its records, queries, the store contract and the archive id.

An archive id is a 63-bit integer: milliseconds since the Unix epoch shifted left by 21 bits, plus
a sequence in the low bits that starts at a random value each millisecond (XEP-0359 §4 wants ids
that cannot be guessed). So:

- id order is archive order, and an id carries its own timestamp (`timestamp_ms`), which the
  archive reports as the time the message was stored: no separate time column to keep in step.
- a time filter (`start`/`end`) is an id range, which the (host, username, id) index answers
  directly, and retention is "delete ids below the cutoff's first id".
- 42 bits of milliseconds last until the year 2109; 2^21 ids per millisecond is far beyond what one
  process routes. Clients see ids as fixed-width strings (`format_id`) that sort like the numbers.

`ArchiveIds` hands out ids in increasing order even if the clock steps back or a millisecond's
sequence runs out (the id then runs a little ahead of the clock, never behind the last one).
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "ArchiveIds",
    "ArchivePage",
    "ArchiveQuery",
    "ArchiveRecord",
    "ArchiveStore",
    "datetime_ms",
    "first_id_at",
    "format_id",
    "id_at",
    "parse_id",
    "timestamp_ms",
]

SEQUENCE_BITS = 21
_START_MASK = (1 << (SEQUENCE_BITS - 1)) - 1  # a millisecond's first id: a random point in its lower half
_RANDOM_BATCH = 1024
MAX_ID = (1 << 63) - 1
_ID_WIDTH = 16  # hex digits of a 64-bit id


def first_id_at(ms: int) -> int:
    """The lowest id a message stored at `ms` (milliseconds since the epoch) can have."""
    return max(0, ms) << SEQUENCE_BITS


def id_at(ms: int) -> int:
    """The highest id a message stored at `ms` can have."""
    return first_id_at(ms + 1) - 1


def timestamp_ms(archive_id: int) -> int:
    return archive_id >> SEQUENCE_BITS


def datetime_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime, rounded down."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_id(archive_id: int) -> str:
    """The id as clients see it: 16 lower-case hex digits, so text order is archive order."""
    return f"{archive_id:016x}"


def parse_id(text: str) -> int | None:
    """The id `format_id` wrote, or None for anything else (which no archive holds)."""
    if len(text) != _ID_WIDTH or not all(c in "0123456789abcdef" for c in text):
        return None
    value = int(text, 16)
    return value if value <= MAX_ID else None


class ArchiveIds:
    """Increasing, hard-to-guess archive ids for one process."""

    def __init__(self) -> None:
        self._last = 0
        self._random: list[int] = []

    def next(self, now_ms: int) -> int:
        # Start each millisecond at a random point in its lower half, so that the ids of a burst
        # stay in that millisecond, and step by a small random amount within it.
        random = self._random_bits()
        candidate = first_id_at(now_ms) | (random & _START_MASK)
        if candidate <= self._last:
            candidate = self._last + 1 + (random >> 24)
        self._last = candidate
        return candidate

    def _random_bits(self) -> int:
        """32 bits from the operating system's generator, drawn 1,024 at a time: one system call
        per id cost more than the rest of making it."""
        if not self._random:
            self._random = list(memoryview(secrets.token_bytes(4 * _RANDOM_BATCH)).cast("I"))
        return self._random.pop()


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One message in one user's archive."""

    host: str
    username: str  # whose archive
    id: int  # the archive id (see the module docstring), unique in the archive
    with_jid: str  # the other party's bare JID, normalised; the user's own for notes to self
    with_resource: str  # the other party's resource, "" when its address was bare
    outgoing: bool  # sent by the user (True) or received
    stanza: str  # the message as serialised XML

    @property
    def timestamp_ms(self) -> int:
        return timestamp_ms(self.id)


@dataclass(frozen=True, slots=True)
class ArchiveQuery:
    """What to read from one archive (XEP-0313 §4 filters with XEP-0059 paging).

    All bounds combine (AND). `after_id`/`before_id` are exclusive; `start`/`end` are inclusive
    and must be timezone-aware. With `last`, the page is taken from the end of the matching range
    (RSM `<before/>`), otherwise from its beginning; `offset` skips that many records first (RSM
    `<index/>`). Either way the page comes back in archive order.
    """

    with_jid: str | None = None  # the other party's bare JID
    with_resource: str | None = None  # with with_jid: only that full JID
    start: datetime | None = None
    end: datetime | None = None
    after_id: int | None = None
    before_id: int | None = None
    ids: tuple[int, ...] | None = None
    limit: int = 50
    last: bool = False
    offset: int = 0

    def id_range(self) -> tuple[int, int]:
        """The exclusive (low, high) id bounds of the bounds given."""
        low, high = -1, MAX_ID
        if self.after_id is not None:
            low = max(low, self.after_id)
        if self.start is not None:
            low = max(low, first_id_at(datetime_ms(self.start)) - 1)
        if self.before_id is not None:
            high = min(high, self.before_id)
        if self.end is not None:
            high = min(high, id_at(datetime_ms(self.end)) + 1)
        return low, high


@dataclass(frozen=True, slots=True)
class ArchivePage:
    records: list[ArchiveRecord]  # in archive order
    # No further matching record lies beyond the page in the direction it was read: after its
    # last record when reading forwards, before its first with `last`.
    complete: bool


class ArchiveStore(Protocol):
    """Users' message archives, ordered by archive id."""

    async def append(self, records: Sequence[ArchiveRecord]) -> None:
        """Write the records (of any users) in one transaction: all or none. Ids come from one
        ArchiveIds and are unique in the database; an id already in the same archive is a
        StorageError (and nothing of the batch is written)."""
        ...

    async def query(self, host: str, username: str, query: ArchiveQuery) -> ArchivePage:
        """A page of at most query.limit records matching the query."""
        ...

    async def count(self, host: str, username: str, query: ArchiveQuery) -> int:
        """How many records match the query's filters (its limit, offset and `last` ignored)."""
        ...

    async def existing(self, host: str, username: str, ids: Sequence[int]) -> builtins.set[int]:
        """Those of `ids` that are in the user's archive."""
        ...

    async def delete_before(self, host: str, before: datetime) -> int:
        """Delete, in one transaction, every record of the host's archives stored before `before`
        (retention); how many went. Only the oldest go, so an archive never gets holes."""
        ...

    async def delete_archive(self, host: str, username: str) -> int:
        """Delete, in one transaction, the whole archive of one owner (host, username), and no
        other; how many messages went (0 for an empty or unknown archive). For an owner whose
        name can be taken again without an account to cascade from: a destroyed room."""
        ...

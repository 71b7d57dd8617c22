"""The archiving service of XEP-0313: one per server, shared by every kind of archive.

Users' 1:1 archives (xmppd/modules/mam.py) and room archives (a MUC component) write through
this one service, obtained with `archiving(mod)`:

    service = archiving(mod)
    record = service.record(room_jid, occupant_jid, outgoing=False, stanza=text)
    await service.write(record)          # durable when it returns; WRITE_ERRORS when it is not

One per server, not per module or host, because:

- the `BatchWriter` (xmppd/batching.py) gathers whatever records arrive while a batch commits,
  so the records of every archive (users' on any host, rooms') go out in one transaction;
- `ArchiveIds` is increasing only within one generator, and ids must be unique in the database.

An archive is named by its owner's bare JID: an account `user@host`, or a room
`room@conference.host`. The archive table is keyed by (host, username) = the owner's domain and
localpart and its rows do not reference accounts (storage/shapes.py), so a room needs no schema
of its own.

The batch size and delay are the mam module's options (`[modules.mam] write_batch`,
`write_delay`), declared here and listed among mam's, so the config keeps one place for them;
a server that archives rooms without loading mam gets their defaults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Final

from storage import ArchiveRecord, ArchiveStore, StorageError
from storage.archive import ArchiveIds
from storage.shapes import ARCHIVE
from xmppd.batching import BatchWriter, WriterStopped
from xmppd.jid import JID
from xmppd.module import ModuleAPI, Option

__all__ = ["WRITE_ERRORS", "WRITE_OPTIONS", "Archiving", "archiving"]

WRITE_OPTIONS: Final = {
    "write_batch": Option(500, "most messages written to storage in one transaction", minimum=1),
    "write_delay": Option(
        0.0, "seconds a batch waits for more messages before it is written (0: none; batches still form "
        "while the previous one commits)", kind=(int, float),
    ),
}
# What `Archiving.write` raises when the record is not durable: the storage failed, or the
# server stopped before the record's batch was written.
WRITE_ERRORS: Final = (StorageError, WriterStopped)
_OPTIONS_OF = "mam"  # the module whose config section holds WRITE_OPTIONS


class Archiving:
    """The archive store, its batching writer and the id generator of the server."""

    def __init__(
        self,
        store: ArchiveStore,
        *,
        max_batch: int,
        delay: float,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
        clock: Callable[[], float],
    ) -> None:
        """`spawn` starts the writer's task (so that stopping waits for the batch in flight);
        `clock` gives seconds since the epoch, the time an id carries."""
        self.store = store
        self.writer: BatchWriter[ArchiveRecord] = BatchWriter(store.append, max_batch=max_batch, delay=delay,
                                                              spawn=spawn)
        self.ids = ArchiveIds()
        self._clock = clock

    def next_id(self) -> int:
        """A fresh archive id, for a record made later (the stanza stored must carry it)."""
        return self.ids.next(int(self._clock() * 1000))

    def record(
        self, owner: JID, peer: JID, *, outgoing: bool, stanza: str, archive_id: int | None = None
    ) -> ArchiveRecord:
        """A record for `owner`'s archive (its bare JID: an account or a room), with a fresh id
        unless it got one from `next_id`.

        `peer` is what the `with` filter of a query matches (XEP-0313 §4.1.1): its bare JID,
        and its resource when it has one. `stanza` is the message as stored, serialised."""
        # An archive belongs to an account or a room, never to a domain.
        assert owner.local is not None and owner.is_bare, f"not an archive owner: {owner}"
        if archive_id is None:
            archive_id = self.next_id()
        return ArchiveRecord(
            owner.domain, owner.local, archive_id, str(peer.bare), peer.resource or "", outgoing, stanza
        )

    async def write(self, record: ArchiveRecord) -> None:
        """Return once the record is durable, batched with whatever else is being archived;
        raise one of WRITE_ERRORS when it is not."""
        await self.writer.write(record)

    def submit(self, record: ArchiveRecord) -> asyncio.Future[None]:
        """As `write`, without waiting: the future is done when the record is durable, or has
        one of WRITE_ERRORS. Records are written in the order submitted, a batch at a time, so
        one submitted later is never durable before this one (unless this one failed)."""
        return self.writer.submit(record)


def archiving(mod: ModuleAPI) -> Archiving:
    """The server's archiving service, made by whichever module asks first."""

    def make() -> Archiving:
        configured = mod.config.options_for(_OPTIONS_OF)

        def option(name: str) -> Any:
            return configured.get(name, WRITE_OPTIONS[name].default)

        return Archiving(
            mod.open_store("archive", ARCHIVE),
            max_batch=option("write_batch"),
            delay=float(option("write_delay")),
            spawn=mod.spawn,
            clock=mod.time,
        )

    return mod.common("archiving", make)

"""The room archive: XEP-0313 on the room's JID, with XEP-0359 stanza ids the room stamps.

Writing. A groupchat message worth keeping (a body, or a payload that is part of the
conversation: the same rule as users' archives, xmppd/modules/mam.py) is archived once, as the
occupants get it (`from` the occupant JID, its stanza-id included: the very bytes of the copies,
so it is serialised once for both), before it is fanned out: the room waits for the record's
commit, so whatever an occupant has seen is in the archive. It goes through the
server's archiving service (xmppd/archiving.py), the batched writer users' 1:1 archives use, so
a busy server commits room and user messages together. The archive id reaches every copy as
`<stanza-id by='room@service' id=…/>`. `with` in a query matches the occupant JID (room/nick):
real JIDs stay out of the archive's index, which a semi-anonymous room must not leak.

Reading. Who may query: whoever could enter the room and read along — occupants always;
otherwise nobody banned, members in a members-only room, and nobody from outside a
password-protected room (XEP-0313 §5.1.2 leaves the policy to the room; this one follows
entering). Results come `from` the room JID (§4.2).
"""

from __future__ import annotations

from lxml import etree

from components.muc.history import delayed
from components.muc.room import Room
from components.muc.service import MucService
from storage import ArchiveQuery, StorageError
from xmppd.archiving import WRITE_ERRORS, archiving
from xmppd.jid import JID
from xmppd.module import ModuleAPI, StanzaEvent
from xmppd.modules import mam
from xmppd.router import Template

NS = mam.NS
_HEAD = b"<message"
_BODY = "{jabber:client}body"
# What the archive holds was serialised by the room; still, nothing read is ever resolved.
_STORED = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def install(mod: ModuleAPI, service: MucService) -> None:
    def room_of(ev: StanzaEvent) -> Room | None:
        return service.room(ev.stanza.to) if ev.stanza.to is not None else None

    async def query(ev: StanzaEvent) -> bool:
        room, requester = room_of(ev), ev.stanza.from_
        if room is None or not room.config.archiving:
            return ev.error("item-not-found", "this room has no archive")
        if requester is None or ev.origin is None or not may_read(service, room, requester):
            return ev.error("forbidden", "only those who may enter the room may read its archive")
        return await mam.answer_query(
            archiving(mod).store, ev, owner=room.jid, requester=requester, send=ev.origin.send_bytes,
            max_page=mod.options["max_archive_page"],
        )

    async def metadata(ev: StanzaEvent) -> bool:
        room, requester = room_of(ev), ev.stanza.from_
        if room is None or not room.config.archiving:
            return ev.error("item-not-found", "this room has no archive")
        if requester is None or not may_read(service, room, requester):
            return ev.error("forbidden", "only those who may enter the room may read its archive")
        return await mam.answer_metadata(archiving(mod).store, ev, owner=room.jid)

    mod.on_iq("set", NS, "query", query, targets=("bare",))
    mod.on_iq("get", NS, "query", mam.answer_form, targets=("bare",))
    mod.on_iq("get", NS, "metadata", metadata, targets=("bare",))


def may_read(service: MucService, room: Room, requester: JID) -> bool:
    if room.by_session.get(requester) is not None or room.occupants_of(requester):
        return True
    affiliation = service.affiliation(room, requester)
    if affiliation == "outcast" or room.config.password:
        return False
    return not room.config.members_only or affiliation in ("owner", "admin", "member")


async def archive_message(
    service: MucService, room: Room, sender: JID, serialised: Template, archive_id: int
) -> None:
    """Archive a groupchat message as it is passed on (`serialised`, its stanza-id included) under
    an id from `archiving(mod).next_id()`; return once durable, or raise one of WRITE_ERRORS
    (logged)."""
    writer = archiving(service.mod)
    stanza = (serialised.head + serialised.tail).decode()
    record = writer.record(room.jid, sender, outgoing=False, stanza=stanza, archive_id=archive_id)
    try:
        await writer.write(record)
    except WRITE_ERRORS as exc:
        service.mod.log.error("archiving a message of room %s failed: %s", room.jid, exc)
        raise


async def restore_history(service: MucService, room: Room) -> None:
    """The discussion history of a room brought back from storage, read from its archive the
    first time someone enters (so a restart costs nothing for rooms nobody visits): its last
    messages with a body, as many as the history keeps, stamped when they were archived."""
    if not room.history_in_archive:
        return
    room.history_in_archive = False
    if not room.config.archiving or not room.history.capacity:
        return
    assert room.jid.local is not None
    query = ArchiveQuery(limit=room.history.capacity, last=True)
    try:
        page = await archiving(service.mod).store.query(room.jid.domain, room.jid.local, query)
    except StorageError as exc:
        service.mod.log.warning("reading the history of room %s back failed: %s", room.jid, exc)
        return
    for record in page.records:
        data = record.stanza.encode()
        if data.startswith(_HEAD) and etree.fromstring(data, _STORED).find(_BODY) is not None:
            kept = Template(_HEAD, data[len(_HEAD):])
            room.history.add(delayed(kept, str(room.jid), record.timestamp_ms / 1000))

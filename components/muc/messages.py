"""XEP-0045 §7.4 groupchat messages, §7.5 private messages and §8.1 the subject.

A groupchat message is checked once, stamped once and serialised once. The message a client sent
ends its journey at the room, so the room turns that very element into the copy every occupant
gets rather than building a new one: `from` becomes the sender's occupant JID, `to` goes (each
copy gets its own, router.deliver_copies), ids a client may not choose in the room's name
(`<stanza-id by=room>`, `<occupant-id/>`) are replaced by the room's own. When the room archives
(archive.py), the message is durable before anyone receives it, and the archive id travels as
`<stanza-id by=room>` (XEP-0359). The sender's own devices get the copy too: that reflection is
how a client knows its message went out (§7.4).

Errors, as §7.4/§7.5 name them: not-acceptable (not an occupant), forbidden (a visitor in a
moderated room, or a subject change by someone who may not), bad-request (a groupchat message to
an occupant, or another type of message to the room), item-not-found (no such room or nick).
"""

from __future__ import annotations

from components.muc.archive import archive_message
from components.muc.history import delayed
from components.muc.presence import OCCUPANT_ID_NS, USER_NS, leave
from components.muc.room import Occupant, Room
from components.muc.service import MucService
from storage.archive import format_id
from xmppd.archiving import WRITE_ERRORS, archiving
from xmppd.elements import element
from xmppd.hooks import Handler
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.modules.mam import worth_keeping
from xmppd.router import template
from xmppd.stanza import CLIENT_NS

SID_TAG = "{urn:xmpp:sid:0}stanza-id"
_BODY = f"{{{CLIENT_NS}}}body"
_SUBJECT = f"{{{CLIENT_NS}}}subject"
_OCCUPANT_ID = f"{{{OCCUPANT_ID_NS}}}occupant-id"
# §7.5: who may send private messages (muc#roomconfig_allowpm), by role.
_PM_ROLES = {
    "anyone": ("moderator", "participant", "visitor"),
    "participants": ("moderator", "participant"),
    "moderators": ("moderator",),
    "none": (),
}


def as_occupant(room: Room, occupant: Occupant, stanza: Stanza) -> Stanza:
    """The message as the room passes it on: from the occupant JID, no `to`, the room's own ids."""
    element_ = stanza.element
    element_.attrib.pop("to", "")
    by = str(room.jid)
    for child in list(element_):
        if child.tag == _OCCUPANT_ID or (child.tag == SID_TAG and child.get("by") == by):
            element_.remove(child)
    element(_OCCUPANT_ID, {"id": occupant.id}, parent=element_)
    passed_on = Stanza(element_, "message", None, None)
    passed_on.set_from(room.occupant_jid(occupant.nick))
    return passed_on


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on("message/bare", room_handler(service))
    mod.on("message/full", private_handler(service))


def room_handler(service: MucService) -> Handler:
    async def to_room(ev: StanzaEvent) -> bool:
        """message/bare: a groupchat message or a subject change (invitations and voice
        requests are claimed first by their own handlers)."""
        stanza = ev.stanza
        sender = stanza.from_
        room = service.room(stanza.to) if stanza.to is not None else None
        if room is None or sender is None:
            return ev.error("item-not-found", "no such room")
        occupant = room.by_session.get(sender)
        kind = stanza.type or "normal"
        if kind == "error":
            if occupant is not None:
                await leave(service, room, sender, None)  # its client refuses the room's messages
            return True
        if kind != "groupchat":
            return ev.error("bad-request", "a message to a room is of type groupchat")
        if occupant is None:
            return ev.error("not-acceptable", "only occupants may send messages to the room")
        if occupant.role not in ("moderator", "participant"):
            return ev.error("forbidden", "visitors have no voice in this moderated room")
        subject = stanza.element.find(_SUBJECT)
        if subject is not None and stanza.element.find(_BODY) is None:
            return await change_subject(service, ev, room, occupant, subject.text or "")
        await fan_out(service, ev, room, occupant)
        return True

    return to_room


async def fan_out(service: MucService, ev: StanzaEvent, room: Room, occupant: Occupant) -> None:
    message = as_occupant(room, occupant, ev.stanza)
    assert message.from_ is not None
    archive_id = None
    if room.config.archiving and worth_keeping(message.element):
        archive_id = archiving(service.mod).next_id()
        element(SID_TAG, {"by": str(room.jid), "id": format_id(archive_id)}, parent=message.element)
    # Serialised once: the archive, the history and every occupant's copy are these bytes.
    serialised = template(message.element)
    if archive_id is not None:
        try:
            await archive_message(service, room, message.from_, serialised, archive_id)
        except WRITE_ERRORS:
            ev.error("internal-server-error", "the message could not be archived")
            return
    if room.history.capacity and message.element.find(_BODY) is not None:
        room.history.add(delayed(serialised, str(room.jid), service.mod.time()))
    await service.send_copies(message, room.recipients(), serialised)


async def change_subject(service: MucService, ev: StanzaEvent, room: Room, occupant: Occupant, text: str) -> bool:
    """§8.1: the new subject to everyone, from the occupant who set it."""
    if not room.may_change_subject(occupant):
        return ev.error("forbidden", "you may not change the subject of this room")
    room.subject, room.subject_by = text, occupant.nick
    await service.save(room)
    await service.send_copies(as_occupant(room, occupant, ev.stanza), room.recipients())
    return True


def private_handler(service: MucService) -> Handler:
    async def to_occupant(ev: StanzaEvent) -> bool:
        """message/full: a private message to one occupant (§7.5), passed to all its sessions."""
        stanza = ev.stanza
        to, sender = stanza.to, stanza.from_
        room = service.room(to) if to is not None else None
        if room is None or to is None or sender is None:
            return ev.error("item-not-found", "no such room")
        kind = stanza.type or "normal"
        if kind == "groupchat":
            return ev.error("bad-request", "a groupchat message goes to the room, not to an occupant")
        occupant = room.by_session.get(sender)
        if occupant is None:
            return ev.error("not-acceptable", "only occupants may send private messages in the room")
        target = room.occupants.get(to.resource or "")
        if target is None:
            return ev.error("item-not-found", "no occupant has this nick")
        if kind != "error" and occupant.role not in _PM_ROLES[room.config.allow_pm]:
            return ev.error("forbidden", "private messages are not allowed in this room")
        message = as_occupant(room, occupant, stanza)
        if message.element.find(f"{{{USER_NS}}}x") is None:
            # §7.5: marked, so that clients tell it from a one-to-one chat with an account.
            element(f"{{{USER_NS}}}x", parent=message.element)
        await service.send_copies(message, list(target.sessions))
        return True

    return to_occupant

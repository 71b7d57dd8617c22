"""XEP-0045 §7.1-§7.7 and §7.14: entering a room (creating it first if needed), presence
updates, changing nick, leaving; and the occupant presence every role and affiliation change
is announced with (`broadcast`).

What an occupant's presence shows (§7.2.3): the show, status and capabilities the occupant's
latest session sent, plus `<x xmlns='…muc#user'><item affiliation role [jid] [nick]/>` with the
status codes of the event, and the XEP-0421 occupant id. Who gets the real JID in `item/@jid`:
everyone in a non-anonymous room, moderators only in a semi-anonymous one, and always the
occupant itself. So a broadcast is at most three stanzas, each serialised once for all its
recipients (router.deliver_copies): with the JID, without it, and the self-presence with
status 110 for the occupant's own sessions.

Errors on entering, each as §7.2 names it: item-not-found (a locked room, §10.1.1),
forbidden (banned, §7.2.8), conflict (nick in use or reserved by someone else, §7.2.9),
registration-required (members-only, §7.2.7), not-authorized (password, §7.2.6),
service-unavailable (room full, §7.2.10), not-allowed (room creation refused, §10.1.1),
jid-malformed (no nick, §7.2.1).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from lxml import etree

from components.muc.archive import restore_history
from components.muc.room import Occupant, Room
from components.muc.service import MucService
from xmppd import events
from xmppd.elements import element
from xmppd.hooks import Handler
from xmppd.jid import JID
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.router import Template, template
from xmppd.stanza import CLIENT_NS

MUC_NS = "http://jabber.org/protocol/muc"
USER_NS = "http://jabber.org/protocol/muc#user"
OCCUPANT_ID_NS = "urn:xmpp:occupant-id:0"
DELAY_NS = "urn:xmpp:delay"
# What a client's own presence to the room carries that is not passed on to the others.
_NOT_PASSED_ON = frozenset(
    (f"{{{MUC_NS}}}x", f"{{{USER_NS}}}x", f"{{{OCCUPANT_ID_NS}}}occupant-id", f"{{{CLIENT_NS}}}error")
)


# -- building presence -------------------------------------------------------------------------


def occupant_presence(
    room: Room,
    occupant: Occupant,
    *,
    real_jid: bool,
    type_: str | None = None,
    codes: Iterable[str] = (),
    payload: etree._Element | None = None,
    session: JID | None = None,
    nick: str | None = None,
    role: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
) -> Stanza:
    """The presence of `occupant` as the room shows it (no `to`).

    `payload`: the presence whose show/status/caps to pass on (default: the occupant's latest);
    `session`: the real JID to show (default: the latest session); `nick`: the new nick of a
    nick change (§7.6, with 303); `role`: instead of the occupant's (none when it left);
    `actor`/`reason`: who kicked or banned, and why (§8.2, §9.1)."""
    stanza = Stanza.build("presence", to=None, from_=room.occupant_jid(occupant.nick), type_=type_)
    source = payload if payload is not None else occupant.presence
    if source is not None:
        for child in source:
            if isinstance(child.tag, str) and child.tag not in _NOT_PASSED_ON:
                stanza.element.append(copy.deepcopy(child))
    x = element(f"{{{USER_NS}}}x", parent=stanza.element)
    item = element(f"{{{USER_NS}}}item", {
        "affiliation": room.affiliation(occupant.jid),
        "role": role or ("none" if type_ == "unavailable" else occupant.role),
    }, parent=x)
    if real_jid:
        shown = session or occupant.latest
        if shown is not None:
            item.set("jid", str(shown))
    if nick is not None:
        item.set("nick", nick)
    if actor is not None:
        element(f"{{{USER_NS}}}actor", {"nick": actor}, parent=item)
    if reason:
        element(f"{{{USER_NS}}}reason", parent=item).text = reason
    for code in codes:
        element(f"{{{USER_NS}}}status", {"code": code}, parent=x)
    element(f"{{{OCCUPANT_ID_NS}}}occupant-id", {"id": occupant.id}, parent=stanza.element)
    return stanza


def shown_presence(room: Room, occupant: Occupant, *, real_jid: bool) -> tuple[Stanza, Template]:
    """`occupant_presence` (available) and its serialisation, kept on the occupant until what
    it shows changes: a room of N sends each occupant's presence to every newcomer, so this is
    the N of each join's N presences."""
    key = (occupant.version, occupant.nick, occupant.role, room.affiliation(occupant.jid))
    kept = occupant.shown.get(real_jid)
    if kept is not None and kept[0] == key:
        return kept[1], kept[2]
    stanza = occupant_presence(room, occupant, real_jid=real_jid)
    serialised = template(stanza.element)
    occupant.shown[real_jid] = (key, stanza, serialised)
    return stanza, serialised


def audiences(room: Room, excluded: Occupant | None) -> tuple[list[JID], list[JID]]:
    """The sessions of the room's occupants (but `excluded`) that see real JIDs, and the rest."""
    if room.config.whois == "anyone":
        return [jid for jid, occupant in room.by_session.items() if occupant is not excluded], []
    real: list[JID] = []
    anonymous: list[JID] = []
    for jid, occupant in room.by_session.items():
        if occupant is not excluded:
            (real if occupant.role == "moderator" else anonymous).append(jid)
    return real, anonymous


async def broadcast(
    service: MucService,
    room: Room,
    occupant: Occupant,
    *,
    codes: Sequence[str] = (),
    self_codes: Sequence[str] = (),
    own: Sequence[JID] | None = None,
    **shown: Any,
) -> None:
    """The presence of `occupant` to everyone in the room, and to its own sessions (`own`, by
    default all of them) as self-presence with status 110 (§7.2.3). `shown` goes to
    `occupant_presence` (type_, payload, session, nick, role, actor, reason)."""
    real, anonymous = audiences(room, occupant)
    if real:
        await service.send_copies(occupant_presence(room, occupant, real_jid=True, codes=codes, **shown), real)
    if anonymous:
        await service.send_copies(occupant_presence(room, occupant, real_jid=False, codes=codes, **shown), anonymous)
    mine = list(occupant.sessions) if own is None else list(own)
    if mine:
        mine_codes = ["110", *self_codes, *codes]
        await service.send_copies(occupant_presence(room, occupant, real_jid=True, codes=mine_codes, **shown), mine)


# -- entering, updating, leaving ---------------------------------------------------------------


async def to_room(ev: StanzaEvent) -> bool:
    """§7.2.1: presence to the bare room JID has no nick."""
    if ev.stanza.type in (None, "unavailable") and ev.stanza.to is not None and ev.stanza.to.local is not None:
        return ev.error("jid-malformed", "a nick is needed to enter a room: send presence to room@service/nick")
    return True


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on("presence/bare", to_room)
    mod.on("presence/full", occupant_handler(service))

    async def stopping(_host: object) -> None:
        """§9 status 332: everyone is removed because the service is shutting down (each
        occupant hears it of itself, not of the N-1 others: the whole room goes at once)."""
        for room in service.rooms.values():
            for occupant in list(room.occupants.values()):
                stanza = occupant_presence(room, occupant, real_jid=True, type_="unavailable", codes=["110", "332"])
                await service.send_copies(stanza, list(occupant.sessions))

    mod.on(events.SERVER_STOPPING, stopping)


def occupant_handler(service: MucService) -> Handler:
    async def to_occupant(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None or sender.resource is None or to.resource is None:
            return True
        room = service.room(to)
        kind = stanza.type
        if kind in ("unavailable", "error"):
            if room is not None and sender in room.by_session:
                await leave(service, room, sender, stanza.element if kind == "unavailable" else None)
            return True
        if kind is not None:
            return True  # subscriptions and probes to an occupant mean nothing here
        created = False
        if room is None:
            if not service.may_create(sender):
                return ev.error("not-allowed", "you may not create rooms on this service")
            room = service.create(to, sender)
            created = True
            if stanza.element.find(f"{{{MUC_NS}}}x") is None:
                room.locked = False  # §7.2.? a client without MUC support gets an instant room
        occupant = room.by_session.get(sender)
        if occupant is None:
            return await enter(service, ev, room, to.resource, created)
        if occupant.nick != to.resource:
            return await change_nick(service, ev, room, occupant, to.resource)
        room.add_session(occupant, sender, stanza.element)
        await broadcast(service, room, occupant)
        return True

    return to_occupant


def admission_error(
    service: MucService, room: Room, account: JID, nick: str, *, password: str | None, created: bool
) -> tuple[str, ...] | None:
    """Why `account` may not enter `room` as `nick`, as (condition, text[, error type]), or None."""
    affiliation = service.affiliation(room, account)
    if room.locked and not created and affiliation != "owner":
        return "item-not-found", "this room is locked until its owner configures it"
    if affiliation == "outcast":
        return "forbidden", "you are banned from this room"
    holder = room.occupants.get(nick)
    if holder is not None and holder.jid != account:
        return "conflict", "this nick is in use in the room"
    reserved = room.nick_holder(nick)
    if reserved is not None and reserved != account:
        return "conflict", "this nick is reserved by a member of the room"
    privileged = affiliation in ("owner", "admin")
    if room.config.members_only and affiliation == "none":
        return "registration-required", "this room is for members only"
    if room.config.password and not privileged and password != room.config.password:
        return "not-authorized", "this room needs a password"
    limit = room.config.max_users or service.limits.max_users  # 0: only the service's cap
    if holder is None and len(room.occupants) >= limit and not privileged:
        return "service-unavailable", "the room is full", "wait"  # §7.2.10: try again later
    return None


async def enter(service: MucService, ev: StanzaEvent, room: Room, nick: str, created: bool) -> bool:
    stanza = ev.stanza
    sender = stanza.from_
    assert sender is not None
    account = sender.bare
    x = stanza.element.find(f"{{{MUC_NS}}}x")
    password = x.findtext(f"{{{MUC_NS}}}password") if x is not None else None
    refused = admission_error(service, room, account, nick, password=password, created=created)
    if refused is not None:
        if created:
            await service.forget(room)
        return ev.error(*refused)
    occupant = room.occupants.get(nick)
    if occupant is None:
        affiliation = service.affiliation(room, account)
        occupant = Occupant(nick, account, room.default_role(affiliation), room.occupant_id(account))
    # §7.2.3: first the presence of everyone already there, then the newcomer's own.
    sees_jids = room.config.whois == "anyone" or occupant.role == "moderator"
    for other in list(room.occupants.values()):
        if other is not occupant:
            stanza, serialised = shown_presence(room, other, real_jid=sees_jids)
            await service.send_copies(stanza, [sender], serialised)
    room.add_session(occupant, sender, stanza.element)
    self_codes = []
    if room.config.whois == "anyone":
        self_codes.append("100")  # §7.2.4: your real JID is visible to everyone
    if room.config.archiving:
        self_codes.append("170")  # §7.2.12: the room is logged (archived)
    if created:
        self_codes.append("201")  # §10.1.1: a new room, locked until configured
    await broadcast(service, room, occupant, self_codes=self_codes)
    # §7.2.14-§7.2.15: then the discussion history, then the subject (always, even empty).
    await restore_history(service, room)
    await service.send_history(room, sender, x)
    await service.send_subject(room, sender)
    return True


async def change_nick(service: MucService, ev: StanzaEvent, room: Room, occupant: Occupant, nick: str) -> bool:
    """§7.6: unavailable from the old nick with 303 and the new nick, then available from it."""
    holder = room.occupants.get(nick)
    if holder is not None:
        return ev.error("conflict", "this nick is in use in the room")
    reserved = room.nick_holder(nick)
    if reserved is not None and reserved != occupant.jid:
        return ev.error("conflict", "this nick is reserved by a member of the room")
    sender = ev.stanza.from_
    assert sender is not None
    await broadcast(service, room, occupant, type_="unavailable", codes=["303"], nick=nick, role=occupant.role)
    room.rename(occupant, nick)
    room.add_session(occupant, sender, ev.stanza.element)
    await broadcast(service, room, occupant)
    return True


async def leave(service: MucService, room: Room, session: JID, unavailable: etree._Element | None) -> None:
    """§7.14: the session leaves; the occupant goes with its last session, which everyone sees.
    Another session of the same occupant stays: only the leaving one hears that it left."""
    occupant = room.by_session.get(session)
    if occupant is None:
        return
    room.remove_session(session)
    if unavailable is None:  # gone without a word (an error bounce): nothing of its own to pass on
        unavailable = Stanza.build("presence", to=None, from_=None, type_="unavailable").element
    if occupant.sessions or (room.locked and room.empty):
        stanza = occupant_presence(room, occupant, real_jid=True, type_="unavailable", codes=["110"],
                                   payload=unavailable, session=session)
        if not occupant.sessions:
            # §10.1.3: an owner who leaves the room it never configured destroys it.
            element(f"{{{USER_NS}}}destroy", parent=stanza.element.find(f"{{{USER_NS}}}x"))
            room.config = replace(room.config, persistent=False)
        await service.send_copies(stanza, [session])
    else:
        await broadcast(service, room, occupant, type_="unavailable", own=[session], payload=unavailable,
                        session=session)
    await service.left(room)

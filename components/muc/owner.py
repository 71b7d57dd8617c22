"""XEP-0045 §10.1, §10.2 and §10.9 through `<query xmlns='…muc#owner'>`: an owner unlocks a
new room, configures it, or destroys it. (The owner and admin lists of §10.3-§10.8 are
muc#admin items: admin.py.)

- §10.1: a new room stays locked (presence.py answers others with item-not-found) until its
  owner accepts the default configuration (the empty submit form of an instant room) or
  submits the configuration form; cancelling then destroys the room.
- §10.2: the configuration form, and its submission: the new configuration is saved (a room
  that stops being persistent leaves the store) and announced to the occupants in a groupchat
  message from the room with the status codes of `config.changes` (104, and 170-173 for
  privacy); a room that becomes members-only removes its non-members (322); the discussion
  history keeps as many messages as the new length allows. Cancelling changes nothing.
- §10.9: destroying, with an optional reason, alternate venue and its password: each occupant
  gets one unavailable presence carrying them in `<destroy/>` (no leave broadcast: everyone
  goes), and the room is forgotten, also in the store.

Only owners (service admins among them) may do any of this: forbidden for anyone else (§10.2,
§10.9). Errors of the form itself are config.parse_config's (bad-request, not-acceptable).
"""

from __future__ import annotations

import copy

from lxml import etree

from components.muc.admin import remove, room_iq
from components.muc.config import changes, config_form, parse_config
from components.muc.presence import USER_NS
from components.muc.room import Room
from components.muc.service import MucService
from xmppd.dataforms import DATA_NS
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.jid import InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Stanza, StanzaEvent

OWNER_NS = "http://jabber.org/protocol/muc#owner"
_FORM = f"{{{DATA_NS}}}x"
_DESTROY = f"{{{OWNER_NS}}}destroy"


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on_iq("get", OWNER_NS, "query", room_iq(service, get_form), targets=("bare",))
    mod.on_iq("set", OWNER_NS, "query", room_iq(service, owner_set), targets=("bare",))


def _check_owner(service: MucService, room: Room, ev: StanzaEvent) -> None:
    assert ev.stanza.from_ is not None
    if service.affiliation(room, ev.stanza.from_) != "owner":
        raise StanzaError("forbidden", "only owners configure or destroy the room")


async def get_form(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    """§10.1.3, §10.2: the configuration form with the current values."""
    _check_owner(service, room, ev)
    reply = ev.stanza.reply()
    query = element(f"{{{OWNER_NS}}}query", parent=reply.element)
    query.append(config_form(room.config, service.limits))
    return reply


async def owner_set(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    _check_owner(service, room, ev)
    query = ev.stanza.payload()
    assert query is not None  # the router fired this event for it
    form, destruction = query.find(_FORM), query.find(_DESTROY)
    if form is not None:
        await configure(service, room, form)
    elif destruction is not None:
        await destroy(service, room, _destroy_notice(destruction))
    else:
        raise StanzaError("bad-request", "a muc#owner set carries a data form or <destroy/>")
    return ev.stanza.reply()


async def configure(service: MucService, room: Room, form: etree._Element) -> None:
    if form.get("type") == "cancel":
        if room.locked:
            await destroy(service, room, element(f"{{{USER_NS}}}destroy"))  # §10.1.3
        return  # §10.2: the configuration stays as it was
    new = parse_config(form, room.config, service.limits)
    old, room.config = room.config, new
    room.locked = False
    room.history.resize(new.history_length)
    await service.save(room)
    if new.members_only and not old.members_only:
        for occupant in list(room.occupants.values()):
            if service.affiliation(room, occupant.jid) == "none":
                await remove(service, room, occupant, "322")
    codes = changes(old, new)
    if codes:
        await service.send_copies(_status_message(room, codes), room.recipients())
    await service.left(room)  # a temporary room whose occupants all had to go


def _status_message(room: Room, codes: list[str]) -> Stanza:
    """§10.2.1: a message from the room with only the status codes."""
    stanza = Stanza.build("message", to=None, from_=room.jid, type_="groupchat")
    x = element(f"{{{USER_NS}}}x", parent=stanza.element)
    for code in codes:
        element(f"{{{USER_NS}}}status", {"code": code}, parent=x)
    return stanza


def _destroy_notice(destruction: etree._Element) -> etree._Element:
    """The owner's `<destroy/>` as occupants get it (muc#user): alternate venue, its password and
    the reason, each when given."""
    notice = element(f"{{{USER_NS}}}destroy")
    venue = destruction.get("jid")
    if venue is not None:
        try:
            notice.set("jid", str(parse_jid(venue)))
        except InvalidJID as exc:
            raise StanzaError("jid-malformed", f"alternate venue {venue!r}: {exc}") from None
    for name in ("reason", "password"):
        text = destruction.findtext(f"{{{OWNER_NS}}}{name}")
        if text:
            element(f"{{{USER_NS}}}{name}", parent=notice).text = text
    return notice


async def destroy(service: MucService, room: Room, notice: etree._Element) -> None:
    """§10.9: one unavailable presence to each occupant, affiliation and role none, with `notice`."""
    for occupant in list(room.occupants.values()):
        presence = Stanza.build("presence", to=None, from_=room.occupant_jid(occupant.nick), type_="unavailable")
        x = element(f"{{{USER_NS}}}x", parent=presence.element)
        element(f"{{{USER_NS}}}item", {"affiliation": "none", "role": "none"}, parent=x)
        x.append(copy.deepcopy(notice))
        await service.send_copies(presence, list(occupant.sessions))
        room.remove_occupant(occupant)
    await service.forget(room)

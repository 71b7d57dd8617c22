"""Multi-User Chat (XEP-0045) with real clients over TCP+TLS, on both storage backends: slixmpp's
xep_0045 (and xep_0313 on the room JID) against the room service of components/muc, from
creating and configuring a room to destroying it, with the refusals each step can meet.

Whatever a client gets from the room service lands in its `Inbox`, in arrival order, whatever
slixmpp's own MUC bookkeeping makes of it (slixmpp stops raising presence events for a room it
tracks). A test takes the stanzas it expects; to show that something did *not* arrive, it waits
for a later stanza on the same connection (one stream is ordered: what is not there before that
marker never came)."""

from __future__ import annotations

import asyncio
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

from storage import Storage
from tests.integration.conftest import PASSWORD, TIMEOUT, Client, Clock, XmppServer, running_server
from tests.integration.inbox import Inbox, Match, Stanza
from tests.integration.rawclient import RawClient

pytestmark = pytest.mark.integration

SERVICE = "conference.localhost"
# Three occupants a room by default (owners and admins may come in all the same): enough for
# every test here, and what test_refused_entries_leave_the_room_as_it_was fills.
MUC = f"""
[components."{SERVICE}"]
modules = ["components.muc"]
[modules."components.muc"]
default_max_users = 3
"""
PLUGINS = ("xep_0045", "xep_0313", "xep_0359", "xep_0203")
USER_NS = "http://jabber.org/protocol/muc#user"
OWNER_NS = "http://jabber.org/protocol/muc#owner"
ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
CLIENT_NS = "jabber:client"

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@example.test"  # another host of the same server: "local" for create_rooms
DAVE = "dave@localhost"

# Room configuration fields by a shorter name (XEP-0045 §16.5.3).
FIELDS = {
    "name": "muc#roomconfig_roomname",
    "description": "muc#roomconfig_roomdesc",
    "persistent": "muc#roomconfig_persistentroom",
    "members_only": "muc#roomconfig_membersonly",
    "moderated": "muc#roomconfig_moderatedroom",
    "whois": "muc#roomconfig_whois",
    "password": "muc#roomconfig_roomsecret",
    "max_users": "muc#roomconfig_maxusers",
}

new_form: Any = Form  # slixmpp's data form, untyped


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path, clock: Clock) -> AsyncIterator[XmppServer]:
    """The usual server (tests/integration/conftest.py) with a room service."""
    async with running_server(storage, tmp_path, MUC, clock=clock) as running:
        yield running


# -- what a client gets ----------------------------------------------------------------------------


def room_inbox(client: Client) -> Inbox:
    """Every message and presence from the room service to `client`."""
    return Inbox(client, ("message", "presence"), lambda stanza: stanza["from"].domain == SERVICE)


@dataclass
class Entered:
    """What entering a room brought (§7.2.3, §7.2.14, §7.2.15), in the order it must come."""

    own: Stanza  # the self-presence (status 110)
    occupants: list[Stanza]  # the presence of each occupant already there, before `own`
    history: list[Stanza]  # the discussion history, after `own`
    subject: Stanza  # last


@dataclass
class User:
    """A logged-in client, with its inbox and the nick it has in each room."""

    client: Client
    nick: str
    inbox: Inbox
    nicks: dict[str, str] = field(default_factory=dict)

    @property
    def jid(self) -> str:
        return str(self.client.boundjid.full)

    @property
    def bare(self) -> str:
        return str(self.client.boundjid.bare)

    @property
    def muc(self) -> Any:
        return self.client.plugin["xep_0045"]

    async def join(self, room: str, nick: str | None = None, *, password: str | None = None,
                   **history: Any) -> Entered:
        """Enter `room` (with slixmpp's join stanza and its <history/> options) and take what
        entering brings, checking its order: occupants, self-presence, history, subject."""
        nick = nick or self.nick
        self.muc.make_join_stanza(JID(room), nick, password=password, **history).send()
        me = f"{room}/{nick}"
        before = await self.inbox.until(
            lambda s: is_presence(s, me) and (s["type"] == "error" or 110 in codes(s)),
            among=lambda s: is_presence(s) and s["from"].bare == room,
        )
        own = before[-1]
        assert own["type"] != "error", f"{self.jid} could not enter {room}: {own['error']['condition']}"
        self.nicks[room] = nick
        after = await self.inbox.until(is_subject, among=lambda s: is_groupchat(s) and s["from"].bare == room)
        return Entered(own, before[:-1], after[:-1], after[-1])

    async def refused(self, room: str, nick: str | None = None, *, password: str | None = None) -> Stanza:
        """Try to enter `room`: the error presence that comes back."""
        target = f"{room}/{nick or self.nick}"
        self.muc.make_join_stanza(JID(room), nick or self.nick, password=password).send()
        answer = await self.inbox.take(lambda s: is_presence(s, target) and (s["type"] == "error" or 110 in codes(s)))
        assert answer["type"] == "error", f"{self.jid} entered {room}"
        return answer

    async def leave(self, room: str) -> Stanza:
        me = f"{room}/{self.nicks.pop(room)}"
        self.client.send_presence(pto=me, ptype="unavailable")
        return await self.inbox.take(lambda s: is_presence(s, me) and s["type"] == "unavailable" and 110 in codes(s))

    def send(self, to: str, body: str, mtype: Literal["chat", "groupchat"]) -> None:
        self.client.send_message(mto=JID(to), mbody=body, mtype=mtype)

    async def info(self, jid: str) -> Any:
        """disco#info of a room (or the service)."""
        disco: Any = self.client.plugin["xep_0030"]
        return await disco.get_info(jid=JID(jid), timeout=TIMEOUT)

    async def info_refused(self, jid: str) -> str:
        """The condition that refuses a disco#info of `jid`."""
        with pytest.raises(IqError) as refusal:
            await self.info(jid)
        return str(refusal.value.iq["error"]["condition"])

    def say(self, room: str, body: str) -> str:
        """Send a groupchat message; its id."""
        message = self.client.make_message(mto=room, mbody=body, mtype="groupchat")
        message["id"] = self.client.new_id()
        message.send()
        return str(message["id"])

    async def hear(self, room: str, nick: str, body: str) -> Stanza:
        return await self.inbox.take(lambda s: is_groupchat(s, f"{room}/{nick}") and s["body"] == body)

    async def heard(self, room: str, last: str) -> list[Stanza]:
        """Every groupchat message with a body from `room` up to the one saying `last`."""
        return await self.inbox.until(
            lambda s: is_groupchat(s) and s["from"].bare == room and s["body"] == last,
            among=lambda s: is_groupchat(s) and s["from"].bare == room and bool(s["body"]),
        )

    async def error(self, kind: str) -> Stanza:
        """The next error of this kind (message or presence) from the room service."""
        return await self.inbox.take(lambda s: s.name == kind and s["type"] == "error")


def is_presence(stanza: Stanza, sender: str | None = None) -> bool:
    return bool(stanza.name == "presence" and (sender is None or stanza["from"] == sender))


def is_groupchat(stanza: Stanza, sender: str | None = None) -> bool:
    return bool(stanza.name == "message" and stanza["type"] == "groupchat"
                and (sender is None or stanza["from"] == sender))


def said(body: str) -> Match:
    """A groupchat message saying `body`."""
    return lambda stanza: is_groupchat(stanza) and stanza["body"] == body


def left(occupant: str) -> Match:
    """The unavailable presence of an occupant JID (room/nick)."""
    return lambda stanza: is_presence(stanza, occupant) and stanza["type"] == "unavailable"


def is_subject(stanza: Stanza) -> bool:
    """§7.2.15: a subject message has a <subject/> and no body."""
    return is_groupchat(stanza) and stanza.xml.find(f"{{{CLIENT_NS}}}subject") is not None and not stanza["body"]


def subject_of(stanza: Stanza) -> str:
    return str(stanza.xml.findtext(f"{{{CLIENT_NS}}}subject"))


def codes(stanza: Stanza) -> set[int]:
    return {int(status.get("code")) for status in stanza.xml.iterfind(f"{{{USER_NS}}}x/{{{USER_NS}}}status")}


def item(stanza: Stanza) -> dict[str, str]:
    """The attributes of the muc#user <item/> (affiliation, role, jid, nick)."""
    found = stanza.xml.find(f"{{{USER_NS}}}x/{{{USER_NS}}}item")
    assert found is not None, stanza
    return dict(found.attrib)


def item_text(stanza: Stanza, path: str) -> str | None:
    """Text or nick of a child of the <item/>: 'reason', or 'actor' (its nick)."""
    found = stanza.xml.find(f"{{{USER_NS}}}x/{{{USER_NS}}}item/{{{USER_NS}}}{path}")
    if found is None:
        return None
    text = found.get("nick") if path == "actor" else found.text
    return None if text is None else str(text)


def condition(stanza: Stanza) -> str:
    return str(stanza["error"]["condition"])


def room_of(name: str) -> str:
    return f"{name}@{SERVICE}"


async def people(xmpp: XmppServer, *jids: str, new: bool = True) -> list[User]:
    """A logged-in user for each (full) JID, nicked after its local part; with `new`, the
    accounts are made first."""
    if new:
        for bare in dict.fromkeys(JID(jid).bare for jid in jids):
            await xmpp.account(bare)
    clients = await asyncio.gather(*(xmpp.login(jid, plugins=PLUGINS) for jid in jids))
    return [
        User(client, JID(jid).user.capitalize(), room_inbox(client)) for jid, client in zip(jids, clients, strict=True)
    ]


def submit_form(values: dict[str, Any]) -> Any:
    """A muc#roomconfig submission of `values` (FIELDS names or field vars); booleans as 1/0."""
    form: Any = new_form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=ROOMCONFIG)
    for name, value in values.items():
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        form.add_field(var=FIELDS.get(name, name), value=text)
    return form


async def create(owner: User, local: str, **config: Any) -> str:
    """A new room, owned by `owner` (in it), configured with `config` (empty: an instant room)."""
    room = room_of(local)
    entered = await owner.join(room)
    assert {110, 201} <= codes(entered.own)
    await owner.muc.set_room_config(room, submit_form(config), timeout=TIMEOUT)
    return room


_checks = itertools.count()


async def exchange(room: str, *users: User) -> None:
    """Each says something, and everyone hears it from the right nick."""
    for speaker in users:
        nick = speaker.nicks[room]
        body = f"{nick} checks in ({next(_checks)})"
        speaker.say(room, body)
        for user in users:
            await user.hear(room, nick, body)


# -- creating, entering, talking -------------------------------------------------------------------


async def test_a_new_room_is_locked_until_its_owner_configures_it(xmpp: XmppServer) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    room = room_of("tea")
    entered = await alice.join(room)
    assert codes(entered.own) == {110, 201, 170}  # new (and locked), archived
    assert item(entered.own) == {"affiliation": "owner", "role": "moderator", "jid": alice.jid}
    assert entered.occupants == [] and entered.history == []
    assert subject_of(entered.subject) == "" and entered.subject["from"] == room
    # §10.1.1: until configured, the room does not exist for anyone else.
    assert condition(await bob.refused(room)) == "item-not-found"

    form = await alice.muc.get_room_config(room, timeout=TIMEOUT)
    defaults = form.get_values()
    assert defaults["FORM_TYPE"] == [ROOMCONFIG]
    assert defaults[FIELDS["persistent"]] is False and defaults[FIELDS["whois"]] == "moderators"
    changed = {"name": "Tea", "description": "A cup and a chat", "persistent": True, "members_only": True,
               "moderated": True, "whois": "anyone"}
    form.set_values({FIELDS[name]: value for name, value in changed.items()})
    await alice.muc.set_room_config(room, form, timeout=TIMEOUT)
    # §10.2.1: the change is announced; 172: the room is now non-anonymous.
    notice = await alice.inbox.take(lambda s: is_groupchat(s, room) and bool(codes(s)))
    assert codes(notice) == {104, 172}

    again = (await alice.muc.get_room_config(room, timeout=TIMEOUT)).get_values()
    assert {name: again[FIELDS[name]] for name in changed} == changed
    info = await bob.info(room)
    assert {"muc_persistent", "muc_membersonly", "muc_moderated", "muc_nonanonymous"} <= set(
        info["disco_info"]["features"]
    )
    assert ("conference", "text", None, "Tea") in info["disco_info"]["identities"]
    roominfo = info["disco_info"]["form"].get_values()
    assert roominfo["muc#roominfo_description"] == "A cup and a chat"
    # Unlocked: Bob now meets the room's own rule instead of "no such room".
    assert condition(await bob.refused(room)) == "registration-required"


async def test_three_occupants_see_each_other_and_every_message_once(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "lounge")
    entered = await bob.join(room)
    # Semi-anonymous (the default): only moderators see real JIDs; one's own is always shown.
    assert [(p["from"].resource, item(p)) for p in entered.occupants] == [
        ("Alice", {"affiliation": "owner", "role": "moderator"})
    ]
    assert item(entered.own) == {"affiliation": "none", "role": "participant", "jid": bob.jid}
    assert codes(entered.own) == {110, 170}
    assert item(await alice.inbox.take(lambda s: is_presence(s, f"{room}/Bob")))["jid"] == bob.jid
    # Carol enters with slixmpp's own join, which waits for the self-presence and the subject.
    own, subject, occupants, history = await carol.muc.join_muc_wait(JID(room), "Carol", timeout=TIMEOUT)
    carol.nicks[room] = "Carol"
    assert own["from"] == f"{room}/Carol" and own["muc"]["role"] == "participant"
    # The others first, then her own (§7.2.3; slixmpp lists every presence that came online).
    assert [p["from"].resource for p in occupants] == ["Alice", "Bob", "Carol"] and history == []
    assert subject["from"] == room
    assert "jid" not in item(await bob.inbox.take(lambda s: is_presence(s, f"{room}/Carol")))
    assert item(await alice.inbox.take(lambda s: is_presence(s, f"{room}/Carol")))["jid"] == carol.jid

    lines: list[tuple[str, str, str]] = []  # (nick, body, id)
    for speaker in (alice, bob, carol, bob):
        body = f"{speaker.nick} says hello ({len(lines)})"
        lines.append((speaker.nick, body, speaker.say(room, body)))
        # The sender's own copy (§7.4 reflection) says it went out: the next one comes after it.
        await speaker.inbox.seen(said(body))
    alice.say(room, "that is all")
    archive_ids: list[list[str]] = []
    for user in (alice, bob, carol):
        got = await user.heard(room, "that is all")
        assert [(m["from"].resource, m["body"], m["id"]) for m in got[:-1]] == lines  # once each, in order
        assert all(m["to"] == user.jid for m in got)
        assert {m["stanza_id"]["by"] for m in got} == {room}
        archive_ids.append([m["stanza_id"]["id"] for m in got])
    assert archive_ids[0] == archive_ids[1] == archive_ids[2] and len(set(archive_ids[0])) == 5

    carol.muc.leave_muc(JID(room), "Carol")  # §7.14
    for user in (carol, bob, alice):
        gone = await user.inbox.take(left(f"{room}/Carol"))
        assert codes(gone) == ({110} if user is carol else set()) and item(gone)["role"] == "none"


async def test_the_subject_comes_last_on_entering(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "topics")
    await bob.join(room)
    alice.muc.set_subject(room, "Tea time")
    for user in (alice, bob):
        subject = await user.inbox.take(is_subject)
        assert subject["from"] == f"{room}/Alice" and subject_of(subject) == "Tea time"
    # Participants may not change it here (muc#roomconfig_changesubject is off by default).
    bob.muc.set_subject(room, "Coffee time")
    assert condition(await bob.error("message")) == "forbidden"

    alice.say(room, "milk first?")
    await alice.hear(room, "Alice", "milk first?")
    entered = await carol.join(room)
    assert [m["body"] for m in entered.history] == ["milk first?"]
    assert entered.subject["from"] == f"{room}/Alice" and subject_of(entered.subject) == "Tea time"


async def test_history_on_entering_follows_each_limit(xmpp: XmppServer, clock: Clock) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    room = await create(alice, "memories")
    for batch in ("old", "new"):
        for n in range(3):
            alice.say(room, f"{batch} {n}")
        await alice.hear(room, "Alice", f"{batch} 2")
        clock.offset += 1000  # the new ones come 1000 s after the old ones
    everything = (await bob.join(room)).history  # no <history/>: what the room keeps
    await bob.leave(room)
    bodies = [f"{batch} {n}" for batch in ("old", "new") for n in range(3)]
    assert [m["body"] for m in everything] == bodies
    for message in everything:
        assert message["from"] == f"{room}/Alice" and message["delay"]["from"] == room
    stamps = [m["delay"]["stamp"] for m in everything]
    assert stamps == sorted(stamps) and stamps[3] - stamps[2] >= timedelta(seconds=1000)
    limits: list[tuple[dict[str, Any], list[str]]] = [
        ({"maxstanzas": 2}, bodies[4:]),
        ({"maxstanzas": 0}, []),
        ({"maxchars": 0}, []),
        ({"seconds": 1500}, bodies[3:]),  # the old ones are 2000 s old now, the new ones 1000 s
        ({"seconds": 2500}, bodies),
        ({"since": stamps[2]}, bodies[3:]),  # after the last old one
        ({"since": stamps[0] - timedelta(seconds=1)}, bodies),
    ]
    for history, expected in limits:
        entered = await bob.join(room, **history)
        assert [m["body"] for m in entered.history] == expected, history
        assert [m["delay"]["stamp"] for m in entered.history] == stamps[len(bodies) - len(expected):]
        await bob.leave(room)

    # maxchars counts "the characters of the complete XML stanzas" (§7.2.15), as they arrive: a
    # raw client sees the bytes, so the budget can be exactly the newest stanza, or one less.
    await xmpp.account(DAVE)
    newest = (await raw_history(xmpp, room, "raw1", 10**6))[-1]
    assert b">new 2</body>" in newest
    assert await raw_history(xmpp, room, "raw2", len(newest)) == [newest.replace(b"/raw1", b"/raw2")]
    assert await raw_history(xmpp, room, "raw3", len(newest) - 1) == []


async def raw_history(xmpp: XmppServer, room: str, resource: str, maxchars: int) -> list[bytes]:
    """The history stanzas, as bytes, that Dave gets entering `room` from a raw client."""
    raw = await RawClient.connect(xmpp.port)
    try:
        await raw.login("dave", PASSWORD, resource=resource)
        await raw.send(f"<presence to='{room}/{resource}'><x xmlns='http://jabber.org/protocol/muc'>"
                       f"<history maxchars='{maxchars}'/></x></presence>")
        received = await raw.expect(b"</subject>")
    finally:
        raw.close()
    return [m for m in re.findall(rb"<message\b.*?</message>", received, re.S) if b"urn:xmpp:delay" in m]


# -- admission and moderation ----------------------------------------------------------------------


async def test_a_members_only_room_admits_whom_the_owner_invited(xmpp: XmppServer) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    room = await create(alice, "club", members_only=True)
    refusal = await bob.refused(room)
    assert condition(refusal) == "registration-required" and refusal["error"]["type"] == "auth"

    alice.muc.invite(room, BOB, reason="join us")  # §7.8.2 mediated invitation
    invitation = await bob.inbox.take(lambda s: s.xml.find(f"{{{USER_NS}}}x/{{{USER_NS}}}invite") is not None)
    assert invitation["from"] == room
    invite = invitation.xml.find(f"{{{USER_NS}}}x/{{{USER_NS}}}invite")
    assert invite.get("from") == ALICE and invite.findtext(f"{{{USER_NS}}}reason") == "join us"
    assert invitation.xml.find("{jabber:x:conference}x").get("jid") == room  # XEP-0249 beside it

    entered = await bob.join(room)
    assert item(entered.own)["affiliation"] == "member"
    assert item(await alice.inbox.take(lambda s: is_presence(s, f"{room}/Bob")))["affiliation"] == "member"
    assert await alice.muc.get_affiliation_list(room, "member", timeout=TIMEOUT) == [JID(BOB)]
    await exchange(room, alice, bob)


async def test_kicked_and_banned_occupants_and_the_others_see_why(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "court")
    await bob.join(room)
    await carol.join(room)
    bob_left = left(f"{room}/Bob")

    await alice.muc.set_role(room, "Bob", "none", reason="calm down", timeout=TIMEOUT)  # §8.2 kick
    for user in (bob, carol, alice):
        gone = await user.inbox.take(bob_left)
        assert codes(gone) == ({307, 110} if user is bob else {307})
        assert item(gone)["role"] == "none"
        assert item_text(gone, "actor") == "Alice" and item_text(gone, "reason") == "calm down"
    await bob.join(room)  # a kick is not a ban

    await alice.muc.set_affiliation(room, "outcast", jid=BOB, reason="enough", timeout=TIMEOUT)  # §9.1 ban
    for user in (bob, carol, alice):
        gone = await user.inbox.take(bob_left)
        assert codes(gone) == ({301, 110} if user is bob else {301})
        assert item(gone)["affiliation"] == "outcast" and item(gone)["role"] == "none"
        assert item_text(gone, "reason") == "enough"
    refusal = await bob.refused(room)
    assert condition(refusal) == "forbidden" and refusal["error"]["type"] == "auth"
    assert await alice.muc.get_affiliation_list(room, "outcast", timeout=TIMEOUT) == [JID(BOB)]
    await exchange(room, alice, carol)


async def test_a_visitor_speaks_once_given_voice(xmpp: XmppServer) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    room = await create(alice, "stage", moderated=True)
    entered = await bob.join(room)
    assert item(entered.own)["role"] == "visitor"
    bob.say(room, "may I?")
    refused = await bob.error("message")
    assert condition(refused) == "forbidden" and refused["body"] == "may I?"

    await alice.muc.set_role(room, "Bob", "participant", timeout=TIMEOUT)  # §8.3
    voiced = await bob.inbox.take(lambda s: is_presence(s, f"{room}/Bob") and 110 in codes(s))
    assert item(voiced)["role"] == "participant"
    bob.say(room, "thank you")
    # Alice never got the refused one: the first message she gets from Bob is the second.
    assert [m["body"] for m in await alice.heard(room, "thank you")] == ["thank you"]


async def test_a_taken_nick_is_refused_and_a_nick_change_is_announced(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "names")
    await bob.join(room)
    refusal = await carol.refused(room, "Bob")
    assert condition(refusal) == "conflict" and refusal["error"]["type"] == "cancel"

    bob.client.send_presence(pto=f"{room}/Robert")  # §7.6
    for user in (bob, alice):
        old = await user.inbox.take(left(f"{room}/Bob"))
        assert codes(old) == ({303, 110} if user is bob else {303}) and item(old)["nick"] == "Robert"
        new = await user.inbox.take(lambda s: is_presence(s, f"{room}/Robert"))
        assert new["type"] == "available" and item(new)["role"] == "participant"
    bob.nicks[room] = "Robert"
    # A nick change to a taken nick is refused too, and leaves Robert as he was.
    bob.client.send_presence(pto=f"{room}/Alice")
    assert condition(await bob.error("presence")) == "conflict"

    await carol.join(room, "Bob")  # the old nick is free again
    await exchange(room, alice, bob, carol)


async def test_two_devices_of_one_account_share_one_nick(xmpp: XmppServer) -> None:
    alice, phone, laptop = await people(xmpp, ALICE, f"{BOB}/phone", f"{BOB}/laptop")
    room = await create(alice, "family")
    await phone.join(room)
    await alice.inbox.take(lambda s: is_presence(s, f"{room}/Bob"))
    entered = await laptop.join(room)  # the same nick: the same occupant, a second session
    assert [p["from"].resource for p in entered.occupants] == ["Alice"]
    assert item(entered.own)["jid"] == laptop.jid

    alice.say(room, "hi Bob")
    private = alice.client.make_message(mto=f"{room}/Bob", mbody="just for you", mtype="chat")
    private.send()
    for device in (phone, laptop):
        await device.hear(room, "Alice", "hi Bob")
        pm = await device.inbox.take(lambda s: s["body"] == "just for you")
        assert pm["from"] == f"{room}/Alice" and pm["type"] == "chat"

    await phone.leave(room)  # the phone goes, Bob stays
    alice.say(room, "still there?")
    await laptop.hear(room, "Alice", "still there?")
    laptop.say(room, "yes")
    await alice.hear(room, "Bob", "yes")
    for user in (alice, laptop):  # nobody saw Bob leave
        assert user.inbox.pending(left(f"{room}/Bob")) == []
    assert phone.inbox.pending(lambda s: is_groupchat(s) and s["body"] in ("still there?", "yes")) == []

    # The laptop's connection drops without a word: its server's unavailable presence takes the
    # last session out (RFC 6121 §4.6.3, directed presence), and with it Bob.
    laptop.client.abort()
    gone = await alice.inbox.take(left(f"{room}/Bob"))
    assert codes(gone) == set() and item(gone)["role"] == "none"


async def test_private_messages_reach_only_their_occupant(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "whispers")
    await bob.join(room)
    await carol.join(room)
    bob.send(f"{room}/Carol", "psst", "chat")  # §7.5
    got = await carol.inbox.take(lambda s: s["body"] == "psst")
    assert got["from"] == f"{room}/Bob" and got["type"] == "chat"
    assert got.xml.find(f"{{{USER_NS}}}x") is not None  # marked as coming through the room
    carol.send(f"{room}/Bob", "psst back", "chat")
    assert (await bob.inbox.take(lambda s: s["body"] == "psst back"))["from"] == f"{room}/Carol"

    await exchange(room, bob, carol, alice)
    assert alice.inbox.pending(lambda s: s["body"] in ("psst", "psst back")) == []


async def test_the_room_archive_pages_through_with_the_live_stanza_ids(xmpp: XmppServer) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    room = await create(alice, "archive")
    await bob.join(room)
    for n in range(12):
        speaker = (alice, bob)[n % 2]
        speaker.say(room, f"line {n}")
        await speaker.inbox.seen(said(f"line {n}"))
    live = await bob.heard(room, "line 11")
    expected = [(m["stanza_id"]["id"], f"{room}/{('Alice', 'Bob')[n % 2]}", f"line {n}") for n, m in enumerate(live)]
    assert len(expected) == 12

    mam: Any = bob.client.plugin["xep_0313"]
    pages = []
    async for page in mam.retrieve(jid=JID(room), rsm={"max": 5}, iterator=True):
        pages.append([
            (r["mam_result"]["id"], r["mam_result"]["forwarded"]["stanza"]["from"],
             r["mam_result"]["forwarded"]["stanza"]["body"])
            for r in page["mam"]["results"]
        ])
    assert [len(page) for page in pages] == [5, 5, 2]
    assert [entry for page in pages for entry in page] == expected
    backwards = [
        r["mam_result"]["id"] async for r in mam.iterate(jid=JID(room), reverse=True, rsm={"max": 5})
    ]
    assert backwards == [archive_id for archive_id, _, _ in reversed(expected)]


# -- lifetime --------------------------------------------------------------------------------------


async def test_a_persistent_room_survives_a_restart_and_a_temporary_one_goes_with_its_last_occupant(
    xmpp: XmppServer, storage: Storage, tmp_path: Path
) -> None:
    alice, bob = await people(xmpp, ALICE, BOB)
    await xmpp.account(CAROL)
    await xmpp.account(DAVE)
    lasting = await create(alice, "lasting", name="Lasting", persistent=True, members_only=True)
    for jid, affiliation in ((BOB, "member"), (CAROL, "admin"), (DAVE, "outcast")):
        await alice.muc.set_affiliation(lasting, affiliation, jid=jid, timeout=TIMEOUT)
    alice.muc.set_subject(lasting, "Still here")
    await alice.inbox.take(is_subject)
    # A persistent room destroyed is gone for good, from the store too.
    doomed = await create(alice, "doomed", persistent=True)
    await alice.muc.destroy(doomed, timeout=TIMEOUT)
    passing = await create(alice, "passing")
    await bob.join(passing)
    await alice.leave(passing)
    await bob.leave(passing)  # the last one out
    assert await alice.info_refused(passing) == "item-not-found"

    await xmpp.server.stop()
    # Status 332: whoever was still inside heard that the service went away, before the stream ended.
    shutdown = await alice.inbox.take(lambda s: is_presence(s, f"{lasting}/Alice") and 332 in codes(s))
    assert shutdown["type"] == "unavailable" and 110 in codes(shutdown)
    async with running_server(storage, tmp_path, MUC) as again:
        alice, bob, carol, dave = await people(again, ALICE, BOB, CAROL, DAVE, new=False)
        muc = alice.muc
        for affiliation, jids in (("owner", [ALICE]), ("admin", [CAROL]), ("member", [BOB]), ("outcast", [DAVE])):
            assert await muc.get_affiliation_list(lasting, affiliation, timeout=TIMEOUT) == [JID(j) for j in jids]
        config = (await muc.get_room_config(lasting, timeout=TIMEOUT)).get_values()
        assert config[FIELDS["name"]] == "Lasting" and config[FIELDS["members_only"]] is True
        # Nobody is in it, and it is there, unlocked, with its rules.
        entered = await bob.join(lasting)
        assert item(entered.own) == {"affiliation": "member", "role": "participant", "jid": bob.jid}
        assert entered.subject["from"] == f"{lasting}/Alice" and subject_of(entered.subject) == "Still here"
        assert item((await carol.join(lasting)).own)["role"] == "moderator"
        assert condition(await dave.refused(lasting)) == "forbidden"
        await exchange(lasting, bob, carol)
        assert await alice.info_refused(passing) == await alice.info_refused(doomed) == "item-not-found"


async def test_destruction_is_announced_to_everyone_present(xmpp: XmppServer) -> None:
    alice, bob, carol = await people(xmpp, ALICE, BOB, CAROL)
    room = await create(alice, "doomed")
    await bob.join(room)
    await carol.join(room)
    venue = room_of("newhome")
    await alice.muc.destroy(room, reason="moving house", altroom=venue, timeout=TIMEOUT)  # §10.9
    for user in (alice, bob, carol):
        gone = await user.inbox.take(left(f"{room}/{user.nick}"))
        assert item(gone) == {"affiliation": "none", "role": "none"}
        destroy = gone.xml.find(f"{{{USER_NS}}}x/{{{USER_NS}}}destroy")
        assert destroy is not None and destroy.get("jid") == venue
        assert destroy.findtext(f"{{{USER_NS}}}reason") == "moving house"
    assert await bob.info_refused(room) == "item-not-found"
    bob.say(room, "hello?")
    assert condition(await bob.error("message")) == "item-not-found"


# -- bad input: refused, and the room goes on as it was ----------------------------------------------


async def test_refused_entries_leave_the_room_as_it_was(xmpp: XmppServer) -> None:
    alice, bob, carol, dave = await people(xmpp, ALICE, BOB, CAROL, DAVE)
    room = await create(alice, "guarded", password="s3cret")  # default_max_users: 3
    await bob.join(room, password="s3cret")
    await carol.join(room, password="s3cret")

    # §7.2.1: presence to the room itself has no nick.
    bare = dave.client.make_presence(pto=room)
    bare.enable("muc_join")
    bare.send()
    no_nick = await dave.inbox.take(lambda s: is_presence(s, room) and s["type"] == "error")
    assert condition(no_nick) == "jid-malformed"
    await exchange(room, alice, bob, carol)

    refusal = await dave.refused(room, password="wrong")  # §7.2.6
    assert condition(refusal) == "not-authorized" and refusal["error"]["type"] == "auth"
    await exchange(room, alice, bob, carol)

    # §7.2.10: full, for now (type wait: one may try again later).
    full = await dave.refused(room, password="s3cret")
    assert condition(full) == "service-unavailable" and full["error"]["type"] == "wait"
    await exchange(room, alice, bob, carol)
    for user in (alice, bob, carol):
        assert user.inbox.pending(lambda s: is_presence(s, f"{room}/Dave")) == []


async def test_refused_requests_leave_the_room_as_it_was(xmpp: XmppServer) -> None:
    alice, bob, carol, dave = await people(xmpp, ALICE, BOB, CAROL, DAVE)
    room = await create(alice, "rules")
    await bob.join(room)
    await carol.join(room)
    await alice.muc.set_affiliation(room, "admin", jid=CAROL, timeout=TIMEOUT)
    await carol.inbox.take(lambda s: is_presence(s, f"{room}/Carol") and item(s)["role"] == "moderator")

    async def refused(request: Any) -> str:
        with pytest.raises(IqError) as refusal:
            await request
        return str(refusal.value.iq["error"]["condition"])

    # §8.2: a participant may not kick; a moderator may not kick someone of higher affiliation.
    assert await refused(bob.muc.set_role(room, "Carol", "none", timeout=TIMEOUT)) == "forbidden"
    await exchange(room, alice, bob, carol)
    assert await refused(carol.muc.set_role(room, "Alice", "none", timeout=TIMEOUT)) == "not-allowed"
    await exchange(room, alice, bob, carol)
    # §10.4: the last owner may not leave the room without one.
    assert await refused(alice.muc.set_affiliation(room, "member", jid=ALICE, timeout=TIMEOUT)) == "conflict"
    assert await alice.muc.get_affiliation_list(room, "owner", timeout=TIMEOUT) == [JID(ALICE)]
    await exchange(room, alice, bob, carol)

    # Malformed configuration forms: a value that is no boolean, a form that is no submission.
    bad_value = submit_form({"moderated": "maybe"})
    assert await refused(alice.muc.set_room_config(room, bad_value, timeout=TIMEOUT)) == "not-acceptable"
    await exchange(room, alice, bob, carol)
    not_submitted: Any = alice.client.make_iq_set(ito=JID(room))
    not_submitted.xml.append(ET.fromstring(
        f"<query xmlns='{OWNER_NS}'><x xmlns='jabber:x:data' type='form'>"
        f"<field var='{FIELDS['moderated']}'><value>1</value></field></x></query>"
    ))
    assert await refused(not_submitted.send(timeout=TIMEOUT)) == "bad-request"
    config = (await alice.muc.get_room_config(room, timeout=TIMEOUT)).get_values()
    assert config[FIELDS["moderated"]] is False
    await exchange(room, alice, bob, carol)

    # §7.4: only occupants talk in the room; a groupchat message goes to the room, not to one.
    dave.say(room, "let me in")
    assert condition(await dave.error("message")) == "not-acceptable"
    await exchange(room, alice, bob, carol)
    bob.send(f"{room}/Carol", "for Carol", "groupchat")
    assert condition(await bob.error("message")) == "bad-request"
    await exchange(room, alice, bob, carol)
    for user in (alice, bob, carol):
        assert user.inbox.pending(lambda s: s["body"] in ("let me in", "for Carol")) == []

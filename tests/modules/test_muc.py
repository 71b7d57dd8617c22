"""XEP-0045 rooms through the in-memory server: entering (and creating), presence, nick
changes, several devices under one nick, groupchat fan-out, the subject, history, private
messages, leaving, and the errors of each."""

from __future__ import annotations

from lxml import etree

from xmppd.stanza import CLIENT_NS

from .harness import Harness, error_condition, presence
from .muc_helpers import (
    MEMBERS_ONLY,
    MUC,
    ROOM,
    SECRET,
    USER,
    admin,
    codes,
    create_room,
    field,
    in_room,
    item,
    join,
    join_xml,
    message,
    ok,
    room_service,  # noqa: F401  (the fixture h)
)

OCCUPANT_ID = "{urn:xmpp:occupant-id:0}occupant-id"
STANZA_ID = "{urn:xmpp:sid:0}stanza-id"
DELAY = "{urn:xmpp:delay}delay"


async def test_the_first_to_enter_creates_a_locked_room_and_owns_it(h: Harness) -> None:
    alice = await join(h, "alice")
    stanzas = alice.take()
    self_presence, subject = stanzas
    assert self_presence.get("from") == f"{ROOM}/alice"
    assert {"110", "201", "170"} <= set(codes(self_presence))
    assert item(self_presence) == {"affiliation": "owner", "role": "moderator", "jid": "alice@localhost/desk"}
    assert self_presence.find(OCCUPANT_ID) is not None
    assert subject.findtext(f"{{{CLIENT_NS}}}subject") == "" and subject.get("from") == ROOM
    # §10.1.1: nobody else enters until the owner has configured it.
    bob = await join(h, "bob")
    (refused,) = bob.take()
    assert refused.get("type") == "error" and error_condition(refused) == "item-not-found"


async def test_occupants_see_each_other_and_real_jids_only_where_allowed(h: Harness) -> None:
    alice = await create_room(h)
    bob = await join(h, "bob")
    # §7.2.3: first those present (alice, a moderator: bob is no moderator, so no jid), then himself.
    before, own, _subject = bob.take()
    assert before.get("from") == f"{ROOM}/alice" and "jid" not in item(before)
    assert own.get("from") == f"{ROOM}/bob" and "110" in codes(own) and "201" not in codes(own)
    assert item(own) == {"affiliation": "none", "role": "participant", "jid": "bob@localhost/desk"}
    # The moderator sees bob's real JID (semi-anonymous room).
    (news,) = alice.take(presence)
    assert news.get("from") == f"{ROOM}/bob" and item(news)["jid"] == "bob@localhost/desk"
    assert "110" not in codes(news)
    carol = await join(h, "carol")
    carol.take()
    (seen_by_bob,) = bob.take(presence)
    assert seen_by_bob.get("from") == f"{ROOM}/carol" and "jid" not in item(seen_by_bob)
    # The occupant id is stable for one account and differs between accounts.
    ids = {p.get("from"): p.find(OCCUPANT_ID).get("id") for p in [news, seen_by_bob]}  # type: ignore[union-attr]
    assert len(set(ids.values())) == 2


async def test_newcomers_see_each_occupants_latest_presence_role_and_nick(h: Harness) -> None:
    """What a newcomer is shown of those present is kept between joins (Occupant.shown): every
    change must show in it."""
    alice, bob = await in_room(h, "alice", "bob")

    async def seen_by(name: str) -> etree._Element:
        newcomer = await join(h, name)
        others = (f"{ROOM}/alice", f"{ROOM}/{name}")
        (shown,) = [p for p in newcomer.take(presence) if p.get("from") not in others]
        await newcomer.send(f"<presence to='{ROOM}/{name}' type='unavailable'/>")
        newcomer.take()
        return shown

    assert (await seen_by("carol")).findtext(f"{{{CLIENT_NS}}}status") is None
    await bob.send(f"<presence to='{ROOM}/bob'><show>away</show><status>lunch</status></presence>")
    shown = await seen_by("dave")
    assert shown.findtext(f"{{{CLIENT_NS}}}status") == "lunch" and shown.findtext(f"{{{CLIENT_NS}}}show") == "away"
    ok(await admin(alice, "<item nick='bob' role='moderator'/>"))
    assert item(await seen_by("carol"))["role"] == "moderator"
    await bob.send(f"<presence to='{ROOM}/robert'/>")
    shown = await seen_by("dave")
    assert shown.get("from") == f"{ROOM}/robert" and shown.findtext(f"{{{CLIENT_NS}}}status") is None


async def test_groupchat_fans_out_once_to_every_occupant_with_the_rooms_ids(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    await bob.send(
        f"<message to='{ROOM}' type='groupchat' id='m1'><body>hi all</body>"
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/>"
        f"<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>"
    )
    copies = {client.jid: client.take(message) for client in (alice, bob, carol)}
    archive_ids = set()
    for jid, received in copies.items():
        (copy,) = received
        assert copy.get("to") == str(jid) and copy.get("from") == f"{ROOM}/bob" and copy.get("id") == "m1"
        assert copy.findtext(f"{{{CLIENT_NS}}}body") == "hi all"
        (sid,) = copy.findall(STANZA_ID)
        assert sid.get("by") == ROOM and sid.get("id") != "forged"
        archive_ids.add(sid.get("id"))
        (occupant_id,) = copy.findall(OCCUPANT_ID)
        assert occupant_id.get("id") != "forged"
    assert len(archive_ids) == 1  # stamped once: everyone has the same message


async def test_messages_from_outside_or_of_the_wrong_type_are_refused(h: Harness) -> None:
    alice = await create_room(h)
    dave = await h.connect("dave@localhost/desk")
    await dave.send(f"<message to='{ROOM}' type='groupchat'><body>let me in</body></message>")
    (refused,) = dave.take()
    assert error_condition(refused) == "not-acceptable"
    await alice.send(f"<message to='{ROOM}' type='chat'><body>typed wrong</body></message>")
    (wrong_type,) = alice.take()
    assert error_condition(wrong_type) == "bad-request"
    # A groupchat message to one occupant is a spoofed private message (§7.5).
    bob = await join(h, "bob")
    bob.take()
    alice.take()
    await bob.send(f"<message to='{ROOM}/alice' type='groupchat'><body>psst</body></message>")
    (spoofed,) = bob.take()
    assert error_condition(spoofed) == "bad-request"
    assert alice.take() == []


async def test_subject_is_sent_on_entering_and_only_moderators_change_it(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><subject>mine now</subject></message>")
    (refused,) = bob.take()
    assert error_condition(refused) == "forbidden"
    await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>")
    (news,) = bob.take()
    assert news.findtext(f"{{{CLIENT_NS}}}subject") == "Plans" and news.get("from") == f"{ROOM}/alice"
    carol = await join(h, "carol")
    *_presences, subject = carol.take()
    assert subject.findtext(f"{{{CLIENT_NS}}}subject") == "Plans" and subject.get("from") == f"{ROOM}/alice"


async def test_history_on_entering_follows_the_requested_limits(h: Harness) -> None:
    alice = await create_room(h)
    for n in range(5):
        await alice.send(f"<message to='{ROOM}' type='groupchat'><body>message {n}</body></message>")
    alice.take()

    async def history(name: str, request: str) -> list[str]:
        client = await join(h, name, extra=request)
        received = [m for m in client.take(message) if m.find(f"{{{CLIENT_NS}}}body") is not None]
        for stanza in received:
            delay = stanza.find(DELAY)
            assert delay is not None and delay.get("from") == ROOM
            assert stanza.get("from") == f"{ROOM}/alice" and stanza.get("to") == str(client.jid)
        return [m.findtext(f"{{{CLIENT_NS}}}body") or "" for m in received]

    assert await history("bob", "") == [f"message {n}" for n in range(5)]
    assert await history("carol", "<history maxstanzas='2'/>") == ["message 3", "message 4"]
    assert await history("dave", "<history maxstanzas='0'/>") == []


async def test_nick_conflict_and_nick_change(h: Harness) -> None:
    alice = await create_room(h)
    bob = await join(h, "bob", nick="alice")
    (refused,) = bob.take()
    assert refused.get("from") == f"{ROOM}/alice" and error_condition(refused) == "conflict"
    await bob.send(join_xml("bob"))
    bob.take()
    alice.take()
    await bob.send(f"<presence to='{ROOM}/robert'/>")
    gone, back = alice.take(presence)
    assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/bob"
    assert "303" in codes(gone) and item(gone)["nick"] == "robert"
    assert back.get("type") is None and back.get("from") == f"{ROOM}/robert"
    own_gone, own_back = bob.take(presence)
    assert {"303", "110"} <= set(codes(own_gone)) and "110" in codes(own_back)
    await bob.send(f"<presence to='{ROOM}/alice'/>")
    (taken,) = bob.take()
    assert error_condition(taken) == "conflict"


async def test_two_devices_of_one_account_share_a_nick(h: Harness) -> None:
    alice = await create_room(h)
    phone = await join(h, "bob", resource="phone")
    laptop = await join(h, "bob", resource="laptop")
    phone.take()
    laptop_stanzas = laptop.take(presence)
    assert [p.get("from") for p in laptop_stanzas] == [f"{ROOM}/alice", f"{ROOM}/bob"]
    alice.take()
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>both of you</body></message>")
    assert [m.get("to") for m in phone.take(message)] == ["bob@localhost/phone"]
    assert [m.get("to") for m in laptop.take(message)] == ["bob@localhost/laptop"]
    # One device leaves: only it hears so; bob is still there for the others.
    await phone.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    (own,) = phone.take(presence)
    assert own.get("type") == "unavailable" and "110" in codes(own)
    assert [p for p in alice.take(presence) if p.get("type") == "unavailable"] == []
    await laptop.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    (gone,) = alice.take(presence)
    assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/bob"


async def test_private_messages_go_to_every_device_of_the_nick(h: Harness) -> None:
    alice = await create_room(h)
    phone = await join(h, "bob", resource="phone")
    laptop = await join(h, "bob", resource="laptop")
    for client in (alice, phone, laptop):
        client.take()
    await alice.send(f"<message to='{ROOM}/bob' type='chat' id='pm'><body>just you</body></message>")
    for client in (phone, laptop):
        (pm,) = client.take(message)
        assert pm.get("from") == f"{ROOM}/alice" and pm.get("to") == str(client.jid) and pm.get("type") == "chat"
        assert pm.find(f"{{{USER}}}x") is not None
    await alice.send(f"<message to='{ROOM}/nobody' type='chat'><body>hello?</body></message>")
    (missing,) = alice.take()
    assert error_condition(missing) == "item-not-found"


async def test_leaving_is_announced_and_a_temporary_room_goes_with_its_last_occupant(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'><status>bye</status></presence>")
    (gone,) = alice.take(presence)
    assert gone.get("type") == "unavailable" and gone.findtext(f"{{{CLIENT_NS}}}status") == "bye"
    assert item(gone)["role"] == "none"
    await alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
    alice.take()
    carol = await join(h, "carol")
    own, _subject = carol.take()
    assert "201" in codes(own)  # a new room: the temporary one is gone


async def test_a_disconnected_client_leaves_its_rooms(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    await bob.disconnect()
    (gone,) = alice.take(presence)
    assert gone.get("type") == "unavailable" and gone.get("from") == f"{ROOM}/bob"


async def test_entering_errors(h: Harness) -> None:
    await create_room(h, field("muc#roomconfig_passwordprotectedroom", "1")
                      + field(SECRET, "sesame") + field("muc#roomconfig_maxusers", "2"))
    bob = await join(h, "bob")
    (no_password,) = bob.take()
    assert error_condition(no_password) == "not-authorized"
    await bob.send(join_xml("bob", "<password>sesame</password>"))
    assert "110" in codes(bob.take(presence)[-1])
    carol = await join(h, "carol", extra="<password>sesame</password>")
    (full,) = carol.take()
    assert error_condition(full) == "service-unavailable"
    assert full.find(f"{{{CLIENT_NS}}}error").get("type") == "wait"  # type: ignore[union-attr]
    nobody = await h.connect("dave@localhost/desk")
    await nobody.send(f"<presence to='{ROOM}'><x xmlns='{MUC}'/></presence>")
    (no_nick,) = nobody.take()
    assert error_condition(no_nick) == "jid-malformed"


async def test_members_only_rooms_refuse_strangers(h: Harness) -> None:
    await create_room(h, field(MEMBERS_ONLY, "1"))
    bob = await join(h, "bob")
    (refused,) = bob.take()
    assert error_condition(refused) == "registration-required"

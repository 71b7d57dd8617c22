"""XEP-0045 §7.8.2 mediated invitations and declines through the in-memory server: what the
invitee gets, who may invite, membership in members-only rooms, and the errors."""

from __future__ import annotations

from lxml import etree

from storage.shapes import MAP
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition, presence
from .muc_helpers import (
    MEMBERS_ONLY,
    PERSISTENT,
    ROOM,
    SECRET,
    SERVICE,
    USER,
    admin,
    affiliate,
    codes,
    create_room,
    field,
    item,
    join,
    join_xml,
    message,
    ok,
    room_service,  # noqa: F401  (the fixture h)
)

CONFERENCE = "jabber:x:conference"


def invites_xml(*invitees: str, reason: str = "") -> str:
    invites = "".join(f"<invite to='{jid}'>{reason and f'<reason>{reason}</reason>'}</invite>" for jid in invitees)
    return f"<message id='inv1' to='{ROOM}'><x xmlns='{USER}'>{invites}</x></message>"


def invitation_of(stanza: etree._Element) -> dict[str, str | None]:
    """What an invitation from the room says, both ways (§7.8.2 and XEP-0249)."""
    invite = stanza.find(f"{{{USER}}}x/{{{USER}}}invite")
    direct = stanza.find(f"{{{CONFERENCE}}}x")
    assert invite is not None and direct is not None, etree.tostring(stanza)
    return {
        "from": stanza.get("from"),
        "id": stanza.get("id"),
        "type": stanza.get("type"),
        "inviter": invite.get("from"),
        "reason": invite.findtext(f"{{{USER}}}reason"),
        "password": stanza.findtext(f"{{{USER}}}x/{{{USER}}}password"),
        "room": direct.get("jid"),
        "direct reason": direct.get("reason"),
        "direct password": direct.get("password"),
    }


async def online(h: Harness, name: str) -> Client:
    """A client that is available, so that messages to its bare JID reach it (RFC 6121 §8.5.2)."""
    client = await h.connect(f"{name}@localhost/desk")
    await available(client)
    return client


async def available(client: Client) -> None:
    await client.send("<presence/>")
    client.take()


async def test_an_occupant_invites_several_people_at_once(h: Harness) -> None:
    alice = await create_room(h)
    bob, carol = await online(h, "bob"), await online(h, "carol")
    await alice.send(invites_xml("bob@localhost", "carol@localhost/desk", reason="Come and see"))
    assert alice.take() == []
    for invitee in (bob, carol):
        (received,) = invitee.take()
        assert invitation_of(received) == {
            "from": ROOM, "id": "inv1", "type": None, "inviter": "alice@localhost", "reason": "Come and see",
            "password": None, "room": ROOM, "direct reason": "Come and see", "direct password": None,
        }
    # An open room makes nobody a member by inviting them (§9.5).
    bob_joins = await join(h, "bob", resource="laptop")
    (own,) = [p for p in bob_joins.take(presence) if "110" in codes(p)]
    assert item(own)["affiliation"] == "none"


async def test_the_invitation_carries_the_password_and_what_the_one_to_one_chat_continues(h: Harness) -> None:
    alice = await create_room(h, field(SECRET, "sesame"))
    bob = await online(h, "bob")
    await alice.send(
        f"<message id='inv2' to='{ROOM}'><x xmlns='{USER}'><invite to='bob@localhost'>"
        "<continue thread='t1'/><other xmlns='urn:example'/></invite></x></message>"
    )
    (received,) = bob.take()
    said = invitation_of(received)
    assert said["password"] == "sesame" and said["direct password"] == "sesame"
    invite = received.find(f"{{{USER}}}x/{{{USER}}}invite")
    assert invite is not None
    # §7.9's <continue/> is passed on; nothing else the inviter put in is.
    assert [child.tag for child in invite] == [f"{{{USER}}}continue"]
    assert invite[0].get("thread") == "t1"


async def test_invitations_are_refused_whole(h: Harness) -> None:
    alice = await create_room(h)
    bob = await online(h, "bob")
    await admin(alice, affiliate(carol="outcast"))
    alice.take()
    for invitees, condition in (
        (("bob@localhost", "nobody@localhost"), "item-not-found"),  # §7.8.2: no such account
        (("bob@localhost", "carol@localhost"), "not-allowed"),  # banned
        (("bob@localhost", "@@"), "jid-malformed"),
        (("bob@localhost", ""), "bad-request"),
    ):
        await alice.send(invites_xml(*invitees))
        (refused,) = alice.take()
        assert refused.get("type") == "error" and error_condition(refused) == condition, invitees
        # The error carries the invitation back, so that the client can tell which one failed.
        assert refused.find(f"{{{USER}}}x/{{{USER}}}invite") is not None
    assert bob.take() == []


async def test_only_occupants_invite_and_only_to_rooms_that_exist(h: Harness) -> None:
    await create_room(h)
    outsider = await online(h, "dave")
    await outsider.send(invites_xml("bob@localhost"))
    (refused,) = outsider.take()
    assert error_condition(refused) == "not-acceptable"
    await outsider.send(f"<message to='nowhere@{SERVICE}'><x xmlns='{USER}'><invite to='bob@localhost'/></x></message>")
    (refused,) = outsider.take()
    assert error_condition(refused) == "item-not-found"


async def test_a_locked_room_exists_only_for_its_owner(h: Harness) -> None:
    alice = await online(h, "alice")
    await alice.send(join_xml("alice"))
    alice.take()
    bob = await online(h, "bob")
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><decline to='alice@localhost'/></x></message>")
    (refused,) = bob.take()
    assert error_condition(refused) == "item-not-found"
    assert alice.take() == []


async def test_members_only_rooms_let_admins_invite_and_invitees_in(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1") + field(PERSISTENT, "1"))
    ok(await admin(alice, affiliate(bob="member")))
    bob = await join(h, "bob")
    bob.take()
    alice.take()
    # A mere member may not invite (§9.5: forbidden) ...
    await bob.send(invites_xml("carol@localhost"))
    (refused,) = bob.take()
    assert error_condition(refused) == "forbidden"
    # ... an owner may, and the invitee becomes a member who can enter (§9.5).
    carol = await online(h, "carol")
    assert carol.take() == []
    await alice.send(invites_xml("carol@localhost"))
    (received,) = carol.take()
    assert invitation_of(received)["inviter"] == "alice@localhost"
    await carol.send(join_xml("carol"))
    (own,) = [p for p in carol.take(presence) if "110" in codes(p)]
    assert item(own)["affiliation"] == "member"
    # Kept with the room: a persistent room's members survive a restart.
    stored = await h.storage.open_store("muc_rooms", MAP).get(SERVICE, "lobby")
    assert isinstance(stored, dict) and stored["affiliations"]["carol@localhost"] == "member"


async def test_members_invite_where_the_room_allows_it(h: Harness) -> None:
    form = field(MEMBERS_ONLY, "1") + field("muc#roomconfig_allowinvites", "1")
    alice = await create_room(h, form)
    ok(await admin(alice, affiliate(bob="member")))
    bob = await join(h, "bob")
    bob.take()
    await bob.send(invites_xml("dave@localhost"))
    assert bob.take() == []
    dave = await join(h, "dave")
    assert "110" in codes(dave.take(presence)[-1])


async def test_a_decline_goes_back_to_the_inviter(h: Harness) -> None:
    alice = await create_room(h)
    await available(alice)
    bob = await online(h, "bob")
    await bob.send(
        f"<message id='d1' to='{ROOM}'><x xmlns='{USER}'><decline to='alice@localhost' from='carol@localhost'>"
        "<reason>Too busy</reason></decline></x></message>"
    )
    assert bob.take() == []
    (declined,) = alice.take(message)
    decline = declined.find(f"{{{USER}}}x/{{{USER}}}decline")
    assert decline is not None and declined.get("from") == ROOM and declined.get("id") == "d1"
    # The decliner as the room knows it, whatever it claims.
    assert decline.get("from") == "bob@localhost" and decline.findtext(f"{{{USER}}}reason") == "Too busy"
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><decline/></x></message>")
    (refused,) = bob.take()
    assert error_condition(refused) == "bad-request"


async def test_a_groupchat_message_is_no_invitation(h: Harness) -> None:
    alice = await create_room(h)
    bob = await online(h, "bob")
    await alice.send(
        f"<message type='groupchat' to='{ROOM}'><body>hi</body><x xmlns='{USER}'>"
        "<invite to='bob@localhost'/></x></message>"
    )
    assert bob.take() == []
    assert [m.findtext(f"{{{CLIENT_NS}}}body") for m in alice.take(message)] == ["hi"]

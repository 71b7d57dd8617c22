"""XEP-0280 message carbons (urn:xmpp:carbons:2) with the XEP-0334 no-copy hint, and chat states
(XEP-0085), receipts (XEP-0184) and markers (XEP-0333) reaching every device, through the
in-memory server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from xmppd.elements import element
from xmppd.module import StanzaEvent
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, iq_reply

ALICE = "alice@localhost"
BOB = "bob@example.test"
NS = "urn:xmpp:carbons:2"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
CHATSTATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path, hosts=("localhost", "example.test"), modules=("offline", "carbons", "blocking")
    ) as harness:
        for account in (ALICE, BOB):
            await harness.account(account)
        yield harness


def message(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}message"


async def online(h: Harness, jid: str, *, carbons: bool, priority: int = 0) -> Client:
    client = await h.connect(jid)
    if carbons:
        await client.send(f"<iq type='set' id='c1'><enable xmlns='{NS}'/></iq>")
        (reply,) = client.take(iq_reply)
        assert reply.get("type") == "result" and reply.get("id") == "c1"
    await client.send(f"<presence><priority>{priority}</priority></presence>")
    client.take()
    return client


def unwrap(copy: etree._Element, direction: str) -> etree._Element:
    """The original inside a carbon copy, checking the wrapping on the way (§7, §8)."""
    marker = copy.find(f"{{{NS}}}{direction}")
    assert marker is not None, etree.tostring(copy)
    forwarded = marker.find(FORWARDED)
    assert forwarded is not None
    original = forwarded.find(f"{{{CLIENT_NS}}}message")
    assert original is not None
    return original


@pytest.fixture
async def devices(h: Harness) -> tuple[Client, Client, Client, Client]:
    """Alice's phone (carbons, priority 5), laptop (carbons), tablet (no carbons); Bob."""
    phone = await online(h, f"{ALICE}/phone", carbons=True, priority=5)
    laptop = await online(h, f"{ALICE}/laptop", carbons=True)
    tablet = await online(h, f"{ALICE}/tablet", carbons=False)
    bob = await online(h, f"{BOB}/desk", carbons=False)
    for client in (phone, laptop, tablet, bob):
        client.take()
    return phone, laptop, tablet, bob


async def test_enable_and_disable_and_the_feature(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    (reply,) = phone.take(iq_reply)
    assert NS in {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    # §10.1: repeated requests are no errors.
    for command in ("enable", "enable", "disable", "disable", "enable"):
        await phone.send(f"<iq type='set' id='{command}'><{command} xmlns='{NS}'/></iq>")
        (answer,) = phone.take(iq_reply)
        assert answer.get("type") == "result" and answer.get("to") == f"{ALICE}/phone"
    assert "carbons" in phone.session.flags


async def test_sent_copies_go_to_the_other_enabled_resources(devices: tuple[Client, ...]) -> None:
    phone, laptop, tablet, bob = devices
    await phone.send(f"<message to='{BOB}' type='chat' id='s1'><body>hi Bob</body></message>")
    assert [m.get("id") for m in bob.take(message)] == ["s1"]
    (copy,) = laptop.take(message)
    assert (copy.get("from"), copy.get("to"), copy.get("type")) == (ALICE, f"{ALICE}/laptop", "chat")
    original = unwrap(copy, "sent")
    assert (original.get("from"), original.get("to"), original.get("id")) == (f"{ALICE}/phone", BOB, "s1")
    assert original.findtext(f"{{{CLIENT_NS}}}body") == "hi Bob"
    assert phone.take(message) == [] and tablet.take(message) == []


async def test_sent_copies_also_when_the_sender_has_carbons_off(devices: tuple[Client, ...]) -> None:
    phone, laptop, tablet, _bob = devices
    await tablet.send(f"<message to='{BOB}' type='chat'><body>from the tablet</body></message>")
    assert len(phone.take(message)) == 1 and len(laptop.take(message)) == 1
    assert tablet.take(message) == []


async def test_received_copies_skip_the_resources_that_got_the_original(devices: tuple[Client, ...]) -> None:
    phone, laptop, tablet, bob = devices
    # To the bare JID: the phone (highest priority) gets it, the laptop a copy, the tablet nothing.
    await bob.send(f"<message to='{ALICE}' type='chat' id='r1'><body>hi Alice</body></message>")
    (original,) = phone.take(message)
    assert original.find(f"{{{NS}}}received") is None and original.get("id") == "r1"
    (copy,) = laptop.take(message)
    assert (copy.get("from"), copy.get("to")) == (ALICE, f"{ALICE}/laptop")
    assert unwrap(copy, "received").get("from") == f"{BOB}/desk"
    assert tablet.take(message) == []
    # To a full JID: only that resource gets the original.
    await bob.send(f"<message to='{ALICE}/laptop' type='chat' id='r2'><body>laptop?</body></message>")
    assert [m.get("id") for m in laptop.take(message)] == ["r2"]
    (copy,) = phone.take(message)
    assert unwrap(copy, "received").get("id") == "r2"


async def test_disabled_resources_get_no_copies(devices: tuple[Client, ...]) -> None:
    phone, laptop, _tablet, bob = devices
    await laptop.send(f"<iq type='set' id='off'><disable xmlns='{NS}'/></iq>")
    laptop.take()
    await phone.send(f"<message to='{BOB}' type='chat'><body>x</body></message>")
    await bob.send(f"<message to='{ALICE}/phone' type='chat'><body>y</body></message>")
    assert laptop.take(message) == []


@pytest.mark.parametrize(
    ("type_", "payload", "copied"),
    [
        ("chat", "<body>x</body>", True),
        ("normal", "<body>x</body>", True),
        (None, "<body>x</body>", True),
        ("normal", "<subject>no body</subject>", False),
        ("headline", "<body>news</body>", False),
        # §6.1: IM payloads are copied whatever the type.
        ("chat", f"<composing xmlns='{CHATSTATES}'/>", True),
        ("normal", "<received xmlns='urn:xmpp:receipts' id='x'/>", True),
        ("headline", "<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", True),
        # XEP-0249 invitations are copied.
        ("normal", "<x xmlns='jabber:x:conference' jid='room@muc.example.test'/>", True),
        # §9 / XEP-0334 §4.3: private and no-copy opt out.
        ("chat", f"<body>x</body><private xmlns='{NS}'/><no-copy xmlns='urn:xmpp:hints'/>", False),
        ("chat", f"<body>x</body><private xmlns='{NS}'/>", False),
        ("chat", "<body>x</body><no-copy xmlns='urn:xmpp:hints'/>", False),
        # A carbon is never copied again.
        ("chat", f"<sent xmlns='{NS}'><forwarded xmlns='urn:xmpp:forward:0'/></sent>", False),
        ("groupchat", "<body>x</body>", False),
    ],
)
async def test_eligibility(
    devices: tuple[Client, ...], type_: str | None, payload: str, copied: bool
) -> None:
    phone, laptop, _tablet, bob = devices
    type_attr = f" type='{type_}'" if type_ else ""
    await phone.send(f"<message to='{BOB}/desk'{type_attr}>{payload}</message>")
    assert len(laptop.take(message)) == (1 if copied else 0), "sent"
    await bob.send(f"<message to='{ALICE}/phone'{type_attr}>{payload}</message>")
    assert len(laptop.take(message)) == (1 if copied else 0), "received"


async def test_errors_are_not_copied(devices: tuple[Client, ...]) -> None:
    phone, laptop, _tablet, bob = devices
    await bob.send(
        f"<message to='{ALICE}/phone' type='error' id='e'><body>x</body>"
        "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    assert len(phone.take(message)) == 1
    assert laptop.take(message) == []


async def test_private_messages_from_a_room_occupant_are_not_copied(devices: tuple[Client, ...]) -> None:
    phone, laptop, _tablet, bob = devices
    # Stand-in for a MUC occupant: a full JID sending with the muc#user marker.
    await bob.send(
        f"<message to='{ALICE}/phone' type='chat'><body>pm</body>"
        "<x xmlns='http://jabber.org/protocol/muc#user'/></message>"
    )
    assert len(phone.take(message)) == 1 and laptop.take(message) == []
    # A mediated invitation from the room is copied.
    await bob.send(
        f"<message to='{ALICE}/phone'><x xmlns='http://jabber.org/protocol/muc#user'>"
        f"<invite from='{BOB}'/></x></message>"
    )
    assert len(laptop.take(message)) == 1


async def test_copies_carry_what_higher_priority_modules_stamped(h: Harness, devices: tuple[Client, ...]) -> None:
    """Carbons sit below the archive: a stanza-id stamped at priority 50 is in the copies."""
    phone, laptop, _tablet, bob = devices

    def stamp(ev: StanzaEvent) -> None:
        element("{urn:xmpp:sid:0}stanza-id", {"id": "archive-1", "by": ALICE}, parent=ev.stanza.element)

    host = h.server.hosts["localhost"]
    registrations = [host.hooks.on("pre-message/bare", stamp, 50), host.hooks.on("message/full", stamp, 50)]
    try:
        await phone.send(f"<message to='{BOB}' type='chat'><body>x</body></message>")
        await bob.send(f"<message to='{ALICE}/phone' type='chat'><body>y</body></message>")
    finally:
        for registration in registrations:
            host.hooks.off(registration)
    sent, received = laptop.take(message)
    for copy, direction in ((sent, "sent"), (received, "received")):
        assert unwrap(copy, direction).find("{urn:xmpp:sid:0}stanza-id") is not None


async def test_chat_states_reach_every_device_and_never_wait_offline(devices: tuple[Client, ...]) -> None:
    phone, laptop, tablet, bob = devices
    await bob.send(f"<message to='{ALICE}' type='chat'><composing xmlns='{CHATSTATES}'/></message>")
    assert phone.take(message)[0].find(f"{{{CHATSTATES}}}composing") is not None
    copy = laptop.take(message)[0]
    assert unwrap(copy, "received").find(f"{{{CHATSTATES}}}composing") is not None
    # Alice types on the phone: her laptop learns it (a sent carbon); Bob gets the state.
    await phone.send(f"<message to='{BOB}' type='chat'><active xmlns='{CHATSTATES}'/></message>")
    assert unwrap(laptop.take(message)[0], "sent").find(f"{{{CHATSTATES}}}active") is not None
    assert len(bob.take(message)) == 1
    assert tablet.take(message) == []


async def test_no_copy_to_a_bare_jid_still_reaches_the_top_resources(devices: tuple[Client, ...]) -> None:
    """XEP-0334 §4.3: no-copy does not override RFC 6121 delivery to a bare JID."""
    phone, laptop, _tablet, bob = devices
    await laptop.send("<presence><priority>5</priority></presence>")
    for client in devices:
        client.take()
    await bob.send(f"<message to='{ALICE}' type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>")
    # Each gets the original once, and no copy besides.
    assert len(phone.take(message)) == 1 and len(laptop.take(message)) == 1

"""What clients keep in PEP, each with the options its specification gives, through the in-memory
server: nicknames (XEP-0172), vCard4 (XEP-0292) and OMEMO device lists and bundles (XEP-0384,
both the legacy `eu.siacs.conversations.axolotl` and OMEMO 2). They are plain nodes: this checks
that they publish, notify, are read and are sent on login as their clients expect."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from xmppd.modules.pep import NS

from .harness import Client, Harness
from .test_pep import (
    ALICE,
    BOB,
    DAVE,
    befriend,
    configuration,
    events_of,
    headline,
    item_ids,
    items,
    online,
    publish_options,
    pubsub_condition,
    request,
)

NICK = "http://jabber.org/protocol/nick"
VCARD4 = "urn:xmpp:vcard4"
VCARD4_NS = "urn:ietf:params:xml:ns:vcard-4.0"
OMEMO = "urn:xmpp:omemo:2"
AXOLOTL = "eu.siacs.conversations.axolotl"
MODULES = ("caps", "pep")
PREKEYS = 100  # XEP-0384 §5.3.2's example


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=MODULES) as harness:
        for account in (ALICE, BOB, DAVE):
            await harness.account(account)
        await befriend(harness, ALICE, BOB, "Friends")  # dave is in nobody's roster
        yield harness


async def publish_item(
    client: Client, node: str, payload: str, item_id: str | None = None, options: str = ""
) -> None:
    """Publish one item with any payload; the service must accept it."""
    item = f"<item id='{item_id}'>" if item_id else "<item>"
    publish = f"<publish node='{node}'>{item}{payload}</item></publish>"
    reply = await request(client, f"<pubsub xmlns='{NS}'>{publish}{options}</pubsub>")
    assert reply.get("type") == "result", etree.tostring(reply)


def payloads(stanza: etree._Element, tag: str) -> list[etree._Element]:
    return list(stanza.iter(tag))


def vcard4(name: str) -> str:
    return f"<vcard xmlns='{VCARD4_NS}'><fn><text>{name}</text></fn><nickname><text>al</text></nickname></vcard>"


def key(size: int = 32) -> str:
    return base64.b64encode(bytes(size)).decode()


def omemo2_bundle() -> str:
    prekeys = "".join(f"<pk id='{n}'>{key()}</pk>" for n in range(1, PREKEYS + 1))
    return (
        f"<bundle xmlns='{OMEMO}'><spk id='1'>{key()}</spk><spks>{key(64)}</spks><ik>{key()}</ik>"
        f"<prekeys>{prekeys}</prekeys></bundle>"
    )


def axolotl_bundle() -> str:
    prekeys = "".join(f"<preKeyPublic preKeyId='{n}'>{key()}</preKeyPublic>" for n in range(1, PREKEYS + 1))
    return (
        f"<bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>{key()}</signedPreKeyPublic>"
        f"<signedPreKeySignature>{key(64)}</signedPreKeySignature><identityKey>{key()}</identityKey>"
        f"<prekeys>{prekeys}</prekeys></bundle>"
    )


# -- XEP-0172 -----------------------------------------------------------------------------------------


async def test_a_nickname_goes_to_contacts_that_ask_for_it(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk", NICK)
    dave = await online(h, f"{DAVE}/pc", NICK)
    # XEP-0172 §4.5: a plain publish, no item id, no options (PEP's presence access model).
    await publish_item(alice, NICK, f"<nick xmlns='{NICK}'>CallMeIshmael</nick>")
    (notification,) = bob.take(headline)
    assert [nick.text for nick in payloads(notification, f"{{{NICK}}}nick")] == ["CallMeIshmael"]
    assert dave.take(headline) == []
    reply = await items(bob, NICK, ALICE)
    assert [nick.text for nick in payloads(reply, f"{{{NICK}}}nick")] == ["CallMeIshmael"]
    assert pubsub_condition(await items(dave, NICK, ALICE)) == ("not-authorized", "presence-subscription-required")
    # A contact's next session learns it at login (XEP-0163 §4.3.4).
    laptop = await online(h, f"{BOB}/laptop", NICK)
    (last,) = laptop.take(headline)
    assert [nick.text for nick in payloads(last, f"{{{NICK}}}nick")] == ["CallMeIshmael"]


# -- XEP-0292 -----------------------------------------------------------------------------------------


async def test_a_vcard4_is_public_and_replaced_whole(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk", VCARD4)
    dave = await online(h, f"{DAVE}/pc")
    public = publish_options(persist_items="true", access_model="open")  # as Gajim keeps a public profile
    await publish_item(alice, VCARD4, vcard4("Alice"), "current", public)
    await publish_item(alice, VCARD4, vcard4("Alice Liddell"), "current", public)  # §3.2: the whole vCard again
    names = [payloads(message, f"{{{VCARD4_NS}}}text")[0].text for message in bob.take(headline)]
    assert names == ["Alice", "Alice Liddell"]
    reply = await items(dave, VCARD4, ALICE)  # open: anyone reads it
    assert item_ids(reply) == ["current"]
    assert [text.text for text in payloads(reply, f"{{{VCARD4_NS}}}text")] == ["Alice Liddell", "al"]
    assert (await configuration(alice, VCARD4))["pubsub#access_model"] == ["open"]


# -- XEP-0384 -----------------------------------------------------------------------------------------


async def devices_for_anyone(h: Harness, node: str, devices: str) -> Client:
    """XEP-0384 §5.3.1: the device list, open, under the id "current": notified to the
    resources that ask, readable by anyone (a stranger's first message, a room's occupants)."""
    alice = await online(h, f"{ALICE}/phone", node)
    bob = await online(h, f"{BOB}/desk", node)
    await publish_item(alice, node, devices, "current", publish_options(access_model="open"))
    assert events_of(alice) == events_of(bob) == [(ALICE, "items", f"{node} current:None")]
    # A resource that logs in gets the list it asks for.
    laptop = await online(h, f"{ALICE}/laptop", node)
    assert events_of(laptop) == [(ALICE, "items", f"{node} current:None")]
    dave = await online(h, f"{DAVE}/pc")
    assert item_ids(await items(dave, node, ALICE)) == ["current"]
    return alice


async def test_omemo2_devices_and_bundles_are_open_to_anyone(h: Harness) -> None:
    devices = f"<devices xmlns='{OMEMO}'><device id='31415'/><device id='4223'/></devices>"
    alice = await devices_for_anyone(h, f"{OMEMO}:devices", devices)
    # §5.3.2: each device's bundle is an item of one node, which keeps them all (max_items max).
    for device in ("31415", "4223"):
        options = publish_options(max_items="max", access_model="open")
        await publish_item(alice, f"{OMEMO}:bundles", omemo2_bundle(), device, options)
    dave = await online(h, f"{DAVE}/tablet")
    assert item_ids(await items(dave, f"{OMEMO}:bundles", ALICE)) == ["4223", "31415"]
    one = await items(dave, f"{OMEMO}:bundles", ALICE, inner="<item id='31415'/>")
    assert len(payloads(one, f"{{{OMEMO}}}pk")) == PREKEYS


async def test_legacy_omemo_devices_and_bundles_are_open_to_anyone(h: Harness) -> None:
    devices = f"<list xmlns='{AXOLOTL}'><device id='31415'/><device id='4223'/></list>"
    alice = await devices_for_anyone(h, f"{AXOLOTL}.devicelist", devices)
    # Conversations' protocol: a node per device, holding its bundle.
    for device in ("31415", "4223"):
        node = f"{AXOLOTL}.bundles:{device}"
        await publish_item(alice, node, axolotl_bundle(), "current", publish_options(access_model="open"))
    dave = await online(h, f"{DAVE}/tablet")
    reply = await items(dave, f"{AXOLOTL}.bundles:4223", ALICE)
    assert len(payloads(reply, f"{{{AXOLOTL}}}preKeyPublic")) == PREKEYS

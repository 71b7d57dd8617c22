"""XEP-0402 bookmarks through the in-memory server: native bookmarks as Conversations publishes them,
and the same bookmarks seen and changed by a client that keeps XEP-0048 bookmarks in XEP-0049
private XML storage (XEP-0402 §5.3) or in the PEP node `storage:bookmarks` (XEP-0411)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from storage.shapes import KEY_VALUE
from xmppd.elements import from_text
from xmppd.jid import parse_jid
from xmppd.modules.bookmarks import COMPAT, CONVERSION
from xmppd.modules.disco import INFO_NS
from xmppd.modules.pep import EVENT_NS, NS, pep_service

from .harness import Client, Harness, error_condition
from .test_pep import (
    ALICE,
    BOB,
    BOOKMARKS,
    CAROL,
    DAVE,
    befriend,
    configuration,
    headline,
    item_ids,
    items,
    online,
    publish_options,
    pubsub_condition,
    request,
)
from .test_pep_payloads import publish_item

MODULES = ("caps", "pep", "private", "bookmarks")
MAX_ITEMS = 4
PRIVATE_NS = "jabber:iq:private"
LEGACY_NS = "storage:bookmarks"
GAJIM_NS = "xmpp:gajim.org/bookmarks"
# What Conversations sends with each bookmark (XEP-0402 §3.3).
CONVERSATIONS = publish_options(
    persist_items="true", max_items="max", send_last_published_item="never", access_model="whitelist"
)
# What a XEP-0048 client sends with its list (XEP-0048 1.1+, XEP-0223).
XEP_0048 = publish_options(persist_items="true", access_model="whitelist")
ROOM = "council@conference.underhill.org"
PLAY = "theplay@conference.shakespeare.lit"
ORCHARD = "orchard@conference.shakespeare.lit"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=MODULES, options={"pep": {"max_items": MAX_ITEMS}}) as harness:
        for account in (ALICE, BOB, CAROL, DAVE):
            await harness.account(account)
        await befriend(harness, ALICE, BOB, "Friends")
        yield harness


# -- clients --------------------------------------------------------------------------------------


def conference(**fields: str) -> str:
    """A native bookmark (XEP-0402 §2); nick, password and extensions are children."""
    children = "".join(
        f"<{name}>{fields.pop(name)}</{name}>" for name in ("nick", "password", "extensions") if name in fields
    )
    attributes = "".join(f" {name}='{value}'" for name, value in fields.items())
    return f"<conference xmlns='{BOOKMARKS}'{attributes}>{children}</conference>"


async def publish_bookmark(client: Client, jid: str, payload: str, options: str = CONVERSATIONS) -> None:
    await publish_item(client, BOOKMARKS, payload, jid, options)


async def legacy_set(client: Client, content: str) -> etree._Element:
    storage = f"<storage xmlns='{LEGACY_NS}'>{content}</storage>"
    return await request(client, f"<query xmlns='{PRIVATE_NS}'>{storage}</query>")


async def legacy_get(client: Client) -> etree._Element:
    reply = await request(client, f"<query xmlns='{PRIVATE_NS}'><storage xmlns='{LEGACY_NS}'/></query>", "get")
    assert reply.get("type") == "result", etree.tostring(reply)
    storage = reply.find(f"{{{PRIVATE_NS}}}query/{{{LEGACY_NS}}}storage")
    assert storage is not None
    return storage


def described(entry: etree._Element) -> str:
    """A conference (either format) or url in one line: its attributes, then its children."""
    attributes = " ".join(f"{key!s}={value!s}" for key, value in sorted(entry.attrib.items()))
    children = " ".join(
        f"{etree.QName(child).localname}={child.text}" if len(child) == 0
        else f"{etree.QName(child).localname}[{' '.join(etree.QName(c).namespace or '' for c in child)}]"
        for child in entry
    )
    return f"{etree.QName(entry).localname}({attributes}) {children}".strip()


async def native(client: Client) -> dict[str, str]:
    """The bookmarks node's items, described, by id."""
    reply = await items(client, BOOKMARKS)
    assert reply.get("type") == "result", etree.tostring(reply)
    return {item.get("id", ""): described(item[0]) for item in reply.iter(f"{{{NS}}}item")}


def notified(client: Client) -> list[str]:
    """The bookmark notifications received: "item <id>" or "retract <id>"."""
    return [
        f"{etree.QName(entry).localname} {entry.get('id')}"
        for message in client.take(headline)
        for container in message.iter(f"{{{EVENT_NS}}}items")
        if container.get("node") == BOOKMARKS
        for entry in container
    ]


def legacy_notified(client: Client) -> list[list[str]]:
    """The `storage:bookmarks` lists received in notifications, each described entry by entry."""
    return [
        [described(entry) for entry in storage]
        for message in client.take(headline)
        for container in message.iter(f"{{{EVENT_NS}}}items")
        if container.get("node") == LEGACY_NS
        for storage in container.iter(f"{{{LEGACY_NS}}}storage")
    ]


async def legacy_pep(client: Client) -> list[str]:
    """The XEP-0048 PEP node's one item `current`, described entry by entry."""
    reply = await items(client, LEGACY_NS)
    assert item_ids(reply) == ["current"]
    storage = reply.find(f".//{{{LEGACY_NS}}}storage")
    assert storage is not None
    return [described(entry) for entry in storage]


async def legacy_publish(client: Client, content: str, options: str = XEP_0048) -> None:
    await publish_item(client, LEGACY_NS, f"<storage xmlns='{LEGACY_NS}'>{content}</storage>", "current", options)


# -- native bookmarks (XEP-0402 §3) ---------------------------------------------------------------------


async def test_native_bookmarks_with_the_options_conversations_uses(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    laptop = await online(h, f"{ALICE}/laptop", BOOKMARKS)
    bob = await online(h, f"{BOB}/desk", BOOKMARKS)  # a contact: must never see them
    payload = conference(name="The Play", autojoin="true", nick="JC")
    await publish_bookmark(phone, PLAY, payload)
    assert notified(phone) == notified(laptop) == [f"item {PLAY}"]
    assert notified(bob) == []
    config = await configuration(phone, BOOKMARKS)
    assert {var: config[var] for var in (
        "pubsub#persist_items", "pubsub#max_items", "pubsub#send_last_published_item", "pubsub#access_model"
    )} == {
        "pubsub#persist_items": ["1"], "pubsub#max_items": [str(MAX_ITEMS)],
        "pubsub#send_last_published_item": ["never"], "pubsub#access_model": ["whitelist"],
    }

    # The same options are preconditions the node now meets (§3.3, §3.4).
    await publish_bookmark(laptop, ORCHARD, conference(name="The Orchard"))
    assert item_ids(await items(phone, BOOKMARKS)) == [ORCHARD, PLAY]
    assert pubsub_condition(await items(bob, BOOKMARKS, ALICE)) == ("not-allowed", "closed-node")
    # send_last_published_item never: a new session gets nothing until something changes.
    tablet = await online(h, f"{ALICE}/tablet", BOOKMARKS)
    assert notified(tablet) == []
    notified(phone)

    # §3.5: removing one, notified as asked.
    retract = f"<retract node='{BOOKMARKS}' notify='true'><item id='{PLAY}'/></retract>"
    assert (await request(laptop, f"<pubsub xmlns='{NS}'>{retract}</pubsub>")).get("type") == "result"
    assert notified(phone) == notified(tablet) == [f"retract {PLAY}"]


# -- private XML storage (XEP-0402 §5.3) ---------------------------------------------------------------


async def test_the_unification_is_announced_on_the_account(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, f"<query xmlns='{INFO_NS}'/>", "get", ALICE)
    assert {COMPAT, CONVERSION} <= {feature.get("var") for feature in reply.iter(f"{{{INFO_NS}}}feature")}


async def test_a_legacy_list_becomes_one_item_per_room(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    legacy = await h.connect(f"{ALICE}/old")
    rooms = (
        f"<conference jid='{PLAY}' autojoin='1' name='The Play'><nick>JC</nick><password>s3cret</password>"
        f"<minimize xmlns='{GAJIM_NS}'>true</minimize></conference>"
        f"<conference jid='{ORCHARD}'/>"
        "<conference name='no room JID'/>"
        "<url name='XSF' url='https://xmpp.org/'/>"
    )
    assert (await legacy_set(legacy, rooms)).get("type") == "result"
    assert sorted(notified(phone)) == [f"item {ORCHARD}", f"item {PLAY}"]
    assert await native(phone) == {
        # Other namespaces go into <extensions/> (§2), autojoin='1' is true.
        PLAY: f"conference(autojoin=true name=The Play) nick=JC password=s3cret extensions[{GAJIM_NS}]",
        ORCHARD: "conference()",
    }
    assert (await configuration(phone, BOOKMARKS))["pubsub#access_model"] == ["whitelist"]
    # Read back: the rooms from PEP, then what only private storage holds.
    assert [described(entry) for entry in await legacy_get(legacy)] == [
        f"conference(autojoin=true jid={PLAY} name=The Play) nick=JC password=s3cret minimize=true",
        f"conference(autojoin=false jid={ORCHARD})",
        "conference(name=no room JID)",
        "url(name=XSF url=https://xmpp.org/)",
    ]


async def test_a_legacy_client_reads_native_bookmarks(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    extension = "<state xmlns='urn:example:state' minimized='true'/>"
    await publish_bookmark(phone, PLAY, conference(name="The Play", autojoin="true", nick="JC"))
    await publish_bookmark(phone, ORCHARD, conference(extensions=extension))
    await publish_bookmark(phone, "not-a-room@@", conference(name="a bad id"))
    await publish_bookmark(phone, ROOM, "<other xmlns='urn:example:other'/>")  # not a bookmark
    legacy = await h.connect(f"{ALICE}/old")
    storage = await legacy_get(legacy)
    assert [described(entry) for entry in storage] == [
        f"conference(autojoin=true jid={PLAY} name=The Play) nick=JC",
        f"conference(autojoin=false jid={ORCHARD}) state=None",
    ]
    state = storage.find(f"{{{LEGACY_NS}}}conference/{{urn:example:state}}state")
    assert state is not None and state.get("minimized") == "true"


async def test_a_legacy_list_changes_and_notifies_only_what_changed(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    await publish_bookmark(phone, PLAY, conference(name="The Play", autojoin="1", nick="JC"))
    await publish_bookmark(phone, ORCHARD, conference(name="Orchard"))
    await publish_bookmark(phone, ROOM, "<other xmlns='urn:example:other'/>")  # not a bookmark
    notified(phone)

    legacy = await h.connect(f"{ALICE}/old")
    new_room = "new@conference.example.org"
    rooms = (
        f"<conference jid='{PLAY}' name='The Play' autojoin='true'><nick>JC</nick></conference>"  # the same
        f"<conference jid='{new_room}' autojoin='true'/>"
    )  # the orchard is gone
    assert (await legacy_set(legacy, rooms)).get("type") == "result"
    # §5.3.2: updates and retractions as needed, nothing for the unchanged room.
    assert notified(phone) == [f"retract {ORCHARD}", f"item {new_room}"]
    # What a legacy client cannot see it does not remove.
    assert sorted(await native(phone)) == sorted([PLAY, new_room, ROOM])

    # Renaming one is one notification.
    renamed = rooms.replace("name='The Play'", "name='The Play (2)'")
    assert (await legacy_set(legacy, renamed)).get("type") == "result"
    assert notified(phone) == [f"item {PLAY}"]


async def test_a_node_others_may_read_or_too_small_is_left_alone(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    legacy = await h.connect(f"{ALICE}/old")
    # A client that published without options made it a presence node: contacts could read.
    await publish_bookmark(phone, PLAY, conference(name="The Play"), options="")
    refused = await legacy_set(legacy, f"<conference jid='{ORCHARD}'/>")
    assert error_condition(refused) == "conflict"
    assert await native(phone) == {PLAY: "conference(name=The Play)"}

    rooms = "".join(f"<conference jid='room{n}@conference.example.org'/>" for n in range(MAX_ITEMS + 1))
    await request(phone, f"<pubsub xmlns='{NS}#owner'><delete node='{BOOKMARKS}'/></pubsub>")
    assert error_condition(await legacy_set(legacy, rooms)) == "not-acceptable"
    assert error_condition(await items(phone, BOOKMARKS)) == "item-not-found"  # nothing made


async def test_bookmarks_come_alone_and_other_private_data_is_the_private_modules(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    both = f"<storage xmlns='{LEGACY_NS}'/><prefs xmlns='urn:example:prefs'>x</prefs>"
    assert error_condition(await request(alice, f"<query xmlns='{PRIVATE_NS}'>{both}</query>")) == "not-acceptable"
    prefs = "<prefs xmlns='urn:example:prefs'>x</prefs>"
    assert (await request(alice, f"<query xmlns='{PRIVATE_NS}'>{prefs}</query>")).get("type") == "result"
    reply = await request(alice, f"<query xmlns='{PRIVATE_NS}'><prefs xmlns='urn:example:prefs'/></query>", "get")
    assert reply.findtext(f"{{{PRIVATE_NS}}}query/{{urn:example:prefs}}prefs") == "x"


async def test_bookmarks_stored_before_go_to_pep_at_login(h: Harness) -> None:
    store = h.storage.open_store("private", KEY_VALUE)
    key = f"{{{LEGACY_NS}}}storage"
    legacy = (
        f"<storage xmlns='{LEGACY_NS}'><conference jid='{PLAY}' autojoin='true' name='Old name'/>"
        f"<conference jid='{ORCHARD}' name='Orchard'/><url name='XSF' url='https://xmpp.org/'/></storage>"
    )
    await store.set("localhost", "alice", key, legacy)
    # The node has the play already, renamed since by a PEP client: its version is the newer.
    pep = pep_service(h.server.hosts["localhost"].modules["pep"])
    newer = from_text(conference(name="New name"))
    whitelist = {"pubsub#access_model": "whitelist", "pubsub#max_items": MAX_ITEMS}
    await pep.publish(parse_jid(ALICE), BOOKMARKS, PLAY, newer, whitelist)

    alice = await h.connect(f"{ALICE}/phone")  # a client that reads PEP only
    assert await native(alice) == {PLAY: "conference(name=New name)", ORCHARD: "conference(name=Orchard)"}
    kept = await store.get("localhost", "alice", key)
    assert kept is not None and [described(entry) for entry in from_text(kept)] == [
        "url(name=XSF url=https://xmpp.org/)"
    ]

    # An account with nothing stored gets no node.
    bob = await h.connect(f"{BOB}/desk")
    assert error_condition(await items(bob, BOOKMARKS)) == "item-not-found"


async def test_private_storage_is_looked_at_once_per_account_not_at_every_login(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    store_class = type(h.storage.open_store("private", KEY_VALUE))
    original = store_class.get

    async def counted(store: Any, host: str, username: str, key: str) -> object:
        if store.name == "private" and key == f"{{{LEGACY_NS}}}storage":
            reads.append(username)
        return await original(store, host, username, key)

    monkeypatch.setattr(store_class, "get", counted)
    for resource in ("phone", "desk", "phone"):
        client = await h.connect(f"{ALICE}/{resource}")
        await client.disconnect()
    assert reads == ["alice"]


# -- the XEP-0048 PEP node (XEP-0411) -----------------------------------------------------------------


async def test_native_changes_are_copied_to_the_xep0048_pep_node(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    old = await online(h, f"{ALICE}/old", LEGACY_NS)
    bob = await online(h, f"{BOB}/desk", LEGACY_NS)  # a contact: must never see them
    await publish_bookmark(phone, PLAY, conference(name="The Play", autojoin="true", nick="JC"))
    play = f"conference(autojoin=true jid={PLAY} name=The Play) nick=JC"
    assert legacy_notified(old) == [[play]]
    await publish_bookmark(phone, ORCHARD, conference(name="Orchard"))
    orchard = f"conference(autojoin=false jid={ORCHARD} name=Orchard)"
    assert legacy_notified(old) == [[play, orchard]]
    assert await legacy_pep(old) == [play, orchard]
    assert legacy_notified(bob) == []
    assert pubsub_condition(await items(bob, LEGACY_NS, ALICE)) == ("not-allowed", "closed-node")
    config = await configuration(old, LEGACY_NS)
    assert {var: config[var] for var in (
        "pubsub#persist_items", "pubsub#max_items", "pubsub#send_last_published_item", "pubsub#access_model"
    )} == {
        "pubsub#persist_items": ["1"], "pubsub#max_items": ["1"],
        "pubsub#send_last_published_item": ["never"], "pubsub#access_model": ["whitelist"],
    }

    # The same bookmark published again changes nothing there: no notification.
    await publish_bookmark(phone, ORCHARD, conference(name="Orchard"))
    assert legacy_notified(old) == []
    # A room removed natively is gone from the copy and from private storage.
    retract = f"<retract node='{BOOKMARKS}' notify='true'><item id='{PLAY}'/></retract>"
    assert (await request(phone, f"<pubsub xmlns='{NS}'>{retract}</pubsub>")).get("type") == "result"
    assert legacy_notified(old) == [[orchard]]
    assert [described(entry) for entry in await legacy_get(old)] == [orchard]
    assert notified(phone) == [f"item {PLAY}", f"item {ORCHARD}", f"item {ORCHARD}", f"retract {PLAY}"]


async def test_a_xep0048_pep_list_changes_only_what_changed(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    await publish_bookmark(phone, PLAY, conference(name="The Play", autojoin="true"))
    await publish_bookmark(phone, ORCHARD, conference(name="Orchard"))
    notified(phone)
    old = await online(h, f"{ALICE}/old", LEGACY_NS)

    new_room = "new@conference.example.org"
    rooms = (
        f"<conference jid='{PLAY}' name='The Play' autojoin='1'/>"  # the same, spelt otherwise
        f"<conference jid='{new_room}' autojoin='true'><nick>JC</nick></conference>"
        "<url name='XSF' url='https://xmpp.org/'/>"
    )  # the orchard is gone
    await legacy_publish(old, rooms)
    # Only the changes reach the native node, and the copy is not written again: one
    # notification, the client's own publish.
    assert notified(phone) == [f"retract {ORCHARD}", f"item {new_room}"]
    assert len(legacy_notified(old)) == 1
    assert await native(phone) == {
        PLAY: "conference(autojoin=true name=The Play)", new_room: "conference(autojoin=true) nick=JC"
    }
    # Private XML clients see the same, what only XEP-0048 can hold included.
    assert [described(entry) for entry in await legacy_get(await h.connect(f"{ALICE}/older"))] == [
        f"conference(autojoin=true jid={PLAY} name=The Play)",
        f"conference(autojoin=true jid={new_room}) nick=JC",
        "url(name=XSF url=https://xmpp.org/)",
    ]

    # A native change afterwards keeps what only XEP-0048 holds in the copy.
    retract = f"<retract node='{BOOKMARKS}'><item id='{new_room}'/></retract>"
    assert (await request(phone, f"<pubsub xmlns='{NS}'>{retract}</pubsub>")).get("type") == "result"
    assert legacy_notified(old) == [
        [f"conference(autojoin=true jid={PLAY} name=The Play)", "url(name=XSF url=https://xmpp.org/)"]
    ]


async def test_a_private_xml_set_is_notified_to_xep0048_pep_clients(h: Harness) -> None:
    old = await online(h, f"{ALICE}/old", LEGACY_NS)
    legacy = await h.connect(f"{ALICE}/older")
    assert (await legacy_set(legacy, f"<conference jid='{PLAY}' name='The Play'/>")).get("type") == "result"
    play = f"conference(autojoin=false jid={PLAY} name=The Play)"
    assert legacy_notified(old) == [[play]]
    # Only what only private storage keeps changes: the copy follows, once.
    url = "<url name='XSF' url='https://xmpp.org/'/>"
    assert (await legacy_set(legacy, f"<conference jid='{PLAY}' name='The Play'/>{url}")).get("type") == "result"
    assert legacy_notified(old) == [[play, "url(name=XSF url=https://xmpp.org/)"]]
    # Removing everything leaves an empty list.
    assert (await legacy_set(legacy, "")).get("type") == "result"
    assert legacy_notified(old) == [[]]
    assert await native(old) == {}


async def test_older_native_bookmarks_are_copied_when_a_xep0048_pep_client_comes(h: Harness) -> None:
    pep = pep_service(h.server.hosts["localhost"].modules["pep"])
    await pep.publish(parse_jid(ALICE), BOOKMARKS, PLAY, from_text(conference(name="The Play")), {
        "pubsub#access_model": "whitelist"
    })
    # Made before: as if the conversion had not run then.
    await pep.delete(parse_jid(ALICE), LEGACY_NS)
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)  # not a XEP-0048 client: nothing made
    assert error_condition(await items(phone, LEGACY_NS)) == "item-not-found"
    old = await online(h, f"{ALICE}/old", LEGACY_NS)
    play = f"conference(autojoin=false jid={PLAY} name=The Play)"
    assert legacy_notified(old) == [[play]]
    assert await legacy_pep(old) == [play]


async def test_a_xep0048_node_others_may_read_gets_no_copy(h: Harness) -> None:
    old = await online(h, f"{ALICE}/old", LEGACY_NS)
    phone = await online(h, f"{ALICE}/phone", BOOKMARKS)
    # A client that published without options made it a presence node: contacts could read.
    await legacy_publish(old, f"<conference jid='{PLAY}' name='The Play'/>", options="")
    assert notified(phone) == [f"item {PLAY}"]  # converted: the native node is private
    legacy_notified(old)
    await publish_bookmark(phone, ORCHARD, conference(name="Orchard"))
    assert legacy_notified(old) == []  # XEP-0411 §5: not copied there
    assert await legacy_pep(old) == [f"conference(jid={PLAY} name=The Play)"]

"""Personal eventing (XEP-0163 on XEP-0060) with real clients over TCP+TLS, on both storage
backends: slixmpp's xep_0060, xep_0163 and xep_0115 against xmppd/modules/pep.py and caps.py, then
what the clients people use keep in PEP and next to it: vCards and avatars (XEP-0054, XEP-0153,
XEP-0084), bookmarks (XEP-0402, XEP-0048 in XEP-0049 or XEP-0223) and OMEMO (XEP-0384) end to end
with slixmpp-omemo, in its legacy namespace and as OMEMO 2.

Every client here comes `online` the way a PEP client does: it fetches its roster, publishes its
nickname (XEP-0172) before it is available, announces caps (XEP-0115) asking for `<node>+notify`
of the nick and of the nodes a test names, and is ready once the server sent it its own nick as
the last published item, which happens only once the server knows its caps (XEP-0163 §4.3.4): a
notification published after that point reaches it exactly when its caps ask for it. The PEP
events a client receives land in its inbox (`pep_inbox`), in arrival order; to show that one did
*not* arrive, a test waits for a later one on the same stream (one stream is ordered).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import oldmemo
import omemo
import pytest
import twomemo
from omemo.session_manager import SessionManager
from omemo.storage import Just, Maybe, Nothing
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.plugins.base import register_plugin
from slixmpp.plugins.xep_0004 import Form
from slixmpp_omemo import XEP_0384

from storage import Storage
from storage.model import RosterItem
from tests.integration.conftest import TIMEOUT, Client, XmppServer, running_server
from tests.integration.inbox import Inbox, Match, Stanza

pytestmark = pytest.mark.integration

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@example.test"  # another host of the same server
DAVE = "dave@localhost"  # in nobody's roster
RESOURCE = "desk"  # what a client asks to be bound to, unless a test names another

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT_NS = f"{PUBSUB}#event"
ERRORS_NS = f"{PUBSUB}#errors"
PUBLISH_OPTIONS = f"{PUBSUB}#publish-options"
NODE_CONFIG = f"{PUBSUB}#node_config"
NICK = "http://jabber.org/protocol/nick"
TUNE = "http://jabber.org/protocol/tune"
MOOD = "http://jabber.org/protocol/mood"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
CLIENT_NS = "jabber:client"

new_form: Any = Form  # slixmpp's data form, untyped


# -- what a client gets ----------------------------------------------------------------------------


def pep_inbox(client: Client) -> Inbox:
    """The PEP notifications (messages with a pubsub#event) `client` receives."""
    return Inbox(client, ("message",), lambda stanza: stanza.xml.find(f"{{{EVENT_NS}}}event") is not None)


def event(sender: str, node: str, kind: str = "items", *, text: str | None = None) -> Match:
    """A notification from `sender`'s service about `node`: of items (published or retracted;
    with `text`, one item's payload says that), or its purge or deletion."""

    def match(stanza: Stanza) -> bool:
        found = stanza.xml.find(f"{{{EVENT_NS}}}event/{{{EVENT_NS}}}{kind}")
        if stanza["from"] != sender or found is None or found.get("node") != node:
            return False
        return text is None or text in map(text_of, published(stanza).values())

    return match


def published(stanza: Stanza) -> dict[str, ET.Element]:
    """The items a notification carries: id -> payload."""
    items = stanza.xml.iterfind(f"{{{EVENT_NS}}}event/{{{EVENT_NS}}}items/{{{EVENT_NS}}}item")
    return {item.get("id", ""): item[0] for item in items}


def retracted(stanza: Stanza) -> list[str]:
    items = stanza.xml.iterfind(f"{{{EVENT_NS}}}event/{{{EVENT_NS}}}items/{{{EVENT_NS}}}retract")
    return [item.get("id", "") for item in items]


def payload(node: str, text: str) -> ET.Element:
    """A payload for `node` (nick, tune, mood...): the element its namespace names, saying
    `text` (a real tune has children; PEP does not look inside)."""
    element = ET.Element(f"{{{node}}}{node.rsplit('/', 1)[-1]}")
    element.text = text
    return element


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def texts(stanza: Stanza) -> dict[str, str]:
    """What a notification's items say, by id."""
    return {item_id: text_of(element) for item_id, element in published(stanza).items()}


# -- clients -----------------------------------------------------------------------------------------


@dataclass
class Peer:
    """A client that is online, with the PEP events it received."""

    client: Client
    events: Inbox

    @property
    def bare(self) -> str:
        return str(self.client.boundjid.bare)

    def plugin(self, name: str) -> Any:
        plugins: Any = self.client.plugin
        return plugins[name]

    @property
    def pubsub(self) -> Any:
        return self.plugin("xep_0060")

    async def publish(self, node: str, item_id: str, item: ET.Element, **options: str) -> None:
        """Publish on one's own service, with `options` as publish-options (pubsub#<name>)."""
        form = fill(PUBLISH_OPTIONS, options) if options else None
        await self.pubsub.publish(JID(self.bare), node, id=item_id, payload=item, options=form, timeout=TIMEOUT)

    async def items(self, owner: str, node: str) -> list[tuple[str, str]]:
        """(id, text) of `owner`'s items, newest first."""
        answer = await self.pubsub.get_items(JID(owner), node, timeout=TIMEOUT)
        return [(item["id"], text_of(item.xml[0])) for item in answer["pubsub"]["items"]]

    async def config(self, node: str) -> dict[str, Any]:
        answer = await self.pubsub.get_node_config(JID(self.bare), node, timeout=TIMEOUT)
        values: dict[str, Any] = answer["pubsub_owner"]["configure"]["form"].get_values()
        return values

    async def settled(self) -> None:
        """Everything this client sent before was handled: the server answers one stream in order."""
        await self.plugin("xep_0030").get_info(jid=JID("localhost"), timeout=TIMEOUT)


async def online(xmpp: XmppServer, jid: str, *notify: str, plugins: tuple[str, ...] = (),
                 prepare: Callable[[Client], None] = lambda client: None) -> Peer:
    """Log in, fetch the roster, publish one's nick, come online with caps asking for the nick's
    and `notify`'s events, and return once the server sent the nick back: it knows the caps (see
    the module docstring). `prepare` sees the client before it connects.

    slixmpp files the disco features added before binding (slixmpp-omemo's +notify) under the
    JID the client had then, while its caps are those of the bound JID: so a client asks for its
    resource (`RESOURCE` unless `jid` names one), which the server gives it."""
    if "/" not in jid:
        jid = f"{jid}/{RESOURCE}"
    client = xmpp.client(jid, plugins=("xep_0060", "xep_0163", *plugins))
    peer = Peer(client, pep_inbox(client))
    peer.plugin("xep_0163").add_interest([NICK, *notify])
    prepare(client)
    started = client.wait_for("session_start")
    client.connect("127.0.0.1", xmpp.port)
    await asyncio.wait_for(started, TIMEOUT)
    assert client.boundjid.full == jid
    await client.get_roster(timeout=TIMEOUT)
    await peer.publish(NICK, "current", payload(NICK, jid.split("@")[0].title()))
    # With the features plugins add on binding (disco#info itself, caps, avatars).
    await peer.plugin("xep_0115").update_caps(broadcast=False)
    client.send_presence()
    await client.next_presence(lambda p: p["from"] == jid)
    await peer.events.take(event(peer.bare, NICK))
    return peer


def fill(form_type: str, fields: dict[str, str]) -> Any:
    """A submitted form of `form_type` with these pubsub#<name> fields."""
    form = new_form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for name, value in fields.items():
        form.add_field(var=f"pubsub#{name}", value=value)
    return form


async def refused(request: Awaitable[Any]) -> tuple[str, str | None]:
    """The defined condition of the error that answers `request`, and its pubsub one, if any."""
    with pytest.raises(IqError) as caught:
        await request
    error = caught.value.iq["error"]
    specific = next((child for child in error.xml if child.tag.startswith(f"{{{ERRORS_NS}}}")), None)
    return error["condition"], specific.tag.removeprefix(f"{{{ERRORS_NS}}}") if specific is not None else None


async def accounts(xmpp: XmppServer, *jids: str) -> None:
    for jid in jids:
        await xmpp.account(jid)


async def befriend(xmpp: XmppServer, one: str, other: str) -> None:
    """A mutual presence subscription, written before either logs in (the roster cache reads it then)."""
    for user, contact in ((one, other), (other, one)):
        local, domain = user.split("@")
        await xmpp.server.storage.rosters.put(domain, local, RosterItem(jid=contact, subscription="both"))


# -- the service -------------------------------------------------------------------------------------


async def test_an_account_is_a_pep_service_for_its_owner_and_its_contacts(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    alice = await online(xmpp, ALICE)
    bob = await online(xmpp, BOB)
    for asking in (alice, bob):
        info = (await asking.plugin("xep_0030").get_info(jid=JID(ALICE), timeout=TIMEOUT))["disco_info"]
        assert ("pubsub", "pep", None, None) in info["identities"]
        features = {feature.removeprefix(f"{PUBSUB}#") for feature in info["features"]}
        # What Conversations, Gajim and Dino look for before they use PEP for OMEMO and avatars.
        assert {
            "publish", "publish-options", "auto-create", "access-open", "access-presence", "access-whitelist",
            "persistent-items", "last-published", "filtered-notifications", "retrieve-items", "retract-items",
            "purge-nodes", "delete-nodes", "config-node", "create-and-configure", "item-ids", "multi-items",
        } <= features


async def test_publish_options_create_a_node_then_hold_as_preconditions_until_the_owner_reconfigures(
    xmpp: XmppServer,
) -> None:
    await accounts(xmpp, ALICE)
    alice = await online(xmpp, ALICE)
    await alice.publish(MOOD, "first", payload(MOOD, "happy"), access_model="open")
    assert (await alice.config(MOOD))["pubsub#access_model"] == "open"

    # The node is there, open: a publish that requires another model changes nothing (XEP-0060 §7.1.5).
    request = alice.publish(MOOD, "second", payload(MOOD, "curious"), access_model="presence")
    assert await refused(request) == ("conflict", "precondition-not-met")
    assert await alice.items(ALICE, MOOD) == [("first", "happy")]

    # What Conversations does then: configure the node as asked, and publish again.
    form = fill(NODE_CONFIG, {"access_model": "presence"})
    await alice.pubsub.set_node_config(JID(ALICE), MOOD, form, timeout=TIMEOUT)
    await alice.publish(MOOD, "second", payload(MOOD, "curious"), access_model="presence")
    assert (await alice.config(MOOD))["pubsub#access_model"] == "presence"
    assert await alice.items(ALICE, MOOD) == [("second", "curious")]


async def test_a_stranger_reads_an_open_node_but_not_a_presence_one(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB, DAVE)
    await befriend(xmpp, ALICE, BOB)
    alice = await online(xmpp, ALICE)
    await alice.publish(TUNE, "current", payload(TUNE, "for contacts"))  # XEP-0163's default: presence
    await alice.publish(MOOD, "current", payload(MOOD, "for anyone"), access_model="open")
    bob = await online(xmpp, BOB)
    dave = await online(xmpp, DAVE)
    assert await refused(dave.items(ALICE, TUNE)) == ("not-authorized", "presence-subscription-required")
    assert await dave.items(ALICE, MOOD) == [("current", "for anyone")]
    assert await bob.items(ALICE, TUNE) == [("current", "for contacts")]


async def test_notifications_reach_the_contacts_whose_caps_ask_for_them(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB, CAROL)
    await befriend(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, CAROL)
    alice = await online(xmpp, ALICE)
    bob = await online(xmpp, BOB, TUNE)
    carol = await online(xmpp, CAROL)  # asks for nicks only
    await alice.publish(TUNE, "current", payload(TUNE, "Blue in Green"))
    notification = await bob.events.take(event(ALICE, TUNE))
    assert notification["type"] == "headline"
    assert texts(notification) == {"current": "Blue in Green"}
    # Carol's caps do not ask for tunes: the next event she gets from Alice is the new nick, and
    # no tune came before it.
    await alice.publish(NICK, "current", payload(NICK, "Alice L."))
    await carol.events.take(event(ALICE, NICK, text="Alice L."))
    assert carol.events.pending(event(ALICE, TUNE)) == []


async def test_the_last_item_reaches_each_resource_of_a_contact_as_it_comes_online(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    alice = await online(xmpp, ALICE)
    await alice.publish(TUNE, "one", payload(TUNE, "So What"))
    await alice.publish(TUNE, "two", payload(TUNE, "Freddie Freeloader"))  # one item per node by default
    phone = await online(xmpp, f"{BOB}/phone", TUNE)
    last = await phone.events.take(event(ALICE, TUNE))
    assert texts(last) == {"two": "Freddie Freeloader"}
    delay = last.xml.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp")  # XEP-0203: when it was published
    laptop = await online(xmpp, f"{BOB}/laptop", TUNE)
    assert texts(await laptop.events.take(event(ALICE, TUNE))) == {"two": "Freddie Freeloader"}
    # Once per availability: the phone's next tune is the next one Alice publishes.
    await alice.publish(TUNE, "three", payload(TUNE, "Flamenco Sketches"))
    assert texts(await phone.events.take(event(ALICE, TUNE))) == {"three": "Flamenco Sketches"}


async def test_retract_purge_and_delete_are_notified(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    alice = await online(xmpp, ALICE)
    bob = await online(xmpp, BOB, TUNE)
    for title in ("a", "b", "c"):
        await alice.publish(TUNE, title, payload(TUNE, title), max_items="10")
        assert texts(await bob.events.take(event(ALICE, TUNE))) == {title: title}

    await alice.pubsub.retract(JID(ALICE), TUNE, "a", timeout=TIMEOUT)
    assert retracted(await bob.events.take(event(ALICE, TUNE))) == ["a"]
    assert await bob.items(ALICE, TUNE) == [("c", "c"), ("b", "b")]

    await alice.pubsub.purge(JID(ALICE), TUNE, timeout=TIMEOUT)
    await bob.events.take(event(ALICE, TUNE, "purge"))
    assert await bob.items(ALICE, TUNE) == []

    await alice.pubsub.delete_node(JID(ALICE), TUNE, timeout=TIMEOUT)
    await bob.events.take(event(ALICE, TUNE, "delete"))
    assert await refused(bob.items(ALICE, TUNE)) == ("item-not-found", None)


async def test_nodes_and_items_outlive_a_restart(xmpp: XmppServer, storage: Storage, tmp_path: Path) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    alice = await online(xmpp, ALICE)
    moods = ["happy", "curious", "sleepy"]
    for mood in moods:
        await alice.publish(MOOD, mood, payload(MOOD, mood), access_model="open", max_items="5")
    await alice.publish(TUNE, "current", payload(TUNE, "All Blues"))

    await xmpp.server.stop()
    async with running_server(storage, tmp_path) as again:
        alice = await online(again, ALICE)
        config = await alice.config(MOOD)
        assert config["pubsub#access_model"] == "open" and config["pubsub#max_items"] == "5"
        assert await alice.items(ALICE, MOOD) == [(mood, mood) for mood in reversed(moods)]
        # And the last item still reaches a contact coming online.
        bob = await online(again, BOB, TUNE)
        assert texts(await bob.events.take(event(ALICE, TUNE))) == {"current": "All Blues"}


# -- vCards and avatars ------------------------------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def test_vcards_and_avatars_between_two_contacts(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    plugins = ("xep_0054", "xep_0084")
    alice = await online(xmpp, ALICE, plugins=plugins)
    bob = await online(xmpp, BOB, plugins=plugins)  # xep_0084 asks for avatar metadata

    # vcard-temp (XEP-0054), with a photo: Bob reads what Alice stored.
    vcards = alice.plugin("xep_0054")
    card = vcards.make_vcard()
    card["FN"] = "Alice Liddell"
    card["PHOTO"]["TYPE"] = "image/png"
    card["PHOTO"]["BINVAL"] = PNG
    await vcards.publish_vcard(card, timeout=TIMEOUT)
    read = (await bob.plugin("xep_0054").get_vcard(JID(ALICE), timeout=TIMEOUT))["vcard_temp"]
    assert read["FN"] == "Alice Liddell" and read["PHOTO"]["BINVAL"] == PNG
    # XEP-0153: the server puts the photo's hash in the presence Alice sends her contacts.
    alice.client.send_presence(pstatus="new photo")
    presence = await bob.client.next_presence(lambda p: p["status"] == "new photo")
    assert presence["from"] == alice.client.boundjid.full
    photo = presence.xml.findtext("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
    assert photo == hashlib.sha1(PNG).hexdigest()

    # User avatars (XEP-0084): data, then metadata; Bob is told of the metadata and fetches the data.
    avatars = alice.plugin("xep_0084")
    avatar_id = avatars.generate_id(PNG)
    await avatars.publish_avatar(PNG, timeout=TIMEOUT)
    info = {"id": avatar_id, "type": "image/png", "bytes": len(PNG), "width": "1", "height": "1"}
    await avatars.publish_avatar_metadata([info], timeout=TIMEOUT)
    metadata = await bob.events.take(event(ALICE, AVATAR_METADATA))
    told = published(metadata)[avatar_id].find(f"{{{AVATAR_METADATA}}}info")
    assert told is not None and told.get("id") == avatar_id and told.get("bytes") == str(len(PNG))
    data = await bob.plugin("xep_0084").retrieve_avatar(JID(ALICE), avatar_id, timeout=TIMEOUT)
    assert data["pubsub"]["items"]["item"]["avatar_data"]["value"] == PNG


# -- bookmarks ---------------------------------------------------------------------------------------

LOUNGE = "lounge@conference.localhost"
ATTIC = "attic@conference.localhost"


def conference(name: str, nick_there: str) -> ET.Element:
    element = ET.Element(f"{{{BOOKMARKS}}}conference", {"name": name, "autojoin": "true"})
    ET.SubElement(element, f"{{{BOOKMARKS}}}nick").text = nick_there
    return element


async def test_bookmarks_reach_the_accounts_other_resources_and_nobody_else(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    desk = await online(xmpp, f"{ALICE}/desk", BOOKMARKS, plugins=("xep_0048",))
    phone = await online(xmpp, f"{ALICE}/phone", BOOKMARKS, plugins=("xep_0048",))
    bob = await online(xmpp, BOB, BOOKMARKS)  # a contact, and his caps ask for bookmarks too

    # XEP-0402: one item per room, with the publish-options of its §3.
    private = {"persist_items": "true", "max_items": "max", "send_last_published_item": "never",
               "access_model": "whitelist"}
    await desk.publish(BOOKMARKS, LOUNGE, conference("The Lounge", "alice"), **private)
    assert published(await phone.events.take(event(ALICE, BOOKMARKS)))[LOUNGE].get("name") == "The Lounge"
    await desk.publish(BOOKMARKS, ATTIC, conference("The Attic", "al"), **private)
    assert [item_id for item_id, _ in await phone.items(ALICE, BOOKMARKS)] == [ATTIC, LOUNGE]
    # Bob may neither read them nor hear of them: the next event from Alice he gets is her nick.
    assert await refused(bob.items(ALICE, BOOKMARKS)) == ("not-allowed", "closed-node")
    await desk.publish(NICK, "current", payload(NICK, "Alice at her desk"))
    await bob.events.take(event(ALICE, NICK, text="Alice at her desk"))
    assert bob.events.pending(event(ALICE, BOOKMARKS)) == []

    # XEP-0048 bookmarks, as older clients keep them: in private XML storage (XEP-0049), and in
    # PEP with XEP-0223's profile.
    legacy = desk.plugin("xep_0048")
    bookmarks = legacy.stanza.Bookmarks()
    bookmarks.add_conference(LOUNGE, "alice", name="The Lounge", autojoin=True)
    for method, path in (("xep_0049", ["private"]), ("xep_0223", ["pubsub", "items", "item"])):
        await legacy.set_bookmarks(bookmarks, method=method, timeout=TIMEOUT)
        found = await phone.plugin("xep_0048").get_bookmarks(method=method, timeout=TIMEOUT)
        for key in [*path, "bookmarks"]:
            found = found[key]
        kept = [(conf["jid"], conf["name"], conf["autojoin"]) for conf in found["conferences"]]
        assert kept == [(JID(LOUNGE), "The Lounge", True)]


# -- OMEMO -------------------------------------------------------------------------------------------

LEGACY = oldmemo.oldmemo.NAMESPACE  # eu.siacs.conversations.axolotl
OMEMO_2 = twomemo.twomemo.NAMESPACE  # urn:xmpp:omemo:2
SCE = "urn:xmpp:sce:1"


class KeyStore(omemo.storage.Storage):
    """All one OMEMO device keeps (its identity and pre-keys, its sessions, the devices it knows
    of), in memory: a client that logs in again with the same KeyStore is the same device."""

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self._values[key]) if key in self._values else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._values[key] = value

    async def _delete(self, key: str) -> None:
        self._values.pop(key, None)


class Omemo(XEP_0384):
    """slixmpp-omemo with a `KeyStore`, blind trust before verification, and a queue that hears
    of each device list it applied (from a PEP notification)."""

    default_config: ClassVar[dict[str, Any]] = {**XEP_0384.default_config, "keys": None, "device_lists": None}

    @property
    def storage(self) -> omemo.storage.Storage:
        keys: KeyStore = self.config["keys"]
        return keys

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(
        self, manually_trusted: frozenset[DeviceInformation], identifier: str | None
    ) -> None:
        raise AssertionError(f"blind trust left devices undecided: {manually_trusted}")

    async def _on_device_list_update(self, msg: Any) -> None:
        await super()._on_device_list_update(msg)
        self.config["device_lists"].put_nowait(msg["from"].bare)


register_plugin(Omemo)


@dataclass
class Device:
    """An OMEMO client: online, with slixmpp-omemo's session manager and its device id."""

    peer: Peer
    manager: SessionManager
    device_id: int
    device_lists: asyncio.Queue[str]

    @property
    def client(self) -> Client:
        return self.peer.client

    @property
    def omemo(self) -> Any:
        return self.peer.plugin("xep_0384")

    async def knows(self, other: Device, namespace: str) -> None:
        """Wait until this device has applied a device list of `other`'s account that lists
        `other` under `namespace`, and could fetch its bundle."""
        async with asyncio.timeout(TIMEOUT):
            while not any(
                device.device_id == other.device_id and dict(device.active).get(namespace)
                for device in await self.manager.get_device_information(other.peer.bare)
            ):
                await self.device_lists.get()


async def device(xmpp: XmppServer, jid: str, keys: KeyStore) -> Device:
    """`online` with OMEMO: its device list and bundle published for both versions, and caps
    asking for both device lists (slixmpp-omemo does all that)."""
    device_lists: asyncio.Queue[str] = asyncio.Queue()

    def prepare(client: Client) -> None:
        client.register_plugin("xep_0384", {"keys": keys, "device_lists": device_lists})

    peer = await online(xmpp, jid, plugins=("xep_0313",), prepare=prepare)
    manager = await peer.plugin("xep_0384").get_session_manager()
    own, _others = await manager.get_own_device_information()
    return Device(peer, manager, own.device_id, device_lists)


@dataclass(frozen=True)
class Dialect:
    """One version of OMEMO as a client sends and reads it."""

    namespace: str
    encrypt: Callable[[Device, str, str], Awaitable[Stanza]]  # sender, recipient, text -> message to send
    decrypt: Callable[[Device, Stanza], Awaitable[str]]  # recipient, message -> text


async def encrypt_legacy(sender: Device, recipient: str, text: str) -> Stanza:
    """What slixmpp-omemo sends: the body encrypted (OMEMO 0.3 encrypts nothing else)."""
    message = sender.client.make_message(mto=JID(recipient), mbody=text, mtype="chat")
    encrypted, errors = await sender.omemo.encrypt_message(message, JID(recipient))
    assert not errors
    return encrypted


async def decrypt_legacy(recipient: Device, message: Stanza) -> str:
    decrypted, _sender = await recipient.omemo.decrypt_message(message)
    return str(decrypted["body"])


async def encrypt_omemo_2(sender: Device, recipient: str, text: str) -> Stanza:
    """OMEMO 2 encrypts a XEP-0420 envelope. slixmpp has no XEP-0420 yet, so slixmpp-omemo 2.2
    encrypts messages in the legacy namespace only: the envelope is made here and encrypted with
    its session manager, which has the recipient's OMEMO 2 device list and bundle from PEP."""
    envelope = ET.Element(f"{{{SCE}}}envelope")
    content = ET.SubElement(envelope, f"{{{SCE}}}content")
    ET.SubElement(content, f"{{{CLIENT_NS}}}body").text = text
    ET.SubElement(envelope, f"{{{SCE}}}rpad").text = secrets.token_hex(random.randint(1, 16))
    messages, errors = await sender.manager.encrypt(
        frozenset({recipient}), {OMEMO_2: ET.tostring(envelope)}, backend_priority_order=[OMEMO_2]
    )
    assert not errors
    message = sender.client.make_message(mto=JID(recipient), mbody=sender.omemo.fallback_message, mtype="chat")
    for encrypted in messages:
        message.append(twomemo.etree.serialize_message(encrypted))
    message.enable("store")
    return message


async def decrypt_omemo_2(recipient: Device, message: Stanza) -> str:
    encrypted = twomemo.etree.parse_message(message.xml.find(f"{{{OMEMO_2}}}encrypted"), message["from"].bare)
    plaintext, _sender, _keys = await recipient.manager.decrypt(encrypted)
    assert plaintext is not None
    return ET.fromstring(plaintext).findtext(f"{{{SCE}}}content/{{{CLIENT_NS}}}body") or ""


DIALECTS = {
    "legacy": Dialect(LEGACY, encrypt_legacy, decrypt_legacy),
    "omemo-2": Dialect(OMEMO_2, encrypt_omemo_2, decrypt_omemo_2),
}


def omemo_from(sender: str, dialect: Dialect) -> Match:
    return lambda m: m["from"].bare == sender and m.xml.find(f"{{{dialect.namespace}}}encrypted") is not None


def ciphertext_only(stanza: str, dialect: Dialect, secret: str) -> bool:
    """Whether a stored copy of a message (XML text) holds its OMEMO element and not `secret`."""
    return ET.fromstring(stanza).find(f".//{{{dialect.namespace}}}encrypted") is not None and secret not in stanza


async def archived(owner: Device, message_id: str) -> str:
    """The copy of a message in the owner's archive (XEP-0313), as XML text."""
    async for result in owner.peer.plugin("xep_0313").iterate(rsm={"max": 10}):
        stanza = result["mam_result"]["forwarded"]["stanza"]
        if stanza["id"] == message_id:
            return ET.tostring(stanza.xml, encoding="unicode")
    raise AssertionError(f"message {message_id} is not in {owner.peer.bare}'s archive")


# slixmpp-omemo 2.2 reaches other plugins through a deprecated slixmpp accessor.
@pytest.mark.filterwarnings("ignore:Accessing plugins through the XMPP object:DeprecationWarning")
@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
async def test_omemo_end_to_end_leaves_only_ciphertext_on_the_server(xmpp: XmppServer, dialect: Dialect) -> None:
    await accounts(xmpp, ALICE, BOB)
    await befriend(xmpp, ALICE, BOB)
    bob_keys = KeyStore()
    alice = await device(xmpp, ALICE, KeyStore())
    bob = await device(xmpp, BOB, bob_keys)
    # Each learned of the other's device from a PEP notification (Bob: the last item, as he came
    # online; Alice: as Bob published it), and fetched its bundle from the other's PEP service.
    await alice.knows(bob, dialect.namespace)
    await bob.knows(alice, dialect.namespace)

    secret = "meet me at the old mill at midnight"
    message = await dialect.encrypt(alice, BOB, secret)
    message.send()
    assert await dialect.decrypt(bob, await bob.client.next_message(omemo_from(ALICE, dialect))) == secret
    # The server keeps what it was given: ciphertext, in the archives of both.
    for owner in (bob, alice):
        assert ciphertext_only(await archived(owner, message["id"]), dialect, secret)

    # Bob goes away; what Alice sends now waits in his offline queue, encrypted.
    bob.client.disconnect()
    await alice.client.next_presence(lambda p: p["from"] == bob.client.boundjid.full and p["type"] == "unavailable")
    later = "bring the map"
    (await dialect.encrypt(alice, BOB, later)).send()
    await alice.peer.settled()
    stored = await xmpp.server.storage.offline.fetch("localhost", "bob")
    assert [ciphertext_only(entry.stanza, dialect, later) for entry in stored] == [True]
    # The same device, back, reads it.
    bob = await device(xmpp, BOB, bob_keys)
    assert await dialect.decrypt(bob, await bob.client.next_message(omemo_from(ALICE, dialect))) == later

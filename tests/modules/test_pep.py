"""XEP-0163 personal eventing (XEP-0060 on every account) through the in-memory server: publishing
with auto-create and publish-options, retrieval and access models, the owner's use cases,
notifications filtered by XEP-0115 +notify, the last item when a session's caps become known,
limits, persistence and the `Pep` service other modules use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from lxml import etree

from storage.model import RosterItem
from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.events import SessionEvent
from xmppd.jid import parse_jid
from xmppd.modules.caps import NS as CAPS_NS
from xmppd.modules.disco import INFO_NS, caps_hash, verification_input
from xmppd.modules.pep import EVENT_NS, NS, OWNER_NS, Pep, pep_service
from xmppd.router import StanzaEvent
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
DAVE = "dave@localhost"  # in nobody's roster
ERRORS_NS = f"{NS}#errors"
DATA_NS = "jabber:x:data"
NICK = "http://jabber.org/protocol/nick"
TUNE = "http://jabber.org/protocol/tune"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
BOOKMARKS = "urn:xmpp:bookmarks:1"
MODULES = ("caps", "pep", "blocking")
LIMITS = {"max_items": 10, "max_item_size": 512, "max_nodes": 4}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=MODULES, options={"pep": LIMITS}) as harness:
        for account in (ALICE, BOB, CAROL, DAVE):
            await harness.account(account)
        # alice <-> bob (Friends) and alice <-> carol (Work) share presence both ways.
        await befriend(harness, ALICE, BOB, "Friends")
        await befriend(harness, ALICE, CAROL, "Work")
        yield harness


async def befriend(h: Harness, owner: str, contact: str, group: str) -> None:
    """A mutual subscription, written before anyone logs in (the roster cache reads it then)."""
    for user, other, groups in ((owner, contact, (group,)), (contact, owner, ())):
        jid = parse_jid(user)
        assert jid.local is not None
        await h.storage.rosters.put(jid.domain, jid.local, RosterItem(jid=other, subscription="both", groups=groups))


# -- clients ------------------------------------------------------------------------------------


def caps(*notify: str) -> tuple[str, str]:
    """XEP-0115 caps of a client asking for the events of `notify` (§5.1), and its disco#info."""
    features = sorted(f"{node}+notify" for node in notify)
    ver = caps_hash(verification_input([("client", "pc", "", "")], features, []))
    listed = "".join(f"<feature var='{feature}'/>" for feature in features)
    return (
        f"<c xmlns='{CAPS_NS}' hash='sha-1' node='https://client' ver='{ver}'/>",
        f"<query xmlns='{INFO_NS}'><identity category='client' type='pc'/>{listed}</query>",
    )


async def online(h: Harness, jid: str, *notify: str) -> Client:
    """A resource that sent initial presence with caps asking for the events of `notify`, once
    its features are known (and so the last items sent); what it received is left to take."""
    client = await h.connect(jid)
    known = asyncio.Event()
    asked: asyncio.Queue[str | None] = asyncio.Queue()

    def seen(ev: SessionEvent) -> None:
        if ev.session is client.session:
            known.set()

    def question(ev: StanzaEvent) -> None:
        if ev.origin is None and ev.stanza.to == client.jid:
            asked.put_nowait(ev.stanza.id)

    hooks = client.session.host.hooks
    registrations = [
        hooks.on(events.CAPS_KNOWN, seen, -100),  # after PEP has sent the last items
        hooks.on(events.iq_event("get", "full", INFO_NS, "query"), question, 1000),
    ]
    c, query = caps(*notify)
    try:
        await client.send(f"<presence>{c}</presence>")
        if not known.is_set():  # a 'ver' the server does not know yet: it asks (XEP-0115 §6.2)
            request_id = await asyncio.wait_for(asked.get(), 5)  # from a task of its own
            await client.send(f"<iq type='result' id='{request_id}' to='localhost'>{query}</iq>")
            await asyncio.wait_for(known.wait(), 5)
    finally:
        for registration in registrations:
            hooks.off(registration)
    take_write(client, lambda stanza: stanza.find(f"{{{INFO_NS}}}query") is not None)
    return client


def take_write(client: Client, match: Callable[[etree._Element], bool]) -> etree._Element | None:
    """The first stanza received that `match` accepts, taken out; the others stay."""
    for data in client.output.writes:
        stanza = etree.fromstring(data)
        if match(stanza):
            client.output.writes.remove(data)
            return stanza
    return None


async def request(client: Client, xml: str, type_: str = "set", to: str | None = None) -> etree._Element:
    """An iq and its answer (taken out; the rest stays to be taken)."""
    return await client.ask(type_, xml, to)


def submission(form_type: str, fields: dict[str, str]) -> str:
    """A submitted form of `pubsub#<form_type>` with the `pubsub#<name>` fields given."""
    values = "".join(f"<field var='pubsub#{var}'><value>{value}</value></field>" for var, value in fields.items())
    hidden = f"<field var='FORM_TYPE' type='hidden'><value>{NS}#{form_type}</value></field>"
    return f"<x xmlns='{DATA_NS}' type='submit'>{hidden}{values}</x>"


def publish_options(**fields: str) -> str:
    return f"<publish-options>{submission('publish-options', fields)}</publish-options>"


def config_form(**fields: str) -> str:
    return submission("node_config", fields)


async def publish(
    client: Client, node: str, text: str, item_id: str | None = None, options: str = ""
) -> etree._Element:
    item = f"<item id='{item_id}'>" if item_id else "<item>"
    payload = f"<nick xmlns='{NICK}'>{text}</nick>"
    publish = f"<publish node='{node}'>{item}{payload}</item></publish>"
    return await request(client, f"<pubsub xmlns='{NS}'>{publish}{options}</pubsub>")


async def owner(client: Client, xml: str, type_: str = "set") -> etree._Element:
    return await request(client, f"<pubsub xmlns='{OWNER_NS}'>{xml}</pubsub>", type_)


async def items(client: Client, node: str, of: str | None = None, inner: str = "", attrs: str = "") -> etree._Element:
    query = f"<items node='{node}'{attrs}>{inner}</items>"
    return await request(client, f"<pubsub xmlns='{NS}'>{query}</pubsub>", "get", of)


def item_ids(reply: etree._Element) -> list[str]:
    assert reply.get("type") == "result", etree.tostring(reply)
    return [item.get("id", "") for item in reply.iter(f"{{{NS}}}item")]


def texts(reply: etree._Element) -> list[str]:
    return [nick.text or "" for nick in reply.iter(f"{{{NICK}}}nick")]


def pubsub_condition(reply: etree._Element) -> tuple[str | None, str | None]:
    """The defined condition and the pubsub#errors one of an error reply."""
    error = reply.find(f"{{{CLIENT_NS}}}error")
    assert reply.get("type") == "error" and error is not None, etree.tostring(reply)
    specific = error.find(f"{{{ERRORS_NS}}}*")
    return error_condition(reply), etree.QName(specific).localname if specific is not None else None


def headline(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}message" and stanza.get("type") == "headline"


def events_of(client: Client) -> list[tuple[str | None, str, str]]:
    return summary(client.take(headline))


def summary(messages: list[etree._Element]) -> list[tuple[str | None, str, str]]:
    """Notifications as (from, event, "node id:nick ..." or "node retract id")."""
    seen = []
    for message in messages:
        event = message.find(f"{{{EVENT_NS}}}event")
        assert event is not None
        for child in event:
            entries = [
                f"retract {entry.get('id')}" if etree.QName(entry).localname == "retract"
                else f"{entry.get('id')}:{entry.findtext(f'{{{NICK}}}nick')}"
                for entry in child
            ]
            what = " ".join([child.get("node", ""), *entries])
            seen.append((message.get("from"), etree.QName(child).localname, what))
    return seen


def config_values(reply: etree._Element) -> dict[str, list[str]]:
    return {
        field.get("var", ""): [value.text or "" for value in field.iterfind(f"{{{DATA_NS}}}value")]
        for field in reply.iter(f"{{{DATA_NS}}}field")
    }


async def configuration(client: Client, node: str) -> dict[str, list[str]]:
    return config_values(await owner(client, f"<configure node='{node}'/>", "get"))


# -- discovery (XEP-0163 §6) ------------------------------------------------------------------------


async def test_an_account_is_a_pep_service(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    for to in (ALICE, BOB):
        reply = await request(alice, f"<query xmlns='{INFO_NS}'/>", "get", to)
        identities = {(i.get("category"), i.get("type")) for i in reply.iter(f"{{{INFO_NS}}}identity")}
        features = {f.get("var") for f in reply.iter(f"{{{INFO_NS}}}feature")}
        assert ("pubsub", "pep") in identities
        assert {f"{NS}#publish", f"{NS}#publish-options", f"{NS}#auto-create", f"{NS}#access-whitelist",
                f"{NS}#filtered-notifications", f"{NS}#last-published"} <= features
        assert f"{NS}#subscribe" not in features  # explicit subscriptions are not offered


# -- publishing (XEP-0060 §7.1) -------------------------------------------------------------------


async def test_publish_creates_the_node_with_pep_defaults(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", NICK)
    reply = await publish(alice, NICK, "Alice")
    assert reply.get("type") == "result"
    (item_id,) = item_ids(reply)
    assert item_id  # §7.1.2: the service names an item published without an id
    assert events_of(alice) == [(ALICE, "items", f"{NICK} {item_id}:Alice")]

    config = await configuration(alice, NICK)
    assert config["pubsub#access_model"] == ["presence"]
    assert config["pubsub#max_items"] == ["1"]
    assert config["pubsub#send_last_published_item"] == ["on_sub_and_presence"]

    await publish(alice, NICK, "Alice B.", "current")
    assert item_ids(await items(alice, NICK)) == ["current"]  # max_items 1: the first one went


async def test_the_same_item_again_is_notified_but_not_stored_again(h: Harness) -> None:
    # Clients publish their device list, nick or avatar metadata at every login, mostly unchanged.
    seen: list[str | None] = []
    h.server.hosts["localhost"].hooks.on(events.PEP_CHANGED, lambda ev: seen.append(ev.item_id))
    alice = await online(h, f"{ALICE}/phone", NICK)
    bob = await online(h, f"{BOB}/desk", NICK)
    store = h.storage.open_store("pep", KEY_VALUE)
    assert (await publish(alice, NICK, "Alice", "n1")).get("type") == "result"
    stored = await store.get("localhost", "alice", NICK)
    bob.take()

    assert (await publish(alice, NICK, "Alice", "n1")).get("type") == "result"
    assert events_of(bob) == [(ALICE, "items", f"{NICK} n1:Alice")]  # still a publish for subscribers
    assert await store.get("localhost", "alice", NICK) == stored  # not rewritten: same publish time
    assert seen == ["n1"]

    assert (await publish(alice, NICK, "Alice B.", "n1")).get("type") == "result"  # a change is stored
    assert await store.get("localhost", "alice", NICK) != stored
    assert texts(await items(bob, NICK, ALICE)) == ["Alice B."]
    assert seen == ["n1", "n1"]


async def test_publish_options_configure_a_new_node_and_are_preconditions_after(h: Harness) -> None:
    """XEP-0223 storage as Conversations does it: publish with options; on a precondition that
    does not hold, reconfigure the node and publish again."""
    alice = await online(h, f"{ALICE}/phone", BOOKMARKS)
    private = publish_options(persist_items="true", access_model="whitelist", max_items="max")
    assert (await publish(alice, BOOKMARKS, "room1", "a", private)).get("type") == "result"
    config = await configuration(alice, BOOKMARKS)
    assert (config["pubsub#access_model"], config["pubsub#max_items"]) == (["whitelist"], ["10"])
    alice.take()

    refused = await publish(alice, BOOKMARKS, "room2", "b", publish_options(access_model="open"))
    assert pubsub_condition(refused) == ("conflict", "precondition-not-met")
    assert item_ids(await items(alice, BOOKMARKS)) == ["a"]  # nothing stored
    assert events_of(alice) == []  # nor notified

    form = config_form(access_model="open")
    assert (await owner(alice, f"<configure node='{BOOKMARKS}'>{form}</configure>")).get("type") == "result"
    assert (await publish(alice, BOOKMARKS, "room2", "b", publish_options(access_model="open"))).get("type") == "result"
    assert item_ids(await items(alice, BOOKMARKS)) == ["b", "a"]
    assert events_of(alice) == [(ALICE, "items", f"{BOOKMARKS} b:room2")]


async def test_malformed_publish_requests_are_refused(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    cases = {
        "<publish node='n'/>": ("bad-request", "item-required"),
        "<publish node='n'><item/></publish>": ("bad-request", "payload-required"),
        "<publish node='n'><item><a xmlns='urn:a'/><b xmlns='urn:a'/></item></publish>": (
            "bad-request", "invalid-payload"
        ),
        "<publish><item><a xmlns='urn:a'/></item></publish>": ("bad-request", "nodeid-required"),
        "<subscribe node='n' jid='alice@localhost'/>": ("feature-not-implemented", "unsupported"),
    }
    for xml, condition in cases.items():
        assert pubsub_condition(await request(alice, f"<pubsub xmlns='{NS}'>{xml}</pubsub>")) == condition, xml
    unknown = await publish(alice, NICK, "x", options=publish_options(unknown_field="1"))
    assert pubsub_condition(unknown) == ("conflict", "precondition-not-met")
    assert (await items(alice, NICK)).get("type") == "error"  # nothing was created


async def test_only_the_owner_publishes_and_manages(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await publish(alice, NICK, "Alice")
    for xml in (
        f"<pubsub xmlns='{NS}'><publish node='{NICK}'><item><nick xmlns='{NICK}'>Bob</nick></item></publish></pubsub>",
        f"<pubsub xmlns='{NS}'><retract node='{NICK}'><item id='x'/></retract></pubsub>",
        f"<pubsub xmlns='{OWNER_NS}'><delete node='{NICK}'/></pubsub>",
        f"<pubsub xmlns='{OWNER_NS}'><purge node='{NICK}'/></pubsub>",
    ):
        assert error_condition(await request(bob, xml, to=ALICE)) == "forbidden", xml
    configure = f"<pubsub xmlns='{OWNER_NS}'><configure node='{NICK}'/></pubsub>"
    assert error_condition(await request(bob, configure, "get", ALICE)) == "forbidden"
    assert texts(await items(alice, NICK)) == ["Alice"]
    # RFC 6121 §8.5.1: an iq to an account that does not exist.
    assert error_condition(await items(bob, NICK, "nobody@localhost")) == "service-unavailable"


# -- retrieving items (§6.5) and access models (§4.5) -----------------------------------------------


async def test_items_come_newest_first_all_by_id_or_the_most_recent(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    for item_id in ("a", "b", "c"):
        await publish(alice, TUNE, item_id.upper(), item_id, publish_options(max_items="5"))
    await publish(alice, TUNE, "A again", "a", publish_options(max_items="5"))  # §7.1.2: overwritten, now newest

    assert item_ids(await items(alice, TUNE)) == ["a", "c", "b"]
    assert texts(await items(alice, TUNE)) == ["A again", "C", "B"]
    assert item_ids(await items(alice, TUNE, attrs=" max_items='2'")) == ["a", "c"]
    assert item_ids(await items(alice, TUNE, inner="<item id='b'/><item id='a'/><item id='gone'/>")) == ["a", "b"]
    assert item_ids(await items(alice, TUNE, inner="<item id='gone'/>")) == []  # §6.5.9.12
    assert error_condition(await items(alice, "no-such-node")) == "item-not-found"


async def test_a_presence_node_is_for_subscribers(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    dave = await online(h, f"{DAVE}/pc")
    await publish(alice, NICK, "Alice")
    assert texts(await items(bob, NICK, ALICE)) == ["Alice"]
    assert pubsub_condition(await items(dave, NICK, ALICE)) == ("not-authorized", "presence-subscription-required")


async def test_an_open_node_is_for_anyone(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    dave = await online(h, f"{DAVE}/pc")
    await publish(alice, NICK, "Alice", options=publish_options(access_model="open"))
    assert texts(await items(dave, NICK, ALICE)) == ["Alice"]


async def test_a_roster_node_is_for_the_groups_it_allows(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    carol = await online(h, f"{CAROL}/pc")
    await publish(alice, NICK, "Alice", options=publish_options(access_model="roster", roster_groups_allowed="Friends"))
    assert texts(await items(bob, NICK, ALICE)) == ["Alice"]
    assert pubsub_condition(await items(carol, NICK, ALICE)) == ("not-authorized", "not-in-roster-group")


async def test_a_whitelist_node_is_for_its_members(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    dave = await online(h, f"{DAVE}/pc")
    await publish(alice, NICK, "Alice", options=publish_options(access_model="whitelist"))
    assert texts(await items(alice, NICK)) == ["Alice"]  # the owner is always on it
    assert pubsub_condition(await items(bob, NICK, ALICE)) == ("not-allowed", "closed-node")

    changes = f"<affiliation jid='{BOB}/desk' affiliation='member'/><affiliation jid='{DAVE}' affiliation='outcast'/>"
    assert (await owner(alice, f"<affiliations node='{NICK}'>{changes}</affiliations>")).get("type") == "result"
    listed = await owner(alice, f"<affiliations node='{NICK}'/>", "get")
    assert [(a.get("jid"), a.get("affiliation")) for a in listed.iter(f"{{{OWNER_NS}}}affiliation")] == [
        (ALICE, "owner"), (BOB, "member"), (DAVE, "outcast")
    ]
    assert texts(await items(bob, NICK, ALICE)) == ["Alice"]
    assert error_condition(await items(dave, NICK, ALICE)) == "forbidden"  # §6.5.9.10

    # All the changes or none (§8.9.2.4): the owner stays the owner.
    invalid = f"<affiliation jid='{BOB}' affiliation='none'/><affiliation jid='{ALICE}' affiliation='member'/>"
    refused = await owner(alice, f"<affiliations node='{NICK}'>{invalid}</affiliations>")
    assert error_condition(refused) == "not-acceptable"
    assert texts(await items(bob, NICK, ALICE)) == ["Alice"]
    publisher = f"<affiliation jid='{BOB}' affiliation='publisher'/>"
    refused = await owner(alice, f"<affiliations node='{NICK}'>{publisher}</affiliations>")
    assert pubsub_condition(refused) == ("feature-not-implemented", "unsupported")


# -- the owner's use cases (§8) -----------------------------------------------------------------


async def test_create_configure_and_the_default_configuration(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    form = config_form(access_model="open", max_items="3")
    create = f"<create node='{TUNE}'/><configure>{form}</configure>"
    created = await request(alice, f"<pubsub xmlns='{NS}'>{create}</pubsub>")
    assert created.get("type") == "result"
    config = await configuration(alice, TUNE)
    assert (config["pubsub#access_model"], config["pubsub#max_items"]) == (["open"], ["3"])
    again = await request(alice, f"<pubsub xmlns='{NS}'><create node='{TUNE}'/></pubsub>")
    assert error_condition(again) == "conflict"
    instant = await request(alice, f"<pubsub xmlns='{NS}'><create/></pubsub>")
    assert pubsub_condition(instant) == ("not-acceptable", "nodeid-required")

    default = config_values(await owner(alice, "<default/>", "get"))
    assert default["pubsub#access_model"] == ["presence"]
    assert default["pubsub#roster_groups_allowed"] == []
    groups = (await owner(alice, "<default/>", "get")).iter(f"{{{DATA_NS}}}option")
    assert {option.findtext(f"{{{DATA_NS}}}value") for option in groups} >= {"Friends", "Work"}  # alice's groups

    bad = config_form(access_model="authorize")
    refused = await owner(alice, f"<configure node='{TUNE}'>{bad}</configure>")
    assert pubsub_condition(refused) == ("not-acceptable", "unsupported-access-model")
    cancel = f"<x xmlns='{DATA_NS}' type='cancel'/>"
    assert (await owner(alice, f"<configure node='{TUNE}'>{cancel}</configure>")).get("type") == "result"
    assert (await configuration(alice, TUNE))["pubsub#access_model"] == ["open"]
    assert error_condition(await owner(alice, "<configure node='none'/>", "get")) == "item-not-found"


# -- notifications (XEP-0163 §4) ----------------------------------------------------------------


async def test_notifications_go_to_interested_resources_that_may_see_them(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone", NICK)
    laptop = await online(h, f"{ALICE}/laptop")  # no +notify
    bob = await online(h, f"{BOB}/desk", NICK)
    bob_tablet = await online(h, f"{BOB}/tablet", TUNE)
    carol = await online(h, f"{CAROL}/pc", NICK)
    dave = await online(h, f"{DAVE}/pc", NICK)  # no subscription to alice
    for client in (phone, laptop, bob, bob_tablet, carol, dave):
        client.take()

    reply = await publish(phone, NICK, "Alice", "n1")
    assert reply.get("type") == "result"
    for client in (phone, bob, carol):
        assert events_of(client) == [(ALICE, "items", f"{NICK} n1:Alice")]
    for client in (laptop, bob_tablet, dave):
        assert events_of(client) == []

    # Made a roster node: only Friends (bob) besides the owner.
    form = config_form(access_model="roster", roster_groups_allowed="Friends")
    assert (await owner(phone, f"<configure node='{NICK}'>{form}</configure>")).get("type") == "result"
    await publish(phone, NICK, "Alice", "n2")
    assert events_of(phone) == events_of(bob) == [(ALICE, "items", f"{NICK} n2:Alice")]
    assert events_of(carol) == []


async def test_blocking_stops_notifications_both_ways(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", NICK)
    bob = await online(h, f"{BOB}/desk", NICK)
    carol = await online(h, f"{CAROL}/pc", NICK)
    blocking = "urn:xmpp:blocking"
    assert (await request(alice, f"<block xmlns='{blocking}'><item jid='{BOB}'/></block>")).get("type") == "result"
    assert (await request(carol, f"<block xmlns='{blocking}'><item jid='{ALICE}'/></block>")).get("type") == "result"
    for client in (alice, bob, carol):
        client.take()

    await publish(alice, NICK, "Alice", "n1")
    assert events_of(alice) == [(ALICE, "items", f"{NICK} n1:Alice")]
    assert events_of(bob) == [] and events_of(carol) == []  # §4.3.3 item 3 and XEP-0191 §3.3


async def test_retract_purge_and_delete_are_notified(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", TUNE)
    bob = await online(h, f"{BOB}/desk", TUNE)
    for item_id in ("a", "b"):
        await publish(alice, TUNE, item_id, item_id, publish_options(max_items="5"))
    alice.take()
    bob.take()

    retract = f"<pubsub xmlns='{NS}'><retract node='{TUNE}'><item id='a'/></retract></pubsub>"
    assert (await request(alice, retract)).get("type") == "result"
    assert events_of(bob) == [(ALICE, "items", f"{TUNE} retract a")]
    assert item_ids(await items(alice, TUNE)) == ["b"]
    assert error_condition(await request(alice, retract)) == "item-not-found"

    assert (await owner(alice, f"<purge node='{TUNE}'/>")).get("type") == "result"
    assert events_of(bob) == [(ALICE, "purge", TUNE)]
    assert item_ids(await items(alice, TUNE)) == []

    assert (await owner(alice, f"<delete node='{TUNE}'/>")).get("type") == "result"
    assert events_of(bob) == [(ALICE, "delete", TUNE)]
    assert error_condition(await items(alice, TUNE)) == "item-not-found"
    assert error_condition(await owner(alice, f"<delete node='{TUNE}'/>")) == "item-not-found"


async def test_retractions_are_notified_as_configured_or_asked(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", TUNE)
    await publish(alice, TUNE, "a", "a", publish_options(max_items="5", notify_retract="false"))
    await publish(alice, TUNE, "b", "b", publish_options(max_items="5", notify_retract="false"))
    alice.take()
    await request(alice, f"<pubsub xmlns='{NS}'><retract node='{TUNE}'><item id='a'/></retract></pubsub>")
    assert events_of(alice) == []
    await request(alice, f"<pubsub xmlns='{NS}'><retract node='{TUNE}' notify='true'><item id='b'/></retract></pubsub>")
    assert events_of(alice) == [(ALICE, "items", f"{TUNE} retract b")]  # §7.2.2.1


async def test_payloads_are_left_out_when_the_node_says_so(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", NICK)
    await publish(alice, NICK, "Alice", "n1", publish_options(deliver_payloads="false"))
    assert events_of(alice) == [(ALICE, "items", f"{NICK} n1:None")]  # §7.1.2.2


# -- the last published item (XEP-0163 §4.3.4) -------------------------------------------------------


async def test_a_new_session_gets_the_last_items_it_asks_for(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await publish(alice, NICK, "Alice", "n1")
    await publish(alice, NICK, "Alice Liddell", "n2")
    await publish(alice, DEVICES, "devices", "current", publish_options(access_model="open"))
    await publish(alice, TUNE, "quiet", "t1", publish_options(send_last_published_item="never"))
    carol = await online(h, f"{CAROL}/pc")
    await publish(carol, NICK, "Carol", "c1", publish_options(access_model="roster", roster_groups_allowed="Friends"))

    bob = await online(h, f"{BOB}/desk", NICK, DEVICES, TUNE)
    received = bob.take(headline)
    assert summary(received) == [
        (ALICE, "items", f"{NICK} n2:Alice Liddell"),
        (ALICE, "items", f"{DEVICES} current:devices"),
    ]  # not the tune (never sent), not carol's nick (bob is not in carol's roster)
    assert all(message.find("{urn:xmpp:delay}delay") is not None for message in received)  # XEP-0203

    # The owner's own new session too, and only what it asks for.
    alice_laptop = await online(h, f"{ALICE}/laptop", DEVICES)
    assert events_of(alice_laptop) == [(ALICE, "items", f"{DEVICES} current:devices")]
    # A status update is not a new availability (§4.3.3 item 2).
    await bob.send(f"<presence><show>away</show>{caps(NICK, DEVICES, TUNE)[0]}</presence>")
    assert events_of(bob) == []


async def test_the_last_item_sent_follows_publications_and_configuration(h: Harness) -> None:
    """The message sent for a last item is made once per item: every change shows at the next login."""
    alice = await online(h, f"{ALICE}/phone")
    await publish(alice, NICK, "Alice", "n1")
    first = await online(h, f"{BOB}/one", NICK)
    second = await online(h, f"{BOB}/two", NICK)
    sent = [*first.take(headline), *second.take(headline)]
    assert summary(sent) == [(ALICE, "items", f"{NICK} n1:Alice")] * 2
    assert [message.get("to") for message in sent] == [f"{BOB}/one", f"{BOB}/two"]

    await publish(alice, NICK, "Alice Liddell", "n2")
    assert events_of(await online(h, f"{BOB}/three", NICK)) == [(ALICE, "items", f"{NICK} n2:Alice Liddell")]
    form = config_form(deliver_payloads="false")
    assert (await owner(alice, f"<configure node='{NICK}'>{form}</configure>")).get("type") == "result"
    assert events_of(await online(h, f"{BOB}/four", NICK)) == [(ALICE, "items", f"{NICK} n2:None")]
    await owner(alice, f"<purge node='{NICK}'/>")
    assert events_of(await online(h, f"{BOB}/five", NICK)) == []


async def test_a_roster_node_sends_its_last_item_to_the_groups_it_allows(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await publish(alice, NICK, "Alice", "n1", publish_options(access_model="roster", roster_groups_allowed="Work"))
    bob = await online(h, f"{BOB}/desk", NICK)
    carol = await online(h, f"{CAROL}/pc", NICK)
    assert events_of(bob) == []
    assert events_of(carol) == [(ALICE, "items", f"{NICK} n1:Alice")]


# -- limits -------------------------------------------------------------------------------------------


async def test_an_item_too_big_is_refused(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone", NICK)
    refused = await publish(alice, NICK, "x" * LIMITS["max_item_size"])
    assert pubsub_condition(refused) == ("not-acceptable", "payload-too-big")
    assert error_condition(await items(alice, NICK)) == "item-not-found"  # not even created
    assert events_of(alice) == []


async def test_an_account_has_at_most_max_nodes(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    for n in range(LIMITS["max_nodes"]):
        assert (await publish(alice, f"node{n}", "x")).get("type") == "result"
    refused = await publish(alice, "one-too-many", "x")
    assert pubsub_condition(refused) == ("not-allowed", "max-nodes-exceeded")
    created = await request(alice, f"<pubsub xmlns='{NS}'><create node='one-too-many'/></pubsub>")
    assert pubsub_condition(created) == ("not-allowed", "max-nodes-exceeded")
    assert (await publish(alice, "node0", "y")).get("type") == "result"  # existing nodes still take items


async def test_max_items_beyond_the_limit_is_the_limit(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    asked = publish_options(max_items=str(LIMITS["max_items"] + 1))
    assert (await publish(alice, NICK, "x", options=asked)).get("type") == "result"
    assert (await configuration(alice, NICK))["pubsub#max_items"] == [str(LIMITS["max_items"])]
    # ... which a "max" precondition then meets.
    assert (await publish(alice, NICK, "y", options=publish_options(max_items="max"))).get("type") == "result"
    refused = await publish(alice, NICK, "z", options=publish_options(max_items="0"))
    assert error_condition(refused) == "not-acceptable"


# -- storage --------------------------------------------------------------------------------------------


async def test_nodes_outlive_the_server(tmp_path: Path) -> None:
    async with Harness.start(tmp_path, modules=MODULES) as first:
        await first.account(ALICE)
        alice = await online(first, f"{ALICE}/phone")
        await publish(alice, NICK, "Alice", "n1", publish_options(access_model="open"))
        await publish(alice, TUNE, "fleeting", "t1", publish_options(persist_items="false"))
    async with Harness.start(tmp_path, modules=MODULES) as second:
        alice = await online(second, f"{ALICE}/phone")
        assert texts(await items(alice, NICK)) == ["Alice"]
        assert (await configuration(alice, NICK))["pubsub#access_model"] == ["open"]
        assert item_ids(await items(alice, TUNE)) == []  # the node stays, its item was never stored


async def test_deleting_an_account_deletes_its_nodes(tmp_path: Path) -> None:
    async with Harness.start(tmp_path, modules=(*MODULES, "register")) as h:
        await h.account(ALICE)
        alice = await online(h, f"{ALICE}/phone")
        await publish(alice, NICK, "Alice")
        store = h.storage.open_store("pep", KEY_VALUE)
        assert list(await store.all("localhost", "alice")) == [NICK]

        removal = await alice.ask("set", "<query xmlns='jabber:iq:register'><remove/></query>")  # XEP-0077 §3.2
        assert removal.get("type") == "result"
        assert await store.all("localhost", "alice") == {}
        await h.account(ALICE)  # a new account of that name starts with nothing, in memory too
        alice = await online(h, f"{ALICE}/phone")
        assert error_condition(await items(alice, NICK)) == "item-not-found"


# -- the service other modules use ------------------------------------------------------------------


def service(h: Harness) -> Pep:
    return pep_service(h.server.hosts["localhost"].modules["pep"])


async def test_other_modules_publish_as_the_owner(h: Harness) -> None:
    bob = await online(h, f"{BOB}/desk", NICK)
    pep = service(h)
    payload = element(f"{{{NICK}}}nick")
    payload.text = "Alice"
    alice = parse_jid(ALICE)
    assert await pep.publish(alice, NICK, "n1", payload, {"pubsub#access_model": "open"}) == "n1"
    assert events_of(bob) == [(ALICE, "items", f"{NICK} n1:Alice")]
    node = await pep.node(alice, NICK)
    assert node is not None and node.config.access_model == "open"
    assert [item.id for item in node.newest()] == ["n1"]
    with pytest.raises(StanzaError) as refused:
        await pep.publish(alice, NICK, None, payload, {"pubsub#access_model": "whitelist"})
    assert refused.value.condition == "conflict"
    assert await pep.node(alice, "nothing") is None


async def test_each_stored_change_fires_pep_changed_on_the_accounts_host(h: Harness) -> None:
    seen: list[tuple[str, str, str, str | None, str | None]] = []

    def changed(ev: events.PepChanged) -> None:
        text = ev.payload.text if ev.payload is not None else None
        seen.append((str(ev.account), ev.node, ev.action, ev.item_id, text))

    h.server.hosts["localhost"].hooks.on(events.PEP_CHANGED, changed)
    alice = await h.connect(f"{ALICE}/phone")
    assert (await publish(alice, NICK, "Alice", "n1")).get("type") == "result"
    retract = f"<retract node='{NICK}'><item id='n1'/></retract>"
    assert (await request(alice, f"<pubsub xmlns='{NS}'>{retract}</pubsub>")).get("type") == "result"
    # A module's publish through the service fires it too.
    payload = element(f"{{{NICK}}}nick")
    payload.text = "Al"
    await service(h).publish(parse_jid(ALICE), NICK, "n2", payload)
    assert (await owner(alice, f"<purge node='{NICK}'/>")).get("type") == "result"
    assert (await owner(alice, f"<delete node='{NICK}'/>")).get("type") == "result"
    # A refused change fires nothing.
    assert error_condition(await request(alice, f"<pubsub xmlns='{NS}'>{retract}</pubsub>")) == "item-not-found"
    assert seen == [
        (ALICE, NICK, "publish", "n1", "Alice"),
        (ALICE, NICK, "retract", "n1", None),
        (ALICE, NICK, "publish", "n2", "Al"),
        (ALICE, NICK, "purge", None, None),
        (ALICE, NICK, "delete", None, None),
    ]

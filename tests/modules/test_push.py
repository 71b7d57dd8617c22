"""XEP-0357 push notifications through the in-memory server, with a fake app server as a
component (`tests.fixtures.push_app_server` at push.localhost): registrations (enable, disable,
limits, persistence), when a notification goes out (offline storage, stanzas kept for a
hibernating session) and what it says, pacing, and what disables a registration (§7.1 errors,
§8 remote disabling)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from storage.shapes import KEY_VALUE
from tests.fixtures.push_app_server import AppServer, Publish, app_server
from xmppd import events
from xmppd.elements import element
from xmppd.events import DetachedStanzaEvent
from xmppd.jid import parse_jid
from xmppd.stanza import CLIENT_NS, Stanza

from .harness import Client, Harness, error_condition

ALICE = "alice@localhost"
BOB = "bob@localhost"
APP = "push.localhost"
APP_MODULE = "tests.fixtures.push_app_server"
NS = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
SUMMARY = "urn:xmpp:push:summary"
OPTIONS_TYPE = "http://jabber.org/protocol/pubsub#publish-options"
T0 = 1_700_000_000.0
A_FORM = " type='form'"  # a form to fill in, not a submission


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def start(
    tmp_path: Path, clock: Clock | None = None, *, restart: bool = False, more: tuple[str, ...] = (), **push: Any
) -> AsyncIterator[Harness]:
    """The server with offline storage, push (options `push`), `more` modules and the app server at APP."""
    async with Harness.start(
        tmp_path, modules=("offline", "push", *more), options={"push": push}, clock=clock or Clock(),
        components={APP: (APP_MODULE,)},
    ) as harness:
        for account in () if restart else (ALICE, BOB):
            await harness.account(account)
        yield harness


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def h(tmp_path: Path, clock: Clock) -> AsyncIterator[Harness]:
    async with start(tmp_path, clock) as harness:
        yield harness


def app(h: Harness) -> AppServer:
    return app_server(h.server.hosts[APP].modules[APP_MODULE])


def form(secret: str, form_type: str = OPTIONS_TYPE, type_attribute: str = "") -> str:
    """A publish-options form as a client sends it (the XEP's example has no type attribute)."""
    return (
        f"<x xmlns='jabber:x:data'{type_attribute}><field var='FORM_TYPE'><value>{form_type}</value></field>"
        f"<field var='secret'><value>{secret}</value></field></x>"
    )


async def enable(client: Client, node: str, jid: str = APP, options: str = "") -> etree._Element:
    return await client.ask("set", f"<enable xmlns='{NS}' jid='{jid}' node='{node}'>{options}</enable>")


async def disable(client: Client, jid: str = APP, node: str | None = None) -> etree._Element:
    named = "" if node is None else f" node='{node}'"
    return await client.ask("set", f"<disable xmlns='{NS}' jid='{jid}'{named}/>")


async def stored(h: Harness, user: str = "alice") -> set[tuple[str, str]]:
    """The (app server, node) pairs in the store."""
    values = (await h.storage.open_store("push", KEY_VALUE).all("localhost", user)).values()
    return {(value["jid"], value["node"]) for value in values}


async def chat(sender: Client, payload: str = "<body>hello</body>", to: str = ALICE, type_: str = "chat") -> None:
    await sender.send(f"<message to='{to}' type='{type_}'>{payload}</message>")


def nodes(publishes: list[Publish]) -> list[str]:
    return sorted(publish.node or "" for publish in publishes)


def summary(count: int, sender: str | None = f"{BOB}/desk", body: str | None = None) -> dict[str, list[str]]:
    fields = {"FORM_TYPE": [SUMMARY], "message-count": [str(count)]}
    if sender is not None:
        fields["last-message-sender"] = [sender]
    if body is not None:
        fields["last-message-body"] = [body]
    return fields


async def queued(h: Harness) -> int:
    return await h.storage.offline.count("localhost", "alice")


# -- registrations ----------------------------------------------------------------------------------


async def test_the_account_announces_push(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    answer = await phone.ask("get", f"<query xmlns='{DISCO_INFO}'/>", to=ALICE)  # §4.1
    assert NS in [feature.get("var") for feature in answer.iter(f"{{{DISCO_INFO}}}feature")]


async def test_an_offline_message_notifies_the_registration(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    answer = await enable(phone, "n1")
    assert answer.get("type") == "result"
    assert await stored(h) == {(APP, "n1")}

    bob = await h.connect(f"{BOB}/desk")
    await chat(bob, "<body>secret plans</body>")
    assert bob.take() == []  # stored offline, no error
    assert await queued(h) == 1
    (publish,) = app(h).take()
    assert publish.sender == ALICE  # §7: from the account's bare JID
    assert publish.node == "n1"
    assert publish.summary == summary(1)  # no body unless include_body
    assert publish.options is None
    assert publish.iq.get("type") == "set"
    assert publish.iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{NS}}}notification") is not None


@pytest.mark.parametrize("type_attribute", ["", " type='submit'"])
async def test_publish_options_go_with_every_notification(h: Harness, type_attribute: str) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    assert (await enable(phone, "n1", options=form("s3cr3t", type_attribute=type_attribute))).get("type") == "result"
    await chat(await h.connect(f"{BOB}/desk"))
    (publish,) = app(h).take()
    assert publish.options == {"FORM_TYPE": [OPTIONS_TYPE], "secret": ["s3cr3t"]}
    options = publish.iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options/{{jabber:x:data}}x")
    assert options is not None and options.get("type") == "submit"


async def test_enabling_the_same_node_again_replaces_it(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n1", options=form("old"))
    assert (await enable(phone, "n1", options=form("new"))).get("type") == "result"
    assert await stored(h) == {(APP, "n1")}
    await chat(await h.connect(f"{BOB}/desk"))
    (publish,) = app(h).take()
    assert publish.options is not None and publish.options["secret"] == ["new"]


async def test_every_registration_of_the_account_is_notified(h: Harness) -> None:
    phone, tablet = await h.connect(f"{ALICE}/phone"), await h.connect(f"{ALICE}/tablet")
    await enable(phone, "n-phone")
    await enable(tablet, "n-tablet")
    await chat(await h.connect(f"{BOB}/desk"))
    publishes = app(h).take()
    assert nodes(publishes) == ["n-phone", "n-tablet"]
    assert all(publish.summary == summary(1) for publish in publishes)


async def test_disabling_one_node_or_every_node_of_an_app_server(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    for node in ("n1", "n2", "n3"):
        await enable(phone, node)
    await enable(phone, "other", jid="push.example.net")

    assert (await disable(phone, node="n2")).get("type") == "result"
    assert await stored(h) == {(APP, "n1"), (APP, "n3"), ("push.example.net", "other")}
    assert (await disable(phone)).get("type") == "result"  # §6: no node, every node of that JID
    assert await stored(h) == {("push.example.net", "other")}
    assert (await disable(phone, node="never-enabled")).get("type") == "result"

    await chat(await h.connect(f"{BOB}/desk"))
    assert [publish for publish in app(h).take() if publish.node in ("n1", "n2", "n3")] == []


@pytest.mark.parametrize(
    "payload",
    [
        f"<enable xmlns='{NS}' node='n1'/>",
        f"<enable xmlns='{NS}' jid='@push.localhost' node='n1'/>",
        f"<enable xmlns='{NS}' jid='' node='n1'/>",
        f"<enable xmlns='{NS}' jid='{APP}'/>",
        f"<enable xmlns='{NS}' jid='{APP}' node=''/>",
        f"<enable xmlns='{NS}' jid='{APP}' node='n1'>{form('s', form_type='urn:example:other')}</enable>",
        f"<enable xmlns='{NS}' jid='{APP}' node='n1'>{form('s', type_attribute=A_FORM)}</enable>",
        f"<enable xmlns='{NS}' jid='{APP}' node='n1'>{form('a')}{form('b')}</enable>",
        f"<disable xmlns='{NS}'/>",
        f"<disable xmlns='{NS}' jid='user@'/>",
        f"<disable xmlns='{NS}' jid='{APP}' node=''/>",
    ],
)
async def test_malformed_requests_are_bad_requests(h: Harness, payload: str) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "kept")
    answer = await phone.ask("set", payload)
    assert answer.get("type") == "error"
    assert error_condition(answer) == "bad-request"
    error = answer.find(f"{{{CLIENT_NS}}}error")
    assert error is not None and error.get("type") == "modify"
    assert await stored(h) == {(APP, "kept")}


async def test_registrations_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    async with start(tmp_path, max_registrations=2) as h:
        phone = await h.connect(f"{ALICE}/phone")
        assert (await enable(phone, "n1")).get("type") == "result"
        assert (await enable(phone, "n2")).get("type") == "result"
        refused = await enable(phone, "n3")
        assert error_condition(refused) == "not-acceptable"
        assert (await enable(phone, "n1", options=form("again"))).get("type") == "result"  # a replacement
        assert await stored(h) == {(APP, "n1"), (APP, "n2")}


async def test_registrations_outlive_the_server(tmp_path: Path) -> None:
    async with start(tmp_path) as first:
        phone = await first.connect(f"{ALICE}/phone")
        await enable(phone, "n1", options=form("s3cr3t"))
    async with start(tmp_path, restart=True) as second:
        await chat(await second.connect(f"{BOB}/desk"))
        (publish,) = app(second).take()
        assert publish.node == "n1"
        assert publish.summary == summary(1)
        assert publish.options == {"FORM_TYPE": [OPTIONS_TYPE], "secret": ["s3cr3t"]}


async def test_registrations_are_read_once_then_kept_in_memory(h: Harness, clock: Clock) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n1")
    bob = await h.connect(f"{BOB}/desk")
    await chat(bob)
    assert nodes(app(h).take()) == ["n1"]
    # Behind the module's back: a message does not cost a read, so it still knows the registration.
    store = h.storage.open_store("push", KEY_VALUE)
    for key in await store.all("localhost", "alice"):
        await store.set("localhost", "alice", key, None)
    clock.advance(1)
    await chat(bob, "<body>again</body>", type_="normal")
    assert nodes(app(h).take()) == ["n1"]


async def test_deleting_the_account_deletes_its_registrations(tmp_path: Path) -> None:
    clock = Clock()
    async with start(tmp_path, clock, more=("register",)) as h:
        phone = await h.connect(f"{ALICE}/phone")
        await enable(phone, "n1")
        await chat(await h.connect(f"{BOB}/desk"))
        assert nodes(app(h).take()) == ["n1"]  # known, in memory

        removal = await phone.ask("set", "<query xmlns='jabber:iq:register'><remove/></query>")  # XEP-0077 §3.2
        assert removal.get("type") == "result"
        assert await stored(h) == set()
        await h.account(ALICE)  # a new account of that name starts with nothing, in memory too
        clock.advance(10)
        await chat(await h.connect(f"{BOB}/laptop"))
        assert app(h).take() == []


# -- what wakes a device ----------------------------------------------------------------------------


async def test_the_body_goes_only_where_the_operator_allows_it(tmp_path: Path) -> None:
    async with start(tmp_path, include_body=True) as h:
        await enable(await h.connect(f"{ALICE}/phone"), "n1")
        await chat(await h.connect(f"{BOB}/desk"), f"<body>{'x' * 300}</body>")
        (publish,) = app(h).take()
        assert publish.summary == summary(1, body="x" * 256)


async def test_the_sender_can_be_left_out(tmp_path: Path) -> None:
    async with start(tmp_path, include_sender=False) as h:
        await enable(await h.connect(f"{ALICE}/phone"), "n1")
        await chat(await h.connect(f"{BOB}/desk"))
        (publish,) = app(h).take()
        assert publish.summary == summary(1, sender=None)


@pytest.mark.parametrize("namespace", ["eu.siacs.conversations.axolotl", "urn:xmpp:omemo:2"])
async def test_an_encrypted_message_notifies_without_its_body(tmp_path: Path, namespace: str) -> None:
    async with start(tmp_path, include_body=True) as h:
        await enable(await h.connect(f"{ALICE}/phone"), "n1")
        bob = await h.connect(f"{BOB}/desk")
        await chat(bob, f"<encrypted xmlns='{namespace}'><payload>AAAA</payload></encrypted>")
        await chat(bob, f"<encrypted xmlns='{namespace}'/><body>I sent you an encrypted message</body>")
        publishes = app(h).take()
        assert [publish.summary for publish in publishes] == [summary(1)]  # the second: within the interval


@pytest.mark.parametrize(
    "payload",
    [
        "<active xmlns='http://jabber.org/protocol/chatstates'/>",  # dropped by offline storage
        "<received xmlns='urn:xmpp:receipts' id='m1'/>",  # stored, but nothing to read
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
        "<body>private</body><no-store xmlns='urn:xmpp:hints'/>",  # refused by offline storage
    ],
)
async def test_what_is_not_worth_waking_for_notifies_nobody(h: Harness, payload: str) -> None:
    await enable(await h.connect(f"{ALICE}/phone"), "n1")
    await chat(await h.connect(f"{BOB}/desk"), payload)
    assert app(h).take() == []


async def test_a_message_someone_takes_notifies_nobody(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n1")
    desktop = await h.connect(f"{ALICE}/desktop")
    await desktop.send("<presence/>")
    await chat(await h.connect(f"{BOB}/desk"))
    assert app(h).take() == []


def kept(to: str, payload: str = "<body>hi</body>", type_: str = "chat") -> bytes:
    return (
        f"<message xmlns='{CLIENT_NS}' from='{BOB}/desk' to='{to}' type='{type_}'>{payload}</message>"
    ).encode()


async def detached(h: Harness, client: Client, data: bytes, *, with_element: bool = False) -> None:
    """What stream management does once it kept `data` for the hibernating `client`."""
    stanza = etree.fromstring(data) if with_element else None
    push = h.server.hosts["localhost"].modules["push"]
    await push.fire(events.DETACHED_STANZA, DetachedStanzaEvent(client.session, stanza, data))
    await h.settle()


async def test_a_stanza_kept_for_a_hibernating_session_wakes_only_that_device(h: Harness) -> None:
    phone, tablet = await h.connect(f"{ALICE}/phone"), await h.connect(f"{ALICE}/tablet")
    laptop = await h.connect(f"{ALICE}/laptop")
    await enable(phone, "n-phone")
    await enable(tablet, "n-tablet")

    await detached(h, phone, kept(f"{ALICE}/phone"))
    publishes = app(h).take()
    assert nodes(publishes) == ["n-phone"]
    assert publishes[0].summary == summary(1)
    await detached(h, tablet, kept(f"{ALICE}/tablet", "<encrypted xmlns='urn:xmpp:omemo:2'/>"), with_element=True)
    assert nodes(app(h).take()) == ["n-tablet"]
    await detached(h, laptop, kept(f"{ALICE}/laptop"))  # no registration of its own: nobody
    assert app(h).take() == []


@pytest.mark.parametrize(
    ("payload", "type_"),
    [
        ("<composing xmlns='http://jabber.org/protocol/chatstates'/>", "chat"),
        ("<body>in a room</body>", "groupchat"),
        ("<body>news</body>", "headline"),
        ("<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
         "<message xmlns='jabber:client' type='chat'><body>to my other device</body></message>"
         "</forwarded></received>", "chat"),
    ],
)
async def test_a_kept_stanza_without_news_wakes_nobody(h: Harness, payload: str, type_: str) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n-phone")
    await detached(h, phone, kept(f"{ALICE}/phone", payload, type_))
    await detached(h, phone, b"<presence xmlns='jabber:client'/>")
    await detached(h, phone, b"<not xml")
    assert app(h).take() == []


# -- pacing -------------------------------------------------------------------------------------------


async def test_one_notification_per_interval_and_the_next_counts_what_waited(h: Harness, clock: Clock) -> None:
    await enable(await h.connect(f"{ALICE}/phone"), "n1")
    bob = await h.connect(f"{BOB}/desk")
    carol = await h.connect(f"{BOB}/phone")
    await chat(bob, "<body>one</body>")
    assert [publish.summary for publish in app(h).take()] == [summary(1)]
    clock.advance(0.5)
    await chat(bob, "<body>two</body>")
    assert app(h).take() == []  # within min_interval: counted into the next one
    clock.advance(0.5)
    await chat(carol, "<body>three</body>")
    assert [publish.summary for publish in app(h).take()] == [summary(2, sender=f"{BOB}/phone")]
    assert await queued(h) == 3  # every message stored all the same


async def test_the_device_connecting_starts_its_count_over(h: Harness, clock: Clock) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    tablet = await h.connect(f"{ALICE}/tablet")
    await enable(phone, "n-phone")
    await enable(tablet, "n-tablet")
    bob = await h.connect(f"{BOB}/desk")
    await chat(bob)
    await chat(bob)
    assert nodes(app(h).take()) == ["n-phone", "n-tablet"]
    await phone.disconnect()
    await h.connect(f"{ALICE}/phone")  # bound again: it fetches what it was not told of
    await chat(bob)
    assert [(p.node, p.summary) for p in app(h).take()] == [("n-phone", summary(1))]
    clock.advance(1)
    await chat(bob)
    assert sorted((p.node or "", p.summary["message-count"] if p.summary else None) for p in app(h).take()) == [
        ("n-phone", ["1"]), ("n-tablet", ["3"]),
    ]


# -- disabled by the app server ---------------------------------------------------------------------


async def test_an_app_server_error_disables_the_registration(h: Harness, clock: Clock) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "broken")  # the fixture answers item-not-found
    await enable(phone, "n1")
    bob = await h.connect(f"{BOB}/desk")
    await chat(bob)
    assert nodes(app(h).take()) == ["broken", "n1"]
    assert await stored(h) == {(APP, "n1")}  # §7.1
    clock.advance(10)
    await chat(bob)
    assert nodes(app(h).take()) == ["n1"]


async def test_an_unreachable_app_server_is_disabled(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n1", jid="push.example.net")  # no such domain here (no s2s)
    await chat(await h.connect(f"{BOB}/desk"))
    assert await stored(h) == set()


async def test_transient_errors_disable_only_when_they_go_on(tmp_path: Path) -> None:
    clock = Clock()
    async with start(tmp_path, clock, max_transient_errors=2) as h:
        phone = await h.connect(f"{ALICE}/phone")
        await enable(phone, "busy")  # the fixture answers resource-constraint (type wait)
        bob = await h.connect(f"{BOB}/desk")
        await chat(bob)
        assert nodes(app(h).take()) == ["busy"]
        assert await stored(h) == {(APP, "busy")}  # one transient error: kept
        clock.advance(1)
        await chat(bob)
        assert nodes(app(h).take()) == ["busy"]
        assert await stored(h) == set()  # the second in a row
        clock.advance(1)
        await chat(bob)
        assert app(h).take() == []


def revocation(node: str, sender: str = APP, account: str = ALICE) -> Stanza:
    """§8: the app server took the account's right to publish to `node`."""
    message = Stanza.build("message", to=parse_jid(ALICE), from_=parse_jid(sender))
    pubsub = element(f"{{{PUBSUB}}}pubsub", {"node": node}, parent=message.element)
    element(f"{{{PUBSUB}}}affiliation", {"jid": account, "affiliation": "none"}, parent=pubsub)
    return message


async def test_an_app_server_can_disable_a_registration(h: Harness) -> None:
    phone = await h.connect(f"{ALICE}/phone")
    await enable(phone, "n1")
    await enable(phone, "n2")
    for stranger in (revocation("n1", sender="other.localhost"), revocation("n1", account=BOB)):
        await h.server.router.deliver(stranger, None)
        await h.settle()
    assert await stored(h) == {(APP, "n1"), (APP, "n2")}
    assert await queued(h) == 2  # not ours: ordinary messages

    await h.server.router.deliver(revocation("n1"), None)
    await h.settle()
    assert await stored(h) == {(APP, "n2")}
    assert await queued(h) == 2  # taken by the server, never stored for a person

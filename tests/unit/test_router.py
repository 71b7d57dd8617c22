"""The router (xmppd/router.py) through the in-memory server: what it stamps and checks at ingress
(RFC 6120 §8.1.2.1, §8.2.3, §10.3.3), what it answers itself (bad-request, service-unavailable,
remote-server-not-found, jid-malformed) and never answers (errors, iq results: §8.3.1), the order
of the hooks it fires, the delivery decision made once per message, and the iqs the server sends
and waits for (`Router.request` / `ModuleAPI.send_iq`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

import xmppd.router
from tests.modules.harness import Client, Harness, error_condition
from xmppd.elements import element
from xmppd.errors import StanzaError, StreamError
from xmppd.jid import parse_jid
from xmppd.module import ModuleAPI
from xmppd.router import StanzaEvent
from xmppd.session import Session
from xmppd.sessions import SessionRegistry
from xmppd.stanza import CLIENT_NS, Stanza

ALICE = "alice@localhost"
CAROL = "carol@localhost"
BOB = "bob@example.test"
PROBE_NS = "urn:example:router-test"
CARBONS_NS = "urn:xmpp:carbons:2"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test")) as harness:
        for account in (ALICE, CAROL, BOB):
            await harness.account(account)
        yield harness


@pytest.fixture
async def alice(h: Harness) -> Client:
    return await h.connect(f"{ALICE}/phone")


@pytest.fixture
async def bob(h: Harness) -> Client:
    return await h.connect(f"{BOB}/desk")


def tag(stanza: etree._Element) -> str:
    return etree.QName(stanza).localname


def body(stanza: etree._Element) -> str | None:
    return stanza.findtext(f"{{{CLIENT_NS}}}body")


def arrival(client: Client) -> asyncio.Event:
    """An event set whenever something is written to `client` (to wait for a stanza that a task
    running alongside the test sends, instead of sleeping)."""
    arrived = asyncio.Event()
    recorder = client.output
    write = recorder.write

    def record(data: bytes) -> None:
        write(data)
        arrived.set()

    recorder.write = record  # type: ignore[method-assign]
    return arrived


# -- ingress: `from` ----------------------------------------------------------------------------------


async def test_from_is_stamped_with_the_full_jid(alice: Client, bob: Client) -> None:
    await alice.send(f"<message to='{BOB}/desk' id='m1'><body>hi</body></message>")
    await alice.send(f"<iq type='get' id='q1' to='{BOB}/desk'><ping xmlns='urn:xmpp:ping'/></iq>")
    message, iq = bob.take()
    assert (tag(message), message.get("from"), body(message)) == ("message", f"{ALICE}/phone", "hi")
    assert (tag(iq), iq.get("from"), iq.get("id")) == ("iq", f"{ALICE}/phone", "q1")
    assert alice.take() == []


@pytest.mark.parametrize("claimed", [ALICE, "Alice@LOCALHOST", f"{ALICE}/phone", "ALICE@localhost/phone"])
async def test_own_bare_or_full_jid_as_from_is_accepted_and_stamped_full(
    alice: Client, bob: Client, claimed: str
) -> None:
    # RFC 6120 §8.1.2.1: the client's own bare or full JID (compared after RFC 7622 preparation).
    await alice.send(f"<message from='{claimed}' to='{BOB}/desk'><body>me</body></message>")
    (message,) = bob.take()
    assert message.get("from") == f"{ALICE}/phone"
    assert body(message) == "me"


@pytest.mark.parametrize("forged", [f"{BOB}/desk", BOB, CAROL, f"{ALICE}/laptop", "localhost", "elsewhere.example"])
async def test_forged_from_is_a_stream_error_and_nothing_is_routed(
    h: Harness, alice: Client, bob: Client, forged: str
) -> None:
    laptop = await h.connect(f"{ALICE}/laptop")
    with pytest.raises(StreamError) as raised:
        await alice.send(f"<message from='{forged}' to='{BOB}/desk'><body>spoof</body></message>")
    assert raised.value.condition == "invalid-from"
    await h.settle()
    assert bob.take() == [] and alice.take() == [] and laptop.take() == []


# -- ingress: `to` ------------------------------------------------------------------------------------


async def test_message_without_to_goes_to_the_senders_bare_jid(h: Harness, alice: Client) -> None:
    # RFC 6120 §10.3.3: as if addressed to the account, so every available resource of it gets it.
    laptop = await h.connect(f"{ALICE}/laptop")
    for client in (alice, laptop):
        await client.send("<presence/>")
    alice.take()
    laptop.take()
    await alice.send("<message type='chat' id='n1'><body>note to self</body></message>")
    for client in (alice, laptop):
        (message,) = client.take()
        assert (message.get("to"), message.get("from"), message.get("id")) == (ALICE, f"{ALICE}/phone", "n1")
        assert body(message) == "note to self"


@pytest.mark.parametrize(
    "xml",
    [
        "<message to='a@b@c' id='x1'><body>lost</body></message>",
        "<iq type='get' to='a@b@c' id='x1'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<presence to='@localhost' id='x1'/>",
    ],
)
async def test_malformed_to_is_answered_with_jid_malformed(alice: Client, bob: Client, xml: str) -> None:
    await alice.send(xml)
    (reply,) = alice.take()
    assert tag(reply) == xml[1 : xml.index(" ")]
    assert (reply.get("type"), reply.get("id")) == ("error", "x1")
    assert error_condition(reply) == "jid-malformed"
    assert bob.take() == []


# -- iq validity (RFC 6120 §8.2.3) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "reply_id"),
    [
        ("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", None),
        ("<iq id='t1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "t1"),
        ("<iq type='fetch' id='t1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "t1"),
        ("<iq type='get' id='t1' to='localhost'/>", "t1"),
        ("<iq type='set' id='t1' to='localhost'><!-- only a comment --></iq>", "t1"),
        ("<iq type='get' id='t1' to='localhost'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
         "t1"),
        (f"<iq type='set' id='t1' to='{BOB}/desk'><a xmlns='{PROBE_NS}'/><b xmlns='{PROBE_NS}'/></iq>", "t1"),
    ],
    ids=["no-id", "no-type", "unknown-type", "get-no-payload", "set-no-payload", "get-two-payloads",
         "set-two-payloads"],
)
async def test_invalid_iq_is_bad_request(alice: Client, bob: Client, xml: str, reply_id: str | None) -> None:
    await alice.send(xml)
    (reply,) = alice.take()
    assert (tag(reply), reply.get("type"), reply.get("id"), reply.get("to")) == (
        "iq", "error", reply_id, f"{ALICE}/phone"
    )
    assert error_condition(reply) == "bad-request"
    assert bob.take() == []


@pytest.mark.parametrize("type_", ["get", "set"])
@pytest.mark.parametrize("to", ["localhost", "localhost/some-resource", None, ALICE, BOB, "example.test"])
async def test_unclaimed_iq_is_service_unavailable(alice: Client, bob: Client, type_: str, to: str | None) -> None:
    address = f" to='{to}'" if to is not None else ""
    await alice.send(f"<iq type='{type_}' id='u1'{address}><nothing xmlns='{PROBE_NS}'/></iq>")
    (reply,) = alice.take()
    assert (reply.get("type"), reply.get("id"), reply.get("to")) == ("error", "u1", f"{ALICE}/phone")
    assert error_condition(reply) == "service-unavailable"
    assert bob.take() == []


# -- what the router answers, and what it never answers ----------------------------------------------


async def test_unserved_domain_is_remote_server_not_found(alice: Client) -> None:
    await alice.send("<message to='someone@elsewhere.example' id='r1'><body>far</body></message>")
    await alice.send("<iq type='get' id='r2' to='elsewhere.example'><ping xmlns='urn:xmpp:ping'/></iq>")
    message, iq = alice.take()
    assert (tag(message), message.get("type"), message.get("id")) == ("message", "error", "r1")
    assert (message.get("from"), message.get("to")) == ("someone@elsewhere.example", f"{ALICE}/phone")
    assert body(message) == "far"  # a message error keeps the payload (RFC 6120 §8.3.1)
    assert error_condition(message) == "remote-server-not-found"
    assert (tag(iq), iq.get("type"), iq.get("id"), iq.get("from")) == ("iq", "error", "r2", "elsewhere.example")
    assert error_condition(iq) == "remote-server-not-found"


@pytest.mark.parametrize(
    "xml",
    [
        "<message type='error' id='e' to='someone@elsewhere.example'><body>x</body></message>",
        "<iq type='error' id='e' to='elsewhere.example'/>",
        "<iq type='result' id='e' to='elsewhere.example'/>",
        "<iq type='error' id='e' to='localhost'/>",
        "<iq type='result' id='e' to='localhost'/>",
        "<iq type='result' id='e'/>",
        f"<iq type='result' id='e' to='{BOB}/gone'/>",
        f"<iq type='error' id='e' to='{BOB}/gone'/>",
        f"<iq type='result' id='e' to='{BOB}'/>",
        "<message type='error' id='e' to='nobody@localhost'/>",
        f"<message type='error' id='e' to='{BOB}/gone'/>",
        f"<message type='error' id='e' to='{BOB}'/>",
        "<message type='error' id='e' to='a@b@c'/>",
        "<iq type='error' id='e' to='a@b@c'/>",
        "<presence type='error' id='e' to='a@b@c'/>",
    ],
)
async def test_errors_and_iq_results_are_never_answered(alice: Client, xml: str) -> None:
    # RFC 6120 §8.3.1 (no error for an error) and §8.2.3 (no response to a response).
    await alice.send(xml)
    assert alice.take() == []


async def test_iq_result_with_malformed_to_is_not_answered(alice: Client) -> None:
    await alice.send("<iq type='result' id='e' to='a@b@c'/>")
    assert alice.take() == []


# -- hooks -------------------------------------------------------------------------------------------


def record_hooks(h: Harness, names: list[str], calls: list[tuple[str, str, str | None]], *,
                 stop: tuple[str, str] | None = None, priority: int = 1000) -> None:
    """On every host, a handler for each of `names` that records (event, host, origin) and
    returns True only for `stop` = (event, host)."""
    for host in h.server.hosts.values():
        for name in names:
            def handler(ev: StanzaEvent, name: str = name, host_name: str = host.name) -> bool:
                assert ev.host.name == host_name
                calls.append((name, host_name, str(ev.origin.jid) if ev.origin is not None else None))
                return stop == (name, host_name)

            host.hooks.on(name, handler, priority)


async def test_sender_hooks_run_on_the_senders_host_before_the_recipients(
    h: Harness, alice: Client, bob: Client
) -> None:
    calls: list[tuple[str, str, str | None]] = []
    record_hooks(h, ["pre-message/full", "message/full", "pre-message/bare", "message/bare"], calls)
    await alice.send(f"<message to='{BOB}/desk'><body>ordered</body></message>")
    assert calls == [
        ("pre-message/full", "localhost", f"{ALICE}/phone"),
        ("message/full", "example.test", f"{ALICE}/phone"),
    ]
    (message,) = bob.take()
    assert body(message) == "ordered"


async def test_iq_hooks_run_from_the_generic_to_the_payload_to_the_kind(h: Harness, alice: Client) -> None:
    calls: list[tuple[str, str, str | None]] = []
    names = ["pre-iq/host", "iq-get/host", f"iq-get/host/{PROBE_NS}:query", "iq/host"]
    record_hooks(h, names, calls)
    await alice.send(f"<iq type='get' id='o1' to='example.test'><query xmlns='{PROBE_NS}'/></iq>")
    origin = f"{ALICE}/phone"
    assert calls == [
        ("pre-iq/host", "localhost", origin),
        ("iq-get/host", "example.test", origin),
        (f"iq-get/host/{PROBE_NS}:query", "example.test", origin),
        ("iq/host", "example.test", origin),
    ]
    (reply,) = alice.take()
    assert error_condition(reply) == "service-unavailable"


async def test_sender_hook_returning_true_stops_delivery(h: Harness, alice: Client, bob: Client) -> None:
    calls: list[tuple[str, str, str | None]] = []
    record_hooks(h, ["pre-message/full", "message/full"], calls, stop=("pre-message/full", "localhost"))
    await alice.send(f"<message to='{BOB}/desk'><body>stopped</body></message>")
    assert calls == [("pre-message/full", "localhost", f"{ALICE}/phone")]
    assert bob.take() == [] and alice.take() == []


async def test_recipient_hook_returning_true_stops_default_delivery(h: Harness, alice: Client, bob: Client) -> None:
    calls: list[tuple[str, str, str | None]] = []
    # Priority 0: above default delivery (-1), which therefore never runs.
    record_hooks(h, ["message/full"], calls, stop=("message/full", "example.test"), priority=0)
    await alice.send(f"<message to='{BOB}/desk'><body>taken</body></message>")
    assert calls == [("message/full", "example.test", f"{ALICE}/phone")]
    assert bob.take() == [] and alice.take() == []


# -- the delivery decision, once per message ----------------------------------------------------------


@pytest.mark.parametrize("to", [ALICE, f"{ALICE}/phone"])
async def test_recipients_are_computed_once_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to: str
) -> None:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test"), modules=("offline", "carbons")) as h:
        for account in (ALICE, BOB):
            await h.account(account)
        phone = await h.connect(f"{ALICE}/phone")
        laptop = await h.connect(f"{ALICE}/laptop")
        sender = await h.connect(f"{BOB}/desk")
        for client, priority in ((phone, 5), (laptop, 0)):
            await client.send(f"<iq type='set' id='c'><enable xmlns='{CARBONS_NS}'/></iq>")
            await client.send(f"<presence><priority>{priority}</priority></presence>")
        for client in (phone, laptop, sender):
            client.take()

        decided: list[str] = []
        real = xmppd.router.delivery_targets

        def counting(sessions: SessionRegistry, stanza: Stanza) -> list[Session]:
            decided.append(str(stanza.to))
            return real(sessions, stanza)

        monkeypatch.setattr(xmppd.router, "delivery_targets", counting)
        await sender.send(f"<message type='chat' to='{to}' id='once'><body>hello</body></message>")

        assert decided == [to]
        (original,) = phone.take()
        assert (original.get("id"), body(original)) == ("once", "hello")
        (copy,) = laptop.take()  # carbons asked the same decision: the laptop gets a copy only
        assert copy.find(f"{{{CARBONS_NS}}}received") is not None
        assert sender.take() == []


# -- iqs the server sends and waits for ---------------------------------------------------------------


@pytest.fixture
def mod(h: Harness) -> ModuleAPI:
    return ModuleAPI("probe", h.server.hosts["localhost"], h.server, {})


def request_to(h: Harness, to: str) -> Stanza:
    """An iq get from the server (localhost) to `to`, without an id (send_iq gives one)."""
    stanza = Stanza.build("iq", to=parse_jid(to), from_=h.server.hosts["localhost"].jid, type_="get")
    element(f"{{{PROBE_NS}}}query", parent=stanza.element)
    return stanza


async def asked(client: Client, arrived: asyncio.Event) -> etree._Element:
    """The request the server wrote to `client` (waited for, at most 5 s)."""
    await asyncio.wait_for(arrived.wait(), 5)
    arrived.clear()
    (request,) = client.take()
    assert (tag(request), request.get("type"), request.get("from")) == ("iq", "get", "localhost")
    assert request.find(f"{{{PROBE_NS}}}query") is not None
    return request


async def test_send_iq_returns_the_addressees_answer(h: Harness, mod: ModuleAPI, alice: Client) -> None:
    arrived = arrival(alice)
    task = asyncio.create_task(mod.send_iq(request_to(h, f"{ALICE}/phone"), patience=10))
    request = await asked(alice, arrived)
    iq_id = request.get("id")
    assert iq_id is not None and iq_id.startswith("probe-")
    await alice.send(f"<iq type='result' id='{iq_id}' to='localhost'><query xmlns='{PROBE_NS}'><yes/></query></iq>")
    answer = await asyncio.wait_for(task, 5)
    assert (answer.type, answer.id, answer.from_) == ("result", iq_id, alice.jid)
    assert answer.element.find(f"{{{PROBE_NS}}}query/{{{PROBE_NS}}}yes") is not None
    assert alice.take() == []  # the answer was the server's, not routed anywhere


async def test_an_answer_from_someone_else_is_routed_normally(
    h: Harness, mod: ModuleAPI, alice: Client, bob: Client
) -> None:
    arrived = arrival(alice)
    task = asyncio.create_task(mod.send_iq(request_to(h, f"{ALICE}/phone"), patience=10))
    iq_id = (await asked(alice, arrived)).get("id")
    # Bob knows the id: his "answer", to the server and to Alice, is not taken for hers.
    await bob.send(f"<iq type='result' id='{iq_id}' to='localhost'><query xmlns='{PROBE_NS}'><bob/></query></iq>")
    await bob.send(f"<iq type='result' id='{iq_id}' to='{ALICE}/phone'><query xmlns='{PROBE_NS}'><bob/></query></iq>")
    (routed,) = alice.take()
    assert (routed.get("id"), routed.get("from"), routed.get("type")) == (iq_id, f"{BOB}/desk", "result")
    assert not task.done()
    await alice.send(f"<iq type='result' id='{iq_id}' to='localhost'><query xmlns='{PROBE_NS}'><alice/></query></iq>")
    answer = await asyncio.wait_for(task, 5)
    assert answer.from_ == alice.jid
    assert answer.element.find(f"{{{PROBE_NS}}}query/{{{PROBE_NS}}}alice") is not None
    assert bob.take() == []


async def test_an_answer_to_someone_else_is_not_ours(h: Harness, mod: ModuleAPI, alice: Client, bob: Client) -> None:
    # Regression: the addressee's result with the pending id, sent to a third party, was taken
    # for the server's answer.
    arrived = arrival(alice)
    task = asyncio.create_task(mod.send_iq(request_to(h, f"{ALICE}/phone"), patience=10))
    iq_id = (await asked(alice, arrived)).get("id")
    await alice.send(f"<iq type='result' id='{iq_id}' to='{BOB}/desk'><query xmlns='{PROBE_NS}'/></iq>")
    (routed,) = bob.take()
    assert (routed.get("id"), routed.get("from")) == (iq_id, f"{ALICE}/phone")
    assert not task.done()
    await alice.send(f"<iq type='result' id='{iq_id}' to='localhost'><query xmlns='{PROBE_NS}'/></iq>")
    assert (await asyncio.wait_for(task, 5)).from_ == alice.jid


async def test_an_error_answer_raises_its_condition(h: Harness, mod: ModuleAPI, alice: Client) -> None:
    arrived = arrival(alice)
    task = asyncio.create_task(mod.send_iq(request_to(h, f"{ALICE}/phone"), patience=10))
    iq_id = (await asked(alice, arrived)).get("id")
    await alice.send(
        f"<iq type='error' id='{iq_id}' to='localhost'><error type='cancel'>"
        "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
    with pytest.raises(StanzaError) as raised:
        await asyncio.wait_for(task, 5)
    assert (raised.value.condition, raised.value.type) == ("feature-not-implemented", "cancel")


@pytest.mark.parametrize(
    ("to", "condition"),
    [(f"{ALICE}/gone", "service-unavailable"), ("someone@elsewhere.example", "remote-server-not-found")],
)
async def test_a_request_that_cannot_be_delivered_raises_the_bounce(
    h: Harness, mod: ModuleAPI, to: str, condition: str
) -> None:
    with pytest.raises(StanzaError) as raised:
        await asyncio.wait_for(mod.send_iq(request_to(h, to), patience=10), 5)
    assert raised.value.condition == condition


async def test_no_answer_is_remote_server_timeout(h: Harness, mod: ModuleAPI, alice: Client) -> None:
    stanza = request_to(h, f"{ALICE}/phone")
    with pytest.raises(StanzaError) as raised:
        await mod.send_iq(stanza, patience=0.05)
    assert raised.value.condition == "remote-server-timeout"
    (request,) = alice.take()
    # A late answer is no longer awaited: routed to the server like any result, and dropped there.
    await alice.send(f"<iq type='result' id='{request.get('id')}' to='localhost'/>")
    assert alice.take() == []


async def test_router_request_keeps_a_given_id(h: Harness, alice: Client) -> None:
    stanza = request_to(h, f"{ALICE}/phone")
    stanza.id = "fixed-id"
    stanza.element.set("id", "fixed-id")
    arrived = arrival(alice)
    task = asyncio.create_task(h.server.router.request(stanza, patience=10))
    request = await asked(alice, arrived)
    assert request.get("id") == "fixed-id"
    await alice.send("<iq type='result' id='fixed-id' to='localhost'/>")
    assert (await asyncio.wait_for(task, 5)).from_ == alice.jid

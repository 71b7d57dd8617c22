"""XEP-0160 offline messages (with RFC 6121 §8.5.2.2.1, XEP-0203 and the XEP-0334 hints) through
the in-memory server: stored when nobody can take them, delivered in order at the next
non-negative available presence, to that resource only, deleted only once written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from xmppd.jid import parse_jid
from xmppd.modules import offline as offline_module
from xmppd.modules.offline import HandedEvent, decide
from xmppd.stanza import CLIENT_NS, Stanza

from .harness import Client, Harness, count_calls, error_condition, iq_reply, parse

ALICE = "alice@localhost"
BOB = "bob@example.test"
DELAY = "{urn:xmpp:delay}delay"
NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
CHATSTATES = "http://jabber.org/protocol/chatstates"
LIMIT = 8


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path,
        hosts=("localhost", "example.test"),
        modules=("offline", "carbons", "blocking"),
        options={"offline": {"max_messages": LIMIT}},
        clock=NOW.timestamp,
    ) as harness:
        for account in (ALICE, BOB):
            await harness.account(account)
        yield harness


def message(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}message"


def bodies(stanzas: list[etree._Element]) -> list[str | None]:
    return [s.findtext(f"{{{CLIENT_NS}}}body") for s in stanzas]


async def bob(h: Harness) -> Client:
    client = await h.connect(f"{BOB}/desk")
    await client.send("<presence/>")
    client.take()
    return client


async def queued(h: Harness, user: str = "alice") -> int:
    return await h.storage.offline.count("localhost", user)


# -- storing --------------------------------------------------------------------------------------


async def test_messages_wait_and_arrive_in_order_with_a_delay_stamp(h: Harness) -> None:
    sender = await bob(h)
    for n in range(3):
        await sender.send(f"<message to='{ALICE}' type='chat' id='m{n}'><body>hello {n}</body></message>")
    await sender.send(f"<message to='{ALICE}/gone' id='m3'><body>to a resource</body></message>")
    assert sender.take() == []  # stored: no error
    assert await queued(h) == 4

    phone = await h.connect(f"{ALICE}/phone")
    assert phone.take(message) == []  # bound is not available: nothing yet
    await phone.send("<presence/>")
    got = phone.take(message)
    assert bodies(got) == ["hello 0", "hello 1", "hello 2", "to a resource"]
    assert [m.get("id") for m in got] == ["m0", "m1", "m2", "m3"]
    assert got[0].get("from") == f"{BOB}/desk" and got[0].get("to") == ALICE
    delay = got[0].find(DELAY)
    assert delay is not None
    assert delay.get("from") == "localhost"
    assert delay.get("stamp") == "2024-05-06T07:08:09.123Z"
    assert delay.text == "Offline Storage"
    assert await queued(h) == 0


async def test_what_is_stored_and_what_is_not(h: Harness) -> None:
    sender = await bob(h)
    cases = {
        # XEP-0160 §3: normal (also without a type) and chat are stored.
        "normal": ("<body>n</body>", "normal", True, None),
        "untyped": ("<body>u</body>", None, True, None),
        # Receipts and markers without a body are stored so that "delivered"/"read" get there.
        "receipt": ("<received xmlns='urn:xmpp:receipts' id='x'/>", "chat", True, None),
        "marker": ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", "chat", True, None),
        "state-with-body": (f"<body>b</body><active xmlns='{CHATSTATES}'/>", "chat", True, None),
        # XEP-0334 §4.1: no-permanent-store still allows offline storage.
        "no-permanent-store": ("<body>p</body><no-permanent-store xmlns='urn:xmpp:hints'/>", "chat", True, None),
        # §4.4: store keeps what would otherwise go.
        "store-hint": (f"<composing xmlns='{CHATSTATES}'/><store xmlns='urn:xmpp:hints'/>", "chat", True, None),
        # XEP-0085 §5.8: standalone chat states are dropped without an error, thread or not.
        "state": (f"<composing xmlns='{CHATSTATES}'/>", "chat", False, None),
        "state-thread": (f"<paused xmlns='{CHATSTATES}'/><thread>t1</thread>", "chat", False, None),
        # XEP-0334 §4.2: no-store is not stored: the sender learns it did not get there.
        "no-store": ("<body>s</body><no-store xmlns='urn:xmpp:hints'/>", "chat", False, "service-unavailable"),
        # XEP-0160 §3: headline and error are not stored (and not bounced).
        "headline": ("<body>h</body>", "headline", False, None),
        "error": ("<error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>", "error",
                  False, None),
        # groupchat to an account: service-unavailable (RFC 6121 §8.5.2.1.1).
        "groupchat": ("<body>g</body>", "groupchat", False, "service-unavailable"),
    }
    for name, (payload, type_, kept, error) in cases.items():
        type_attr = f" type='{type_}'" if type_ else ""
        before = await queued(h)
        await sender.send(f"<message to='{ALICE}' id='{name}'{type_attr}>{payload}</message>")
        assert await queued(h) == before + (1 if kept else 0), name
        answers = sender.take()
        assert [error_condition(a) for a in answers] == ([error] if error else []), name
        if error:
            assert answers[0].get("id") == name and answers[0].get("type") == "error"

    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence/>")
    assert [m.get("id") for m in phone.take(message)] == [
        "normal", "untyped", "receipt", "marker", "state-with-body", "no-permanent-store", "store-hint",
    ]


async def test_decide_is_pure_and_covers_the_hints(h: Harness) -> None:
    def of(xml: str) -> str:
        return decide(Stanza.parse(parse(xml)))

    assert of("<message type='chat'><body>x</body></message>") == "store"
    assert of("<message type='headline'><body>x</body></message>") == "refuse"
    assert of(f"<message type='chat'><gone xmlns='{CHATSTATES}'/><origin-id xmlns='urn:xmpp:sid:0' id='a'/>"
              "</message>") == "drop"
    assert of("<message/>") == "store"  # XEP-0160 §3: normal messages are stored


async def test_a_full_queue_answers_service_unavailable(h: Harness) -> None:
    sender = await bob(h)
    for n in range(LIMIT):
        await sender.send(f"<message to='{ALICE}' type='chat' id='m{n}'><body>{n}</body></message>")
    assert sender.take() == []
    await sender.send(f"<message to='{ALICE}' type='chat' id='over'><body>too many</body></message>")
    (error,) = sender.take()
    assert error.get("type") == "error" and error.get("id") == "over"
    assert error_condition(error) == "service-unavailable"
    assert error.findtext(f"{{{CLIENT_NS}}}body") == "too many"  # the sender can tell which one
    assert await queued(h) == LIMIT


async def test_no_such_account_is_not_stored(h: Harness) -> None:
    sender = await bob(h)
    await sender.send("<message to='nobody@localhost' type='chat'><body>hi</body></message>")
    (error,) = sender.take()
    assert error_condition(error) == "service-unavailable"
    assert await queued(h, "nobody") == 0


async def test_the_feature_is_advertised(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await alice.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    (reply,) = alice.take(iq_reply)
    features = {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert "msgoffline" in features


# -- delivering -----------------------------------------------------------------------------------


async def test_only_the_resource_that_became_available_gets_them(h: Harness) -> None:
    sender = await bob(h)
    await sender.send(f"<message to='{ALICE}' type='chat'><body>one</body></message>")
    phone = await h.connect(f"{ALICE}/phone")
    laptop = await h.connect(f"{ALICE}/laptop")
    await phone.send("<presence/>")
    await laptop.send("<presence/>")
    assert bodies(phone.take(message)) == ["one"]
    assert laptop.take(message) == []


async def test_negative_priority_waits_until_it_is_raised(h: Harness) -> None:
    sender = await bob(h)
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence><priority>-1</priority></presence>")
    phone.take()
    # RFC 6121 §8.5.2.1.1: a negative priority never gets messages to the bare JID: stored.
    await sender.send(f"<message to='{ALICE}' type='chat'><body>later</body></message>")
    assert phone.take(message) == [] and await queued(h) == 1
    await phone.send("<presence><priority>1</priority></presence>")
    assert bodies(phone.take(message)) == ["later"]
    # A later update does not deliver again (nothing is left anyway).
    await phone.send("<presence><priority>2</priority></presence>")
    assert phone.take(message) == []


async def test_a_second_login_delivers_what_arrived_meanwhile(h: Harness) -> None:
    sender = await bob(h)
    await sender.send(f"<message to='{ALICE}' type='chat'><body>first</body></message>")
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence/>")
    assert bodies(phone.take(message)) == ["first"]
    await phone.send("<presence type='unavailable'/>")
    await sender.send(f"<message to='{ALICE}' type='chat'><body>second</body></message>")
    assert phone.take(message) == [] and await queued(h) == 1
    await phone.send("<presence/>")
    assert bodies(phone.take(message)) == ["second"]


async def test_an_empty_queue_is_read_once_until_a_message_is_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_calls(type(h.storage.offline), "fetch", lambda host, user, **_: user == "alice", monkeypatch)
    sender = await bob(h)
    for _login in range(3):
        phone = await h.connect(f"{ALICE}/phone")
        await phone.send("<presence/>")
        assert phone.take(message) == []
        await phone.disconnect()
    assert len(reads) == 1  # found empty at the first login: the next ones read nothing
    await sender.send(f"<message to='{ALICE}' type='chat'><body>while away</body></message>")
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence/>")
    assert bodies(phone.take(message)) == ["while away"]
    assert await queued(h) == 0


def test_a_read_that_a_store_may_have_overlapped_does_not_count_as_empty() -> None:
    alice, bob_ = parse_jid(ALICE), parse_jid(BOB)
    empty = offline_module.EmptyQueues(10)
    read_began = empty.before_read()
    empty.found_empty(alice, read_began)
    assert empty.known(alice)
    with empty.storing(alice):  # a store forgets it at once
        assert not empty.known(alice)
        assert empty.before_read() is None  # a read now might not see the store under way
    read_began = empty.before_read()
    with empty.storing(bob_):  # a store that began during the read (to any account)
        assert empty.before_read() is None
    empty.found_empty(alice, read_began)
    assert not empty.known(alice)


async def test_messages_are_written_before_they_are_deleted(h: Harness) -> None:
    sender = await bob(h)
    for n in range(3):
        await sender.send(f"<message to='{ALICE}' type='chat'><body>{n}</body></message>")
    phone = await h.connect(f"{ALICE}/phone")
    seen: list[tuple[list[str | None], int]] = []

    async def check(ev: HandedEvent) -> bool:
        # When deletion is due, the session already has the messages and storage still has them.
        written = [etree.fromstring(data) for data in phone.output.writes]
        seen.append((bodies([w for w in written if message(w)]), await queued(h)))
        return False

    registration = h.server.hosts["localhost"].hooks.on("offline-handed", check)
    try:
        await phone.send("<presence/>")
    finally:
        h.server.hosts["localhost"].hooks.off(registration)
    assert seen == [(["0", "1", "2"], 3)]
    assert await queued(h) == 0


async def test_a_claimed_hand_off_defers_deletion_to_the_claimer(h: Harness) -> None:
    """The hook stream management will use: delete only once the client acknowledged."""
    sender = await bob(h)
    await sender.send(f"<message to='{ALICE}' type='chat'><body>ack me</body></message>")
    claimed: list[HandedEvent] = []

    def claim(ev: HandedEvent) -> bool:
        claimed.append(ev)
        return True

    h.server.hosts["localhost"].hooks.on("offline-handed", claim)
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence/>")
    assert bodies(phone.take(message)) == ["ack me"]
    assert len(claimed) == 1 and claimed[0].session is phone.session and len(claimed[0].ids) == 1
    assert await queued(h) == 1  # still there: a crash now delivers it again
    assert await claimed[0].delete() == 1
    assert await queued(h) == 0


async def test_new_messages_wait_behind_the_stored_ones(h: Harness) -> None:
    """A message arriving while the stored ones are being delivered does not overtake them."""
    sender = await bob(h)
    for n in range(5):
        await sender.send(f"<message to='{ALICE}' type='chat'><body>old {n}</body></message>")
    monkey_batch = offline_module.BATCH
    offline_module.BATCH = 2  # several batches, so there is a "meanwhile"
    injected: list[bool] = []

    async def meanwhile(ev: HandedEvent) -> bool:
        if not injected:
            injected.append(True)
            # Both to the bare JID and to the resource itself.
            await sender.send(f"<message to='{ALICE}' type='chat'><body>new bare</body></message>")
            await sender.send(f"<message to='{ALICE}/phone' type='chat'><body>new full</body></message>")
        return False

    registration = h.server.hosts["localhost"].hooks.on("offline-handed", meanwhile)
    try:
        phone = await h.connect(f"{ALICE}/phone")
        await phone.send("<presence/>")
    finally:
        h.server.hosts["localhost"].hooks.off(registration)
        offline_module.BATCH = monkey_batch
    got = phone.take(message)
    assert bodies(got) == ["old 0", "old 1", "old 2", "old 3", "old 4", "new bare", "new full"]
    assert [m.find(DELAY) is not None for m in got] == [True] * 5 + [False] * 2
    assert await queued(h) == 0
    # Once done, messages go straight to the resource again.
    await sender.send(f"<message to='{ALICE}' type='chat'><body>live</body></message>")
    assert bodies(phone.take(message)) == ["live"]
    assert await queued(h) == 0


async def test_a_resource_leaving_mid_way_leaves_the_rest_stored(h: Harness) -> None:
    sender = await bob(h)
    for n in range(4):
        await sender.send(f"<message to='{ALICE}' type='chat'><body>{n}</body></message>")
    phone = await h.connect(f"{ALICE}/phone")
    monkey_batch = offline_module.BATCH
    offline_module.BATCH = 2

    async def leave(ev: HandedEvent) -> bool:
        await phone.disconnect()
        return False

    registration = h.server.hosts["localhost"].hooks.on("offline-handed", leave)
    try:
        await phone.send("<presence/>")
    finally:
        h.server.hosts["localhost"].hooks.off(registration)
        offline_module.BATCH = monkey_batch
    assert bodies(phone.take(message)) == ["0", "1"]
    assert await queued(h) == 2  # the first batch was handed over and deleted; the rest waits
    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence/>")
    assert bodies(laptop.take(message)) == ["2", "3"]


# -- receipts (XEP-0184) and markers (XEP-0333) through offline storage ------------------------------


async def test_receipt_request_survives_storage_and_the_receipt_flows_back(h: Harness) -> None:
    sender = await bob(h)
    await sender.send(
        f"<message to='{ALICE}' type='chat' id='r1'><body>did you get this?</body>"
        "<request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>"
    )
    phone = await h.connect(f"{ALICE}/phone")
    await phone.send("<presence/>")
    (got,) = phone.take(message)
    assert got.find("{urn:xmpp:receipts}request") is not None
    assert got.find("{urn:xmpp:chat-markers:0}markable") is not None
    await phone.send(f"<message to='{BOB}/desk' type='chat' id='a1'><received xmlns='urn:xmpp:receipts' id='r1'/>"
                     "</message>")
    await phone.send(f"<message to='{BOB}/desk' type='chat' id='a2'>"
                     "<displayed xmlns='urn:xmpp:chat-markers:0' id='r1'/></message>")
    receipt, marker = sender.take(message)
    assert receipt.find("{urn:xmpp:receipts}received").get("id") == "r1"  # type: ignore[union-attr]
    assert marker.find("{urn:xmpp:chat-markers:0}displayed").get("id") == "r1"  # type: ignore[union-attr]
    assert receipt.get("from") == f"{ALICE}/phone"

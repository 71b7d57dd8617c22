"""XEP-0198 stream management through the in-memory server: the ack/queue state machine (no I/O),
enabling, acknowledgements both ways, hibernation and resumption on a new stream, and what becomes
of unacknowledged stanzas when a session ends for good."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage.shapes import QUEUE
from xmppd import events
from xmppd.elements import element
from xmppd.errors import StreamError
from xmppd.events import DetachedStanzaEvent, StreamElementEvent
from xmppd.jid import JID, parse_jid
from xmppd.modules.smacks import MODULO, NS, HandledCountTooHigh, Managed, Sent, Unacked
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, Recorder

ALICE = "alice@localhost"
BOB = "bob@localhost"
OPTIONS = {"smacks": {"request_every": 3, "max_queue": 20}}


# -- the queue, without I/O --------------------------------------------------------------------------


def sent(n: int) -> Sent:
    return (f"<message id='{n}'/>".encode(), 0.0)


def queued(unacked: Unacked) -> list[bytes]:
    return [data for data, _at in unacked.queue]


def test_acknowledging_takes_the_oldest_stanzas_and_counts_wrap() -> None:
    unacked = Unacked()
    unacked.sent = unacked.acked = MODULO - 2  # two stanzas before the wrap
    for n in range(4):
        unacked.add(sent(n))
    assert unacked.sent == 2  # 2^32 - 2 + 4, modulo 2^32
    unacked.acknowledge(MODULO - 1)
    assert queued(unacked) == [b"<message id='1'/>", b"<message id='2'/>", b"<message id='3'/>"]
    unacked.acknowledge(1)
    assert queued(unacked) == [b"<message id='3'/>"]
    unacked.acknowledge(1)  # the same h again acknowledges nothing new
    assert queued(unacked) == [b"<message id='3'/>"]


def test_offline_messages_are_marked_and_settled_on_their_acknowledgement() -> None:
    unacked = Unacked()
    deleted: list[str] = []
    for n in range(5):
        unacked.add(sent(n))
    assert unacked.mark_stored(2, lambda: deleted.append("3 and 4"))  # the last two came from storage
    assert unacked.left() == [sent(0), sent(1), sent(2)]  # nothing to hand on for the stored ones
    assert unacked.acknowledge(4) == []
    (settle,) = unacked.acknowledge(5)
    settle()
    assert deleted == ["3 and 4"] and unacked.left() == [] and not unacked.stored
    assert not unacked.mark_stored(1, lambda: None)  # nothing waits any more


def test_an_h_above_what_was_sent_or_going_back_is_refused() -> None:
    unacked = Unacked()
    unacked.add(sent(0))
    unacked.add(sent(1))
    with pytest.raises(HandledCountTooHigh):
        unacked.acknowledge(3)
    unacked.acknowledge(2)
    with pytest.raises(HandledCountTooHigh):
        unacked.acknowledge(1)  # counts never go back: read as 2^32 - 1 more
    assert unacked.acked == 2


# -- through the server -------------------------------------------------------------------------------


class FakeStream:
    """A client stream as a stream-element handler sees it (stream.StreamHandle)."""

    def __init__(self, account: JID | None, address: str = "127.0.0.2") -> None:
        self.account = account
        self.address = address
        self.output = Recorder()  # the transport a resumed session is attached to
        self.session: Session | None = None

    def send(self, data: bytes) -> None:
        self.output.write(data)

    def close(self, error: StreamError | None = None) -> None:
        self.output.close(error)

    def adopt(self, session: Session) -> None:
        previous = session.link.transport
        session.attach(self.output)
        if previous is not None and previous is not self.output:
            previous.close(StreamError("conflict"))
        self.session = session

    def take(self) -> list[etree._Element]:
        received = [etree.fromstring(data) for data in self.output.writes]
        self.output.writes.clear()
        return received


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=("offline", "carbons", "smacks"), options=OPTIONS) as harness:
        for account in (ALICE, BOB):
            await harness.account(account)
        yield harness


async def nonza(
    h: Harness, stream: FakeStream, name: str, session: Session | None, attrs: dict[str, str] | None = None
) -> None:
    """A top-level element of the stream-management namespace, as the stream driver offers it."""
    host = h.server.hosts["localhost"]
    event = StreamElementEvent(element(f"{{{NS}}}{name}", attrs), stream, session)
    assert await host.hooks.fire(events.stream_element(NS, name), event)
    await h.settle()


def stream_of(client: Client) -> FakeStream:
    """The stream a client is on: answers go where its stanzas go."""
    stream = FakeStream(client.jid)
    stream.output = client.output
    return stream


async def managed(h: Harness, jid: str, resume: bool = True, **attrs: str) -> tuple[Client, FakeStream]:
    client = await h.connect(jid)
    stream = stream_of(client)
    await nonza(h, stream, "enable", client.session, {**({"resume": "true"} if resume else {}), **attrs})
    return client, stream


def names(stanzas: list[etree._Element]) -> list[str]:
    return [etree.QName(stanza).localname for stanza in stanzas]


def unacked(client: Client) -> Unacked:
    wrapper = client.session.output
    assert isinstance(wrapper, Managed)
    return wrapper.unacked


def chat(n: int, to: str = f"{ALICE}/phone") -> str:
    return f"<message type='chat' to='{to}' id='m{n}'><body>{n}</body></message>"


def bodies(stanzas: list[etree._Element]) -> list[str | None]:
    return [stanza.findtext(f"{{{CLIENT_NS}}}body") for stanza in stanzas if etree.QName(stanza).localname == "message"]


async def test_enable_answers_with_an_id_and_the_resumption_time(h: Harness) -> None:
    alice, stream = await managed(h, f"{ALICE}/phone", max="100000")
    (enabled,) = alice.take()
    assert enabled.tag == f"{{{NS}}}enabled" and enabled.get("resume") == "true"
    assert enabled.get("id") and enabled.get("max") == "3600"  # the client's max, capped

    await nonza(h, stream, "enable", alice.session)  # twice
    (failed,) = alice.take()
    assert failed.tag == f"{{{NS}}}failed" and failed[0].tag.endswith("unexpected-request")

    before_bind = FakeStream(parse_jid(BOB))
    await nonza(h, before_bind, "enable", None)
    assert names(before_bind.take()) == ["failed"]

    bob, _ = await managed(h, f"{BOB}/pc", resume=False)
    (enabled,) = bob.take()
    assert enabled.get("id") is None and enabled.get("resume") is None


async def test_acknowledgements_both_ways(h: Harness) -> None:
    alice, stream = await managed(h, f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/pc")
    alice.take()
    for n in range(2):
        await alice.send(chat(n, BOB))
    await nonza(h, stream, "r", alice.session)
    assert [(a.tag, a.get("h")) for a in alice.take()] == [(f"{{{NS}}}a", "2")]  # what alice sent since enable

    for n in range(4):
        await bob.send(chat(n))
    received = alice.take()
    # The server asks after request_every (3) unacknowledged stanzas, right after the third.
    assert names(received) == ["message", "message", "message", "r", "message"]
    await nonza(h, stream, "a", alice.session, {"h": "3"})
    assert [data.count(b"<body>3</body>") for data in queued(unacked(alice))] == [1]


async def test_an_h_above_what_was_sent_ends_the_stream(h: Harness) -> None:
    alice, stream = await managed(h, f"{ALICE}/phone")
    with pytest.raises(StreamError) as raised:
        await nonza(h, stream, "a", alice.session, {"h": "1"})
    assert raised.value.condition == "undefined-condition"
    assert b"handled-count-too-high" in raised.value.to_xml() and b'send-count="0"' in raised.value.to_xml()


async def test_a_lost_connection_is_resumed_with_nothing_lost_or_repeated(h: Harness) -> None:
    alice, stream = await managed(h, f"{ALICE}/phone")
    (enabled,) = alice.take()
    bob = await h.connect(f"{BOB}/pc")
    await alice.send(chat(0, BOB))  # alice handled one stanza
    for n in range(3):
        await bob.send(chat(n))
    alice.take()
    await nonza(h, stream, "a", alice.session, {"h": "1"})  # the first arrived; 1 and 2 were lost on the way

    kept: list[DetachedStanzaEvent] = []
    h.server.hosts["localhost"].hooks.on(events.DETACHED_STANZA, kept.append)
    await h.server.transport_gone(alice.session, "connection lost", resumable=True)
    assert h.server.sessions.get(alice.jid) is alice.session and not alice.session.attached
    await bob.send(chat(3))  # kept for the detached session
    assert [event.stanza is not None and event.data.count(b"<body>3</body>") for event in kept] == [1]

    again = FakeStream(parse_jid(ALICE))
    await nonza(h, again, "resume", None, {"previd": enabled.get("id", ""), "h": "1"})
    resumed, *replayed = again.take()
    assert resumed.tag == f"{{{NS}}}resumed" and resumed.get("h") == "1"
    assert bodies(replayed) == ["1", "2", "3"] and names(replayed)[-1] == "r"
    await bob.send(chat(4))
    assert bodies(again.take()) == ["4"]  # the session lives on on the new stream


async def test_a_bogus_or_foreign_resumption_fails(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    (enabled,) = alice.take()
    for account, previd in ((ALICE, "nonsense"), (BOB, enabled.get("id"))):
        stream = FakeStream(parse_jid(account))
        await nonza(h, stream, "resume", None, {"previd": previd or "", "h": "0"})
        (failed,) = stream.take()
        assert failed.tag == f"{{{NS}}}failed" and failed[0].tag.endswith("item-not-found")
    assert alice.session.attached  # untouched


async def test_unacknowledged_messages_go_to_offline_storage_when_the_session_ends(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/pc")
    await bob.send(chat(0))
    await bob.send(f"<message type='chat' to='{ALICE}/phone'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await bob.send(f"<iq type='get' id='v1' to='{ALICE}/phone'><query xmlns='jabber:iq:version'/></iq>")
    await h.server.session_ended(alice.session, "not resumed in time")
    await h.settle()

    (answer,) = bob.take()
    assert answer.get("type") == "error" and answer.get("id") == "v1"  # the iq is answered
    stored = await h.storage.open_store("offline", QUEUE).fetch("localhost", "alice", after=0, limit=10)
    assert [etree.fromstring(m.stanza).findtext(f"{{{CLIENT_NS}}}body") for m in stored] == ["0"]  # not the chat state
    delays = etree.fromstring(stored[0].stanza).findall("{urn:xmpp:delay}delay")
    assert len(delays) == 1 and delays[0].get("from") == "localhost"


async def test_unacknowledged_messages_go_to_another_resource(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence/>")
    bob = await h.connect(f"{BOB}/pc")
    await bob.send(chat(0, f"{ALICE}/phone"))
    laptop.take()
    await h.server.session_ended(alice.session, "not resumed in time")
    await h.settle()
    (again,) = laptop.take()
    assert bodies([again]) == ["0"] and again.find("{urn:xmpp:delay}delay") is not None

    # A resource with carbons on had its copy already: nothing is sent twice.
    await laptop.send("<iq type='set' id='c'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    phone, _ = await managed(h, f"{ALICE}/phone2")
    await bob.send(chat(1, f"{ALICE}/phone2"))
    assert len(laptop.take()) == 2  # the carbons answer and the carbon copy
    await h.server.session_ended(phone.session, "not resumed in time")
    await h.settle()
    assert laptop.take() == []


async def test_offline_messages_are_deleted_only_when_acknowledged(h: Harness) -> None:
    bob = await h.connect(f"{BOB}/pc")
    for n in range(3):
        await bob.send(chat(n, ALICE))  # alice is offline: stored
    offline = h.storage.open_store("offline", QUEUE)

    alice, stream = await managed(h, f"{ALICE}/phone")
    await alice.send("<presence/>")  # the stored messages are handed over
    assert bodies(alice.take()) == ["0", "1", "2"]
    assert len(await offline.fetch("localhost", "alice", after=0, limit=10)) == 3  # not yet acknowledged
    await h.server.session_ended(alice.session, "not resumed in time")
    await h.settle()
    assert len(await offline.fetch("localhost", "alice", after=0, limit=10)) == 3  # kept, and not stored twice

    alice, stream = await managed(h, f"{ALICE}/phone")
    await alice.send("<presence/>")
    received = alice.take()
    assert bodies(received) == ["0", "1", "2"]
    handed = len([stanza for stanza in received if stanza.tag != f"{{{NS}}}r"]) - 1  # less <enabled/>
    await nonza(h, stream, "a", alice.session, {"h": str(handed)})
    assert await offline.fetch("localhost", "alice", after=0, limit=10) == []


async def test_too_many_unacknowledged_stanzas_end_the_session(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/pc")
    for n in range(21):  # max_queue is 20
        await bob.send(chat(n))
    assert alice.output.closed and alice.output.error is not None
    assert alice.output.error.condition == "resource-constraint"


async def test_a_client_that_does_not_answer_is_cut_off_but_resumable(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    wrapper = alice.session.output
    assert isinstance(wrapper, Managed)
    wrapper.ask()
    assert wrapper.outstanding and wrapper.timer is not None and not alice.output.closed
    wrapper.due()  # the timer, early: the answer has time left
    assert wrapper.timer is not None and not alice.output.closed
    wrapper.asked_at -= 61  # ack_timeout (60 s) has passed
    wrapper.due()
    assert alice.output.closed and alice.output.error is None  # cut, no closing: resumable


async def test_a_few_unacknowledged_stanzas_are_asked_for_when_the_timer_fires(h: Harness) -> None:
    alice, _ = await managed(h, f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/pc")
    alice.take()
    wrapper = alice.session.output
    assert isinstance(wrapper, Managed) and wrapper.timer is None
    await bob.send(chat(0))  # fewer than request_every: no request yet, a timer instead
    assert names(alice.take()) == ["message"] and wrapper.timer is not None
    wrapper.timer.cancel()
    wrapper.due()  # what the request_after timer calls
    assert names(alice.take()) == ["r"] and wrapper.outstanding

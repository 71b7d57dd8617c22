"""XEP-0352 client state indication through the in-memory server: while a session is inactive its
presence and standalone chat states are held (the newest per sender), urgent stanzas flush them
first, `<active/>` flushes and unwraps, and nothing is left behind by a session that goes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage.model import RosterItem
from xmppd import events
from xmppd.errors import StreamError
from xmppd.events import SessionEvent, StreamElementEvent
from xmppd.jid import JID
from xmppd.modules.csi import NS, PASS, URGENT, ClientStates, Holder, classify, client_states
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, parse

ALICE = "alice@localhost"
BOB = "bob@example.test"
CAROL = "carol@localhost"
CHATSTATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    modules = ("csi", "carbons", "ping")
    async with Harness.start(tmp_path, hosts=("localhost", "example.test"), modules=modules) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        # Alice and Bob see each other's presence; Carol is a stranger.
        await harness.storage.rosters.put("localhost", "alice", RosterItem(jid=BOB, subscription="both"))
        await harness.storage.rosters.put("example.test", "bob", RosterItem(jid=ALICE, subscription="both"))
        yield harness


class Stream:
    """The stream a top-level element came on (stream.StreamHandle); CSI never answers on it."""

    address = "127.0.0.1"

    def __init__(self, account: JID | None) -> None:
        self.account = account
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, error: StreamError | None = None) -> None:
        raise AssertionError("CSI never closes a stream")

    def adopt(self, session: Session) -> None:
        raise AssertionError("CSI never adopts a session")


async def indicate(h: Harness, client: Client | None, state: str, host: str = "localhost") -> None:
    """Send `<active/>` or `<inactive/>` as the stream driver would offer it (None: before binding)."""
    session = client.session if client is not None else None
    stream = Stream(session.jid if session is not None else None)
    event = StreamElementEvent(etree.fromstring(f"<{state} xmlns='{NS}'/>"), stream, session)
    assert await h.server.hosts[host].hooks.fire(events.stream_element(NS, state), event)
    await h.settle()
    assert stream.sent == []  # §4.2: no reply


def states(h: Harness) -> ClientStates:
    return client_states(h.server.hosts["localhost"].modules["csi"])


async def online(h: Harness, jid: str) -> Client:
    client = await h.connect(jid)
    await client.send("<presence/>")
    return client


@pytest.fixture
async def friends(h: Harness) -> tuple[Client, Client]:
    """Alice's phone and Bob's desk, both available, their inboxes empty."""
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    alice.take()
    bob.take()
    return alice, bob


def seen(stanzas: list[etree._Element]) -> list[tuple[str, str | None, str]]:
    """(kind, from, what) of each stanza: a presence's show, a message's body or chat state."""
    out = []
    for stanza in stanzas:
        kind = etree.QName(stanza).localname
        if kind == "presence":
            what = stanza.get("type") or stanza.findtext(f"{{{CLIENT_NS}}}show") or "available"
        elif kind == "message":
            body = stanza.findtext(f"{{{CLIENT_NS}}}body")
            state = next((etree.QName(c).localname for c in stanza if etree.QName(c).namespace == CHATSTATES), "")
            what = body if body is not None else state
        else:
            what = stanza.get("type") or ""
        out.append((kind, stanza.get("from"), what))
    return out


def chat_state(state: str, to: str = ALICE) -> str:
    return f"<message to='{to}' type='chat'><{state} xmlns='{CHATSTATES}'/></message>"


# -- the feature and the switch ------------------------------------------------------------------


async def test_the_feature_is_offered_after_authentication(h: Harness) -> None:
    host = h.server.hosts["localhost"]
    after = [provider(None) for provider in host.stream_features]
    assert any(f is not None and f.tag == f"{{{NS}}}csi" for f in after)
    before = [provider(None) for provider in host.pre_auth_features]
    assert not any(f is not None and f.tag == f"{{{NS}}}csi" for f in before)


async def test_an_indication_before_binding_is_claimed_and_changes_nothing(h: Harness) -> None:
    await indicate(h, None, "inactive")
    await indicate(h, None, "active")
    assert states(h).holders == {}


async def test_inactive_wraps_once_and_active_unwraps(h: Harness, friends: tuple[Client, Client]) -> None:
    alice, _bob = friends
    session = alice.session
    await indicate(h, alice, "inactive")
    holder = session.output
    assert isinstance(holder, Holder) and states(h).holders == {session: holder}
    await indicate(h, alice, "inactive")  # §4.2: again, and nothing changes
    assert session.output is holder and holder.inner is session.link
    await indicate(h, alice, "active")
    assert session.output is session.link and states(h).holders == {}
    await indicate(h, alice, "active")
    assert session.output is session.link


# -- holding and flushing ----------------------------------------------------------------------


async def test_presence_and_chat_states_are_held_newest_per_sender_until_a_message(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    laptop = await online(h, f"{ALICE}/laptop")  # her own other resource counts as a sender too
    alice.take()
    await indicate(h, alice, "inactive")

    await bob.send("<presence><show>away</show></presence>")
    await bob.send(chat_state("composing"))
    await laptop.send("<presence><show>dnd</show></presence>")
    await bob.send("<presence><show>xa</show></presence>")  # replaces "away", and goes last
    await bob.send(chat_state("paused"))  # replaces "composing"
    assert alice.take() == []

    await bob.send(f"<message to='{ALICE}' type='chat'><body>hi</body></message>")
    assert seen(alice.take()) == [
        ("presence", f"{ALICE}/laptop", "dnd"),
        ("presence", f"{BOB}/desk", "xa"),
        ("message", f"{BOB}/desk", "paused"),
        ("message", f"{BOB}/desk", "hi"),
    ]
    # Flushed, but still inactive: the next presence waits again.
    await bob.send("<presence><show>chat</show></presence>")
    assert alice.take() == []


async def test_unavailable_presence_is_held_and_replaces_the_available_one(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    await indicate(h, alice, "inactive")
    await bob.send("<presence><show>away</show></presence>")
    await bob.disconnect()
    assert alice.take() == []
    await indicate(h, alice, "active")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "unavailable")]


async def test_an_iq_is_urgent(h: Harness, friends: tuple[Client, Client]) -> None:
    alice, bob = friends
    await indicate(h, alice, "inactive")
    await bob.send("<presence><show>away</show></presence>")
    # XEP-0352 §5.1's example: the client's own request, answered after what was held.
    await alice.send("<iq type='get' id='ping1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "away"), ("iq", "localhost", "result")]
    # Someone else's request to the resource.
    await bob.send("<presence><show>xa</show></presence>")
    await bob.send(f"<iq type='get' id='v1' to='{ALICE}/phone'><query xmlns='jabber:iq:version'/></iq>")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "xa"), ("iq", f"{BOB}/desk", "get")]


async def test_subscription_presence_is_urgent(h: Harness, friends: tuple[Client, Client]) -> None:
    alice, bob = friends
    carol = await h.connect(f"{CAROL}/pc")
    await indicate(h, alice, "inactive")
    await bob.send("<presence><show>away</show></presence>")
    await carol.send(f"<presence to='{ALICE}' type='subscribe'/>")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "away"), ("presence", CAROL, "subscribe")]


async def test_encrypted_messages_and_carbon_copies_with_a_body_are_urgent(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    await alice.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    laptop = await online(h, f"{ALICE}/laptop")
    alice.take()
    await indicate(h, alice, "inactive")

    # OMEMO without a fallback body.
    await bob.send("<presence><show>away</show></presence>")
    await bob.send(
        f"<message to='{ALICE}/phone' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
    )
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "away"), ("message", f"{BOB}/desk", "")]

    # Carbon copies (XEP-0280) of what Bob sends her laptop: a chat state is held like one sent to
    # the phone, the newest per conversation; a body is urgent.
    await bob.send(chat_state("composing", f"{ALICE}/laptop"))
    await bob.send(chat_state("paused", f"{ALICE}/laptop"))
    assert alice.take() == []
    await bob.send(f"<message to='{ALICE}/laptop' type='chat'><body>for the laptop</body></message>")
    copies = alice.take()
    assert [stanza.get("from") for stanza in copies] == [ALICE, ALICE]
    originals = [stanza.find(f"{{urn:xmpp:carbons:2}}received/{{urn:xmpp:forward:0}}forwarded/{{{CLIENT_NS}}}message")
                 for stanza in copies]
    assert seen([o for o in originals if o is not None]) == [
        ("message", f"{BOB}/desk", "paused"),
        ("message", f"{BOB}/desk", "for the laptop"),
    ]
    laptop.take()


async def test_other_stanzas_pass_at_once_and_leave_the_held_ones(h: Harness, friends: tuple[Client, Client]) -> None:
    alice, bob = friends
    await indicate(h, alice, "inactive")
    await bob.send("<presence><show>away</show></presence>")
    receipt = f"<message to='{ALICE}/phone'><received xmlns='urn:xmpp:receipts' id='m1'/></message>"
    await bob.send(receipt)
    (got,) = alice.take()
    assert got.find("{urn:xmpp:receipts}received") is not None
    await indicate(h, alice, "active")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "away")]


async def test_active_flushes_in_order_then_presence_passes_at_once(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    await indicate(h, alice, "inactive")
    await bob.send(chat_state("composing"))
    await bob.send("<presence><show>away</show></presence>")
    assert alice.take() == []
    await indicate(h, alice, "active")
    assert seen(alice.take()) == [("message", f"{BOB}/desk", "composing"), ("presence", f"{BOB}/desk", "away")]
    assert alice.session.output is alice.session.link
    await bob.send("<presence><show>dnd</show></presence>")
    assert seen(alice.take()) == [("presence", f"{BOB}/desk", "dnd")]


async def test_max_held_flushes_before_holding_one_more(tmp_path: Path) -> None:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test"), modules=("csi",),
                             options={"csi": {"max_held": 2}}) as h:
        for account in (ALICE, BOB):
            await h.account(account)
        await h.storage.rosters.put("localhost", "alice", RosterItem(jid=BOB, subscription="both"))
        await h.storage.rosters.put("example.test", "bob", RosterItem(jid=ALICE, subscription="both"))
        alice = await online(h, f"{ALICE}/phone")
        bob = await online(h, f"{BOB}/desk")
        laptop = await online(h, f"{ALICE}/laptop")
        alice.take()
        await indicate(h, alice, "inactive")

        await bob.send("<presence><show>away</show></presence>")
        await bob.send(chat_state("composing"))
        await bob.send("<presence><show>xa</show></presence>")  # a replacement: still two held
        assert alice.take() == []
        await laptop.send("<presence><show>dnd</show></presence>")  # a third: the two go first
        assert seen(alice.take()) == [("message", f"{BOB}/desk", "composing"), ("presence", f"{BOB}/desk", "xa")]
        await indicate(h, alice, "active")
        assert seen(alice.take()) == [("presence", f"{ALICE}/laptop", "dnd")]


# -- sessions that go -----------------------------------------------------------------------------


async def test_a_session_that_ends_while_inactive_leaves_nothing_behind(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    await indicate(h, alice, "inactive")
    await bob.send("<presence><show>away</show></presence>")
    assert len(states(h).holders) == 1
    await alice.disconnect()
    assert states(h).holders == {}
    assert alice.take() == []  # nobody is there to read what was held


async def test_a_detached_session_flushes_into_what_keeps_it_and_resumes_active(
    h: Harness, friends: tuple[Client, Client]
) -> None:
    alice, bob = friends
    session = alice.session
    host = h.server.hosts["localhost"]
    # Stream management in miniature: it claims the detached session (priority 0, like a module).
    kept: list[Session] = []

    def keep(ev: SessionEvent) -> bool:
        kept.append(ev.session)
        return True

    registration = host.hooks.on(events.SESSION_DETACHED, keep)
    try:
        await indicate(h, alice, "inactive")
        await bob.send("<presence><show>away</show></presence>")
        await h.server.transport_gone(session, "connection lost", resumable=True)
        assert kept == [session]
        # XEP-0352 §5.2: what was held went on (to the link here, to stream management's queue in
        # real life), and the session is active for the stream that resumes it.
        assert seen(alice.take()) == [("presence", f"{BOB}/desk", "away")]
        assert session.output is session.link and states(h).holders == {}
    finally:
        host.hooks.off(registration)


# -- what is held, what is urgent (no I/O) ------------------------------------------------------------


OWN = f"{ALICE}/phone"


@pytest.mark.parametrize(
    ("xml", "verdict"),
    [
        (f"<presence from='{BOB}/desk'/>", ("presence", f"{BOB}/desk", "")),
        (f"<presence from='{BOB}/desk' type='unavailable'/>", ("presence", f"{BOB}/desk", "")),
        (f"<presence from='{OWN}'/>", URGENT),  # the echo of her own presence
        (f"<presence from='{BOB}' type='subscribed'/>", URGENT),
        (f"<presence from='{BOB}/desk' type='error'/>", URGENT),
        (
            "<presence from='room@conference.localhost/bob'><x xmlns='http://jabber.org/protocol/muc#user'>"
            "<item affiliation='none' role='participant'/></x></presence>",
            ("presence", "room@conference.localhost/bob", ""),
        ),
        (
            "<presence from='room@conference.localhost/alice'><x xmlns='http://jabber.org/protocol/muc#user'>"
            "<item affiliation='none' role='participant'/><status code='110'/></x></presence>",
            URGENT,
        ),
        (
            f"<message from='{BOB}/desk' type='chat'><active xmlns='{CHATSTATES}'/>"
            "<no-store xmlns='urn:xmpp:hints'/><origin-id xmlns='urn:xmpp:sid:0' id='x'/></message>",
            ("chat-state", f"{BOB}/desk", ""),
        ),
        (f"<message from='{BOB}/desk' type='chat'><active xmlns='{CHATSTATES}'/><body>b</body></message>", URGENT),
        (f"<message from='{BOB}/desk' type='error'><composing xmlns='{CHATSTATES}'/></message>", PASS),
        (
            f"<message from='{BOB}/desk'><composing xmlns='{CHATSTATES}'/>"
            "<markable xmlns='urn:xmpp:chat-markers:0'/></message>",
            PASS,
        ),
        (f"<message from='{BOB}/desk'><encrypted xmlns='urn:xmpp:omemo:2'/></message>", URGENT),
        (f"<message from='{BOB}'><event xmlns='http://jabber.org/protocol/pubsub#event'/></message>", PASS),
        (
            f"<message from='{ALICE}'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
            f"<message xmlns='{CLIENT_NS}' from='{ALICE}/laptop' to='{BOB}' type='chat'>"
            f"<composing xmlns='{CHATSTATES}'/></message></forwarded></sent></message>",
            ("chat-state", f"{ALICE}/laptop", f"{{urn:xmpp:carbons:2}}sent {BOB}"),
        ),
        ("<iq from='localhost' type='result' id='x'/>", URGENT),
    ],
)
def test_classify(xml: str, verdict: object) -> None:
    assert classify(parse(xml), OWN) == verdict


def test_an_offline_message_with_bytes_only_is_urgent() -> None:
    written: list[tuple[etree._Element | None, bytes]] = []

    class Inner:
        def send(self, stanza: etree._Element | None, data: bytes) -> None:
            written.append((stanza, data))

        def close(self, error: StreamError | None = None) -> None:
            pass

    holder = Holder(Inner(), 10, OWN)
    holder.send(parse(f"<presence from='{BOB}/desk'/>"), b"<presence/>")
    assert written == []
    holder.send(None, b"<message>stored</message>")
    assert written == [(None, b"<presence/>"), (None, b"<message>stored</message>")]


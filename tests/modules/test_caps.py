"""XEP-0115 client capabilities through the in-memory server: what a session announces in its
broadcast presence is asked once per 'ver', verified, cached server-wide, and told to the other
modules (CAPS_KNOWN, `ClientCaps.features` and `wants`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from xmppd import events
from xmppd.events import SessionEvent
from xmppd.jid import parse_jid
from xmppd.modules.caps import CAPS_KNOWN, NS, ClientCaps, client_caps
from xmppd.modules.disco import INFO_NS, caps_hash, verification_input
from xmppd.router import StanzaEvent
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness

ALICE = "alice@localhost/phone"
BOB = "bob@localhost/phone"
CAROL = "carol@localhost/desk"
OMEMO = "eu.siacs.conversations.axolotl.devicelist"
AVATAR = "urn:xmpp:avatar:metadata"


@dataclass(frozen=True)
class Caps:
    """A client's disco#info, and the caps that name it."""

    features: tuple[str, ...]
    node: str = "https://client.example"

    @property
    def ver(self) -> str:
        return caps_hash(verification_input([("client", "phone", "", "Example")], self.features, []))

    def c(self) -> str:
        return f"<c xmlns='{NS}' hash='sha-1' node='{self.node}' ver='{self.ver}'/>"

    def query(self) -> str:
        features = "".join(f"<feature var='{feature}'/>" for feature in self.features)
        return (
            f"<query xmlns='{INFO_NS}' node='{self.node}#{self.ver}'>"
            f"<identity category='client' type='phone' name='Example'/>{features}</query>"
        )


PHONE = Caps((INFO_NS, f"{OMEMO}+notify", f"{AVATAR}+notify"))
DESKTOP = Caps((INFO_NS, f"{AVATAR}+notify"), node="https://desktop.example")


class Watch:
    """The caps module seen from localhost's hooks: the sessions the server asks disco#info,
    and those CAPS_KNOWN fires for, as full JIDs in the order it happened."""

    def __init__(self, h: Harness) -> None:
        self.asked: asyncio.Queue[str] = asyncio.Queue()
        self.known: asyncio.Queue[str] = asyncio.Queue()
        hooks = h.server.hosts["localhost"].hooks
        hooks.on(events.iq_event("get", "full", INFO_NS, "query"), self._asked, priority=1000)
        hooks.on(CAPS_KNOWN, self._known)

    def _asked(self, ev: StanzaEvent) -> None:
        if ev.origin is None:  # the server's, not a client's
            self.asked.put_nowait(str(ev.stanza.to))

    def _known(self, ev: SessionEvent) -> None:
        self.known.put_nowait(str(ev.session.jid))


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=("caps",)) as harness:
        for jid in (ALICE, BOB, CAROL):
            await harness.account(str(parse_jid(jid).bare))
        yield harness


@pytest.fixture
def watch(h: Harness) -> Watch:
    return Watch(h)


@pytest.fixture
def caps(h: Harness) -> ClientCaps:
    return client_caps(h.server.hosts["localhost"].modules["caps"])


async def next_of(queue: asyncio.Queue[str]) -> str:
    """The next entry, waited for (at most 5 s): the server answers in a task of its own."""
    return await asyncio.wait_for(queue.get(), 5)


def so_far(queue: asyncio.Queue[str]) -> list[str]:
    """What is in the queue now, taken out."""
    return [queue.get_nowait() for _ in range(queue.qsize())]


def disco_request(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}iq" and stanza.find(f"{{{INFO_NS}}}query") is not None


async def announce(h: Harness, jid: str, caps: Caps) -> Client:
    client = await h.connect(jid)
    await client.send(f"<presence>{caps.c()}</presence>")
    return client


async def answer(client: Client, payload: str, type_: str = "result") -> etree._Element:
    """Answer the server's disco#info request to `client`; returns the request."""
    (request,) = client.take(disco_request)
    await client.send(f"<iq type='{type_}' id='{request.get('id')}' to='localhost'>{payload}</iq>")
    return request


async def learn(watch: Watch, client: Client, caps: Caps) -> None:
    """The server asks `client`, which answers rightly; its features become known."""
    assert await next_of(watch.asked) == str(client.jid)
    await answer(client, caps.query())
    assert await next_of(watch.known) == str(client.jid)


async def test_a_client_is_asked_once_and_its_features_become_known(h: Harness, watch: Watch, caps: ClientCaps) -> None:
    alice = await announce(h, ALICE, PHONE)
    assert await next_of(watch.asked) == ALICE
    assert caps.features(alice.jid) is None  # asked, not yet answered
    assert so_far(watch.known) == []

    request = await answer(alice, PHONE.query())
    assert request.get("from") == "localhost"
    query = request.find(f"{{{INFO_NS}}}query")
    assert query is not None and query.get("node") == f"{PHONE.node}#{PHONE.ver}"
    assert await next_of(watch.known) == ALICE
    assert caps.features(alice.jid) == frozenset(PHONE.features)
    assert caps.wants(alice.jid, OMEMO) and caps.wants(alice.jid, AVATAR)
    assert not caps.wants(alice.jid, INFO_NS)  # a feature, not an interest

    # Another session announcing the same caps is known at once, from the cache.
    bob = await announce(h, BOB, PHONE)
    assert caps.features(bob.jid) == frozenset(PHONE.features)
    assert so_far(watch.known) == [BOB]
    # The next one asked is Carol, with caps never seen: Bob never was.
    carol = await announce(h, CAROL, DESKTOP)
    assert await next_of(watch.asked) == CAROL
    assert bob.take(disco_request) == []
    await answer(carol, DESKTOP.query())
    assert await next_of(watch.known) == CAROL
    assert caps.wants(carol.jid, AVATAR) and not caps.wants(carol.jid, OMEMO)


async def test_sessions_announcing_caps_being_asked_wait_for_the_same_answer(
    h: Harness, watch: Watch, caps: ClientCaps
) -> None:
    alice = await announce(h, ALICE, PHONE)
    assert await next_of(watch.asked) == ALICE
    bob = await announce(h, BOB, PHONE)
    assert caps.features(bob.jid) is None
    await answer(alice, PHONE.query())
    assert [await next_of(watch.known), await next_of(watch.known)] == [ALICE, BOB]
    assert caps.features(bob.jid) == frozenset(PHONE.features)
    assert bob.take(disco_request) == []
    assert so_far(watch.asked) == []


async def test_an_answer_that_does_not_verify_is_not_cached(h: Harness, watch: Watch, caps: ClientCaps) -> None:
    alice = await announce(h, ALICE, PHONE)
    assert await next_of(watch.asked) == ALICE
    await answer(alice, DESKTOP.query())  # not what PHONE.ver names
    assert await next_of(watch.known) == ALICE
    assert caps.features(alice.jid) == frozenset()
    assert not caps.wants(alice.jid, AVATAR)

    bob = await announce(h, BOB, PHONE)
    assert await next_of(watch.asked) == BOB  # asked again: nothing was cached
    await answer(bob, PHONE.query())
    assert await next_of(watch.known) == BOB
    assert caps.features(bob.jid) == frozenset(PHONE.features)
    assert caps.features(alice.jid) == frozenset()  # its answer stays refused


async def test_after_a_wrong_answer_the_next_session_waiting_is_asked(
    h: Harness, watch: Watch, caps: ClientCaps
) -> None:
    # XEP-0115 §5.4 3.9: check another entity that advertises the same 'ver'.
    alice = await announce(h, ALICE, PHONE)
    assert await next_of(watch.asked) == ALICE
    bob = await announce(h, BOB, PHONE)
    await answer(alice, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert await next_of(watch.known) == ALICE
    assert await next_of(watch.asked) == BOB
    assert caps.features(bob.jid) is None
    await answer(bob, PHONE.query())
    assert await next_of(watch.known) == BOB
    assert (caps.features(alice.jid), caps.features(bob.jid)) == (frozenset(), frozenset(PHONE.features))


async def test_an_error_answer_leaves_no_features(h: Harness, watch: Watch, caps: ClientCaps) -> None:
    alice = await announce(h, ALICE, PHONE)
    assert await next_of(watch.asked) == ALICE
    error = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
    await answer(alice, error, type_="error")
    assert await next_of(watch.known) == ALICE
    assert caps.features(alice.jid) == frozenset()


@pytest.mark.parametrize(
    "presence",
    [
        pytest.param("<presence/>", id="no caps"),
        pytest.param(
            f"<presence><c xmlns='{NS}' node='https://legacy.example' ver='0.9' ext='tune'/></presence>",
            id="legacy caps without hash",
        ),
        pytest.param(
            f"<presence><c xmlns='{NS}' hash='md5' node='https://a.example' ver='x'/></presence>",
            id="a hash other than sha-1",
        ),
    ],
)
async def test_a_session_without_usable_caps_has_no_features_at_once(
    h: Harness, watch: Watch, caps: ClientCaps, presence: str
) -> None:
    alice = await h.connect(ALICE)
    assert caps.features(alice.jid) is None  # no presence yet: unknown
    await alice.send(presence)
    assert caps.features(alice.jid) == frozenset()
    assert so_far(watch.known) == [ALICE]
    assert alice.take(disco_request) == []


async def test_new_caps_in_a_presence_update_replace_the_features(h: Harness, watch: Watch, caps: ClientCaps) -> None:
    alice = await announce(h, ALICE, PHONE)
    await learn(watch, alice, PHONE)

    # A status change with the same caps: nothing new to tell.
    await alice.send(f"<presence><show>away</show>{PHONE.c()}</presence>")
    assert so_far(watch.known) == []
    assert caps.features(alice.jid) == frozenset(PHONE.features)

    await alice.send(f"<presence>{DESKTOP.c()}</presence>")
    assert caps.features(alice.jid) is None
    await learn(watch, alice, DESKTOP)
    assert not caps.wants(alice.jid, OMEMO)

    # Back to cached caps: known at once.
    await alice.send(f"<presence>{PHONE.c()}</presence>")
    assert so_far(watch.known) == [ALICE]
    assert caps.wants(alice.jid, OMEMO)


async def test_available_again_with_the_same_caps_is_a_new_availability(
    h: Harness, watch: Watch, caps: ClientCaps
) -> None:
    alice = await h.connect(ALICE)
    await alice.send("<presence/>")
    await alice.send("<presence type='unavailable'/>")
    await alice.send("<presence/>")
    assert so_far(watch.known) == [ALICE, ALICE]
    assert caps.features(alice.jid) == frozenset()


async def test_a_session_that_ends_is_forgotten(h: Harness, watch: Watch, caps: ClientCaps) -> None:
    alice = await announce(h, ALICE, PHONE)
    await learn(watch, alice, PHONE)
    await alice.disconnect()
    assert caps.features(alice.jid) is None and not caps.wants(alice.jid, OMEMO)

    bob = await announce(h, BOB, DESKTOP)
    assert await next_of(watch.asked) == BOB
    carol = await announce(h, CAROL, DESKTOP)
    await carol.disconnect()  # while waiting for Bob's answer
    await answer(bob, DESKTOP.query())
    assert await next_of(watch.known) == BOB
    assert so_far(watch.known) == []  # not Carol: she is gone
    assert caps.features(carol.jid) is None


async def test_the_cache_keeps_the_most_recently_used(tmp_path: Path) -> None:
    async with Harness.start(tmp_path, modules=("caps",), options={"caps": {"cache_size": 1}}) as h:
        for jid in (ALICE, BOB, CAROL):
            await h.account(str(parse_jid(jid).bare))
        watch = Watch(h)
        for jid, announced in ((ALICE, PHONE), (BOB, DESKTOP)):
            await learn(watch, await announce(h, jid, announced), announced)
        await announce(h, CAROL, PHONE)
        assert await next_of(watch.asked) == CAROL  # DESKTOP took its place

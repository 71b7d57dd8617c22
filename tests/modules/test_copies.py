"""One stanza to many recipients, serialised once (`Router.deliver_copies`, `mod.send_copies`):
what each resource receives, escaping of the spliced `to`, what comes back for copies nobody can
take (RFC 6121 §8.5.3.2.1, unknown domains), blocking (XEP-0191) as a filter of the `copies`
event, wrapped session outputs, and bare JIDs taking the ordinary delivery.

Most tests go through `tests.fixtures.broadcast`, a component that fans a groupchat message out
from `room@rooms.localhost/nick` to the full JIDs listed in a message's body and reports what
comes back to whoever asked; the others call the router directly with a user as the sender, so
that what comes back lands at a client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from xmppd import events
from xmppd.elements import element
from xmppd.jid import parse_jid
from xmppd.router import template
from xmppd.session import Wrapper
from xmppd.stanza import CLIENT_NS, Stanza

from .harness import Client, Harness, error_condition, presence

ALICE = "alice@localhost"
BOB = "bob@localhost"
CAROL = "carol@localhost"
ROOM = "room@rooms.localhost"
NICK = f"{ROOM}/nick"
BLOCKING_NS = "urn:xmpp:blocking"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path, modules=("blocking",), components={"rooms.localhost": ("tests.fixtures.broadcast",)}
    ) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        yield harness


async def broadcast(sender: Client, *recipients: str) -> None:
    """Ask the fixture room to send one groupchat message (id 'g1') to `recipients`."""
    listed = escape("\n".join(recipients))
    await sender.send(f"<message to='{NICK}' id='g1'><body>{listed}</body></message>")


def body(stanza: etree._Element) -> str | None:
    return stanza.findtext(f"{{{CLIENT_NS}}}body")


def without_to(data: bytes) -> bytes:
    stanza = etree.fromstring(data)
    del stanza.attrib["to"]
    return etree.tostring(stanza)


def groupchat(sender: str) -> Stanza:
    stanza = Stanza.build("message", to=None, from_=parse_jid(sender), type_="groupchat", id_="g2")
    element(f"{{{CLIENT_NS}}}body", parent=stanza.element).text = "hello"
    return stanza


async def copies(h: Harness, stanza: Stanza, *recipients: str) -> None:
    await h.server.router.deliver_copies(stanza, [parse_jid(jid) for jid in recipients])
    await h.settle()


# -- what arrives -----------------------------------------------------------------------------------


async def test_each_recipient_gets_the_same_stanza_with_its_own_to(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    devices = [await h.connect(jid) for jid in (f"{BOB}/desk", f"{CAROL}/pc", f"{CAROL}/tablet")]
    await broadcast(alice, *(str(device.jid) for device in devices))

    writes = [device.output.writes[:] for device in devices]
    assert all(len(received) == 1 for received in writes)
    for device, (data,) in zip(devices, writes, strict=True):
        (stanza,) = device.take()
        assert (stanza.get("to"), stanza.get("from"), stanza.get("type"), stanza.get("id"), body(stanza)) == (
            str(device.jid), NICK, "groupchat", "g1", "hello"
        )
        assert stanza.tag == f"{{{CLIENT_NS}}}message"
        assert without_to(data) == without_to(writes[0][0])
    assert alice.take() == []


async def test_special_characters_in_the_resource_are_escaped(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    resources = ["it's", 'say "hi"', "a&b<c>d", "all '\"&<"]
    devices = [await h.connect(f"{CAROL}/{resource}") for resource in resources]
    await broadcast(alice, *(str(device.jid) for device in devices))

    for device, resource in zip(devices, resources, strict=True):
        (stanza,) = device.take()
        assert parse_jid(stanza.get("to", "")) == device.jid
        assert parse_jid(stanza.get("to", "")).resource == resource
        assert body(stanza) == "hello"
    assert alice.take() == []


async def test_a_wrapped_output_sees_the_copies_through_its_wrapper(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    carol = await h.connect(f"{CAROL}/pc")
    seen: list[tuple[etree._Element | None, bytes]] = []

    class Spy(Wrapper):
        def send(self, stanza: etree._Element | None, data: bytes) -> None:
            seen.append((stanza, data))
            self.inner.send(stanza, data)

    carol.session.wrap_output(Spy)
    await broadcast(alice, str(carol.jid))

    ((shared, data),) = seen
    # The element is the one shared by every copy: only the bytes carry the recipient.
    assert shared is not None and shared.tag == f"{{{CLIENT_NS}}}message" and shared.get("to") is None
    assert etree.fromstring(data).get("to") == str(carol.jid)
    assert carol.output.writes == [data]


# -- what comes back ----------------------------------------------------------------------------------


async def test_groupchat_to_a_resource_that_is_not_there_is_refused(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    carol = await h.connect(f"{CAROL}/pc")
    await broadcast(alice, f"{BOB}/gone", str(carol.jid))

    assert [body(stanza) for stanza in carol.take()] == ["hello"]
    # RFC 6121 §8.5.3.2.1, from the missing occupant's own address: the room knows who is gone.
    assert [body(report) for report in alice.take()] == [f"service-unavailable {BOB}/gone"]


async def test_copies_for_a_domain_not_served_here_bounce(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    carol = await h.connect(f"{CAROL}/pc")
    await broadcast(alice, "ann@elsewhere.test/a", str(carol.jid), "ben@elsewhere.test/b")

    assert [body(stanza) for stanza in carol.take()] == ["hello"]
    assert sorted(body(report) or "" for report in alice.take()) == [
        "remote-server-not-found ann@elsewhere.test/a",
        "remote-server-not-found ben@elsewhere.test/b",
    ]


async def test_the_error_for_a_missing_resource_goes_to_the_sender(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await copies(h, groupchat(f"{ALICE}/phone"), f"{BOB}/gone")

    (error,) = alice.take()
    assert (error.get("type"), error.get("from"), error.get("to"), error.get("id")) == (
        "error", f"{BOB}/gone", f"{ALICE}/phone", "g2"
    )
    assert error_condition(error) == "service-unavailable"


async def test_presence_to_a_resource_that_is_not_there_is_dropped(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    carol = await h.connect(f"{CAROL}/pc")
    await copies(h, Stanza.build("presence", to=None, from_=alice.jid), f"{BOB}/gone", str(carol.jid))

    assert [(stanza.get("from"), stanza.get("to")) for stanza in carol.take(presence)] == [
        (str(alice.jid), str(carol.jid))
    ]
    assert alice.take() == []


async def test_a_bare_jid_gets_the_ordinary_delivery(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    pc, tablet = await h.connect(f"{CAROL}/pc"), await h.connect(f"{CAROL}/tablet")
    for resource in (pc, tablet):
        await resource.send("<presence/>")  # available: RFC 6121 §8.5.2.1.1 delivers to those
    pc.take()
    tablet.take()

    # RFC 6121 §8.5.2.1.1: presence to an account goes to each of its available resources...
    await copies(h, Stanza.build("presence", to=None, from_=alice.jid), CAROL)
    assert [stanza.get("to") for stanza in pc.take()] == [CAROL]
    assert [stanza.get("to") for stanza in tablet.take()] == [CAROL]

    # ...and a groupchat message to an account is refused.
    await broadcast(alice, CAROL)
    assert pc.take() == [] and tablet.take() == []
    assert [body(report) for report in alice.take()] == [f"service-unavailable {CAROL}"]


# -- blocking (XEP-0191) ------------------------------------------------------------------------------


async def block(client: Client, jid: str) -> None:
    await client.send(f"<iq type='set' id='b1'><block xmlns='{BLOCKING_NS}'><item jid='{jid}'/></block></iq>")
    assert [reply.get("type") for reply in client.take() if reply.get("id") == "b1"] == ["result"]


@pytest.mark.parametrize("blocked", [ROOM, NICK, "rooms.localhost"])
async def test_a_recipient_who_blocked_the_sender_gets_nothing(h: Harness, blocked: str) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/desk")
    carol = await h.connect(f"{CAROL}/pc")
    await block(bob, blocked)
    await broadcast(alice, str(bob.jid), str(carol.jid))

    assert bob.take() == []
    assert [body(stanza) for stanza in carol.take()] == ["hello"]
    # A filter, not a refusal: an error would tell the room that bob is gone.
    assert alice.take() == []


async def test_presence_of_a_user_skips_those_the_user_blocked(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/desk")
    carol = await h.connect(f"{CAROL}/pc")
    await block(alice, BOB)
    await copies(h, Stanza.build("presence", to=None, from_=alice.jid), str(bob.jid), str(carol.jid))

    assert bob.take() == []
    assert [stanza.get("to") for stanza in carol.take(presence)] == [str(carol.jid)]


async def test_headlines_of_a_user_take_the_fast_path(h: Harness) -> None:
    """PEP notifications (XEP-0163): one `copies` event for the batch, which blocking filters with
    the sender's own list too; a resource that is not there gets nothing, and nothing comes back
    (RFC 6121 §8.5.3.2.1)."""
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/desk")
    carol = await h.connect(f"{CAROL}/pc")
    batches: list[list[str]] = []
    h.server.hosts["localhost"].hooks.on(events.COPIES, lambda ev: batches.append([str(jid) for jid in ev.recipients]))
    notification = Stanza.build("message", to=None, from_=parse_jid(ALICE), type_="headline", id_="h1")
    await copies(h, notification, str(bob.jid), f"{CAROL}/gone", str(carol.jid))

    assert batches == [[str(bob.jid), f"{CAROL}/gone", str(carol.jid)]]
    for device in (bob, carol):
        assert [(stanza.get("to"), stanza.get("type")) for stanza in device.take()] == [(str(device.jid), "headline")]
    assert alice.take() == []

    await block(alice, BOB)
    await copies(h, notification, str(bob.jid), str(carol.jid))
    assert bob.take() == []
    assert [stanza.get("to") for stanza in carol.take()] == [str(carol.jid)]


# -- the template ----------------------------------------------------------------------------------


def test_a_template_copy_is_the_stanza_with_a_to() -> None:
    stanza = groupchat(NICK)
    to = parse_jid(f"{CAROL}/x")
    copy = etree.fromstring(template(stanza.element).copy(to))
    stanza.set_to(to)
    # Canonical XML: attribute order is not significant.
    assert etree.tostring(copy, method="c14n") == etree.tostring(stanza.element, method="c14n")


def test_a_stanza_with_a_prefixed_name_is_copied_in_the_default_namespace() -> None:
    # What a client may send: `<c:presence xmlns:c='jabber:client'>`, the same stanza.
    prefixed = etree.fromstring(
        f"<c:presence xmlns:c='{CLIENT_NS}' id='p1'><c:show>away</c:show><c:status>out</c:status></c:presence>"
    )
    to = parse_jid(f"{CAROL}/x")
    data = template(prefixed).copy(to)
    assert data.startswith(b'<presence to="carol@localhost/x"')
    copy = etree.fromstring(data)
    assert (copy.tag, copy.get("id")) == (f"{{{CLIENT_NS}}}presence", "p1")
    children = [(etree.QName(child).namespace, etree.QName(child).localname, child.text) for child in copy]
    assert children == [(CLIENT_NS, "show", "away"), (CLIENT_NS, "status", "out")]

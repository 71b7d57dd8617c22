"""XEP-0054 vcard-temp and the server's part of XEP-0153 (the photo hash in presence) through the
in-memory server."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage.model import RosterItem
from xmppd.modules.vcard import photo_hash

from .harness import Client, Harness, count_calls, error_condition, parse, presence

ALICE = "alice@localhost"
BOB = "bob@example.test"
CAROL = "carol@localhost"
NS = "vcard-temp"
UPDATE = "{vcard-temp:x:update}x"
PHOTO = "{vcard-temp:x:update}photo"
MAX_SIZE = 2048
AVATAR = b"\x89PNG\r\n\x1a\n not really an image, but bytes all the same" * 3
AVATAR_HASH = hashlib.sha1(AVATAR).hexdigest()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path, hosts=("localhost", "example.test"), modules=("vcard",), options={"vcard": {"max_size": MAX_SIZE}}
    ) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        yield harness


async def request(client: Client, type_: str, payload: str, to: str | None = None) -> etree._Element:
    """Send an iq; its answer is returned and taken out, the rest stays to be taken."""
    return await client.ask(type_, payload, to)


def vcard(*fields: str) -> str:
    return f"<vCard xmlns='{NS}'>{''.join(fields)}</vCard>"


def photo(data: bytes = AVATAR) -> str:
    # Line-wrapped like RFC 2045 base64, as clients send it (XEP-0153 §4.6 rule 5).
    encoded = base64.encodebytes(data).decode()
    return f"<PHOTO><TYPE>image/png</TYPE><BINVAL>\n{encoded}</BINVAL></PHOTO>"


def fields(reply: etree._Element) -> list[tuple[str, str | None]]:
    """The vCard of a result, as (local name, text) of its descendants."""
    assert reply.get("type") == "result", etree.tostring(reply)
    card = reply.find(f"{{{NS}}}vCard")
    assert card is not None
    return [(etree.QName(node).localname, node.text) for node in card.iterdescendants()]


async def set_vcard(client: Client, card: str) -> None:
    assert (await request(client, "set", card)).get("type") == "result"


# -- XEP-0054 ---------------------------------------------------------------------------------------


async def test_vcard_temp_is_announced_for_the_server_and_its_accounts(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    for to in ("localhost", CAROL):
        reply = await request(alice, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to)
        assert NS in {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}


async def test_own_vcard_is_empty_until_set_then_as_stored(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    assert fields(await request(alice, "get", vcard())) == []  # §3.1: an empty vCard, not an error
    await set_vcard(alice, vcard("<FN>Alice</FN>", "<N><GIVEN>Alice</GIVEN><FAMILY/></N>"))
    expected = [("FN", "Alice"), ("N", None), ("GIVEN", "Alice"), ("FAMILY", None)]
    # No 'to', or one's own bare JID: both are oneself.
    assert fields(await request(alice, "get", vcard())) == expected
    assert fields(await request(alice, "get", vcard(), ALICE)) == expected
    # §3.2: no partial updates, a set replaces the whole vCard.
    await set_vcard(alice, vcard("<NICKNAME>al</NICKNAME>"))
    assert fields(await request(alice, "get", vcard(), ALICE)) == [("NICKNAME", "al")]


async def test_a_vcard_over_max_size_is_refused_and_the_old_one_stays(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await set_vcard(alice, vcard("<FN>Alice</FN>"))
    # Exactly at the limit is fine: the limit counts the bytes of the vCard's XML.
    filler = "x" * (MAX_SIZE - len(vcard("<DESC></DESC>").replace("'", '"')))
    await set_vcard(alice, vcard(f"<DESC>{filler}</DESC>"))
    reply = await request(alice, "set", vcard(f"<DESC>{filler}é</DESC>"))
    assert (reply.get("type"), error_condition(reply)) == ("error", "not-acceptable")
    assert fields(await request(alice, "get", vcard())) == [("DESC", filler)]


@pytest.mark.parametrize("type_", ["get", "set"])
@pytest.mark.parametrize("to", [None, ALICE, BOB])
async def test_other_elements_of_the_namespace_are_bad_requests(h: Harness, type_: str, to: str | None) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, type_, f"<vcard xmlns='{NS}'/>", to)
    assert error_condition(reply) == "bad-request"


async def test_nobody_sets_another_accounts_vcard(h: Harness) -> None:
    bob = await h.connect(f"{BOB}/desk")
    await set_vcard(bob, vcard("<FN>Bob</FN>"))
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, "set", vcard("<FN>Not Bob</FN>"), BOB)
    assert error_condition(reply) == "forbidden"
    assert fields(await request(bob, "get", vcard())) == [("FN", "Bob")]
    assert bob.take() == []


async def test_anyone_reads_an_accounts_vcard_from_the_server(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await set_vcard(alice, vcard("<FN>Alice</FN>"))
    bob = await h.connect(f"{BOB}/desk")  # on the other host, with no subscription
    reply = await request(bob, "get", vcard(), ALICE)
    assert (reply.get("from"), reply.get("to")) == (ALICE, f"{BOB}/desk")
    assert fields(reply) == [("FN", "Alice")]
    assert alice.take() == []  # §3.3: answered for the account, never forwarded to a resource


async def test_no_vcard_and_no_account_get_the_same_answer(h: Harness) -> None:
    bob = await h.connect(f"{BOB}/desk")
    # §3.3 (1.3.0): service-unavailable for both, so no one learns which accounts exist.
    for to in (CAROL, "nobody@localhost"):
        reply = await request(bob, "get", vcard(), to)
        assert (reply.get("type"), error_condition(reply)) == ("error", "service-unavailable")


async def test_deleting_the_account_deletes_its_vcard(h: Harness) -> None:
    carol = await h.connect(f"{CAROL}/desk")
    await set_vcard(carol, vcard("<FN>Carol</FN>", photo()))
    await carol.disconnect()
    # As `xmppd deluser` does it, from another process: the server learns of it from the log.
    assert await h.storage.accounts.delete("localhost", "carol")
    await h.server.deletions.catch_up()
    await h.account(CAROL)
    bob = await h.connect(f"{BOB}/desk")
    assert error_condition(await request(bob, "get", vcard(), CAROL)) == "service-unavailable"
    carol = await h.connect(f"{CAROL}/desk")
    assert fields(await request(carol, "get", vcard())) == []
    await carol.send("<presence/>")
    assert [p.find(UPDATE) for p in carol.take(presence)] == [None]


# -- XEP-0153: the photo hash in presence ---------------------------------------------------------------


def photo_of(stanza: etree._Element) -> str | None:
    """The update child's photo hash: None without <photo/>, "" for an empty one."""
    update = stanza.find(UPDATE)
    assert update is not None, etree.tostring(stanza)
    found = update.find(PHOTO)
    return None if found is None else found.text or ""


async def friends(h: Harness) -> tuple[Client, Client]:
    """Alice and Bob, subscribed to each other; Bob available, Alice's vCard with a photo."""
    await h.storage.rosters.put("localhost", "alice", RosterItem(jid=BOB, subscription="both"))
    await h.storage.rosters.put("example.test", "bob", RosterItem(jid=ALICE, subscription="both"))
    bob = await h.connect(f"{BOB}/desk")
    await bob.send("<presence/>")
    alice = await h.connect(f"{ALICE}/phone")
    await set_vcard(alice, vcard("<FN>Alice</FN>", photo()))
    bob.take()
    return alice, bob


async def test_an_empty_update_gets_the_hash_for_contacts_and_own_resources(h: Harness) -> None:
    alice, bob = await friends(h)
    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence/>")
    for client in (alice, bob, laptop):
        client.take()
    await alice.send("<presence><show>away</show><x xmlns='vcard-temp:x:update'/></presence>")
    seen = [
        p for client in (bob, alice, laptop) for p in client.take(presence) if p.get("from") == f"{ALICE}/phone"
    ]
    assert len(seen) == 3  # a contact, the sender itself, another resource
    assert {photo_of(p) for p in seen} == {AVATAR_HASH}
    # The presence the server keeps (for probes, new resources) has it too.
    tablet = await h.connect(f"{ALICE}/tablet")
    await tablet.send("<presence/>")
    (phone,) = [p for p in tablet.take(presence) if p.get("from") == f"{ALICE}/phone"]
    assert photo_of(phone) == AVATAR_HASH


async def test_presence_without_an_update_gets_one_with_the_hash(h: Harness) -> None:
    alice, bob = await friends(h)
    await alice.send("<presence/>")
    (seen,) = bob.take(presence)
    assert photo_of(seen) == AVATAR_HASH
    assert len(seen.findall(UPDATE)) == 1


@pytest.mark.parametrize("given", ["<photo/>", "<photo>0123456789abcdef0123456789abcdef01234567</photo>"])
async def test_a_photo_the_client_gives_is_left_alone(h: Harness, given: str) -> None:
    alice, bob = await friends(h)
    sent = f"<presence><x xmlns='vcard-temp:x:update'>{given}</x></presence>"
    await alice.send(sent)
    (seen,) = bob.take(presence)
    assert photo_of(seen) == photo_of(parse(sent))


async def test_without_a_photo_an_empty_update_says_so_and_no_update_is_added(h: Harness) -> None:
    alice, bob = await friends(h)
    await set_vcard(alice, vcard("<FN>Alice</FN>"))
    await alice.send("<presence><x xmlns='vcard-temp:x:update'/></presence>")
    (seen,) = bob.take(presence)
    assert photo_of(seen) == ""
    await alice.send("<presence><show>dnd</show></presence>")
    (seen,) = bob.take(presence)
    assert seen.find(UPDATE) is None


async def test_directed_presence_gets_the_hash_too(h: Harness) -> None:
    alice, _bob = await friends(h)
    carol = await h.connect(f"{CAROL}/desk")  # no subscription: directed presence, as a room join
    await alice.send(f"<presence to='{CAROL}/desk'/>")
    (seen,) = carol.take(presence)
    assert photo_of(seen) == AVATAR_HASH
    # Other presence types are not availability: left alone.
    await alice.send(f"<presence to='{CAROL}/desk' type='unavailable'/>")
    (gone,) = carol.take(presence)
    assert gone.find(UPDATE) is None


async def test_the_hash_is_read_once_and_follows_each_set(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_calls(type(h.storage.kv), "get", lambda *args: args[2] == "vcard", monkeypatch)
    alice, bob = await friends(h)
    for show in ("away", "xa", "chat"):
        await alice.send(f"<presence><show>{show}</show></presence>")
    assert {photo_of(p) for p in bob.take(presence)} == {AVATAR_HASH}
    assert len(reads) == 1
    other = b"another avatar"
    await set_vcard(alice, vcard(photo(other)))
    await alice.send("<presence/>")
    assert [photo_of(p) for p in bob.take(presence)] == [hashlib.sha1(other).hexdigest()]
    assert len(reads) == 1
    # Kept past the last resource: the next login reads no vCard.
    await alice.disconnect()
    bob.take()
    alice = await h.connect(f"{ALICE}/phone")
    await alice.send("<presence/>")
    assert [photo_of(p) for p in bob.take(presence)] == [hashlib.sha1(other).hexdigest()]
    assert len(reads) == 1


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        (vcard(photo()), AVATAR_HASH),
        (vcard("<PHOTO><BINVAL>  </BINVAL></PHOTO>"), ""),
        (vcard("<PHOTO><BINVAL>not base64!</BINVAL></PHOTO>"), ""),
        (vcard("<PHOTO><EXTVAL>https://example.org/me.png</EXTVAL></PHOTO>"), ""),
        (vcard("<FN>no photo</FN>"), ""),
    ],
)
def test_photo_hash(card: str, expected: str) -> None:
    assert photo_hash(etree.fromstring(card)) == expected


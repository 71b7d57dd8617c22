"""The server's archiving service (xmppd/archiving.py): one writer for users' and rooms' archives,
and archive queries answered on a room's JID with the answering code of XEP-0313."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage import ArchiveQuery
from xmppd.archiving import Archiving, archiving
from xmppd.jid import parse_jid
from xmppd.module import ModuleAPI, StanzaEvent
from xmppd.modules import mam
from xmppd.stanza import CLIENT_NS

from .harness import Harness, iq_reply

ALICE = parse_jid("alice@localhost")
ROOM = parse_jid("lobby@conference.localhost")
NS = "urn:xmpp:mam:2"
RSM = "{http://jabber.org/protocol/rsm}"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    # The component host stands in for a MUC service: it loads nothing but disco.
    async with Harness.start(tmp_path, modules=("mam",), components={ROOM.domain: ()}) as harness:
        await harness.account(str(ALICE))
        yield harness


def component(h: Harness) -> ModuleAPI:
    return h.server.hosts[ROOM.domain].modules["disco"]


def groupchat(body: str) -> str:
    return f'<message xmlns="{CLIENT_NS}" type="groupchat" from="{ROOM}/nick"><body>{body}</body></message>'


async def archive_in_room(service: Archiving, *bodies: str) -> None:
    for body in bodies:
        await service.write(service.record(ROOM, parse_jid(f"{ROOM}/nick"), outgoing=False, stanza=groupchat(body)))


async def test_user_and_room_records_written_together_share_one_batch(h: Harness) -> None:
    service = archiving(h.server.hosts["localhost"].modules["mam"])
    # A room component asking for the service by its name gets the one the users' archives use.
    assert archiving(component(h)) is service
    writer = service.writer
    before = (writer.batches, writer.items)
    user_record = service.record(ALICE, ROOM, outgoing=True, stanza="<message/>")
    room_record = service.record(ROOM, parse_jid(f"{ROOM}/alice"), outgoing=False, stanza=groupchat("hi"))
    await asyncio.gather(service.write(user_record), service.write(room_record))
    # One store append, one transaction, for both archives.
    assert (writer.batches - before[0], writer.items - before[1]) == (1, 2)
    assert room_record.id > user_record.id  # one id generator for the whole server
    stored = h.storage.archive
    assert (await stored.query("localhost", "alice", ArchiveQuery())).records == [user_record]
    assert (await stored.query("conference.localhost", "lobby", ArchiveQuery())).records == [room_record]


async def test_a_room_archive_is_queried_on_the_room_jid(h: Harness) -> None:
    service = archiving(component(h))

    async def room_query(ev: StanzaEvent) -> bool:
        # What a MUC component does once it has checked the requester is an occupant.
        assert ev.origin is not None and ev.stanza.to is not None
        return await mam.answer_query(
            service.store, ev, owner=ev.stanza.to.bare, requester=ev.origin.jid, send=ev.origin.send_bytes,
            max_page=2,
        )

    component(h).on_iq("set", NS, "query", room_query, targets=("bare",))
    await archive_in_room(service, "one", "two", "three")
    await service.write(service.record(ALICE, ROOM, outgoing=True, stanza="<message/>"))  # not the room's
    alice = await h.connect(f"{ALICE}/phone")

    await alice.send(f"<iq type='set' id='q1' to='{ROOM}'><query xmlns='{NS}' queryid='r1'/></iq>")
    *results, fin_iq = alice.take()
    assert iq_reply(fin_iq) and fin_iq.get("type") == "result" and fin_iq.get("from") == str(ROOM)
    # XEP-0313 §4.2: the results come from the archive's JID, to the requester.
    assert {(r.get("from"), r.get("to")) for r in results} == {(str(ROOM), f"{ALICE}/phone")}
    assert [r.findtext(f".//{{{CLIENT_NS}}}body") for r in results] == ["one", "two"]
    fin = fin_iq.find(f"{{{NS}}}fin")
    assert fin is not None and fin.get("complete") is None, etree.tostring(fin_iq)
    last = fin.findtext(f"{RSM}set/{RSM}last")

    # The next page, by the RSM id of the last result, as in a user's archive.
    await alice.send(
        f"<iq type='set' id='q2' to='{ROOM}'><query xmlns='{NS}'>"
        f"<set xmlns='http://jabber.org/protocol/rsm'><after>{last}</after></set></query></iq>"
    )
    *results, fin_iq = alice.take()
    assert [r.findtext(f".//{{{CLIENT_NS}}}body") for r in results] == ["three"]
    fin = fin_iq.find(f"{{{NS}}}fin")
    assert fin is not None and fin.get("complete") == "true"


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        ("<body>hi</body>", True),
        ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", True),
        ("<composing xmlns='http://jabber.org/protocol/chatstates'/>", False),
        ("<body>hi</body><no-store xmlns='urn:xmpp:hints'/>", False),
        ("<composing xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/>", True),
    ],
)
def test_a_room_keeps_groupchat_by_the_content_rule_of_user_archives(content: str, kept: bool) -> None:
    message = etree.fromstring(f"<message xmlns='{CLIENT_NS}' type='groupchat'>{content}</message>")
    assert mam.worth_keeping(message) is kept
    assert not mam.archivable(message)  # groupchat is never in a user's archive

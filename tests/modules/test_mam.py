"""XEP-0313 message archive, XEP-0359 stanza ids, XEP-0441 preferences and XEP-0059 paging,
through the in-memory server: messages in through the router, archive queries answered."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from storage import ArchiveQuery, RosterItem, StorageError
from storage.archive import datetime_ms
from xmppd.archiving import archiving
from xmppd.datetimes import parse_datetime, stamp
from xmppd.modules import mam
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition, iq_reply

ALICE = "alice@localhost"
BOB = "bob@example.test"  # on the other served host: archiving crosses hosts through the router
CAROL = "carol@localhost"
NS = "urn:xmpp:mam:2"
SID = "{urn:xmpp:sid:0}stanza-id"
T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)

_ids = itertools.count()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test"), modules=("mam",)) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        yield harness


class Clock:
    """Injected into the archive: seconds since the epoch, moved by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()


def use_clock(h: Harness, clock: Clock) -> None:
    h.server.clock = clock  # the server's clock, injected


async def online(h: Harness, jid: str) -> Client:
    client = await h.connect(jid)
    await client.send("<presence/>")
    client.take()
    return client


async def chat(sender: Client, to: str, body: str | None = "hi", extra: str = "", type_: str = "chat") -> None:
    content = (f"<body>{body}</body>" if body is not None else "") + extra
    await sender.send(f"<message to='{to}' type='{type_}' id='m{next(_ids)}'>{content}</message>")


def messages(client: Client) -> list[etree._Element]:
    return client.take(lambda e: e.tag == f"{{{CLIENT_NS}}}message")


def stanza_ids(msg: etree._Element) -> list[tuple[str | None, str | None]]:
    return [(sid.get("by"), sid.get("id")) for sid in msg.iter(SID)]


async def archived(h: Harness, jid: str, **query: Any) -> list[str]:
    """The bodies in an archive, straight from storage."""
    user, host = jid.split("@")
    page = await h.storage.archive.query(host, user, ArchiveQuery(limit=1000, **query))
    bodies = []
    for record in page.records:
        msg = etree.fromstring(record.stanza)
        bodies.append(msg.findtext(f"{{{CLIENT_NS}}}body") or "")
    return bodies


def form(**fields: str | Sequence[str]) -> str:
    if not fields:
        return ""
    parts = [f"<field var='FORM_TYPE' type='hidden'><value>{NS}</value></field>"]
    for name, value in fields.items():
        values = [value] if isinstance(value, str) else list(value)
        var = name.rstrip("_").replace("_", "-")  # with_ -> with, after_id -> after-id
        parts.append(f"<field var='{var}'>{''.join(f'<value>{v}</value>' for v in values)}</field>")
    return f"<x xmlns='jabber:x:data' type='submit'>{''.join(parts)}</x>"


class Answer:
    def __init__(self, results: list[etree._Element], iq: etree._Element) -> None:
        self.results = results
        self.iq = iq

    @property
    def ids(self) -> list[str]:
        return [r.find(f"{{{NS}}}result").get("id", "") for r in self.results]  # type: ignore[union-attr]

    @property
    def bodies(self) -> list[str]:
        return [r.findtext(f".//{{{CLIENT_NS}}}body") or "" for r in self.results]

    @property
    def fin(self) -> etree._Element:
        fin = self.iq.find(f"{{{NS}}}fin")
        assert fin is not None, etree.tostring(self.iq)
        return fin

    @property
    def complete(self) -> bool:
        return self.fin.get("complete") == "true"

    def rsm(self, name: str) -> str | None:
        return self.fin.findtext(f"{{http://jabber.org/protocol/rsm}}set/{{http://jabber.org/protocol/rsm}}{name}")

    def first_index(self) -> str | None:
        first = self.fin.find("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}first")
        return None if first is None else first.get("index")


async def query(client: Client, fields: str = "", rsm: str = "", extra: str = "", to: str = "") -> Answer:
    queryid = f"q{next(_ids)}"
    rsm_xml = f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>" if rsm else ""
    to_attr = f" to='{to}'" if to else ""
    await client.send(
        f"<iq type='set' id='{queryid}'{to_attr}><query xmlns='{NS}' queryid='{queryid}'>"
        f"{fields}{rsm_xml}{extra}</query></iq>"
    )
    received = client.take()
    iqs = [e for e in received if iq_reply(e)]
    assert len(iqs) == 1, [etree.tostring(e) for e in received]
    results = [e for e in received if e.find(f"{{{NS}}}result") is not None]
    for result in results:
        assert result.find(f"{{{NS}}}result").get("queryid") == queryid  # type: ignore[union-attr]
        assert result.get("from") == client.jid.bare.__str__()
        assert result.get("to") == str(client.jid)
    assert received[-1] is iqs[0], "the iq result comes after every result message"
    return Answer(results, iqs[0])


# -- archiving and stanza ids ---------------------------------------------------------------------


async def test_archived_for_both_parties_and_stamped_for_the_recipient(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await chat(alice, BOB, "hello bob", "<origin-id xmlns='urn:xmpp:sid:0' id='o-1'/>")
    [received] = messages(bob)
    [(by, stanza_id)] = stanza_ids(received)
    assert by == BOB and stanza_id is not None and len(stanza_id) == 16
    assert received.find("{urn:xmpp:sid:0}origin-id").get("id") == "o-1"  # type: ignore[union-attr]
    assert messages(alice) == []  # the sender never sees an id of its own archive on its message
    assert await archived(h, ALICE) == ["hello bob"]
    assert await archived(h, BOB) == ["hello bob"]

    # The recipient's archive knows the message under the id it was stamped with.
    answer = await query(bob)
    assert answer.ids == [stanza_id]
    forwarded = answer.results[0].find(f"{{{NS}}}result/{{urn:xmpp:forward:0}}forwarded")
    assert forwarded is not None
    delay = forwarded.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp", "").endswith("Z")
    inner = forwarded.find(f"{{{CLIENT_NS}}}message")
    assert inner is not None
    assert (inner.get("from"), inner.get("to"), inner.get("type")) == (f"{ALICE}/phone", BOB, "chat")
    assert inner.find("{urn:xmpp:sid:0}origin-id") is not None
    # The sender's copy is in her own archive, under an id of her own.
    mine = await query(alice)
    assert mine.bodies == ["hello bob"] and mine.ids != [stanza_id]
    # Stable: the same id on every later query.
    assert (await query(bob)).ids == [stanza_id]


async def test_spoofed_stanza_id_is_replaced_others_kept(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await chat(
        alice, BOB, "trust me",
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{BOB}' id='0000000000000001'/>"
        "<stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.example.test' id='muc-7'/>",
    )
    [received] = messages(bob)
    ids = stanza_ids(received)
    assert ("room@muc.example.test", "muc-7") in ids
    ours = [i for by, i in ids if by == BOB]
    assert len(ours) == 1 and ours[0] != "0000000000000001"
    assert (await query(bob)).ids == ours


async def test_spoofed_stanza_id_is_removed_even_when_not_archived(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await chat(alice, BOB, None, f"<active xmlns='http://jabber.org/protocol/chatstates'/>"
                                f"<stanza-id xmlns='urn:xmpp:sid:0' by='{BOB}' id='0000000000000001'/>")
    [received] = messages(bob)
    assert stanza_ids(received) == []


ARCHIVED = {
    "receipt": "<received xmlns='urn:xmpp:receipts' id='m1'/>",
    "displayed marker": "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
    "omemo": "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>",
    "reaction": "<reactions xmlns='urn:xmpp:reactions:0' id='m1'><reaction>👍</reaction></reactions>",
    "chat state kept by the store hint": "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
                                         "<store xmlns='urn:xmpp:hints'/>",
}
NOT_ARCHIVED = {
    "chat state": "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
    "chat state with thread": "<paused xmlns='http://jabber.org/protocol/chatstates'/><thread>t1</thread>",
    "empty": "",
}


@pytest.mark.parametrize("payload", ARCHIVED.values(), ids=ARCHIVED.keys())
async def test_archived_without_body(h: Harness, payload: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await chat(alice, BOB, None, payload)
    [received] = messages(bob)
    assert [by for by, _ in stanza_ids(received)] == [BOB]
    assert len(await archived(h, ALICE)) == len(await archived(h, BOB)) == 1


@pytest.mark.parametrize("payload", NOT_ARCHIVED.values(), ids=NOT_ARCHIVED.keys())
async def test_not_archived_without_body(h: Harness, payload: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await chat(alice, BOB, None, payload)
    [received] = messages(bob)
    assert stanza_ids(received) == []
    assert await archived(h, ALICE) == await archived(h, BOB) == []


@pytest.mark.parametrize(
    ("type_", "extra"),
    [
        ("chat", "<no-store xmlns='urn:xmpp:hints'/>"),
        ("chat", "<no-permanent-store xmlns='urn:xmpp:hints'/>"),
        ("normal", "<no-permanent-store xmlns='urn:xmpp:hints'/><store xmlns='urn:xmpp:hints'/>"),
        ("headline", ""),
        ("groupchat", ""),
        ("error", ""),
    ],
)
async def test_hints_and_types_not_archived(h: Harness, type_: str, extra: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await online(h, f"{BOB}/pc")
    await chat(alice, f"{BOB}/pc", "secret", extra, type_=type_)
    assert await archived(h, ALICE) == await archived(h, BOB) == []


async def test_normal_message_with_body_is_archived(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await online(h, f"{BOB}/pc")
    await alice.send(f"<message to='{BOB}'><body>no type</body></message>")
    assert await archived(h, ALICE) == await archived(h, BOB) == ["no type"]


async def test_note_to_self_is_archived_once(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    await online(h, f"{ALICE}/laptop")
    await chat(phone, ALICE, "remember the milk")
    assert await archived(h, ALICE) == ["remember the milk"]
    answer = await query(phone, form(with_=ALICE))
    assert answer.bodies == ["remember the milk"]


async def test_no_archive_for_an_account_that_does_not_exist(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await chat(alice, "nobody@example.test", "anyone?")
    [bounce] = messages(alice)
    assert error_condition(bounce) == "service-unavailable"
    assert await archived(h, "nobody@example.test") == []


async def test_a_failed_archive_write_refuses_the_message(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")

    async def broken(records: Any) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(archiving(h.server.hosts["localhost"].modules["mam"]).writer, "_flush", broken)
    await chat(alice, BOB, "lost?")
    [bounce] = messages(alice)
    assert bounce.get("type") == "error" and error_condition(bounce) == "internal-server-error"
    assert messages(bob) == []


async def test_both_copies_of_a_message_go_out_in_one_transaction(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    writer = archiving(h.server.hosts["localhost"].modules["mam"]).writer
    await chat(alice, BOB, "the first reads what later ones find in memory")
    batches, items = writer.batches, writer.items
    await chat(alice, BOB, "one commit")
    assert [m.findtext(f"{{{CLIENT_NS}}}body") for m in messages(bob)][-1] == "one commit"
    # The sender's copy waits for the recipient's: one commit for both, before delivery.
    assert (writer.batches - batches, writer.items - items) == (1, 2)
    assert (await archived(h, ALICE))[-1] == "one commit"
    assert (await archived(h, BOB))[-1] == "one commit"


async def test_a_failed_sender_copy_refuses_the_message(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    writer = archiving(h.server.hosts["localhost"].modules["mam"]).writer
    flush = writer._flush

    async def refuse_alices(records: Any) -> None:
        if any(record.username == "alice" for record in records):
            raise StorageError("disk full")
        await flush(records)

    monkeypatch.setattr(writer, "_flush", refuse_alices)
    await chat(alice, BOB, "half archived?")
    [bounce] = messages(alice)
    assert bounce.get("type") == "error" and error_condition(bounce) == "internal-server-error"
    assert messages(bob) == []
    assert await archived(h, ALICE) == []


async def test_records_of_concurrent_messages_share_a_transaction(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    carol = await online(h, f"{CAROL}/pc")
    bob = await online(h, f"{BOB}/pc")
    writer = archiving(h.server.hosts["localhost"].modules["mam"]).writer
    before = writer.batches
    await asyncio.gather(*(chat(sender, BOB, f"m{i}") for i, sender in enumerate([alice, carol] * 5)))
    assert len(messages(bob)) == 10
    assert writer.items >= 20
    # Ten messages, twenty records, in fewer transactions than records.
    assert writer.batches - before < 20
    assert sorted(await archived(h, BOB)) == sorted(f"m{i}" for i in range(10))


# -- queries and paging ---------------------------------------------------------------------------


async def converse(h: Harness, count: int, clock: Clock | None = None) -> tuple[Client, Client, list[str]]:
    """Alice and Bob exchange `count` messages (alternating); Bob's stanza-ids in order."""
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    ids: list[str] = []
    for i in range(count):
        if i % 2 == 0:
            await chat(alice, BOB, f"m{i}")
            [received] = messages(bob)
            ids.append(dict(stanza_ids(received))[BOB] or "")
        else:
            await chat(bob, ALICE, f"m{i}")
            messages(alice)
            ids.append("")  # an outgoing message of Bob's: no stanza-id for him to see
        if clock is not None:
            clock.advance(seconds=1)
    return alice, bob, ids


async def test_paging_forward_with_rsm_after(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 25)
    seen: list[str] = []
    ids: list[str] = []
    after = ""
    for expected_complete in (False, False, True):
        answer = await query(bob, rsm=f"<max>10</max>{after}")
        seen += answer.bodies
        ids += answer.ids
        assert answer.complete is expected_complete
        assert answer.rsm("first") == answer.ids[0] and answer.rsm("last") == answer.ids[-1]
        after = f"<after>{answer.rsm('last')}</after>"
    assert seen == [f"m{i}" for i in range(25)]
    assert ids == sorted(ids) and len(set(ids)) == 25
    first_page = await query(bob, rsm="<max>10</max>")
    assert first_page.first_index() == "0"
    assert first_page.rsm("count") is None  # not cheap: not given
    whole = await query(bob, rsm="<max>100</max>")
    assert whole.complete and whole.rsm("count") == "25" and whole.first_index() == "0"


async def test_paging_backward_from_the_last_page(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 25)
    answer = await query(bob, rsm="<max>10</max><before/>")
    assert answer.bodies == [f"m{i}" for i in range(15, 25)] and not answer.complete
    answer = await query(bob, rsm=f"<max>10</max><before>{answer.rsm('first')}</before>")
    assert answer.bodies == [f"m{i}" for i in range(5, 15)] and not answer.complete
    answer = await query(bob, rsm=f"<max>10</max><before>{answer.rsm('first')}</before>")
    assert answer.bodies == [f"m{i}" for i in range(5)] and answer.complete
    assert answer.first_index() == "0"


async def test_flip_page_reverses_the_order_only(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 6)
    plain = await query(bob, rsm="<max>3</max><before/>")
    flipped = await query(bob, rsm="<max>3</max><before/>", extra="<flip-page/>")
    assert flipped.bodies == list(reversed(plain.bodies))
    assert (flipped.rsm("first"), flipped.rsm("last")) == (plain.rsm("first"), plain.rsm("last"))


async def test_after_id_before_id_and_ids(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 10)
    all_ids = (await query(bob)).ids
    answer = await query(bob, form(after_id=all_ids[2], before_id=all_ids[7]))
    assert answer.bodies == [f"m{i}" for i in range(3, 7)] and answer.complete
    # before-id does not page backwards; RSM <before/> does.
    answer = await query(bob, form(before_id=all_ids[7]), rsm="<max>2</max>")
    assert answer.bodies == ["m0", "m1"]
    answer = await query(bob, form(before_id=all_ids[7]), rsm="<max>2</max><before/>")
    assert answer.bodies == ["m5", "m6"]
    answer = await query(bob, form(ids=[all_ids[8], all_ids[1]]))
    assert answer.bodies == ["m1", "m8"]


@pytest.mark.parametrize(
    ("fields", "rsm"),
    [
        ({"after_id": "00000000000000ff"}, ""),
        ({"before_id": "not-an-id"}, ""),
        ({"ids": "00000000000000ff"}, ""),
        ({}, "<after>00000000000000ff</after>"),
        ({}, "<before>zzz</before>"),
    ],
)
async def test_unknown_ids_are_item_not_found(h: Harness, fields: dict[str, str], rsm: str) -> None:
    _alice, bob, _ = await converse(h, 2)
    answer = await query(bob, form(**fields), rsm=rsm)
    assert answer.iq.get("type") == "error" and error_condition(answer.iq) == "item-not-found"
    assert answer.results == []


async def test_an_id_of_another_archive_is_not_found(h: Harness) -> None:
    alice, bob, _ = await converse(h, 2)
    alices = (await query(alice)).ids
    answer = await query(bob, form(after_id=alices[0]))
    assert error_condition(answer.iq) == "item-not-found"


async def test_with_bare_and_full_jid(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await online(h, f"{BOB}/pc")
    carol_pc = await online(h, f"{CAROL}/pc")
    carol_phone = await online(h, f"{CAROL}/mobile")
    await chat(alice, BOB, "to bob")
    await chat(alice, CAROL, "to carol")
    await chat(carol_pc, ALICE, "from carol's pc")
    await chat(carol_phone, ALICE, "from carol's phone")
    assert (await query(alice, form(with_=BOB))).bodies == ["to bob"]
    assert (await query(alice, form(with_=CAROL))).bodies == ["to carol", "from carol's pc", "from carol's phone"]
    assert (await query(alice, form(with_=f"{CAROL}/mobile"))).bodies == ["from carol's phone"]
    assert (await query(alice, form(with_="dave@localhost"))).bodies == []


async def test_start_and_end(h: Harness) -> None:
    clock = Clock()
    use_clock(h, clock)
    _alice, bob, _ = await converse(h, 6, clock)  # one message a second from T0
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    start = (T0 + timedelta(seconds=2)).strftime(stamp)
    end = (T0 + timedelta(seconds=4)).strftime(stamp)
    assert (await query(bob, form(start=start))).bodies == ["m2", "m3", "m4", "m5"]
    assert (await query(bob, form(end=end))).bodies == ["m0", "m1", "m2", "m3", "m4"]
    assert (await query(bob, form(start=start, end=end))).bodies == ["m2", "m3", "m4"]
    # The same instant in another time zone, with a fraction.
    assert (await query(bob, form(start="2024-05-01T10:00:03.000+02:00"))).bodies == ["m3", "m4", "m5"]
    answer = await query(bob, form(start="2024-05-01"))
    assert error_condition(answer.iq) == "bad-request"
    # The delay stamp is the archiving time.
    first = (await query(bob)).results[0]
    delay = first.find(".//{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp") == "2024-05-01T08:00:00.000Z"


async def test_count_only(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 7)
    answer = await query(bob, rsm="<max>0</max>")
    assert answer.results == [] and answer.rsm("count") == "7" and answer.rsm("first") is None
    assert not answer.complete


async def test_empty_archive(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    answer = await query(alice)
    assert answer.results == [] and answer.complete and answer.rsm("count") == "0"
    assert answer.rsm("first") is None


async def test_page_size_is_capped(h: Harness) -> None:
    _alice, bob, _ = await converse(h, 4)
    mam.archive_for(h.server.hosts["example.test"]).max_page = 3
    answer = await query(bob, rsm="<max>50</max>")
    assert len(answer.results) == 3 and not answer.complete
    answer = await query(bob)
    assert len(answer.results) == 3 and not answer.complete


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        ("<x xmlns='jabber:x:data' type='submit'><field var='include-groupchat'><value>true</value></field></x>",
         "feature-not-implemented"),
        ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x>",
         "bad-request"),
        (form(with_="@@bad"), "jid-malformed"),
    ],
)
async def test_bad_queries(h: Harness, fields: str, condition: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    answer = await query(alice, fields)
    assert error_condition(answer.iq) == condition


async def test_bad_rsm(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    answer = await query(alice, rsm="<max>-1</max>")
    assert error_condition(answer.iq) == "bad-request"


async def test_another_users_archive_is_forbidden(h: Harness) -> None:
    await converse(h, 2)
    alice = await online(h, f"{ALICE}/laptop")
    answer = await query(alice, to=BOB)
    assert error_condition(answer.iq) == "forbidden" and answer.results == []


async def test_query_form_metadata_and_disco(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send(f"<iq type='get' id='f1'><query xmlns='{NS}'/></iq>")
    [reply] = alice.take()
    fields = {f.get("var"): f.get("type") for f in reply.iter("{jabber:x:data}field")}
    assert fields == {
        "FORM_TYPE": "hidden", "with": "jid-single", "start": "text-single", "end": "text-single",
        "before-id": "text-single", "after-id": "text-single", "ids": "list-multi",
    }
    assert reply.find(".//{http://jabber.org/protocol/xdata-validate}open") is not None

    await alice.send(f"<iq type='get' id='md1'><metadata xmlns='{NS}'/></iq>")
    [reply] = alice.take()
    assert len(reply.find(f"{{{NS}}}metadata")) == 0  # type: ignore[arg-type]
    bob = await online(h, f"{BOB}/pc")
    for i in range(3):
        await chat(bob, ALICE, f"m{i}")
    ids = (await query(alice)).ids
    await alice.send(f"<iq type='get' id='md2'><metadata xmlns='{NS}'/></iq>")
    [reply] = alice.take(iq_reply)
    meta = reply.find(f"{{{NS}}}metadata")
    assert meta is not None
    assert meta.find(f"{{{NS}}}start").get("id") == ids[0]  # type: ignore[union-attr]
    assert meta.find(f"{{{NS}}}end").get("id") == ids[-1]  # type: ignore[union-attr]

    await alice.send(f"<iq type='get' id='d1' to='{ALICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [reply] = alice.take()
    features = {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert {NS, f"{NS}#extended", "urn:xmpp:sid:0"} <= features


# -- preferences (XEP-0441) -----------------------------------------------------------------------


async def set_prefs(
    client: Client, default: str, always: Sequence[str] = (), never: Sequence[str] = ()
) -> etree._Element:
    def jids(values: Sequence[str]) -> str:
        return "".join(f"<jid>{v}</jid>" for v in values)

    await client.send(
        f"<iq type='set' id='p{next(_ids)}'><prefs xmlns='{NS}' default='{default}'>"
        f"<always>{jids(always)}</always><never>{jids(never)}</never></prefs></iq>"
    )
    [reply] = client.take(iq_reply)
    return reply


def prefs_of(reply: etree._Element) -> tuple[str | None, list[str], list[str]]:
    prefs = reply.find(f"{{{NS}}}prefs")
    assert prefs is not None, etree.tostring(reply)
    return (
        prefs.get("default"),
        [j.text or "" for j in prefs.iterfind(f"{{{NS}}}always/{{{NS}}}jid")],
        [j.text or "" for j in prefs.iterfind(f"{{{NS}}}never/{{{NS}}}jid")],
    )


async def test_prefs_default_get_and_set(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send(f"<iq type='get' id='g1'><prefs xmlns='{NS}'/></iq>")
    [reply] = alice.take()
    assert prefs_of(reply) == ("always", [], [])
    assert reply.find(f"{{{NS}}}prefs/{{{NS}}}always") is not None  # present even when empty
    reply = await set_prefs(alice, "roster", always=["Bob@Example.Test"], never=[f"{CAROL}/pc"])
    assert prefs_of(reply) == ("roster", [BOB], [f"{CAROL}/pc"])
    await alice.send(f"<iq type='get' id='g2'><prefs xmlns='{NS}'/></iq>")
    assert prefs_of(alice.take()[0]) == ("roster", [BOB], [f"{CAROL}/pc"])
    assert await h.storage.kv.get("localhost", "alice", "mam", "prefs") == {
        "default": "roster", "always": [BOB], "never": [f"{CAROL}/pc"],
    }
    reply = await set_prefs(alice, "sometimes")
    assert error_condition(reply) == "bad-request"


async def test_prefs_never_and_always(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    carol = await online(h, f"{CAROL}/pc")
    await set_prefs(alice, "always", never=[BOB])
    await chat(alice, BOB, "to bob")
    await chat(bob, ALICE, "from bob")
    await chat(carol, ALICE, "from carol")
    assert await archived(h, ALICE) == ["from carol"]
    assert await archived(h, BOB) == ["to bob", "from bob"]  # Bob's archive follows Bob's wishes
    [received] = [m for m in messages(alice) if m.findtext(f"{{{CLIENT_NS}}}body") == "from bob"]
    assert stanza_ids(received) == []  # not archived: no id to give

    await set_prefs(alice, "never", always=[f"{CAROL}/pc"])
    await chat(bob, ALICE, "from bob again")
    await chat(carol, ALICE, "from carol again")
    carol_mobile = await online(h, f"{CAROL}/mobile")
    await chat(carol_mobile, ALICE, "from carol's other resource")
    assert await archived(h, ALICE) == ["from carol", "from carol again"]


async def test_prefs_roster(h: Harness) -> None:
    await h.storage.rosters.put("localhost", "alice", RosterItem(CAROL, subscription="both"))
    # Only a pending request from Bob: not in the roster the user sees.
    await h.storage.rosters.put("localhost", "alice", RosterItem(BOB, pending_in=True, listed=False))
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    carol = await online(h, f"{CAROL}/pc")
    await set_prefs(alice, "roster")
    await chat(bob, ALICE, "from a stranger")
    await chat(carol, ALICE, "from a contact")
    assert await archived(h, ALICE) == ["from a contact"]


async def test_default_policy_option(tmp_path: Path) -> None:
    async with Harness.start(tmp_path, modules=("mam",), options={"mam": {"default_policy": "never"}}) as h:
        await h.account(ALICE)
        await h.account(CAROL)
        alice = await online(h, f"{ALICE}/phone")
        carol = await online(h, f"{CAROL}/pc")
        await chat(carol, ALICE, "hi")
        assert await archived(h, ALICE) == await archived(h, CAROL) == []
        await set_prefs(alice, "always")
        await chat(carol, ALICE, "hi again")
        assert await archived(h, ALICE) == ["hi again"]


# -- retention ------------------------------------------------------------------------------------


async def test_retention_deletes_only_old_messages(tmp_path: Path) -> None:
    async with Harness.start(
        tmp_path, hosts=("localhost", "example.test"), modules=("mam",), options={"mam": {"retention_days": 30}}
    ) as h:
        for account in (ALICE, BOB):
            await h.account(account)
        clock = Clock()
        use_clock(h, clock)
        alice = await online(h, f"{ALICE}/phone")
        await online(h, f"{BOB}/pc")
        await chat(alice, BOB, "old")
        clock.advance(days=20)
        await chat(alice, BOB, "recent")
        localhost = mam.archive_for(h.server.hosts["localhost"])
        example = mam.archive_for(h.server.hosts["example.test"])
        clock.advance(days=10, seconds=1)  # "old" is now just over 30 days old
        assert await localhost.expire() == 1
        assert await archived(h, ALICE) == ["recent"]
        assert await archived(h, BOB) == ["old", "recent"]  # each host expires its own archives
        assert await example.expire() == 1
        assert await archived(h, BOB) == ["recent"]
        assert await localhost.expire() == 0
        # The cleanup task is running (it ran once at start, before the clock moved).
        assert any(not task.done() for task in h.server.hosts["localhost"].modules["mam"]._tasks)


async def test_no_retention_keeps_everything(h: Harness) -> None:
    clock = Clock()
    use_clock(h, clock)
    alice = await online(h, f"{ALICE}/phone")
    await online(h, f"{BOB}/pc")
    await chat(alice, BOB, "forever")
    clock.advance(days=3650)
    assert await mam.archive_for(h.server.hosts["localhost"]).expire() == 0
    assert await archived(h, ALICE) == ["forever"]
    assert h.server.hosts["localhost"].modules["mam"]._tasks == set()


# -- parsing (no I/O) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2010-06-07T00:00:00Z", datetime(2010, 6, 7, tzinfo=UTC)),
        ("2010-06-07T02:30:00+02:30", datetime(2010, 6, 7, tzinfo=UTC)),
        ("2010-06-06T19:00:00.5-05:00", datetime(2010, 6, 7, 0, 0, 0, 500000, tzinfo=UTC)),
        ("2010-06-07T00:00:00.123456789Z", datetime(2010, 6, 7, 0, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["2010-06-07", "2010-06-07T00:00:00", "2010-13-07T00:00:00Z", "yesterday"])
def test_parse_datetime_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)


def test_stamp() -> None:
    assert stamp(datetime_ms(datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC))) == "2024-02-29T23:59:59.999Z"

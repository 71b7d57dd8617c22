"""The archive store contract (XEP-0313 storage): every test runs against every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage import ArchiveQuery, ArchiveRecord, Storage, StorageError
from storage.archive import (
    MAX_ID,
    ArchiveIds,
    datetime_ms,
    first_id_at,
    format_id,
    id_at,
    parse_id,
    timestamp_ms,
)
from tests.conftest import StorageFactory

HOST = "example.org"
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
BOB = "bob@example.org"
CAROL = "carol@example.net"
ROOM_HOST = "conference.localhost"  # a room service: its rooms' archives sit beside accounts'
ROOM = f"lobby@{ROOM_HOST}"


def at(seconds: float, seq: int = 0) -> int:
    """An archive id stored `seconds` after T0."""
    return first_id_at(datetime_ms(T0 + timedelta(seconds=seconds))) + seq


def record(
    archive_id: int,
    with_jid: str = BOB,
    *,
    user: str = "alice",
    host: str = HOST,
    resource: str = "",
    outgoing: bool = False,
    body: str | None = None,
) -> ArchiveRecord:
    text = body if body is not None else f"message {archive_id}"
    stanza = f'<message xmlns="jabber:client" type="chat"><body>{text}</body></message>'
    return ArchiveRecord(host, user, archive_id, with_jid, resource, outgoing, stanza)


async def fill(storage: Storage, count: int, *, with_jids: tuple[str, ...] = (BOB,)) -> list[ArchiveRecord]:
    """`count` records one second apart, alternating between `with_jids`."""
    records = [record(at(i), with_jids[i % len(with_jids)], outgoing=i % 2 == 0) for i in range(count)]
    await storage.archive.append(records)
    return records


# --- the id scheme ------------------------------------------------------------------------------


def test_ids_are_increasing_and_carry_their_time() -> None:
    ids = ArchiveIds()
    now = datetime_ms(T0)
    issued = [ids.next(now) for _ in range(1000)]
    assert issued == sorted(set(issued))
    assert all(timestamp_ms(i) >= now for i in issued)
    assert timestamp_ms(issued[0]) == now
    # A clock that steps back never makes an id go back.
    earlier = ids.next(now - 5000)
    assert earlier > issued[-1]
    later = ids.next(now + 10)
    assert timestamp_ms(later) == now + 10 and later > earlier


def test_ids_are_not_sequential() -> None:
    ids = ArchiveIds()
    first = [ids.next(1_700_000_000_000) for _ in range(2)]
    other = ArchiveIds()
    second = [other.next(1_700_000_000_000) for _ in range(2)]
    assert first != second  # two processes, same millisecond: different ids (random start)


def test_id_text_round_trip_and_order() -> None:
    ids = [0, 1, at(0), at(0, 5), id_at(datetime_ms(T0)), MAX_ID]
    texts = [format_id(i) for i in ids]
    assert all(len(t) == 16 for t in texts)
    assert sorted(texts) == texts
    assert [parse_id(t) for t in texts] == ids
    for bad in ("", "xyz", "0" * 15, "0" * 17, "F" * 16, "ffffffffffffffff", " " + "0" * 15):
        assert parse_id(bad) is None


def test_time_bounds_as_id_range() -> None:
    query = ArchiveQuery(start=T0, end=T0 + timedelta(seconds=1))
    low, high = query.id_range()
    assert low == at(0) - 1
    assert high == at(1) + (1 << 21)  # every id of the end millisecond is included
    assert ArchiveQuery(after_id=at(5), start=T0).id_range()[0] == at(5)
    assert ArchiveQuery(before_id=at(5), end=T0 + timedelta(days=1)).id_range()[1] == at(5)


# --- writing and reading ------------------------------------------------------------------------


async def test_empty_archive(storage: Storage) -> None:
    page = await storage.archive.query(HOST, "alice", ArchiveQuery())
    assert page.records == [] and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(last=True))
    assert page.records == [] and page.complete
    assert await storage.archive.count(HOST, "alice", ArchiveQuery()) == 0
    assert await storage.archive.existing(HOST, "alice", [at(0)]) == set()


async def test_append_single_and_batched_round_trip(storage: Storage) -> None:
    single = record(at(0), resource="phone", outgoing=True, body="héllo ☕ 😀 &lt;b&gt;")
    await storage.archive.append([single])
    batch = [record(at(i)) for i in range(1, 6)]
    await storage.archive.append(batch)
    await storage.archive.append([])
    page = await storage.archive.query(HOST, "alice", ArchiveQuery())
    assert page.records == [single, *batch]
    assert page.complete
    assert page.records[0].timestamp_ms == datetime_ms(T0)


async def test_archives_are_per_user_and_host(storage: Storage) -> None:
    await storage.archive.append(
        [
            record(at(0), user="alice"),
            record(at(1), user="bob", with_jid="alice@example.org"),
            record(at(2), user="alice", host="other.example"),
            record(at(3), user="jürgen", host="пример.рф", with_jid="用户@пример.рф"),
        ]
    )
    assert [r.id for r in (await storage.archive.query(HOST, "alice", ArchiveQuery())).records] == [at(0)]
    assert [r.id for r in (await storage.archive.query(HOST, "bob", ArchiveQuery())).records] == [at(1)]
    other = await storage.archive.query("other.example", "alice", ArchiveQuery())
    assert [r.id for r in other.records] == [at(2)]
    unicode = await storage.archive.query("пример.рф", "jürgen", ArchiveQuery(with_jid="用户@пример.рф"))
    assert [r.id for r in unicode.records] == [at(3)]
    assert await storage.archive.existing(HOST, "alice", [at(0), at(1), at(2)]) == {at(0)}


async def test_a_room_archive_is_separate_and_paged_the_same_way(storage: Storage) -> None:
    # lobby@conference.localhost beside the accounts of its parent host, one of them with the
    # room's localpart; the room's records name the occupant they came from.
    room = [
        record(at(i), ROOM, user="lobby", host=ROOM_HOST, resource=f"nick{i % 3}") for i in range(25)
    ]
    namesake = record(at(0, seq=1), ROOM, user="lobby", host="localhost", outgoing=True)
    alice = record(at(1, seq=1), ROOM, user="alice", host="localhost", outgoing=True)
    await storage.accounts.create("localhost", "lobby", [])
    await storage.archive.append([*room[:10], namesake, alice, *room[10:]])

    seen: list[ArchiveRecord] = []
    after: int | None = None
    while True:
        page = await storage.archive.query(ROOM_HOST, "lobby", ArchiveQuery(after_id=after, limit=10))
        seen += page.records
        if page.complete:
            break
        after = page.records[-1].id
    assert seen == room
    page = await storage.archive.query(ROOM_HOST, "lobby", ArchiveQuery(last=True, limit=10))
    assert page.records == room[15:] and not page.complete
    by_nick = ArchiveQuery(with_jid=ROOM, with_resource="nick1")
    assert (await storage.archive.query(ROOM_HOST, "lobby", by_nick)).records == room[1::3]
    assert await storage.archive.count(ROOM_HOST, "lobby", ArchiveQuery()) == 25
    assert await storage.archive.existing(ROOM_HOST, "lobby", [room[0].id, namesake.id, alice.id]) == {room[0].id}
    assert (await storage.archive.query("localhost", "lobby", ArchiveQuery())).records == [namesake]

    # The account's lifetime and its host's retention are not the room's.
    assert await storage.accounts.delete("localhost", "lobby")
    assert await storage.archive.delete_before("localhost", T0 + timedelta(days=1)) == 1
    assert (await storage.archive.query(ROOM_HOST, "lobby", ArchiveQuery(limit=100))).records == room


async def test_duplicate_id_fails_the_whole_batch(storage: Storage) -> None:
    await storage.archive.append([record(at(0))])
    with pytest.raises(StorageError):
        await storage.archive.append([record(at(1)), record(at(0))])
    page = await storage.archive.query(HOST, "alice", ArchiveQuery())
    assert [r.id for r in page.records] == [at(0)]


# --- paging -------------------------------------------------------------------------------------


async def test_first_page_and_forward_paging(storage: Storage) -> None:
    records = await fill(storage, 25)
    seen: list[ArchiveRecord] = []
    after: int | None = None
    pages = 0
    while True:
        page = await storage.archive.query(HOST, "alice", ArchiveQuery(after_id=after, limit=10))
        pages += 1
        seen += page.records
        if page.complete:
            break
        after = page.records[-1].id
    assert seen == records
    assert pages == 3


async def test_exact_page_is_not_complete_until_nothing_is_left(storage: Storage) -> None:
    records = await fill(storage, 10)
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(limit=10))
    assert page.records == records and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(limit=9))
    assert page.records == records[:9] and not page.complete


async def test_last_page_and_backward_paging(storage: Storage) -> None:
    records = await fill(storage, 25)
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(last=True, limit=10))
    assert page.records == records[15:]  # the newest ten, still oldest first
    assert not page.complete
    page = await storage.archive.query(
        HOST, "alice", ArchiveQuery(last=True, before_id=page.records[0].id, limit=10)
    )
    assert page.records == records[5:15] and not page.complete
    page = await storage.archive.query(
        HOST, "alice", ArchiveQuery(last=True, before_id=page.records[0].id, limit=10)
    )
    assert page.records == records[:5] and page.complete


async def test_between_two_ids(storage: Storage) -> None:
    records = await fill(storage, 10)
    query = ArchiveQuery(after_id=records[2].id, before_id=records[7].id, limit=10)
    page = await storage.archive.query(HOST, "alice", query)
    assert page.records == records[3:7] and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(after_id=records[2].id, before_id=records[7].id,
                                                                    limit=2, last=True))
    assert page.records == records[5:7] and not page.complete
    assert await storage.archive.count(HOST, "alice", query) == 4


async def test_offset(storage: Storage) -> None:
    records = await fill(storage, 10)
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(offset=4, limit=3))
    assert page.records == records[4:7] and not page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(offset=8, limit=3))
    assert page.records == records[8:] and page.complete


async def test_limit_zero_reads_nothing(storage: Storage) -> None:
    await fill(storage, 3)
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(limit=0))
    assert page.records == [] and not page.complete
    assert await storage.archive.count(HOST, "alice", ArchiveQuery(limit=0)) == 3


# --- filters ------------------------------------------------------------------------------------


async def test_with_bare_and_full_jid(storage: Storage) -> None:
    records = [
        record(at(0), BOB, resource="phone"),
        record(at(1), CAROL),
        record(at(2), BOB, resource="laptop"),
        record(at(3), BOB),
        record(at(4), "bob@example.org.evil"),  # a prefix is not a match
    ]
    await storage.archive.append(records)
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(with_jid=BOB))
    assert page.records == [records[0], records[2], records[3]]
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(with_jid=BOB, with_resource="laptop"))
    assert page.records == [records[2]]
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(with_jid=BOB, with_resource="tablet"))
    assert page.records == [] and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(with_jid=BOB, last=True, limit=1))
    assert page.records == [records[3]] and not page.complete
    assert await storage.archive.count(HOST, "alice", ArchiveQuery(with_jid=BOB)) == 3


async def test_start_and_end_are_inclusive(storage: Storage) -> None:
    records = await fill(storage, 10)
    query = ArchiveQuery(start=T0 + timedelta(seconds=3), end=T0 + timedelta(seconds=6))
    page = await storage.archive.query(HOST, "alice", query)
    assert page.records == records[3:7]
    # Within the same millisecond every id counts; the next millisecond does not.
    late = record(at(6, seq=1_000_000))
    after = record(first_id_at(datetime_ms(T0 + timedelta(seconds=6)) + 1))
    await storage.archive.append([late, after])
    page = await storage.archive.query(HOST, "alice", query)
    assert page.records == [*records[3:7], late]
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(start=T0 + timedelta(days=1)))
    assert page.records == [] and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(end=T0 - timedelta(days=1)))
    assert page.records == [] and page.complete


async def test_ids(storage: Storage) -> None:
    records = await fill(storage, 10, with_jids=(BOB, CAROL))
    wanted = (records[7].id, records[2].id, records[4].id + 1)  # the last one does not exist
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(ids=wanted))
    assert page.records == [records[2], records[7]] and page.complete
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(ids=wanted, with_jid=CAROL))
    assert page.records == [records[7]]
    page = await storage.archive.query(HOST, "alice", ArchiveQuery(ids=()))
    assert page.records == [] and page.complete
    assert await storage.archive.existing(HOST, "alice", wanted) == {records[7].id, records[2].id}


# --- retention and account deletion -------------------------------------------------------------


async def test_delete_before_removes_only_the_oldest_of_that_host(storage: Storage) -> None:
    records = await fill(storage, 10)
    await storage.archive.append([record(at(1, seq=7), user="alice", host="other.example")])
    deleted = await storage.archive.delete_before(HOST, T0 + timedelta(seconds=4))
    assert deleted == 4
    page = await storage.archive.query(HOST, "alice", ArchiveQuery())
    assert page.records == records[4:]
    other = await storage.archive.query("other.example", "alice", ArchiveQuery())
    assert len(other.records) == 1
    assert await storage.archive.delete_before(HOST, T0 + timedelta(seconds=4)) == 0
    assert await storage.archive.delete_before(HOST, T0 + timedelta(days=1)) == 6


async def test_deleting_the_account_deletes_its_archive(storage: Storage) -> None:
    await storage.accounts.create(HOST, "alice", [])
    await fill(storage, 5)
    await storage.archive.append([record(at(9), user="bob", with_jid="alice@example.org")])
    assert await storage.accounts.delete(HOST, "alice")
    assert (await storage.archive.query(HOST, "alice", ArchiveQuery())).records == []
    assert len((await storage.archive.query(HOST, "bob", ArchiveQuery())).records) == 1


async def test_delete_archive_removes_that_owners_archive_only(storage: Storage) -> None:
    # A destroyed room's archive: lobby@conference.localhost goes; another room on the same
    # service, and an account named lobby on the parent host, stay.
    room = [record(at(i), ROOM, user="lobby", host=ROOM_HOST, resource=f"nick{i}") for i in range(7)]
    other_room = record(at(0, seq=1), f"attic@{ROOM_HOST}", user="attic", host=ROOM_HOST)
    namesake = record(at(0, seq=2), ROOM, user="lobby", host="localhost", outgoing=True)
    await storage.archive.append([*room[:3], other_room, namesake, *room[3:]])

    assert await storage.archive.delete_archive(ROOM_HOST, "lobby") == 7
    page = await storage.archive.query(ROOM_HOST, "lobby", ArchiveQuery(limit=100))
    assert page.records == [] and page.complete
    assert await storage.archive.count(ROOM_HOST, "lobby", ArchiveQuery()) == 0
    assert await storage.archive.existing(ROOM_HOST, "lobby", [r.id for r in room]) == set()
    assert (await storage.archive.query(ROOM_HOST, "attic", ArchiveQuery())).records == [other_room]
    assert (await storage.archive.query("localhost", "lobby", ArchiveQuery())).records == [namesake]

    # Gone is gone; an archive that never was is empty too.
    assert await storage.archive.delete_archive(ROOM_HOST, "lobby") == 0
    assert await storage.archive.delete_archive(ROOM_HOST, "nobody") == 0
    assert await storage.archive.delete_archive("unknown.example", "lobby") == 0
    # The name can be used again: a new archive under it starts empty and holds only what is new.
    fresh = record(at(60), ROOM, user="lobby", host=ROOM_HOST, resource="newcomer")
    await storage.archive.append([fresh])
    assert (await storage.archive.query(ROOM_HOST, "lobby", ArchiveQuery())).records == [fresh]


async def test_archive_survives_reopen(storage: Storage, storage_factory: StorageFactory) -> None:
    records = await fill(storage, 3)
    await storage.close()
    reopened = await storage_factory.open()
    page = await reopened.archive.query(HOST, "alice", ArchiveQuery(last=True, limit=2))
    assert page.records == records[1:]

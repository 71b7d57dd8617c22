"""XEP-0313 on a room's JID through the in-memory server (components/muc/archive.py): what an
occupant reads back, paging, who may read, a room that does not archive; and that a room's
archive goes with the room (MucService.forget), so a new room under the same name starts empty."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from lxml import etree

from storage import ArchiveQuery, StorageError
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition, iq_reply
from .muc_helpers import (
    MEMBERS_ONLY,
    OWNER,
    PERSISTENT,
    ROOM,
    SERVICE,
    create_room,
    field,
    in_room,
    join,
    message,
    ok,
    query,
    room_service,  # noqa: F401  (the fixture h)
    start,
)

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "{urn:xmpp:sid:0}stanza-id"
FORWARDED = "{urn:xmpp:forward:0}forwarded"
ENABLE_ARCHIVING = "muc#roomconfig_enablearchiving"
CHATSTATES = "http://jabber.org/protocol/chatstates"
_queryids = itertools.count(1)


async def say(sender: Client, body: str) -> str:
    """`sender` (an occupant) says `body` in the room; the archive id its own copy carries."""
    await sender.send(f"<message to='{ROOM}' type='groupchat'><body>{body}</body></message>")
    (copy,) = [m for m in sender.take(message) if m.findtext(f"{{{CLIENT_NS}}}body") == body]
    sid = copy.find(SID)
    assert sid is not None and sid.get("by") == ROOM, etree.tostring(copy)
    return sid.get("id", "")


class Page:
    """The answer to one archive query: its result messages and the iq that ends it."""

    def __init__(self, results: list[etree._Element], iq: etree._Element) -> None:
        self.results = results
        self.iq = iq

    @property
    def ids(self) -> list[str]:
        return [r.find(f"{{{MAM}}}result").get("id", "") for r in self.results]  # type: ignore[union-attr]

    @property
    def forwarded(self) -> list[etree._Element]:
        """The archived messages, as kept (inside `<forwarded/>`)."""
        found = [r.find(f"{{{MAM}}}result/{FORWARDED}/{{{CLIENT_NS}}}message") for r in self.results]
        assert all(m is not None for m in found)
        return found  # type: ignore[return-value]

    @property
    def bodies(self) -> list[str]:
        return [m.findtext(f"{{{CLIENT_NS}}}body") or "" for m in self.forwarded]

    @property
    def complete(self) -> bool:
        fin = self.iq.find(f"{{{MAM}}}fin")
        assert fin is not None, etree.tostring(self.iq)
        return fin.get("complete") == "true"

    def rsm(self, name: str) -> str | None:
        return self.iq.findtext(f"{{{MAM}}}fin/{{{RSM}}}set/{{{RSM}}}{name}")


async def archive_query(client: Client, rsm: str = "", to: str = ROOM) -> Page:
    """`client` queries the archive of `to`; its results (checked to come from the room, to the
    client, in answer to this query) and the iq result after them."""
    queryid = f"q{next(_queryids)}"
    rsm_xml = f"<set xmlns='{RSM}'>{rsm}</set>" if rsm else ""
    await client.send(f"<iq type='set' id='{queryid}' to='{to}'><query xmlns='{MAM}' queryid='{queryid}'>"
                      f"{rsm_xml}</query></iq>")
    received = client.take()
    (reply,) = [stanza for stanza in received if iq_reply(stanza)]
    assert reply.get("type") == "result", etree.tostring(reply)
    assert received[-1] is reply, "the iq result comes after every result message"
    results = [stanza for stanza in received if stanza.find(f"{{{MAM}}}result") is not None]
    for result in results:
        # XEP-0313 §4.2: results come from the archive's JID, the room's.
        assert result.get("from") == to and result.get("to") == str(client.jid)
        assert result.find(f"{{{MAM}}}result").get("queryid") == queryid  # type: ignore[union-attr]
    return Page(results, reply)


async def archive_refused(client: Client, to: str = ROOM) -> str | None:
    """The error condition of an archive query that `client` is refused."""
    await client.send(f"<iq type='set' id='no' to='{to}'><query xmlns='{MAM}'/></iq>")
    (reply,) = client.take(iq_reply)
    assert reply.get("type") == "error", etree.tostring(reply)
    return error_condition(reply)


async def archived(h: Harness, room: str = "lobby") -> int:
    """How many messages the room's archive holds, looked at behind the protocol."""
    return await h.storage.archive.count(SERVICE, room, ArchiveQuery())


async def leave(client: Client, nick: str) -> None:
    await client.send(f"<presence to='{ROOM}/{nick}' type='unavailable'/>")
    client.take()


# -- reading a room's archive ---------------------------------------------------------------------


async def test_occupants_read_the_rooms_messages_with_the_ids_they_were_given(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    sent = [await say(alice, "first"), await say(bob, "second"), await say(alice, "third")]
    alice.take()
    bob.take()
    page = await archive_query(bob)
    assert page.ids == sent  # the stanza ids the live copies carried
    assert page.bodies == ["first", "second", "third"]
    # Kept as the occupants got them: from the occupant JID, with the room's stanza id.
    assert [m.get("from") for m in page.forwarded] == [f"{ROOM}/alice", f"{ROOM}/bob", f"{ROOM}/alice"]
    assert page.complete


async def test_paging_with_rsm_max(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    sent = [await say(alice, f"m{n}") for n in range(5)]
    bob.take()
    first = await archive_query(bob, "<max>2</max>")
    assert first.ids == sent[:2] and not first.complete
    assert first.rsm("first") == sent[0] and first.rsm("last") == sent[1]
    second = await archive_query(bob, f"<max>2</max><after>{first.rsm('last')}</after>")
    assert second.ids == sent[2:4] and not second.complete
    third = await archive_query(bob, f"<max>2</max><after>{second.rsm('last')}</after>")
    assert third.ids == sent[4:] and third.complete
    # From the end backwards (RSM <before/>), still oldest first within the page.
    last = await archive_query(bob, "<max>2</max><before/>")
    assert last.ids == sent[3:] and not last.complete


async def test_a_stranger_to_a_members_only_room_is_refused(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1"))
    await say(alice, "members only")
    dave = await h.connect("dave@localhost/desk")
    assert await archive_refused(dave) == "forbidden"
    assert dave.take() == []  # not one result leaked before the error
    assert (await archive_query(alice)).bodies == ["members only"]


async def test_a_room_that_does_not_archive_has_no_archive(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob", fields=field(ENABLE_ARCHIVING, "0"))
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>off the record</body></message>")
    (copy,) = alice.take(message)
    assert copy.find(SID) is None
    assert await archive_refused(bob) == "item-not-found"
    assert await archived(h) == 0


# -- the archive goes with the room ---------------------------------------------------------------


async def test_a_destroyed_rooms_archive_is_gone_when_the_name_is_taken_again(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob", fields=field(PERSISTENT, "1"))
    await say(alice, "between alice and bob")
    await say(bob, "only for us")
    assert await archived(h) == 2
    ok(await query(alice, OWNER, "<destroy/>"))
    assert await archived(h) == 0
    # Regression: carol takes the name; her new room (with its archive on) starts empty, not with
    # the messages of a room she was never in.
    carol = await create_room(h, owner="carol")
    page = await archive_query(carol)
    assert page.results == [] and page.complete
    # And what is said in it now is all it holds.
    new = await say(carol, "a fresh start")
    assert (await archive_query(carol)).ids == [new]


async def test_a_temporary_rooms_archive_goes_with_its_last_occupant(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")  # temporary: the default
    await say(alice, "hello")
    await say(bob, "bye")
    await leave(alice, "alice")
    assert await archived(h) == 2  # bob is still there: so is the room, and its archive
    await leave(bob, "bob")
    assert await archived(h) == 0
    carol = await create_room(h, owner="carol")
    assert (await archive_query(carol)).results == []


async def test_a_persistent_room_keeps_its_archive_when_everyone_leaves(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob", fields=field(PERSISTENT, "1"))
    kept = await say(bob, "still here tomorrow")
    await leave(alice, "alice")
    await leave(bob, "bob")
    assert await archived(h) == 1
    back = await join(h, "bob", resource="phone")
    back.take()
    assert (await archive_query(back)).ids == [kept]


async def test_a_failed_archive_deletion_is_logged_and_the_room_still_goes(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _bob = await in_room(h, "alice", "bob", fields=field(PERSISTENT, "1"))
    await say(alice, "stuck")

    async def broken(host: str, username: str) -> int:
        raise StorageError("database unreachable")

    monkeypatch.setattr(h.storage.archive, "delete_archive", broken)
    ok(await query(alice, OWNER, "<destroy/>"))  # the owner asked, the room is destroyed
    assert "deleting the archive of room lobby@conference.localhost failed" in caplog.text
    assert await archive_refused(alice) == "item-not-found"  # no such room any more


async def test_a_persistent_rooms_history_is_read_back_from_its_archive_after_a_restart(tmp_path: Path) -> None:
    async with start(tmp_path) as h:
        alice = await create_room(h, field(PERSISTENT, "1"))
        for n in range(3):
            await alice.send(f"<message to='{ROOM}' type='groupchat'><body>before {n}</body></message>")
        # A chat state is archived by nobody's rule here, and is no history either.
        await alice.send(f"<message to='{ROOM}' type='groupchat'><active xmlns='{CHATSTATES}'/></message>")
    async with start(tmp_path, restart=True) as h:
        bob = await join(h, "bob")
        history = [m for m in bob.take(message) if m.find(f"{{{CLIENT_NS}}}body") is not None]
        assert [m.findtext(f"{{{CLIENT_NS}}}body") for m in history] == [f"before {n}" for n in range(3)]
        for kept in history:
            assert kept.get("from") == f"{ROOM}/alice" and kept.get("to") == "bob@localhost/desk"
            delay = kept.find("{urn:xmpp:delay}delay")
            assert delay is not None and delay.get("from") == ROOM
        # Read back once: the next one to enter gets the same, not twice as much.
        carol = await join(h, "carol")
        assert len([m for m in carol.take(message) if m.find(f"{{{CLIENT_NS}}}body") is not None]) == 3

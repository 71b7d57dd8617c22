"""XEP-0049 private XML storage through the in-memory server: each account reads and writes its
own fragments, and nobody else's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from .harness import Client, Harness, error_condition

ALICE = "alice@localhost"
BOB = "bob@example.test"
NS = "jabber:iq:private"
MAX_SIZE = 1024
BOOKMARKS = "<storage xmlns='storage:bookmarks'><conference jid='room@conference.localhost' autojoin='true'/></storage>"
PREFS = "<prefs xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></prefs>"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path,
        hosts=("localhost", "example.test"),
        modules=("private",),
        options={"private": {"max_size": MAX_SIZE}},
    ) as harness:
        for account in (ALICE, BOB):
            await harness.account(account)
        yield harness


async def request(client: Client, type_: str, content: str, to: str | None = None) -> etree._Element:
    """Send a jabber:iq:private query; its answer is returned and taken out."""
    return await client.ask(type_, f"<query xmlns='{NS}'>{content}</query>", to)


async def stored(client: Client, asked: str, to: str | None = None) -> str:
    """The fragment a get answers, serialised as it came."""
    reply = await request(client, "get", asked, to)
    assert reply.get("type") == "result", etree.tostring(reply)
    query = reply.find(f"{{{NS}}}query")
    assert query is not None and len(query) == 1
    return etree.tostring(query[0], encoding="unicode")


def same(xml: str) -> str:
    """How `xml` serialises on its own (quotes, namespace declarations)."""
    return etree.tostring(etree.fromstring(xml), encoding="unicode")


async def store(client: Client, *fragments: str) -> None:
    assert (await request(client, "set", "".join(fragments))).get("type") == "result"


async def test_nothing_stored_answers_the_empty_element(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    assert await stored(alice, "<storage xmlns='storage:bookmarks'/>") == same("<storage xmlns='storage:bookmarks'/>")


async def test_fragments_are_stored_by_name_and_read_back_as_sent(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await store(alice, BOOKMARKS, PREFS)  # several in one set
    assert await stored(alice, "<storage xmlns='storage:bookmarks'/>") == same(BOOKMARKS)
    assert await stored(alice, "<prefs xmlns='exodus:prefs'/>", ALICE) == same(PREFS)
    # The name is the namespace and the local name: another element of a namespace is another fragment.
    assert await stored(alice, "<other xmlns='exodus:prefs'/>") == same("<other xmlns='exodus:prefs'/>")
    # Another resource of the account, a later session: the same data.
    laptop = await h.connect(f"{ALICE}/laptop")
    assert await stored(laptop, "<prefs xmlns='exodus:prefs'/>") == same(PREFS)


async def test_a_set_replaces_and_an_empty_element_deletes(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await store(alice, BOOKMARKS, PREFS)
    replaced = "<prefs xmlns='exodus:prefs' version='2'/>"  # an attribute: not empty
    await store(alice, replaced)
    assert await stored(alice, "<prefs xmlns='exodus:prefs'/>") == same(replaced)
    await store(alice, "<storage xmlns='storage:bookmarks'/>")
    assert await stored(alice, "<storage xmlns='storage:bookmarks'/>") == same("<storage xmlns='storage:bookmarks'/>")
    assert await h.storage.kv.all("localhost", "alice", "private") == {"{exodus:prefs}prefs": same(replaced)}


async def test_the_size_limit_counts_every_fragment_of_the_account(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    half = "x" * (MAX_SIZE // 2)
    first, second = f"<a xmlns='urn:t'>{half}</a>", f"<b xmlns='urn:t'>{half}</b>"
    await store(alice, first)
    # Together over the limit: refused, and nothing of the set is stored.
    reply = await request(alice, "set", f"<c xmlns='urn:t'/>{second}")
    assert (reply.get("type"), error_condition(reply)) == ("error", "not-acceptable")
    assert await h.storage.kv.all("localhost", "alice", "private") == {"{urn:t}a": same(first)}
    # Replacing a fragment counts its new size only; deleting one makes room.
    await store(alice, f"<a xmlns='urn:t'>{half}!</a>")
    await store(alice, "<a xmlns='urn:t'/>", second)
    assert await stored(alice, "<b xmlns='urn:t'/>") == same(second)
    # Another account has a limit of its own.
    bob = await h.connect(f"{BOB}/desk")
    await store(bob, first)


@pytest.mark.parametrize("type_", ["get", "set"])
@pytest.mark.parametrize(
    "content",
    [
        "",  # §2.3: at least one child
        "<storage/>",  # inherits jabber:iq:private: not a namespace of its own
        "<storage xmlns=''/>",
        "<c:x xmlns:c='jabber:client'/>",
        f"{PREFS}<storage/>",
    ],
)
async def test_a_fragment_needs_a_namespace_of_its_own(h: Harness, type_: str, content: str) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, type_, content)
    assert (reply.get("type"), error_condition(reply)) == ("error", "not-acceptable")
    assert await h.storage.kv.all("localhost", "alice", "private") == {}


async def test_a_get_asks_for_one_fragment(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, "get", "<storage xmlns='storage:bookmarks'/><prefs xmlns='exodus:prefs'/>")
    assert error_condition(reply) == "bad-request"


async def test_reserved_namespaces_other_than_the_querys_are_accepted(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    notes = "<storage xmlns='storage:rosternotes'><note jid='x@y'>hi</note></storage>"
    legacy = "<roster xmlns='jabber:iq:roster:delimiter'>::</roster>"
    await store(alice, notes, legacy)
    assert await stored(alice, "<roster xmlns='jabber:iq:roster:delimiter'/>") == same(legacy)


@pytest.mark.parametrize("to", [BOB, "localhost"])
async def test_nobody_reads_or_writes_another_accounts_data(h: Harness, to: str) -> None:
    bob = await h.connect(f"{BOB}/desk")
    await store(bob, PREFS)
    alice = await h.connect(f"{ALICE}/phone")
    for type_, content in (("get", "<prefs xmlns='exodus:prefs'/>"), ("set", "<prefs xmlns='exodus:prefs'/>")):
        reply = await request(alice, type_, content, to)
        assert (reply.get("type"), error_condition(reply)) == ("error", "forbidden")
        assert reply.find(".//{exodus:prefs}defaultnick") is None
    # Alice's own get under the same name is hers (nothing), Bob's is intact and his alone.
    assert await stored(alice, "<prefs xmlns='exodus:prefs'/>") == same("<prefs xmlns='exodus:prefs'/>")
    assert await stored(bob, "<prefs xmlns='exodus:prefs'/>") == same(PREFS)
    assert bob.take() == []


async def test_deleting_the_account_deletes_its_data(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    await store(alice, PREFS)
    await alice.disconnect()
    assert await h.storage.accounts.delete("localhost", "alice")
    await h.account(ALICE)
    alice = await h.connect(f"{ALICE}/phone")
    assert await stored(alice, "<prefs xmlns='exodus:prefs'/>") == same("<prefs xmlns='exodus:prefs'/>")

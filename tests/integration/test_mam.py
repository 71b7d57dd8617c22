"""XEP-0313 with real clients: a conversation, then slixmpp's xep_0313 pages through the archive
and finds every message under the stanza-id it was delivered with, also after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slixmpp import JID

from storage import Storage
from tests.integration.conftest import TIMEOUT, Client, XmppServer, write_config
from xmppd.config import load_config
from xmppd.server import Server

pytestmark = pytest.mark.integration

PLUGINS = ("xep_0313", "xep_0359")


async def converse(alice: Client, bob: Client, rounds: int) -> tuple[list[str], list[str]]:
    """Alice and Bob take turns; the stanza-ids each received, by=their own bare JID."""
    bob_ids: list[str] = []
    alice_ids: list[str] = []
    for i in range(rounds):
        mine, theirs = f"a{i}", f"b{i}"
        alice.send_message(mto="bob@example.test", mbody=mine, mtype="chat")
        received = await bob.next_message(lambda m, body=mine: m["body"] == body)
        assert received["stanza_id"]["by"] == "bob@example.test"
        bob_ids.append(received["stanza_id"]["id"])
        bob.send_message(mto="alice@localhost", mbody=theirs, mtype="chat")
        received = await alice.next_message(lambda m, body=theirs: m["body"] == body)
        assert received["stanza_id"]["by"] == "alice@localhost"
        alice_ids.append(received["stanza_id"]["id"])
    return alice_ids, bob_ids


async def page_through(client: Client, *, reverse: bool = False, with_jid: str | None = None,
                       max_: int = 4) -> list[tuple[str, str, str]]:
    """(archive id, from, body) of every message, paging with RSM as slixmpp does."""
    found: list[tuple[str, str, str]] = []
    mam: Any = client.plugin["xep_0313"]
    async for msg in mam.iterate(rsm={"max": max_}, reverse=reverse,
                                 with_jid=JID(with_jid) if with_jid else None):
        inner = msg["mam_result"]["forwarded"]["stanza"]
        found.append((msg["mam_result"]["id"], str(inner["from"].bare), inner["body"]))
    return found


async def test_conversation_pages_through_with_stanza_ids_also_after_restart(
    xmpp: XmppServer, storage: Storage, tmp_path: Path
) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@example.test")
    alice = await xmpp.login("alice@localhost", plugins=PLUGINS)
    bob = await xmpp.login("bob@example.test", plugins=PLUGINS)
    features = await bob.plugin["xep_0030"].get_info(jid="bob@example.test", timeout=TIMEOUT)
    assert {"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"} <= set(
        features["disco_info"]["features"]
    )

    alice_ids, bob_ids = await converse(alice, bob, 5)
    expected = [body for i in range(5) for body in (f"a{i}", f"b{i}")]

    forward = await page_through(bob)
    assert [body for _id, _from, body in forward] == expected
    # Every message Bob received is in his archive under the stanza-id it came with.
    assert [i for i, sender, _ in forward if sender == "alice@localhost"] == bob_ids
    ids = [i for i, _, _ in forward]
    assert ids == sorted(ids) and len(set(ids)) == 10
    backward = await page_through(bob, reverse=True, max_=3)
    assert backward == list(reversed(forward))
    only_alice = await page_through(alice, with_jid="bob@example.test")
    assert [i for i, sender, _ in only_alice if sender == "bob@example.test"] == alice_ids

    # A restart: a new server on the same database finds the same archive, the same ids.
    await xmpp.server.stop()
    server = Server(load_config(write_config(tmp_path)), storage=storage)
    await server.start()
    restarted = XmppServer(server)
    try:
        bob = await restarted.login("bob@example.test", plugins=PLUGINS)
        assert await page_through(bob, max_=7) == forward
        assert await page_through(bob, reverse=True) == backward
        # And the conversation goes on after what was there.
        alice = await restarted.login("alice@localhost", plugins=PLUGINS)
        _, more = await converse(alice, bob, 1)
        latest = await page_through(bob)
        assert latest[:10] == forward and latest[10][0] == more[0] > forward[-1][0]
    finally:
        for client in restarted.clients:
            client.abort()
        await server.stop()

"""Messenger-grade 1:1 messaging with real clients over TLS, on both storage backends: offline
delivery (XEP-0160), receipts (XEP-0184), chat markers (XEP-0333), chat states (XEP-0085),
carbons (XEP-0280) and blocking (XEP-0191)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import Storage
from tests.integration.conftest import TIMEOUT, Client, XmppServer, running_server

pytestmark = pytest.mark.integration

ALICE = "alice@localhost"
BOB = "bob@example.test"
CAROL = "carol@localhost"
LIMIT = 3  # the offline queue of one account


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    """The usual server (tests/integration/conftest.py) with a small offline queue."""
    async with running_server(storage, tmp_path, f"[modules.offline]\nmax_messages = {LIMIT}\n") as running:
        yield running


def events(client: Client, name: str) -> asyncio.Queue[Any]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    client.add_event_handler(name, queue.put_nowait)
    return queue


async def next_of(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


async def accounts(xmpp: XmppServer, *jids: str) -> None:
    for jid in jids:
        await xmpp.account(jid)


async def login_watching(xmpp: XmppServer, jid: str, event: str, plugins: tuple[str, ...]) -> tuple[Client, Any]:
    """Log in like `xmpp.login`, with a queue on `event` in place before anything can arrive."""
    client = xmpp.client(jid, plugins=plugins)
    queue = events(client, event)
    started = client.wait_for("session_start")
    client.connect("127.0.0.1", xmpp.port)
    await asyncio.wait_for(started, TIMEOUT)
    client.send_presence()
    return client, queue


async def settled(client: Client) -> None:
    """Everything `client` sent before was handled: the server answers one stream in order."""
    await client.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)


async def test_offline_messages_arrive_in_order_with_receipts_and_markers_flowing_back(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    bob = await xmpp.login(BOB, plugins=("xep_0184", "xep_0333", "xep_0085"))
    receipts = events(bob, "receipt_received")
    markers = events(bob, "marker_displayed")
    ids = []
    for n in range(LIMIT):
        msg = bob.make_message(mto=ALICE, mbody=f"message {n}", mtype="chat")
        msg["request_receipt"] = True
        msg.enable("markable")
        ids.append(msg["id"])
        msg.send()
        if n == 1:
            # Bob's typing while Alice is away is not kept for her (XEP-0160 §3).
            state = bob.make_message(mto=ALICE, mtype="chat")
            state["chat_state"] = "composing"
            state.send()
    await settled(bob)
    assert await xmpp.server.storage.offline.count("localhost", "alice") == LIMIT

    plugins = ("xep_0184", "xep_0333", "xep_0085", "xep_0203")
    alice, states = await login_watching(xmpp, ALICE, "chatstate", plugins)
    got = [await alice.next_message() for _ in range(LIMIT)]
    assert [m["body"] for m in got] == [f"message {n}" for n in range(LIMIT)]
    assert [m["id"] for m in got] == ids
    for message in got:
        assert message["from"] == bob.boundjid.full
        assert message["request_receipt"]  # the receipt request survived storage
        assert message["markable"] is not None
        assert message["delay"]["from"] == "localhost"  # XEP-0203, stamped on storing
    # Alice's client acknowledged each on arrival (auto_ack): Bob sees "delivered" three times.
    delivered = {(await next_of(receipts))["receipt"] for _ in range(LIMIT)}
    assert delivered == set(ids)
    # And "read" for the last one.
    alice.plugin["xep_0333"].send_marker(bob.boundjid.full, ids[-1], "displayed", mtype="chat")
    displayed = await next_of(markers)
    assert displayed["displayed"]["id"] == ids[-1] and displayed["from"] == alice.boundjid.full
    assert states.empty()  # the standalone chat state never arrived
    assert await xmpp.server.storage.offline.count("localhost", "alice") == 0


async def test_a_full_offline_queue_answers_with_an_error(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    bob = await xmpp.login(BOB)
    for n in range(LIMIT + 1):
        bob.send_message(mto=ALICE, mbody=f"message {n}", mtype="chat")
    error = await bob.next_message(lambda m: m["type"] == "error")
    assert error["error"]["condition"] == "service-unavailable"
    assert error["body"] == f"message {LIMIT}"
    assert await xmpp.server.storage.offline.count("localhost", "alice") == LIMIT


async def test_carbons_keep_a_second_device_in_the_conversation(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    phone = await xmpp.login(f"{ALICE}/phone", plugins=("xep_0280", "xep_0085"))
    laptop = await xmpp.login(f"{ALICE}/laptop", plugins=("xep_0280", "xep_0085"))
    bob = await xmpp.login(f"{BOB}/desk", plugins=("xep_0085",))
    await laptop.plugin["xep_0280"].enable(timeout=TIMEOUT)
    received = events(laptop, "carbon_received")
    sent = events(laptop, "carbon_sent")

    # Bob writes to the phone: the laptop gets a "received" copy.
    bob.send_message(mto=f"{ALICE}/phone", mbody="hello phone", mtype="chat")
    assert (await phone.next_message())["body"] == "hello phone"
    copy = await next_of(received)
    assert copy["from"] == ALICE
    assert copy["carbon_received"]["body"] == "hello phone"
    assert copy["carbon_received"]["from"] == bob.boundjid.full

    # The phone answers: the laptop gets a "sent" copy; Bob the message.
    phone.send_message(mto=BOB, mbody="hi Bob", mtype="chat")
    assert (await bob.next_message())["body"] == "hi Bob"
    copy = await next_of(sent)
    assert copy["carbon_sent"]["body"] == "hi Bob" and copy["carbon_sent"]["to"] == BOB

    # Bob types to the phone: the laptop sees the chat state as well (XEP-0280 §10.2).
    typing = bob.make_message(mto=f"{ALICE}/phone", mtype="chat")
    typing["chat_state"] = "composing"
    typing.send()
    copy = await next_of(received)
    assert copy["carbon_received"]["chat_state"] == "composing"

    # Private messages are not copied: the next copy the laptop sees is the one after it.
    private = phone.make_message(mto=BOB, mbody="just between us", mtype="chat")
    private.enable("carbon_private")
    private.send()
    phone.send_message(mto=BOB, mbody="public again", mtype="chat")
    assert (await next_of(sent))["carbon_sent"]["body"] == "public again"


async def test_chat_states_are_never_delivered_from_offline_storage(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB)
    bob = await xmpp.login(BOB, plugins=("xep_0085",))
    state = bob.make_message(mto=ALICE, mtype="chat")
    state["chat_state"] = "composing"
    state.send()
    bob.send_message(mto=ALICE, mbody="the message itself", mtype="chat")
    await settled(bob)
    assert await xmpp.server.storage.offline.count("localhost", "alice") == 1
    alice, states = await login_watching(xmpp, ALICE, "chatstate", ("xep_0085",))
    assert (await alice.next_message())["body"] == "the message itself"
    assert states.empty()
    # Alice back online: chat states reach her live again.
    state = bob.make_message(mto=ALICE, mtype="chat")
    state["chat_state"] = "paused"
    state.send()
    assert (await next_of(states))["chat_state"] == "paused"


async def test_a_blocked_user_is_refused_and_never_heard(xmpp: XmppServer) -> None:
    await accounts(xmpp, ALICE, BOB, CAROL)
    alice = await xmpp.login(ALICE, plugins=("xep_0191",))
    bob = await xmpp.login(BOB, plugins=("xep_0191",))
    carol = await xmpp.login(CAROL)
    await alice.plugin["xep_0191"].block(BOB, timeout=TIMEOUT)
    assert await alice.plugin["xep_0191"].get_blocked_jids(timeout=TIMEOUT) == {BOB}

    # Bob's message does not arrive; XEP-0191 §3.3: he gets service-unavailable.
    bob.send_message(mto=ALICE, mbody="can you hear me?", mtype="chat")
    error = await bob.next_message(lambda m: m["type"] == "error")
    assert error["error"]["condition"] == "service-unavailable"
    assert error["from"] == ALICE
    # Alice's stream is ordered: Carol's later message is the first one she gets.
    carol.send_message(mto=ALICE, mbody="after Bob", mtype="chat")
    assert (await alice.next_message())["body"] == "after Bob"

    # Alice writing to Bob is refused with not-acceptable and the blocked condition.
    alice.send_message(mto=BOB, mbody="sorry", mtype="chat")
    refused = await alice.next_message(lambda m: m["type"] == "error")
    assert refused["error"]["condition"] == "not-acceptable"
    assert refused.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None

    # Unblocked, they talk again.
    await alice.plugin["xep_0191"].unblock(BOB, timeout=TIMEOUT)
    bob.send_message(mto=ALICE, mbody="hello again", mtype="chat")
    assert (await alice.next_message())["body"] == "hello again"

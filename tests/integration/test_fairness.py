"""One client must never hurt the others (issue 10), over real sockets: a flooder is slowed and
then disconnected while a well-behaved pair keeps chatting; idle unauthenticated connections
cannot keep users out; a frozen TLS client does not hold up a stop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest

from storage import Storage
from xmppd import events
from xmppd.accounts import create_account
from xmppd.config import load_config
from xmppd.jid import parse_jid
from xmppd.server import STOP_GRACE, Server

from .conftest import PASSWORD, TIMEOUT, XmppServer, running_server, write_config
from .rawclient import RawClient

pytestmark = pytest.mark.integration

PING = "<iq type='get' id='p{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"


async def until_cut(client: RawClient) -> bytes:
    """What a client receives until its connection ends: closed, or cut off after the server's
    lingering close (a client that keeps sending gets a reset once the server stops reading)."""
    try:
        return await client.closed()
    except (ConnectionResetError, ssl.SSLError):
        return client.received


async def test_a_flooder_is_slowed_then_cut_off_while_others_chat(storage: Storage, tmp_path: Path) -> None:
    limits = "stanza_rate = 50.0\nstanza_burst = 100\nmax_throttled_seconds = 5.0"
    async with running_server(storage, tmp_path, c2s_extra=limits) as xmpp:
        alice = await xmpp.login(await xmpp.account("alice@localhost"))
        bob = await xmpp.login(await xmpp.account("bob@localhost"))
        await xmpp.account("mallory@localhost")
        flooder = await RawClient.connect(xmpp.port)
        await flooder.login("mallory", PASSWORD)
        sent = 0

        async def flood() -> None:
            nonlocal sent
            batch = "".join(PING.format(n=n) for n in range(500)).encode()
            while True:  # as fast as the connection takes it, until the server cuts it off
                flooder.writer.write(batch)
                sent += 500
                await flooder.writer.drain()

        flooding = asyncio.create_task(flood())
        served: asyncio.Task[bytes] | None = None
        try:
            await flooder.expect(b'type="result"')  # the flood is being served
            served = asyncio.create_task(until_cut(flooder))  # all the flooder gets, until cut off
            for n in range(20):  # meanwhile the pair chats, and every message arrives
                alice.send_message(mto=bob.boundjid.full, mbody=f"hello {n}", mtype="chat")
                assert (await bob.next_message())["body"] == f"hello {n}"
            assert not served.done()  # ... while the flooder is still connected, held back
            # It stays over its limits: it is closed with policy-violation.
            received = await served
            assert b"<policy-violation" in received
            assert received.count(b'type="result"') < sent  # throttled: most pings never served
        finally:
            flooding.cancel()
            if served is not None:
                served.cancel()
            flooder.close()
        alice.send_message(mto=bob.boundjid.full, mbody="after", mtype="chat")
        assert (await bob.next_message())["body"] == "after"


async def open_idle(xmpp: XmppServer) -> RawClient:
    """A connection that opens a stream and then does nothing."""
    idle = await RawClient.connect(xmpp.port)
    await idle.open_stream()
    return idle


async def test_idle_unauthenticated_connections_cannot_keep_users_out(storage: Storage, tmp_path: Path) -> None:
    budget = "max_unauthenticated = 3\nmax_unauthenticated_per_ip = 3"
    async with running_server(storage, tmp_path, c2s_extra=budget) as xmpp:
        await xmpp.account("alice@localhost")
        idle = [await open_idle(xmpp) for _ in range(3)]
        try:
            # A real user still gets in: the oldest idle connection makes room.
            alice = await xmpp.login("alice@localhost")
            assert b"<policy-violation" in await idle[0].closed()
            alice.send_message(mto="alice@localhost", mbody="note to self", mtype="chat")
            assert (await alice.next_message())["body"] == "note to self"
        finally:
            for client in idle:
                client.close()


async def test_when_the_budget_fills_the_waiting_get_less_time(storage: Storage, tmp_path: Path) -> None:
    budget = "max_unauthenticated = 3\nbusy_auth_timeout = 1.0"  # auth_timeout stays 5 s
    async with running_server(storage, tmp_path, c2s_extra=budget) as xmpp:
        first = await open_idle(xmpp)
        second = await open_idle(xmpp)  # two of three slots: over half full
        try:
            for idle in (first, second):
                assert b"<connection-timeout" in await idle.closed()
        finally:
            first.close()
            second.close()


async def test_a_frozen_tls_client_does_not_hold_up_the_stop(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(load_config(write_config(tmp_path)), storage=storage)
    await server.start()
    stopped = False
    try:
        assert await create_account(server.storage.accounts, parse_jid("alice@localhost"), PASSWORD)
        bound = asyncio.Event()
        server.hosts["localhost"].hooks.on(events.SESSION_BOUND, lambda _ev: bound.set())
        frozen = await RawClient.connect(server.ports["c2s"])
        await frozen.login("alice", PASSWORD)
        await asyncio.wait_for(bound.wait(), TIMEOUT)
        # From now on it reads nothing: TLS's closing handshake will never be answered.
        with caplog.at_level(logging.INFO):
            async with asyncio.timeout(2 * STOP_GRACE + 3):
                await server.stop()
            stopped = True
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        frozen.close()
    finally:
        if not stopped:
            await server.stop()


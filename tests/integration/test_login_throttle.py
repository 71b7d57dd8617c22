"""The login throttle over real sockets (issue 10): wrong passwords over parallel streams from one
address are refused outright past the threshold, while the account's owner, from another
address, still logs in. Loopback has many addresses: 127.0.0.2 is "another address"."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from storage import Storage

from .conftest import PASSWORD, TIMEOUT, running_server
from .rawclient import RawClient

pytestmark = pytest.mark.integration

LIMITS = "lockout_after = 3\naddress_lockout_after = 6"


async def connect(port: int, source: str) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return RawClient(reader, writer)


async def attempt(port: int, source: str, user: str, password: str) -> bytes:
    """One SASL PLAIN attempt on a fresh stream; the server's answer (success or failure)."""
    client = await connect(port, source)
    try:
        await client.starttls()
        client.received = b""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await client.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        async with asyncio.timeout(TIMEOUT):
            while b"<success" not in client.received and b"</failure>" not in client.received:
                chunk = await client.reader.read(65536)
                assert chunk, f"closed without an answer: {client.received!r}"
                client.received += chunk
        return client.received
    finally:
        client.close()


async def test_guessing_is_refused_past_the_threshold_but_the_owner_gets_in(storage: Storage, tmp_path: Path) -> None:
    async with running_server(storage, tmp_path, auth_extra=LIMITS) as xmpp:
        await xmpp.account("alice@localhost")
        port = xmpp.port
        # Three wrong guesses over parallel streams: each is checked and fails.
        answers = await asyncio.gather(*(attempt(port, "127.0.0.1", "alice", f"guess{n}") for n in range(3)))
        assert all(b"<not-authorized" in answer for answer in answers)
        # From now on that address is refused for alice without a check, even the right password.
        assert b"<temporary-auth-failure" in await attempt(port, "127.0.0.1", "alice", "guess3")
        assert b"<temporary-auth-failure" in await attempt(port, "127.0.0.1", "alice", PASSWORD)
        # The owner, elsewhere, is not locked out.
        assert b"<success" in await attempt(port, "127.0.0.2", "alice", PASSWORD)


async def test_an_address_guessing_at_many_accounts_is_refused_for_all(storage: Storage, tmp_path: Path) -> None:
    async with running_server(storage, tmp_path, auth_extra=LIMITS) as xmpp:
        for user in ("alice", "bob", "carol"):
            await xmpp.account(f"{user}@localhost")
        port = xmpp.port
        for user in ("alice", "bob", "carol"):  # 2 each: under the per-account lockout, 6 in all
            for n in range(2):
                assert b"<not-authorized" in await attempt(port, "127.0.0.1", user, f"guess{n}")
        assert b"<temporary-auth-failure" in await attempt(port, "127.0.0.1", "dave", "anything")
        assert b"<success" in await attempt(port, "127.0.0.2", "bob", PASSWORD)

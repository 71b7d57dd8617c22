"""An account deleted by another process (`xmppd deluser` while the server runs, later another
node of a cluster): the running server learns of it from storage's deletion log
(xmppd/deletions.py), ends the account's streams and drops what it kept of it in memory, so that
an account made again with that name gets nothing of the old one. The CLI runs as a real
process on the server's own database, on each backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import Storage
from tests.conftest import PG_DSN, StorageFactory
from tests.integration.conftest import TIMEOUT, running_server
from tests.integration.test_pep import ALICE, BOB, MOOD, accounts, befriend, online, payload, refused
from tests.integration.tools import xmppd

pytestmark = pytest.mark.integration


def same_database(factory: StorageFactory) -> str:
    """The [storage] table that points the CLI at the test's database."""
    if factory.backend == "sqlite":
        return f'[storage]\nbackend = "sqlite"\nsqlite_path = "{factory.sqlite_path}"\n'
    return f'[storage]\nbackend = "postgresql"\npostgres_dsn = "{PG_DSN}"\npostgres_schema = "{factory.pg_schema}"\n'


async def test_an_account_deleted_by_the_cli_loses_its_streams_and_its_nodes(
    storage: Storage, storage_factory: StorageFactory, tmp_path: Path
) -> None:
    async with running_server(storage, tmp_path, same_database(storage_factory)) as xmpp:
        await accounts(xmpp, ALICE, BOB)
        await befriend(xmpp, ALICE, BOB)
        alice = await online(xmpp, ALICE)
        bob = await online(xmpp, BOB)
        await alice.publish(MOOD, "current", payload(MOOD, "what only the first alice said"), access_model="open")
        assert await bob.items(ALICE, MOOD) == [("current", "what only the first alice said")]
        ended = alice.client.wait_for("stream_error")

        code, out, err = await xmppd(tmp_path / "xmppd.toml", "deluser", ALICE)
        assert (code, out) == (0, f"deleted {ALICE}\n"), err
        error = await asyncio.wait_for(ended, TIMEOUT)
        assert error["condition"] == "not-authorized"
        assert error["text"] == "account deleted"
        # Bob sees her go, as for any session that ends.
        await bob.client.next_presence(lambda p: p["from"].bare == ALICE and p["type"] == "unavailable")

        # The same name, a new account: nothing of the old one is served from memory.
        await accounts(xmpp, ALICE)
        again = await online(xmpp, f"{ALICE}/again")
        assert await refused(again.items(ALICE, MOOD)) == ("item-not-found", None)
        assert await refused(bob.items(ALICE, MOOD)) == ("item-not-found", None)

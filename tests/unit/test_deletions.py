"""The deletion log as a server follows it (xmppd/deletions.py), on each backend's real storage:
what was deleted before the server started and what it deleted itself are not reported; every
other deletion is, once, in order."""

from __future__ import annotations

from storage import Storage
from tests.storage.test_contract import HOST, creds
from xmppd.deletions import DeletionLog
from xmppd.jid import JID, parse_jid


async def delete(storage: Storage, *users: str) -> list[int]:
    """Make each account, then delete it: the deletions' numbers."""
    numbers = []
    for user in users:
        await storage.accounts.create(HOST, user, [creds()])
        seq = await storage.accounts.delete(HOST, user)
        assert seq is not None
        numbers.append(seq)
    return numbers


async def test_a_server_hears_of_each_deletion_made_elsewhere_once(storage: Storage) -> None:
    heard: list[JID] = []

    async def deleted_elsewhere(account: JID) -> None:
        heard.append(account)

    log = DeletionLog(storage.accounts, deleted_elsewhere)
    await delete(storage, "before")  # before the server started: nothing of it in memory
    await log.start()
    await log.catch_up()
    assert heard == []

    [here] = await delete(storage, "here")
    log.made_here(here)  # the server deleted it itself and handled it then
    await delete(storage, "cli", "other")
    await log.catch_up()
    assert heard == [parse_jid(f"cli@{HOST}"), parse_jid(f"other@{HOST}")]

    await log.catch_up()  # read already: not again
    await delete(storage, "cli")  # made again and deleted again: heard again
    await log.catch_up()
    assert heard[2:] == [parse_jid(f"cli@{HOST}")]


async def test_an_entry_that_fails_is_logged_and_the_next_ones_are_handled(storage: Storage) -> None:
    heard: list[JID] = []

    async def deleted_elsewhere(account: JID) -> None:
        if account.local == "broken":
            raise RuntimeError("a module failed on it")
        heard.append(account)

    log = DeletionLog(storage.accounts, deleted_elsewhere)
    await log.start()
    await delete(storage, "broken", "fine")
    await log.catch_up()
    assert heard == [parse_jid(f"fine@{HOST}")]
    await log.catch_up()  # the failed entry is not tried again
    assert heard == [parse_jid(f"fine@{HOST}")]

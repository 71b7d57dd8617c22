"""Accounts deleted by another process: the CLI (`xmppd deluser`), later another node of a cluster.

Storage logs every account deletion in the transaction that deletes it (AccountStore.delete). A
running server reads the log every POLL seconds from where it left off. For each account deleted
elsewhere it fires `account-deleted` on the account's host, so that what modules keep in memory
for it (PEP nodes, blocklists, push registrations, photo hashes) goes, then it ends the account's
streams with not-authorized, as an in-band removal does (XEP-0077 §3.2). Without this, an account
made again with the same name would be served the old one's PEP nodes (its private bookmarks
among them) from memory. A deletion this server made itself (`ModuleAPI.delete_account`) was
handled when it happened and is skipped.

Polling, not a notification channel: SQLite has none, and a few seconds is soon enough for an
admin's deletion. Each poll is one primary-key range read that usually finds no row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from storage import AccountStore, StorageError
from xmppd.jid import JID

log = logging.getLogger("xmppd.accounts")
POLL = 2.0  # seconds between two reads of the deletion log


class DeletionLog:
    """Where this server is in the deletion log, and the deletions it made itself."""

    def __init__(self, accounts: AccountStore, deleted_elsewhere: Callable[[JID], Awaitable[None]]) -> None:
        self._accounts = accounts
        self._deleted_elsewhere = deleted_elsewhere
        self.seen = 0  # the number of the last deletion read
        self._made_here: set[int] = set()

    async def start(self) -> None:
        """From now on: what was deleted before this server started has nothing in its memory."""
        self.seen = await self._accounts.latest_deletion()

    def made_here(self, seq: int) -> None:
        """This server deleted the account and handled it: `catch_up` skips that entry."""
        if seq > self.seen:
            self._made_here.add(seq)

    async def follow(self) -> None:
        """Catch up every POLL seconds, as long as the server runs."""
        while True:
            await asyncio.sleep(POLL)
            try:
                await self.catch_up()
            except StorageError as error:
                log.warning("could not read the log of deleted accounts (trying again): %s", error)

    async def catch_up(self) -> None:
        for seq, host, username in await self._accounts.deletions_after(self.seen):
            self.seen = seq  # first: an entry that fails below is not tried again and again
            if seq in self._made_here:
                self._made_here.discard(seq)
                continue
            try:
                account = JID(username, host, None)
                log.info("account %s was deleted by another process", account)
                await self._deleted_elsewhere(account)
            except Exception:  # one bad entry must not stop the server from following the log
                log.exception("could not handle the deletion of %s@%s (log entry %d)", username, host, seq)

"""What one slixmpp client received, kept in arrival order so that a test takes out what it
expects (waiting for it, never sleeping) and leaves the rest: `Inbox`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.integration.conftest import TIMEOUT, Client

CLIENT_NS = "jabber:client"
Stanza = Any  # a slixmpp Message or Presence
Match = Callable[[Stanza], bool]


class Inbox:
    """The stanzas of `kinds` (message, presence) that `keep` accepts, in arrival order."""

    def __init__(self, client: Client, kinds: Iterable[str], keep: Match) -> None:
        self._stanzas: list[Stanza] = []
        self._arrived = asyncio.Event()
        self._keep = keep
        for kind in kinds:
            client.register_handler(Callback(f"inbox {kind}", MatchXPath(f"{{{CLIENT_NS}}}{kind}"), self._put))

    def _put(self, stanza: Stanza) -> None:
        if self._keep(stanza):
            self._stanzas.append(stanza)
            self._arrived.set()

    async def _first(self, match: Match) -> int:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for index, stanza in enumerate(self._stanzas):
                    if match(stanza):
                        return index
                self._arrived.clear()
                await self._arrived.wait()

    async def take(self, match: Match) -> Stanza:
        """The first stanza `match` accepts, waiting for it; it leaves the inbox, the others stay."""
        return self._stanzas.pop(await self._first(match))

    async def seen(self, match: Match) -> Stanza:
        """The first stanza `match` accepts, waiting for it; it stays in the inbox."""
        return self._stanzas[await self._first(match)]

    async def until(self, match: Match, among: Match) -> list[Stanza]:
        """The stanzas `among` accepts up to the first one `match` accepts, that one last: all of
        them leave the inbox, the others stay."""
        end = await self._first(match)
        marker = self._stanzas[end]
        taken = [s for s in self._stanzas[:end] if among(s)] + [marker]
        self._stanzas = [s for s in self._stanzas[:end] if not among(s)] + self._stanzas[end + 1 :]
        return taken

    def pending(self, match: Match) -> list[Stanza]:
        return [stanza for stanza in self._stanzas if match(stanza)]

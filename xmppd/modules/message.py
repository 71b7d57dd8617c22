"""RFC 6121 §8.5: default delivery of messages to local accounts and resources.

Runs at priority -1 so that blocking, carbons and the archive see a message first. When an
account has no resource to take a chat or normal message, `message/offline` fires on the
recipient's host: offline storage (XEP-0160) plugs in there.
"""

from __future__ import annotations

from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("RFC 6121", "§8.5 message delivery")]
DEFAULT = -1


def setup(mod: ModuleAPI) -> None:
    sessions = mod.server.sessions
    accounts = mod.server.storage.accounts

    def to_full(ev: StanzaEvent) -> bool | None:
        stanza = ev.stanza
        assert stanza.to is not None
        session = sessions.get(stanza.to)
        if session is not None:
            session.send(stanza.element)
            return True
        # §8.5.3.2.1: no such resource; groupchat and errors are not rerouted to the account.
        if stanza.type == "groupchat":
            return ev.error("service-unavailable")
        if stanza.type == "error":
            return True
        return None  # handled like a message to the bare JID, below

    async def to_bare(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        kind = stanza.type or "normal"
        bare = stanza.to.bare
        if kind == "error":
            return True  # §8.5.2.1.1: errors to an account are ignored
        if kind == "groupchat":
            return ev.error("service-unavailable")
        if kind == "headline":
            # §8.5.2.1.1: every available resource with non-negative priority, or nobody.
            for session in sessions.available(bare):
                if session.priority >= 0:
                    session.send(stanza.element)
            return True
        targets = sessions.top_resources(bare)
        if targets:
            for session in targets:
                session.send(stanza.element)
            return True
        assert bare.local is not None
        if not await accounts.exists(bare.domain, bare.local):
            return ev.error("service-unavailable")  # §8.5.2.2.1 / §8.5.1: no such user
        if await ev.host.hooks.fire("message/offline", ev):
            return True
        return ev.error("service-unavailable")  # §8.5.2.2.1 with no offline storage

    def to_host(ev: StanzaEvent) -> bool:
        # Messages to the server itself carry nothing we act on (yet): drop them quietly.
        return True

    mod.on("message/full", to_full, DEFAULT)
    mod.on("message/full", to_bare, DEFAULT - 1)
    mod.on("message/bare", to_bare, DEFAULT)
    mod.on("message/host", to_host, DEFAULT)

"""RFC 6121 §8.5: default delivery of messages to local accounts and resources.

Runs at priority -1 so that blocking, carbons and the archive see a message first. When an
account has no resource to take a chat or normal message, `message/offline` fires on the
recipient's host: offline storage (XEP-0160) plugs in there.

`delivery_targets` is the delivery decision on its own, without I/O: default delivery acts on
it, and carbons (XEP-0280 §7) asks it which resources get the original so that only the others
get a copy.
"""

from __future__ import annotations

from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.session import Session
from xmppd.sessions import SessionRegistry

PROTOCOLS = [("RFC 6121", "§8.5 message delivery")]
DEFAULT = -1


def delivery_targets(sessions: SessionRegistry, stanza: Stanza) -> list[Session]:
    """The local resources that get a message to a local account under RFC 6121 §8.5.2-§8.5.3
    (empty: nobody, and default delivery decides between an error, offline storage or silence)."""
    to = stanza.to
    assert to is not None
    kind = stanza.type or "normal"
    if to.resource is not None:
        session = sessions.get(to)
        if session is not None:
            return [session]  # §8.5.3.1
        if kind in ("groupchat", "error"):
            return []  # §8.5.3.2.1: not rerouted to the account
    if kind in ("error", "groupchat"):
        return []  # §8.5.2.1.1: ignored, or refused
    bare = to.bare
    if kind == "headline":
        # §8.5.2.1.1: every available resource with non-negative priority, or nobody.
        return [session for session in sessions.available(bare) if session.priority >= 0]
    return sessions.top_resources(bare)


def setup(mod: ModuleAPI) -> None:
    sessions = mod.server.sessions
    server = mod.server

    async def deliver(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        targets = delivery_targets(sessions, stanza)
        for session in targets:
            session.send(stanza.element)
        if targets:
            return True
        kind = stanza.type or "normal"
        if kind == "error":
            return True  # §8.5.2.1.1 / §8.5.3.2.1: errors nobody can take are dropped
        if kind == "groupchat":
            return ev.error("service-unavailable")
        if kind == "headline":
            return True  # §8.5.2.1.1: with no resource to take it, silently ignored
        if not await server.account_exists(stanza.to.bare):
            return ev.error("service-unavailable")  # §8.5.2.2.1 / §8.5.1: no such user
        if await ev.host.hooks.fire("message/offline", ev):
            return True
        return ev.error("service-unavailable")  # §8.5.2.2.1 with no offline storage

    def to_host(ev: StanzaEvent) -> bool:
        # Messages to the server itself carry nothing we act on (yet): drop them quietly.
        return True

    mod.on("message/full", deliver, DEFAULT)
    mod.on("message/bare", deliver, DEFAULT)
    mod.on("message/host", to_host, DEFAULT)

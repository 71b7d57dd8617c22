"""RFC 6121 §8.5: default delivery of messages to local accounts and resources.

Runs at priority -1 so that blocking, carbons and the archive see a message first. When an
account has no resource to take a chat or normal message, `message/offline` fires on the
recipient's host: offline storage (XEP-0160) plugs in there.

The delivery decision itself (`router.delivery_targets`) is made once per message and kept on
the event (`ev.recipients`): default delivery acts on it, carbons (XEP-0280 §7) asks it which
resources get the original so that only the others get a copy, offline storage whether a
message would overtake stored ones.
"""

from __future__ import annotations

from xmppd import events
from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("RFC 6121", "§8.5 message delivery")]
DEFAULT = -1


def setup(mod: ModuleAPI) -> None:
    async def deliver(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        targets = ev.recipients
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
        if not await mod.account_exists(stanza.to.bare):
            return ev.error("service-unavailable")  # §8.5.2.2.1 / §8.5.1: no such user
        if await mod.fire(events.MESSAGE_OFFLINE, ev):
            return True
        return ev.error("service-unavailable")  # §8.5.2.2.1 with no offline storage

    def to_host(ev: StanzaEvent) -> bool:
        # Messages to the server itself carry nothing we act on (yet): drop them quietly.
        return True

    mod.on("message/full", deliver, DEFAULT)
    mod.on("message/bare", deliver, DEFAULT)
    mod.on("message/host", to_host, DEFAULT)

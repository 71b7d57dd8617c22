"""RFC 6120 §8.2.3 / RFC 6121 §8.5: default handling of iq stanzas.

An iq get/set that no module claims is answered with service-unavailable by the router.
Here: delivery to a bound resource, and results/errors that nobody waits for are dropped
(answering them would start an error loop, RFC 6120 §8.3.1).
"""

from __future__ import annotations

from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("RFC 6120", "§8.2.3 iq semantics")]
DEFAULT = -1


def setup(mod: ModuleAPI) -> None:
    sessions = mod.sessions

    def to_full(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        session = sessions.get(stanza.to)
        if session is not None:
            session.send(stanza.element)
            return True
        # §8.5.3.2.1 (iq): no such resource.
        return ev.error("service-unavailable") if stanza.type in ("get", "set") else True

    def not_for_us(ev: StanzaEvent) -> bool:
        # get/set: unclaimed, the router answers service-unavailable; result/error: dropped.
        return ev.stanza.type not in ("get", "set")

    mod.on("iq/full", to_full, DEFAULT)
    for target in ("bare", "self", "host"):
        mod.on(f"iq/{target}", not_for_us, DEFAULT)

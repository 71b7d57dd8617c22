"""XEP-0199: XMPP Ping (client-to-server)."""

from __future__ import annotations

from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("XEP-0199", "2.0.1")]
NS = "urn:xmpp:ping"


def setup(mod: ModuleAPI) -> None:
    mod.add_feature(NS)
    mod.on_iq("get", NS, "ping", pong)


def pong(ev: StanzaEvent) -> bool:
    ev.respond(ev.stanza.reply())
    return True

"""RFC 3921 §3 session establishment, kept as the no-op that RFC 6121 Appendix E and
draft-cridland-xmpp-session describe: some older clients still send it after binding."""

from __future__ import annotations

from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("RFC 3921", "§3 session (optional, no-op)")]
NS = "urn:ietf:params:xml:ns:xmpp-session"


def setup(mod: ModuleAPI) -> None:
    mod.on_iq("set", NS, "session", established, targets=("host", "self"))


def established(ev: StanzaEvent) -> bool:
    ev.respond(ev.stanza.reply())
    return True

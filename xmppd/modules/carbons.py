"""XEP-0280: Message Carbons (urn:xmpp:carbons:2), with the XEP-0334 no-copy hint.

A resource turns carbons on or off for itself (§4, §5; repeated requests just succeed, §10.1).
Copies are wrapped per XEP-0297 in `<sent/>` or `<received/>`, from the account's bare JID to
the full JID of the resource that gets them (§7, §8):

- sent (on the sender's host, `pre-message/bare|full`): to every other carbons-enabled resource
  of the sender, whether or not the sending one has carbons on;
- received (on the recipient's host, `message/bare|full`): to every carbons-enabled resource of
  the recipient that does not get the original under RFC 6121 — the event's `recipients` (the
  delivery decision, made once) says which do, so this module never second-guesses default
  delivery.

Both run at priority 10: after blocking (100), which may stop a message, and after the archive
(50), so that copies carry the stanza-id it stamps; before default delivery (-1).

Which messages (§6.1, decided by `eligible`, without I/O): chat; normal with a body; any type
carrying receipts (XEP-0184), chat states (XEP-0085) or chat markers (XEP-0333); XEP-0249 and
mediated MUC invitations. Never: groupchat, a private message from a MUC occupant (the room
copies those itself), anything with `<private/>` or the no-copy hint (§9, XEP-0334 §4.3),
anything that is itself a carbon. Errors are not copied: §6.1 copies an error only when it
answers an eligible message, which needs per-message tracking we do not keep, so the server
does not advertise urn:xmpp:carbons:rules:0.
"""

from __future__ import annotations

import copy

from lxml import etree

from xmppd.elements import element
from xmppd.jid import JID
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS

# XEP-0334 and XEP-0085 are declared in offline.py (each spec once in the DOAP).
PROTOCOLS = [
    ("XEP-0280", "1.0.1"),
    ("XEP-0297", "1.0", "complete", "the wrapping of carbon copies"),
    ("XEP-0184", "1.4.0", "complete", "receipts pass through, are stored offline and carbon-copied"),
    ("XEP-0333", "1.0.0", "complete", "markers pass through, are stored offline and carbon-copied"),
]
NS = "urn:xmpp:carbons:2"
FORWARD_NS = "urn:xmpp:forward:0"
HINTS_NS = "urn:xmpp:hints"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
CONFERENCE_NS = "jabber:x:conference"  # XEP-0249 direct invitations
# Payloads "typically used in IM" (§6.1): receipts, chat states, chat markers.
IM_PAYLOAD_NS = ("urn:xmpp:receipts", "http://jabber.org/protocol/chatstates", "urn:xmpp:chat-markers:0")
PRIORITY = 10
FLAG = "carbons"  # session flag (set through the registry) while the resource has carbons on


def eligible(stanza: Stanza, *, received: bool) -> bool:
    """§6.1 (see the module docstring): whether a message is copied at all."""
    kind = stanza.type or "normal"
    if kind in ("error", "groupchat"):
        return False
    msg = stanza.element
    namespaces = set()
    muc_user: etree._Element | None = None
    for child in msg:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace == NS:
            return False  # <private/> (§9), or a carbon itself (<sent/>, <received/>)
        if qname.namespace == HINTS_NS and qname.localname == "no-copy":
            return False
        if qname.namespace == MUC_USER_NS and qname.localname == "x":
            muc_user = child
        namespaces.add(qname.namespace)
    invitation = CONFERENCE_NS in namespaces or (
        muc_user is not None and muc_user.find(f"{{{MUC_USER_NS}}}invite") is not None
    )
    if invitation:
        return True
    if received and muc_user is not None and stanza.from_ is not None and stanza.from_.resource is not None:
        return False  # a private message from an occupant: the room serves every joined client
    if kind == "chat":
        return True
    if kind == "normal" and msg.find(f"{{{CLIENT_NS}}}body") is not None:
        return True
    return any(ns in namespaces for ns in IM_PAYLOAD_NS)


def wrap(direction: str, stanza: Stanza, account: JID, to: JID) -> etree._Element:
    """The XEP-0297 forwarded copy of `stanza` in `<sent/>` or `<received/>` (§7, §8)."""
    attrib = {"from": str(account), "to": str(to)}
    if stanza.type is not None:
        attrib["type"] = stanza.type
    outer = element(f"{{{CLIENT_NS}}}message", attrib)
    marker = element(f"{{{NS}}}{direction}", parent=outer)
    forwarded = element(f"{{{FORWARD_NS}}}forwarded", parent=marker)
    forwarded.append(copy.deepcopy(stanza.element))
    return outer


def setup(mod: ModuleAPI) -> None:
    carbons = Carbons(mod)
    mod.add_feature(NS)
    mod.on_iq("set", NS, "enable", carbons.enable, targets=("self",))
    mod.on_iq("set", NS, "disable", carbons.disable, targets=("self",))
    for target in ("bare", "full"):
        mod.on(f"pre-message/{target}", carbons.sent, PRIORITY)
        mod.on(f"message/{target}", carbons.received, PRIORITY)


class Carbons:
    def __init__(self, mod: ModuleAPI) -> None:
        self.sessions = mod.sessions

    # -- §4, §5 ----------------------------------------------------------------------------------

    def enable(self, ev: StanzaEvent) -> bool:
        return self._switch(ev, on=True)

    def disable(self, ev: StanzaEvent) -> bool:
        return self._switch(ev, on=False)

    def _switch(self, ev: StanzaEvent, *, on: bool) -> bool:
        session = ev.origin
        if session is None:
            return ev.error("not-allowed", "carbons are for this server's own clients")
        self.sessions.set_flag(session, FLAG, on)
        ev.respond(ev.stanza.reply())
        return True

    # -- §7, §8 ----------------------------------------------------------------------------------

    def sent(self, ev: StanzaEvent) -> None:
        origin = ev.origin
        if origin is None:
            return
        # Who would get a copy is two dict lookups; eligibility walks the payload: ask it last.
        others = [session for session in self._enabled(origin.bare) if session is not origin]
        if not others or not eligible(ev.stanza, received=False):
            return
        for session in others:
            session.send(wrap("sent", ev.stanza, origin.bare, session.jid))

    def received(self, ev: StanzaEvent) -> None:
        stanza = ev.stanza
        assert stanza.to is not None
        account = stanza.to.bare
        enabled = self._enabled(account)
        if not enabled or not eligible(stanza, received=True):
            return
        targets = ev.recipients
        for session in enabled:
            if session not in targets:
                session.send(wrap("received", stanza, account, session.jid))

    def _enabled(self, account: JID) -> list[Session]:
        return [session for session in self.sessions.resources(account) if FLAG in session.flags]

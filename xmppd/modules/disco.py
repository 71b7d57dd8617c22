"""XEP-0030: Service Discovery (info and items), with XEP-0128 extended information and the
XEP-0115 verification string that names a disco#info answer: computed here, where the data is,
for the server's own features, and used by caps.py to verify what clients announce."""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Awaitable, Callable, Iterable

from lxml import etree

from xmppd.elements import element
from xmppd.host import Host, Identity
from xmppd.module import ModuleAPI, Stanza, StanzaEvent

PROTOCOLS = [("XEP-0030", "2.5.0"), ("XEP-0128", "1.0")]
INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
DATA_NS = "jabber:x:data"
CAPS_NODE = "https://xmppd.dev/caps"


def setup(mod: ModuleAPI) -> None:
    """On a user host: the server's identity, its items and what it answers for accounts. On a
    component host: info and items of the service, whose modules add its identity and features."""
    if mod.host.kind == "user":
        mod.add_identity("server", "im", "xmppd")
        mod.on_iq("get", INFO_NS, "query", account_info(mod), targets=("self", "bare"))
    mod.add_feature(INFO_NS)
    mod.add_feature(ITEMS_NS)

    def host_info(ev: StanzaEvent) -> bool:
        query = ev.stanza.payload()
        assert query is not None
        node = query.get("node")
        if node is not None and node != f"{CAPS_NODE}#{caps_ver(ev.host)}":
            return ev.error("item-not-found")
        ev.respond(info_reply(ev, ev.host.identities, ev.host.features, ev.host.extensions, node))
        return True

    def host_items(ev: StanzaEvent) -> bool:
        query = ev.stanza.payload()
        assert query is not None
        if query.get("node") is not None:
            return ev.error("item-not-found")
        reply = ev.stanza.reply()
        query = element(f"{{{ITEMS_NS}}}query", parent=reply.element)
        for item in ev.host.items:
            attrib = {"jid": item.jid}
            if item.name:
                attrib["name"] = item.name
            if item.node:
                attrib["node"] = item.node
            element(f"{{{ITEMS_NS}}}item", attrib, parent=query)
        ev.respond(reply)
        return True

    mod.on_iq("get", INFO_NS, "query", host_info)
    mod.on_iq("get", ITEMS_NS, "query", host_items)


def account_info(mod: ModuleAPI) -> Callable[[StanzaEvent], Awaitable[bool]]:
    async def answer(ev: StanzaEvent) -> bool:
        # XEP-0030 §3.1 / RFC 6121: the server answers for an account; a contact that is not
        # subscribed learns nothing more than that the account exists.
        stanza = ev.stanza
        account = stanza.to.bare if stanza.to is not None else ev.origin.bare if ev.origin else None
        assert account is not None and account.local is not None
        payload = stanza.payload()
        if payload is not None and payload.get("node") is not None:
            return ev.error("item-not-found")
        if not await mod.account_exists(account):
            return ev.error("service-unavailable")
        ev.respond(info_reply(ev, ev.host.account_identities, ev.host.account_features, [], None))
        return True

    return answer


def info_reply(
    ev: StanzaEvent,
    identities: Iterable[Identity],
    features: Iterable[str],
    forms: Iterable[etree._Element],
    node: str | None,
) -> Stanza:
    reply = ev.stanza.reply()
    query = element(f"{{{INFO_NS}}}query", {"node": node} if node else None, parent=reply.element)
    for identity in sorted(set(identities)):
        attrib = {"category": identity.category, "type": identity.type}
        if identity.name:
            attrib["name"] = identity.name
        element(f"{{{INFO_NS}}}identity", attrib, parent=query)
    for feature in sorted(set(features)):
        element(f"{{{INFO_NS}}}feature", {"var": feature}, parent=query)
    for form in forms:
        query.append(copy.deepcopy(form))
    return reply


def caps_ver(host: Host) -> str:
    """XEP-0115 §5.1 verification string of the host's disco#info (SHA-1, base64): what
    `host_info` answers, duplicates dropped as `info_reply` drops them."""
    identities = {(i.category, i.type, "", i.name or "") for i in host.identities}
    return caps_hash(verification_input(identities, set(host.features), host.extensions))


CapsIdentity = tuple[str, str, str, str]  # category, type, xml:lang, name ("" when absent)


def verification_input(
    identities: Iterable[CapsIdentity], features: Iterable[str], forms: Iterable[etree._Element]
) -> str:
    """XEP-0115 §5.1 steps 1-7: the string S that a disco#info answer is named by. Sorting by
    code point is the "i;octet" collation the XEP asks for, since UTF-8 keeps that order."""
    parts = [f"{category}/{type_}/{lang}/{name}<" for category, type_, lang, name in sorted(identities)]
    parts.extend(f"{feature}<" for feature in sorted(features))
    for form in sorted(forms, key=form_type):
        parts.append(f"{form_type(form)}<")
        fields = [f for f in form.iter(f"{{{DATA_NS}}}field") if f.get("var") != "FORM_TYPE"]
        for field in sorted(fields, key=lambda f: f.get("var", "")):
            parts.append(f"{field.get('var')}<")
            values = sorted(v.text or "" for v in field.iter(f"{{{DATA_NS}}}value"))
            parts.extend(f"{value}<" for value in values)
    return "".join(parts)


def caps_hash(verification: str) -> str:
    """XEP-0115 §5.1 steps 8-9: the 'ver' of S, with SHA-1 (the hash every client uses)."""
    digest = hashlib.sha1(verification.encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def form_type_field(form: etree._Element) -> etree._Element | None:
    """The FORM_TYPE field of an XEP-0128 extended information form."""
    return next((f for f in form.iter(f"{{{DATA_NS}}}field") if f.get("var") == "FORM_TYPE"), None)


def form_type(form: etree._Element) -> str:
    field = form_type_field(form)
    return (field.findtext(f"{{{DATA_NS}}}value") or "") if field is not None else ""

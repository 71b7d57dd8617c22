"""XEP-0157: Contact Addresses for XMPP Services, published as XEP-0128 extended disco info."""

from __future__ import annotations

from xmppd.elements import element
from xmppd.module import ModuleAPI, Option

PROTOCOLS = [("XEP-0157", "1.1.1")]
DATA_NS = "jabber:x:data"
FORM_TYPE = "http://jabber.org/network/serverinfo"
# XEP-0157 §4 registered field names, without the '-addresses' suffix.
KINDS = ("abuse", "admin", "feedback", "sales", "security", "status", "support")
OPTIONS = {
    kind: Option((), f"URIs (mailto:, xmpp:, https:) for {kind} contact", kind=(list, tuple)) for kind in KINDS
}


def setup(mod: ModuleAPI) -> None:
    addresses = {kind: tuple(mod.options[kind]) for kind in KINDS}
    if not any(addresses.values()):
        return
    form = element(f"{{{DATA_NS}}}x", {"type": "result"})
    form_type = element(f"{{{DATA_NS}}}field", {"var": "FORM_TYPE", "type": "hidden"}, parent=form)
    element(f"{{{DATA_NS}}}value", parent=form_type).text = FORM_TYPE
    for kind, uris in addresses.items():
        if uris:
            field = element(f"{{{DATA_NS}}}field", {"var": f"{kind}-addresses"}, parent=form)
            for uri in uris:
                element(f"{{{DATA_NS}}}value", parent=field).text = uri
    mod.add_extension(form)

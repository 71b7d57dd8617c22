"""RFC 6120 §8 stanzas: a thin wrapper on an lxml element with its addresses parsed once.

Stanzas inside the server are always in the `jabber:client` namespace; other stream
namespaces (`jabber:server`, `jabber:component:accept`) are translated at their edge.
"""

from __future__ import annotations

import copy

from lxml import etree

from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.jid import JID, InvalidJID, parse_jid

CLIENT_NS = "jabber:client"
KINDS = frozenset(("message", "presence", "iq"))
_TAGS = {f"{{{CLIENT_NS}}}{kind}": kind for kind in KINDS}
STANZA_TAGS = frozenset(_TAGS)  # the qualified tags of the three stanza kinds
IQ_TYPES = frozenset(("get", "set", "result", "error"))


class Stanza:
    """A message, presence or iq with its addresses parsed and prepared (RFC 7622)."""

    __slots__ = ("element", "from_", "id", "kind", "to", "type")

    def __init__(self, element: etree._Element, kind: str, to: JID | None, from_: JID | None) -> None:
        self.element = element
        self.kind = kind
        self.to = to
        self.from_ = from_
        self.type: str | None = element.get("type")
        self.id: str | None = element.get("id")

    @classmethod
    def parse(cls, element: etree._Element) -> Stanza:
        """Wrap an element, preparing its addresses; StanzaError('jid-malformed') on a bad one."""
        kind = _TAGS.get(element.tag)
        if kind is None:
            raise ValueError(f"not a stanza: {element.tag}")
        return cls(element, kind, _address(element, "to"), _address(element, "from"))

    @classmethod
    def build(
        cls, kind: str, *, to: JID | None, from_: JID | None, type_: str | None = None, id_: str | None = None
    ) -> Stanza:
        attrib = {}
        if to is not None:
            attrib["to"] = str(to)
        if from_ is not None:
            attrib["from"] = str(from_)
        if type_:
            attrib["type"] = type_
        if id_ is not None:
            attrib["id"] = id_
        return cls(element(f"{{{CLIENT_NS}}}{kind}", attrib), kind, to, from_)

    def payload(self) -> etree._Element | None:
        """The first child element (an iq's single payload)."""
        for child in self.element:
            if isinstance(child.tag, str):
                return child
        return None

    def set_from(self, from_: JID) -> None:
        self.from_ = from_
        self.element.set("from", str(from_))

    def set_to(self, to: JID) -> None:
        self.to = to
        self.element.set("to", str(to))

    def reply(self) -> Stanza:
        """An iq result (or same-kind stanza) addressed back, with the same id."""
        type_ = "result" if self.kind == "iq" else self.type
        return Stanza.build(self.kind, to=self.from_, from_=self.to, type_=type_, id_=self.id)

    def error_reply(self, error: StanzaError) -> Stanza:
        """RFC 6120 §8.3.1: same kind and id, addresses swapped, type 'error'.

        A message or presence keeps its payload so the sender can tell which one failed; an iq
        carries only the error, which is all a client needs to match its request.
        """
        reply = Stanza.build(self.kind, to=self.from_, from_=self.to, type_="error", id_=self.id)
        if self.kind != "iq":
            for child in self.element:
                if isinstance(child.tag, str) and child.tag != f"{{{CLIENT_NS}}}error":
                    reply.element.append(_copy(child))
        reply.element.append(error.to_element(CLIENT_NS))
        return reply

    def copy(self) -> Stanza:
        return Stanza(_copy(self.element), self.kind, self.to, self.from_)

    def __repr__(self) -> str:
        return f"<Stanza {self.kind} type={self.type} to={self.to} from={self.from_} id={self.id}>"


def _address(element: etree._Element, attribute: str) -> JID | None:
    value = element.get(attribute)
    if value is None:
        return None
    try:
        return parse_jid(value)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", f"invalid '{attribute}' address: {exc}") from None


def _copy(node: etree._Element) -> etree._Element:
    return copy.deepcopy(node)

"""RFC 6120 §4.9 stream errors and §8.3 stanza errors, turned into XML in one place."""

from __future__ import annotations

from typing import Any

from lxml import etree

from xmppd.elements import element

STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# RFC 6120 §8.3.3: the error type each defined condition is usually sent with.
_DEFAULT_STANZA_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


class StreamError(Exception):
    """A condition that ends the whole stream (RFC 6120 §4.9.3)."""

    def __init__(self, condition: str, text: str | None = None, application: etree._Element | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        # An application-specific condition (RFC 6120 §4.9.4), e.g. XEP-0198's handled-count-too-high.
        self.application = application
        # What a parser had completed before it hit the error, to be handled before closing.
        self.partial: list[Any] = []

    def to_xml(self) -> bytes:
        error = etree.Element(f"{{{STREAMS_NS}}}error", nsmap={"stream": STREAMS_NS})
        element(f"{{{STREAM_ERRORS_NS}}}{self.condition}", parent=error)
        if self.text:
            element(f"{{{STREAM_ERRORS_NS}}}text", parent=error).text = self.text
        if self.application is not None:
            error.append(self.application)
        return etree.tostring(error)


class StanzaError(Exception):
    """A condition answered with a type='error' stanza; the stream goes on (RFC 6120 §8.3)."""

    def __init__(self, condition: str, text: str | None = None, error_type: str | None = None) -> None:
        if condition not in _DEFAULT_STANZA_ERROR_TYPES:
            raise ValueError(f"unknown stanza error condition {condition!r}")
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.type = error_type or _DEFAULT_STANZA_ERROR_TYPES[condition]

    @classmethod
    def from_reply(cls, reply: etree._Element) -> StanzaError:
        """The error an error stanza carries (undefined-condition when it names none we know)."""
        condition, text, error_type = "undefined-condition", None, None
        for error in reply:
            if isinstance(error.tag, str) and etree.QName(error).localname == "error":
                error_type = error.get("type")
                for child in error:
                    qname = etree.QName(child)
                    if qname.namespace != STANZA_ERRORS_NS:
                        continue
                    if qname.localname == "text":
                        text = child.text
                    elif qname.localname in _DEFAULT_STANZA_ERROR_TYPES:
                        condition = qname.localname
        return cls(condition, text, error_type)

    def to_element(self, client_ns: str) -> etree._Element:
        """The `<error/>` child for a stanza in the `client_ns` content namespace."""
        error = element(f"{{{client_ns}}}error", {"type": self.type})
        element(f"{{{STANZA_ERRORS_NS}}}{self.condition}", parent=error)
        if self.text:
            element(f"{{{STANZA_ERRORS_NS}}}text", parent=error).text = self.text
        return error

"""Building XML elements the way clients expect to read them, and keeping them as text."""

from __future__ import annotations

import copy
import re

from lxml import etree


def element(tag: str, attrib: dict[str, str] | None = None, parent: etree._Element | None = None) -> etree._Element:
    """Create `{ns}name` with `ns` as the default namespace.

    lxml would otherwise invent `ns0:` prefixes, which some clients read badly; a child in its
    parent's namespace needs no declaration of its own.
    """
    ns = tag[1 : tag.index("}")] if tag[0] == "{" else None
    # lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants.
    nsmap: dict[str, str] = {None: ns}  # type: ignore[dict-item]
    if parent is None:
        return etree.Element(tag, attrib, nsmap=nsmap)
    if parent.nsmap.get(None) == ns:
        return etree.SubElement(parent, tag, attrib)
    return etree.SubElement(parent, tag, attrib, nsmap=nsmap)


# Stored XML came from a client once: parsed back without entities, a DTD or the network.
_STORED = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def to_text(node: etree._Element) -> str:
    """An element as XML text to store. A copy is serialised: it declares only the namespaces it
    uses (the element in place would repeat every declaration in scope) and has no tail text."""
    return etree.tostring(copy.deepcopy(node), encoding="unicode", with_tail=False)


def from_text(text: str | bytes) -> etree._Element:
    """An element stored with `to_text` (or kept serialised, as a session's presence), parsed back."""
    return etree.fromstring(text, _STORED)


def kept(node: etree._Element) -> etree._Element:
    """A copy of a stanza to keep once it is handled (a room occupant's presence).

    A stanza from a stream is a deep copy out of the stream's document (xml.py), and lxml ties
    every copy to the parser of the document it came from: keeping the stanza would keep that
    parser alive, about 10 KB, even once the stream let go of it (XmlStream.release). This copy
    is made through text and belongs to no stream."""
    return etree.fromstring(etree.tostring(node, with_tail=False), _STORED)


# -- writing XML as text, where building elements only to serialise them would cost more ----------

# What an attribute value or text must have escaped; most values (JIDs, ids, names) have none.
_ATTRIBUTE_SPECIAL = re.compile(r'[&<>"\t\n\r]')
_TEXT_SPECIAL = re.compile(r"[&<>\r]")
# Whitespace in an attribute value would be normalised to spaces by the reader (XML 1.0 §3.3.3),
# and a carriage return in text to a line feed (§2.11): they go as character references. (Not
# xml.sax.saxutils, which imports urllib and with it sockets and TLS into the sans-IO core.)
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}


def _reference(match: re.Match[str]) -> str:
    return _ENTITIES[match.group()]


def attribute(value: str) -> str:
    """`value` as a quoted XML attribute value, exactly as a reader will give it back."""
    return f'"{_ATTRIBUTE_SPECIAL.sub(_reference, value)}"'


def text(value: str) -> str:
    """`value` as XML character data, exactly as a reader will give it back."""
    return _TEXT_SPECIAL.sub(_reference, value)

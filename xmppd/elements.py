"""Building XML elements the way clients expect to read them."""

from __future__ import annotations

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

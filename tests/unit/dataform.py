"""Submitted XEP-0004 data forms for the form parsers' tests (rooms, pubsub nodes)."""

from __future__ import annotations

from collections.abc import Mapping

from lxml import etree

from xmppd.dataforms import DATA_NS

FIELD = f"{{{DATA_NS}}}field"
VALUE = f"{{{DATA_NS}}}value"


def submitted_form(
    fields: Mapping[str, list[str] | str], form_type: str | None, type_: str = "submit"
) -> etree._Element:
    """A submitted form with FORM_TYPE `form_type` (None: without one); a str is one value, a
    list any number of them."""
    form = etree.Element(f"{{{DATA_NS}}}x", {"type": type_}, nsmap={None: DATA_NS})  # type: ignore[dict-item]
    if form_type is not None:
        fields = {"FORM_TYPE": form_type, **fields}
    for var, values in fields.items():
        field = etree.SubElement(form, FIELD, {"var": var})
        for value in [values] if isinstance(values, str) else values:
            etree.SubElement(field, VALUE).text = value
    return form

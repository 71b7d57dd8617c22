"""XEP-0004 data forms: building the fields of a form, reading a submission. No I/O.

Shared by every form a service offers (MUC room configuration, pubsub node configuration and
publish-options, ...), so that each of them parses values the same way and answers the same
errors:
- `bad-request` when what came is not a submission of the expected form: not a `jabber:x:data`
  form of type submit, another FORM_TYPE, a field twice (XEP-0004 §3.2: 'var' identifies a
  field uniquely);
- `not-acceptable` when a value cannot be used (XEP-0004 §6: "SHOULD return a Not Acceptable
  error"), with a text naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lxml import etree

from xmppd.elements import element
from xmppd.errors import StanzaError

DATA_NS = "jabber:x:data"

# xs:int's lexical form (XEP-0004 numbers are XML Schema's) less the '-' no count has; int()
# alone would also take "1_000" and non-ASCII digits.
_NUMBER = re.compile(r"\+?[0-9]+")


def add_field(
    form: etree._Element,
    var: str,
    type_: str,
    label: str | None,
    values: Iterable[str],
    *,
    options: Iterable[tuple[str, str]] = (),
    desc: str | None = None,
) -> etree._Element:
    attrib = {"var": var, "type": type_}
    if label is not None:
        attrib["label"] = label
    field = element(f"{{{DATA_NS}}}field", attrib, parent=form)
    if desc is not None:
        element(f"{{{DATA_NS}}}desc", parent=field).text = desc
    for value in values:
        element(f"{{{DATA_NS}}}value", parent=field).text = value
    for value, option_label in options:
        option = element(f"{{{DATA_NS}}}option", {"label": option_label}, parent=field)
        element(f"{{{DATA_NS}}}value", parent=option).text = value
    return field


def bool_values(value: bool) -> list[str]:
    # "1"/"0" as in XEP-0045's examples; XEP-0004 makes clients read both styles.
    return ["1" if value else "0"]


def text_values(value: str) -> list[str]:
    # An empty text field has no <value/> at all, as in XEP-0045 §10.1.3's example.
    return [value] if value else []


def submitted_fields(form: etree._Element, form_type: str, *, require_type: bool = False) -> dict[str, list[str]]:
    """The values of a submitted form by field name, without FORM_TYPE; StanzaError bad-request
    when it is not a submission of `form_type` (or, with `require_type`, does not say so)."""
    if form.tag != f"{{{DATA_NS}}}x" or form.get("type") != "submit":
        raise StanzaError("bad-request", "expected a jabber:x:data form of type 'submit'")
    values: dict[str, list[str]] = {}
    for field in form.iterchildren(f"{{{DATA_NS}}}field"):
        var = field.get("var")
        if var is None:
            # Only a 'fixed' field may lack a name (XEP-0004 §3.2), and it carries no data.
            continue
        if var in values:
            raise StanzaError("bad-request", f"field {var} appears twice")
        values[var] = [value.text or "" for value in field.iterchildren(f"{{{DATA_NS}}}value")]
    # Unless the protocol requires it, a submission without FORM_TYPE is taken for one of
    # `form_type`: the payload it comes in already says what it is, and an instant MUC room's
    # empty form (XEP-0045 §10.1.2) has no field at all.
    submitted_type = values.pop("FORM_TYPE", None if require_type else [form_type])
    if submitted_type != [form_type]:
        raise StanzaError("bad-request", f"expected FORM_TYPE {form_type}")
    return values


def single_value(var: str, values: list[str]) -> str:
    """The one value of a single-value field ('' when it has none: XEP-0004 §3.5, unset)."""
    if len(values) > 1:
        raise StanzaError("not-acceptable", f"{var} takes a single value")
    return values[0] if values else ""


def boolean_value(var: str, values: list[str]) -> bool:
    value = single_value(var, values).strip()
    if value in ("1", "true"):
        return True
    # XEP-0004 §3.3: a boolean's default is false, so a field without a value is false.
    if value in ("0", "false", ""):
        return False
    raise StanzaError("not-acceptable", f"{var} must be a boolean (0, 1, false or true), not {value!r}")


def count_value(var: str, values: list[str], low: int, high: int) -> int:
    value = single_value(var, values).strip()
    if not _NUMBER.fullmatch(value):
        raise StanzaError("not-acceptable", f"{var} must be a number, not {value!r}")
    number = int(value)
    if number > high:
        raise StanzaError("not-acceptable", f"{var} may be at most {high} on this service")
    if number < low:
        raise StanzaError("not-acceptable", f"{var} must be at least {low}")
    return number

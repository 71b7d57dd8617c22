"""XEP-0060 data forms of a node: pubsub#node_config (§8.2) and pubsub#publish-options (§7.1.5).
No I/O: elements in, values out, or a StanzaError with the XEP-0060 condition.

The fields are those of the §17.4.4 registry that `NodeConfig` implements. Both forms share
their parsing, so a value means the same in either:
- booleans take 0, 1, false and true; list-single fields one of their options, and an access
  model we do not offer (authorize) is not-acceptable with <unsupported-access-model/> (§8.1.2);
- pubsub#max_items takes a positive number or "max" (§17.4.4); "max" and any number above
  `Limits.max_items` mean `Limits.max_items`, so a node whose max_items is that number meets a
  "max" precondition, and one asking 9999 (what Converse.js asks of a service that does not
  announce config-node-max) meets it too; anything else is not-acceptable;
- a form that is not a submission of the expected FORM_TYPE is a bad-request.

A node configuration submission is XEP-0004's: fields left out keep their current value (§8.2.4
applies XEP-0004's incomplete submission), fields we do not implement are ignored (XEP-0004
§3.2: the form-processing entity "MUST ignore any fields that it does not understand"). A form
of type cancel is the caller's to handle (§8.2.4: the configuration stays as it is).

Publish-options are preconditions (§7.1.5): each field must equal the node's configuration.
There XEP-0060 departs from XEP-0004: the service "MUST reject the publication upon encountering
unknown fields", and the FORM_TYPE is a MUST. An unknown field is refused with conflict and
<precondition-not-met/>, the error §7.1.5 gives for a precondition that does not hold: no node
here has that configuration, so the precondition cannot hold, whether the node exists or would
be auto-created; and since a node configuration submission ignores such a field, a client that
answers precondition-not-met by reconfiguring the node cannot make it hold either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from components.pubsub.node import Limits, NodeConfig
from xmppd.dataforms import (
    DATA_NS,
    add_field,
    bool_values,
    boolean_value,
    count_value,
    single_value,
    submitted_fields,
    text_values,
)
from xmppd.elements import element
from xmppd.errors import StanzaError

NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
PUBSUB_ERRORS_NS = "http://jabber.org/protocol/pubsub#errors"

ACCESS_MODEL = "pubsub#access_model"
MAX_ITEMS = "pubsub#max_items"


class PubsubError(StanzaError):
    """A stanza error with a pubsub-specific condition next to the defined one, such as
    §7.1.5's conflict + <precondition-not-met/> or §8.1.2's not-acceptable +
    <unsupported-access-model/>."""

    def __init__(self, condition: str, pubsub_condition: str, text: str | None = None) -> None:
        super().__init__(condition, text)
        self.pubsub_condition = pubsub_condition

    def to_element(self, client_ns: str) -> etree._Element:
        error = super().to_element(client_ns)
        # RFC 6120 §8.3.2: the application-specific condition follows the defined one and the text.
        element(f"{{{PUBSUB_ERRORS_NS}}}{self.pubsub_condition}", parent=error)
        return error


@dataclass(frozen=True, slots=True)
class _Field:
    attribute: str  # of NodeConfig
    type: str  # XEP-0004 field type
    label: str
    choices: tuple[tuple[str, str], ...] = ()  # a list-single's values, each with its label


# In the order the form shows them.
_FIELDS = {
    "pubsub#title": _Field("title", "text-single", "A friendly name for the node"),
    ACCESS_MODEL: _Field(
        "access_model",
        "list-single",
        "Who may subscribe and retrieve items",
        (
            ("open", "Anyone"),
            ("presence", "Contacts with a presence subscription (from or both)"),
            ("roster", "Contacts in the roster groups below"),
            ("whitelist", "Only those on the whitelist"),
        ),
    ),
    "pubsub#roster_groups_allowed": _Field(
        "roster_groups_allowed", "list-multi", "Roster groups allowed to subscribe and retrieve items"
    ),
    "pubsub#persist_items": _Field("persist_items", "boolean", "Persist items to storage"),
    MAX_ITEMS: _Field("max_items", "text-single", "Maximum number of items to keep"),
    "pubsub#send_last_published_item": _Field(
        "send_last_published_item",
        "list-single",
        "When to send the last published item",
        (
            ("never", "Never"),
            ("on_sub", "When a new subscription is processed"),
            ("on_sub_and_presence", "When a new subscription is processed and whenever a subscriber comes online"),
        ),
    ),
    "pubsub#deliver_payloads": _Field("deliver_payloads", "boolean", "Deliver payloads with event notifications"),
    "pubsub#notify_retract": _Field("notify_retract", "boolean", "Notify subscribers when items are removed"),
    "pubsub#notify_delete": _Field("notify_delete", "boolean", "Notify subscribers when the node is deleted"),
}


# -- the configuration form (§8.2) --------------------------------------------------------------


def node_config_form(config: NodeConfig, limits: Limits, *, roster_groups: Iterable[str] = ()) -> etree._Element:
    """The `<x xmlns='jabber:x:data' type='form'/>` an owner fills in, with the current values.

    `roster_groups` are the owner's roster groups, offered as pubsub#roster_groups_allowed's
    options (the groups already allowed are offered too).
    """
    form = element(f"{{{DATA_NS}}}x", {"type": "form"})
    add_field(form, "FORM_TYPE", "hidden", None, [NODE_CONFIG])
    for var, field in _FIELDS.items():
        add_field(
            form,
            var,
            field.type,
            field.label,
            _current(getattr(config, field.attribute), limits),
            options=_options(field, config, roster_groups),
            desc=f"From 1 to {limits.max_items}, or max for {limits.max_items}" if var == MAX_ITEMS else None,
        )
    return form


def _current(value: object, limits: Limits) -> list[str]:
    if isinstance(value, bool):
        return bool_values(value)
    if isinstance(value, int):
        # A node configured before the operator lowered the limit shows (and keeps, if
        # resubmitted) what it can actually have.
        return [str(min(value, limits.max_items))]
    if isinstance(value, tuple):
        return list(value)
    return text_values(str(value))


def _options(field: _Field, config: NodeConfig, roster_groups: Iterable[str]) -> Iterable[tuple[str, str]]:
    if field.type == "list-multi":
        return [(group, group) for group in sorted({*roster_groups, *config.roster_groups_allowed})]
    return field.choices


def parse_node_config(form: etree._Element, current: NodeConfig, limits: Limits) -> NodeConfig:
    """The configuration a submitted form asks for; StanzaError if it cannot be had."""
    values = submitted_fields(form, NODE_CONFIG)
    updates: dict[str, Any] = {
        _FIELDS[var].attribute: _parse(var, submitted, limits) for var, submitted in values.items() if var in _FIELDS
    }
    return dataclasses.replace(current, **updates)


# -- publish-options (§7.1.5) -------------------------------------------------------------------


def parse_publish_options(form: etree._Element | None, limits: Limits) -> dict[str, object]:
    """The preconditions of a publish request, by field name, with normalised values (a number
    for max_items, bools for booleans); {} without a form. StanzaError if one cannot be used."""
    if form is None:
        return {}
    options: dict[str, object] = {}
    for var, submitted in submitted_fields(form, PUBLISH_OPTIONS, require_type=True).items():
        if var not in _FIELDS:
            raise _unknown(var)
        options[var] = _parse(var, submitted, limits)
    return options


def config_from_options(options: dict[str, object], limits: Limits) -> NodeConfig:
    """The configuration of a node auto-created by a publish with `options` (§7.1.5 step 3):
    the default one, except for what the options say."""
    config = dataclasses.replace(NodeConfig(), **_attributes(options))
    # Options a module builds in code (rather than parse_publish_options) are held to the limit too.
    return config if config.max_items <= limits.max_items else dataclasses.replace(config, max_items=limits.max_items)


def precondition_met(config: NodeConfig, options: dict[str, object]) -> bool:
    """Whether a node configured with `config` meets every precondition of `options` (§7.1.5)."""
    if any(var not in _FIELDS for var in options):
        return False
    # Applying the options leaves the configuration as it was exactly when each of them holds;
    # NodeConfig puts roster groups in canonical order, so their order does not matter.
    return dataclasses.replace(config, **_attributes(options)) == config


def _attributes(options: dict[str, object]) -> dict[str, Any]:
    unknown = [var for var in options if var not in _FIELDS]
    if unknown:
        raise _unknown(unknown[0])
    return {_FIELDS[var].attribute: value for var, value in options.items()}


def _unknown(var: str) -> PubsubError:
    return PubsubError("conflict", "precondition-not-met", f"{var} is not a node configuration field of this service")


# -- field values -------------------------------------------------------------------------------


def _parse(var: str, values: list[str], limits: Limits) -> object:
    """The value of a known field as NodeConfig holds it; StanzaError if it cannot be used."""
    field = _FIELDS[var]
    if field.type == "boolean":
        return boolean_value(var, values)
    if field.type == "list-multi":
        # An empty <value/> names no group.
        return tuple(value for value in values if value)
    if field.type == "list-single":
        return _choice(var, values, field)
    if var == MAX_ITEMS:
        return _max_items(values, limits)
    return single_value(var, values)


def _choice(var: str, values: list[str], field: _Field) -> str:
    value = single_value(var, values).strip()
    allowed = [choice for choice, _ in field.choices]
    if value in allowed:
        return value
    text = f"{var} must be one of {', '.join(allowed)}, not {value!r}"
    if var == ACCESS_MODEL:
        raise PubsubError("not-acceptable", "unsupported-access-model", text)
    raise StanzaError("not-acceptable", text)


def _max_items(values: list[str], limits: Limits) -> int:
    if single_value(MAX_ITEMS, values).strip() == "max":
        return limits.max_items
    # "As many as you keep": the service's cap (a documented option), not a refusal.
    return min(count_value(MAX_ITEMS, values, 1, 2**63), limits.max_items)

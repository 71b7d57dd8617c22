"""XEP-0060 node forms (components.pubsub.forms): the pubsub#node_config form and its submissions
(§8.2), publish-options as preconditions (§7.1.5) and the node a publish auto-creates with them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from lxml import etree

from components.pubsub.forms import (
    NODE_CONFIG,
    PUBLISH_OPTIONS,
    PUBSUB_ERRORS_NS,
    PubsubError,
    config_from_options,
    node_config_form,
    parse_node_config,
    parse_publish_options,
    precondition_met,
)
from components.pubsub.node import Limits, NodeConfig
from xmppd.dataforms import DATA_NS
from xmppd.errors import STANZA_ERRORS_NS, StanzaError
from xmppd.stanza import CLIENT_NS

from .dataform import FIELD, VALUE, submitted_form

LIMITS = Limits(max_items=256, max_item_size=65536, max_nodes=100)

# What clients publish with (XEP-0402 bookmarks, XEP-0384 OMEMO, XEP-0223 private storage).
BOOKMARKS = {
    "pubsub#persist_items": "true",
    "pubsub#max_items": "max",
    "pubsub#send_last_published_item": "never",
    "pubsub#access_model": "whitelist",
}
OMEMO = {"pubsub#access_model": "open"}


submit = submitted_form


def twice(var: str) -> etree._Element:
    """A node_config submission with the field `var` twice."""
    form = submit({var: "one"}, NODE_CONFIG)
    etree.SubElement(etree.SubElement(form, FIELD, {"var": var}), VALUE).text = "two"
    return form


def fields_of(form: etree._Element) -> dict[str, etree._Element]:
    return {field.get("var", ""): field for field in form.iter(FIELD)}


def values_of(form: etree._Element) -> dict[str, list[str]]:
    return {var: [v.text or "" for v in field.findall(VALUE)] for var, field in fields_of(form).items()}


def options_of(field: etree._Element) -> list[str]:
    return [option.findtext(VALUE) or "" for option in field.iter(f"{{{DATA_NS}}}option")]


def configured(fields: Mapping[str, list[str] | str], current: NodeConfig | None = None) -> NodeConfig:
    return parse_node_config(submit(fields, NODE_CONFIG), current or NodeConfig(), LIMITS)


def options(fields: Mapping[str, list[str] | str]) -> dict[str, object]:
    return parse_publish_options(submit(fields, PUBLISH_OPTIONS), LIMITS)


def refused(condition: str, parse: Any, *args: Any) -> StanzaError:
    with pytest.raises(StanzaError) as caught:
        parse(*args)
    assert caught.value.condition == condition
    return caught.value


# --- the configuration form (§8.2) ------------------------------------------------------------------


def test_form_carries_every_field_with_type_label_and_current_value() -> None:
    config = NodeConfig(
        access_model="roster",
        persist_items=False,
        max_items=10,
        send_last_published_item="on_sub",
        notify_retract=False,
        roster_groups_allowed=("Friends",),
        title="Musings",
    )
    form = node_config_form(config, LIMITS)
    assert form.tag == f"{{{DATA_NS}}}x" and form.get("type") == "form"
    fields = fields_of(form)
    assert values_of(form) == {
        "FORM_TYPE": [NODE_CONFIG],
        "pubsub#title": ["Musings"],
        "pubsub#access_model": ["roster"],
        "pubsub#roster_groups_allowed": ["Friends"],
        "pubsub#persist_items": ["0"],
        "pubsub#max_items": ["10"],
        "pubsub#send_last_published_item": ["on_sub"],
        "pubsub#deliver_payloads": ["1"],
        "pubsub#notify_retract": ["0"],
        "pubsub#notify_delete": ["1"],
    }
    types = {var: field.get("type") for var, field in fields.items()}
    assert types == {
        "FORM_TYPE": "hidden",
        "pubsub#title": "text-single",
        "pubsub#access_model": "list-single",
        "pubsub#roster_groups_allowed": "list-multi",
        "pubsub#persist_items": "boolean",
        "pubsub#max_items": "text-single",
        "pubsub#send_last_published_item": "list-single",
        "pubsub#deliver_payloads": "boolean",
        "pubsub#notify_retract": "boolean",
        "pubsub#notify_delete": "boolean",
    }
    assert all(field.get("label") for var, field in fields.items() if var != "FORM_TYPE")
    assert options_of(fields["pubsub#access_model"]) == ["open", "presence", "roster", "whitelist"]
    assert options_of(fields["pubsub#send_last_published_item"]) == ["never", "on_sub", "on_sub_and_presence"]


def test_form_offers_the_owners_roster_groups_and_those_allowed() -> None:
    form = node_config_form(NodeConfig(roster_groups_allowed=("Old",)), LIMITS, roster_groups=["Work", "Friends"])
    assert options_of(fields_of(form)["pubsub#roster_groups_allowed"]) == ["Friends", "Old", "Work"]


def test_form_tells_the_max_items_limit_and_caps_an_old_value() -> None:
    field = fields_of(node_config_form(NodeConfig(max_items=1000), LIMITS))["pubsub#max_items"]
    assert field.findtext(VALUE) == "256"
    assert "256" in (field.findtext(f"{{{DATA_NS}}}desc") or "")


def test_untitled_node_has_an_empty_title_field() -> None:
    assert values_of(node_config_form(NodeConfig(), LIMITS))["pubsub#title"] == []


def test_submitting_the_form_as_given_keeps_the_configuration() -> None:
    config = NodeConfig(access_model="roster", max_items=7, roster_groups_allowed=("A", "B"), title="T")
    form = node_config_form(config, LIMITS)
    form.set("type", "submit")
    assert parse_node_config(form, NodeConfig(), LIMITS) == config


# --- configuration submissions ----------------------------------------------------------------------


def test_submission_sets_the_fields_it_carries() -> None:
    config = configured(
        {
            "pubsub#title": "Bookmarks",
            "pubsub#access_model": "roster",
            "pubsub#roster_groups_allowed": ["Friends", "Family", ""],
            "pubsub#persist_items": "false",
            "pubsub#max_items": "20",
            "pubsub#send_last_published_item": "never",
            "pubsub#deliver_payloads": "0",
            "pubsub#notify_retract": "false",
            "pubsub#notify_delete": "0",
        }
    )
    assert config == NodeConfig(
        access_model="roster",
        persist_items=False,
        max_items=20,
        send_last_published_item="never",
        notify_retract=False,
        notify_delete=False,
        deliver_payloads=False,
        roster_groups_allowed=("Family", "Friends"),
        title="Bookmarks",
    )


def test_partial_submission_keeps_the_other_values() -> None:
    current = NodeConfig(max_items=5, title="Kept", send_last_published_item="never")
    assert configured({"pubsub#access_model": "open"}, current) == NodeConfig(
        access_model="open", max_items=5, title="Kept", send_last_published_item="never"
    )


def test_submission_without_form_type_is_taken_for_node_config() -> None:
    form = submit({"pubsub#access_model": "open"}, None)
    assert parse_node_config(form, NodeConfig(), LIMITS).access_model == "open"


def test_fields_we_do_not_implement_are_ignored() -> None:
    current = NodeConfig(title="Kept")
    assert (
        configured({"pubsub#notify_config": "1", "pubsub#publish_model": "open", "x-custom": "y"}, current) == current
    )


def test_max_items_max_means_the_service_limit() -> None:
    assert configured({"pubsub#max_items": "max"}).max_items == LIMITS.max_items
    assert configured({"pubsub#max_items": " 256 "}).max_items == 256
    assert configured({"pubsub#max_items": "257"}).max_items == LIMITS.max_items  # above the cap: the cap


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("pubsub#max_items", "0"),
        ("pubsub#max_items", "-1"),
        ("pubsub#max_items", "ten"),
        ("pubsub#max_items", ""),
        ("pubsub#persist_items", "yes"),
        ("pubsub#notify_delete", "2"),
        ("pubsub#send_last_published_item", "always"),
        ("pubsub#title", ["two", "values"]),
    ],
)
def test_unusable_values_are_not_acceptable_naming_the_field(var: str, value: str | list[str]) -> None:
    error = refused("not-acceptable", configured, {var: value})
    assert var in (error.text or "")


def test_an_access_model_we_do_not_offer_is_unsupported() -> None:
    error = refused("not-acceptable", configured, {"pubsub#access_model": "authorize"})
    assert isinstance(error, PubsubError) and error.pubsub_condition == "unsupported-access-model"


@pytest.mark.parametrize(
    "form",
    [
        submit({"pubsub#access_model": "open"}, PUBLISH_OPTIONS),
        submit({"pubsub#access_model": "open"}, NODE_CONFIG, type_="form"),
        twice("pubsub#title"),
        etree.Element("x"),
    ],
    ids=["other form type", "not a submission", "field twice", "not a data form"],
)
def test_what_is_not_a_node_config_submission_is_a_bad_request(form: etree._Element) -> None:
    refused("bad-request", parse_node_config, form, NodeConfig(), LIMITS)


# --- publish-options (§7.1.5) -----------------------------------------------------------------------


def test_options_are_normalised() -> None:
    assert options(BOOKMARKS) == {
        "pubsub#persist_items": True,
        "pubsub#max_items": LIMITS.max_items,
        "pubsub#send_last_published_item": "never",
        "pubsub#access_model": "whitelist",
    }
    assert options({"pubsub#notify_retract": "0", "pubsub#max_items": "3"}) == {
        "pubsub#notify_retract": False,
        "pubsub#max_items": 3,
    }


def test_no_form_is_no_precondition() -> None:
    assert parse_publish_options(None, LIMITS) == {}


def test_an_unknown_field_is_a_precondition_that_cannot_be_met() -> None:
    error = refused("conflict", options, {"pubsub#access_model": "open", "pubsub#publish_model": "open"})
    assert isinstance(error, PubsubError) and error.pubsub_condition == "precondition-not-met"
    assert "pubsub#publish_model" in (error.text or "")


@pytest.mark.parametrize(
    "form",
    [
        submit(OMEMO, None),
        submit(OMEMO, NODE_CONFIG),
        submit(OMEMO, PUBLISH_OPTIONS, type_="form"),
    ],
    ids=["no form type", "other form type", "not a submission"],
)
def test_publish_options_must_say_their_form_type(form: etree._Element) -> None:
    refused("bad-request", parse_publish_options, form, LIMITS)


@pytest.mark.parametrize(
    ("fields", "condition"),
    [
        ({"pubsub#max_items": "0"}, "not-acceptable"),
        ({"pubsub#max_items": "many"}, "not-acceptable"),
        ({"pubsub#persist_items": "maybe"}, "not-acceptable"),
        ({"pubsub#access_model": "authorize"}, "not-acceptable"),
    ],
)
def test_unusable_option_values_are_refused(fields: Mapping[str, list[str] | str], condition: str) -> None:
    refused(condition, options, fields)


def test_preconditions_compare_with_the_node_configuration() -> None:
    assert precondition_met(NodeConfig(), {}) is True
    assert precondition_met(NodeConfig(), options(OMEMO)) is False  # PEP's default is presence
    assert precondition_met(NodeConfig(access_model="open"), options(OMEMO)) is True
    assert (
        precondition_met(NodeConfig(access_model="open", max_items=1), options({**OMEMO, "pubsub#max_items": "2"}))
        is False
    )


def test_max_precondition_is_met_by_the_service_limit() -> None:
    bookmarks = options(BOOKMARKS)
    node = NodeConfig(access_model="whitelist", max_items=LIMITS.max_items, send_last_published_item="never")
    assert precondition_met(node, bookmarks) is True
    assert (
        precondition_met(
            NodeConfig(access_model="whitelist", max_items=255, send_last_published_item="never"), bookmarks
        )
        is False
    )


def test_a_number_above_the_cap_means_the_cap() -> None:
    assert options({"pubsub#max_items": "9999"}) == {"pubsub#max_items": LIMITS.max_items}
    bookmarks = options({**BOOKMARKS, "pubsub#max_items": "9999"})  # Converse.js's bookmarks
    node = NodeConfig(access_model="whitelist", max_items=LIMITS.max_items, send_last_published_item="never")
    assert precondition_met(node, bookmarks) is True


def test_roster_group_preconditions_ignore_order() -> None:
    node = NodeConfig(access_model="roster", roster_groups_allowed=("A", "B"))
    assert precondition_met(node, options({"pubsub#roster_groups_allowed": ["B", "A"]})) is True
    assert precondition_met(node, options({"pubsub#roster_groups_allowed": ["A"]})) is False


def test_a_precondition_on_a_field_we_do_not_have_is_not_met() -> None:
    assert precondition_met(NodeConfig(), {"pubsub#deliver_notifications": True}) is False


# --- auto-create (§7.1.5 step 3) --------------------------------------------------------------------


def test_auto_created_node_has_defaults_except_the_options() -> None:
    config = config_from_options(options(BOOKMARKS), LIMITS)
    assert config == NodeConfig(access_model="whitelist", max_items=LIMITS.max_items, send_last_published_item="never")
    assert precondition_met(config, options(BOOKMARKS))
    assert config_from_options({}, LIMITS) == NodeConfig()


def test_auto_create_holds_options_built_in_code_to_the_limit() -> None:
    assert config_from_options({"pubsub#max_items": 10_000}, LIMITS).max_items == LIMITS.max_items


def test_auto_create_refuses_an_option_it_cannot_apply() -> None:
    error = refused("conflict", config_from_options, {"pubsub#publish_model": "open"}, LIMITS)
    assert isinstance(error, PubsubError) and error.pubsub_condition == "precondition-not-met"


# --- errors -----------------------------------------------------------------------------------------


def test_pubsub_condition_follows_the_defined_condition_and_text() -> None:
    error = PubsubError("conflict", "precondition-not-met", "access model differs").to_element(CLIENT_NS)
    assert error.get("type") == "cancel"
    assert [child.tag for child in error] == [
        f"{{{STANZA_ERRORS_NS}}}conflict",
        f"{{{STANZA_ERRORS_NS}}}text",
        f"{{{PUBSUB_ERRORS_NS}}}precondition-not-met",
    ]

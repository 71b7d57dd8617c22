"""XEP-0045 room configuration (components.muc.config): the muc#roomconfig form and its
submissions (§10.1-§10.2), the status codes of a change (§10.2.1), disco#info features and
muc#roominfo (§6.4), the muc#register form (§7.10), and the stored JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from lxml import etree

from components.muc.config import (
    DATA_NS,
    REGISTER,
    ROOMCONFIG,
    ROOMINFO,
    ConfigLimits,
    RoomConfig,
    changes,
    config_form,
    from_json,
    parse_config,
    parse_register,
    register_form,
    room_features,
    roominfo_form,
    to_json,
)
from xmppd.errors import StanzaError

from .dataform import FIELD, VALUE, submitted_form

LIMITS = ConfigLimits(max_users=200, max_history=50)


def submit(
    fields: dict[str, list[str] | str], form_type: str | None = ROOMCONFIG, type_: str = "submit"
) -> etree._Element:
    return submitted_form(fields, form_type, type_)


def fields_of(form: etree._Element) -> dict[str, etree._Element]:
    found = {}
    for field in form.iter(FIELD):
        var = field.get("var")
        if var is not None:
            found[var] = field
    return found


def values_of(form: etree._Element) -> dict[str, list[str]]:
    return {var: [v.text or "" for v in field.findall(VALUE)] for var, field in fields_of(form).items()}


def options_of(field: etree._Element) -> list[str]:
    return [option.findtext(VALUE) or "" for option in field.iter(f"{{{DATA_NS}}}option")]


def refused(condition: str, form: etree._Element, current: RoomConfig | None = None) -> StanzaError:
    with pytest.raises(StanzaError) as caught:
        parse_config(form, current or RoomConfig(), LIMITS)
    assert caught.value.condition == condition
    return caught.value


# --- the form (§10.1.3, §10.2) ----------------------------------------------------------------------


def test_form_carries_every_field_with_type_and_current_value() -> None:
    config = RoomConfig(
        name="A Dark Cave",
        description="The place for all good witches!",
        language="en",
        persistent=True,
        public=False,
        members_only=True,
        moderated=True,
        password="cauldronburn",
        max_users=30,
        whois="anyone",
        allow_invites=True,
        allow_pm="moderators",
        change_subject=True,
        history_length=40,
        archiving=False,
    )
    form = config_form(config, LIMITS)
    assert form.tag == f"{{{DATA_NS}}}x" and form.get("type") == "form"
    assert form.findtext(f"{{{DATA_NS}}}title") == 'Configuration of "A Dark Cave"'
    fields = fields_of(form)
    assert fields["FORM_TYPE"].get("type") == "hidden"
    types = {var: field.get("type") for var, field in fields.items()}
    assert types == {
        "FORM_TYPE": "hidden",
        "muc#roomconfig_roomname": "text-single",
        "muc#roomconfig_roomdesc": "text-single",
        "muc#roomconfig_lang": "text-single",
        "muc#roomconfig_persistentroom": "boolean",
        "muc#roomconfig_publicroom": "boolean",
        "muc#roomconfig_membersonly": "boolean",
        "muc#roomconfig_moderatedroom": "boolean",
        "muc#roomconfig_passwordprotectedroom": "boolean",
        "muc#roomconfig_roomsecret": "text-private",
        "muc#roomconfig_whois": "list-single",
        "muc#roomconfig_allowinvites": "boolean",
        "muc#roomconfig_allowpm": "list-single",
        "muc#roomconfig_changesubject": "boolean",
        "muc#roomconfig_maxusers": "list-single",
        "muc#maxhistoryfetch": "text-single",
        "muc#roomconfig_enablearchiving": "boolean",
    }
    assert all(field.get("label") for var, field in fields.items() if var != "FORM_TYPE")
    assert values_of(form) == {
        "FORM_TYPE": [ROOMCONFIG],
        "muc#roomconfig_roomname": ["A Dark Cave"],
        "muc#roomconfig_roomdesc": ["The place for all good witches!"],
        "muc#roomconfig_lang": ["en"],
        "muc#roomconfig_persistentroom": ["1"],
        "muc#roomconfig_publicroom": ["0"],
        "muc#roomconfig_membersonly": ["1"],
        "muc#roomconfig_moderatedroom": ["1"],
        "muc#roomconfig_passwordprotectedroom": ["1"],
        "muc#roomconfig_roomsecret": ["cauldronburn"],
        "muc#roomconfig_whois": ["anyone"],
        "muc#roomconfig_allowinvites": ["1"],
        "muc#roomconfig_allowpm": ["moderators"],
        "muc#roomconfig_changesubject": ["1"],
        "muc#roomconfig_maxusers": ["30"],
        "muc#maxhistoryfetch": ["40"],
        "muc#roomconfig_enablearchiving": ["0"],
    }
    assert options_of(fields["muc#roomconfig_whois"]) == ["moderators", "anyone"]
    assert options_of(fields["muc#roomconfig_allowpm"]) == ["anyone", "participants", "moderators", "none"]


def test_form_of_the_default_config_leaves_empty_texts_without_value() -> None:
    form = config_form(RoomConfig(), LIMITS)
    assert form.findtext(f"{{{DATA_NS}}}title") == "Room configuration"
    values = values_of(form)
    for var in (
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_lang",
        "muc#roomconfig_roomsecret",
    ):
        assert values[var] == []
    assert values["muc#roomconfig_passwordprotectedroom"] == ["0"]
    assert values["muc#roomconfig_maxusers"] == ["none"]
    assert values["muc#roomconfig_publicroom"] == ["1"]


def test_maxusers_offers_steps_up_to_the_cap_and_none() -> None:
    field = fields_of(config_form(RoomConfig(), LIMITS))["muc#roomconfig_maxusers"]
    assert options_of(field) == ["10", "20", "30", "50", "100", "200", "none"]
    small = fields_of(config_form(RoomConfig(), ConfigLimits(max_users=25, max_history=5)))["muc#roomconfig_maxusers"]
    assert options_of(small) == ["10", "20", "25", "none"]
    # Whatever the room has is an option, so that a client shows it selected.
    odd = fields_of(config_form(RoomConfig(max_users=37), LIMITS))["muc#roomconfig_maxusers"]
    assert options_of(odd) == ["10", "20", "30", "37", "50", "100", "200", "none"]
    assert odd.findtext(VALUE) == "37"


def test_form_shows_what_the_caps_allow() -> None:
    # The operator lowered the caps after the room was configured.
    form = config_form(RoomConfig(max_users=500, history_length=100), LIMITS)
    values = values_of(form)
    assert values["muc#roomconfig_maxusers"] == ["200"]
    assert values["muc#maxhistoryfetch"] == ["50"]


# --- submissions ------------------------------------------------------------------------------------


def test_round_trip_form_to_submission() -> None:
    config = RoomConfig(name="Cave", password="secret", max_users=50, whois="anyone", history_length=10)
    form = config_form(config, LIMITS)
    echoed = submit({var: values for var, values in values_of(form).items() if var != "FORM_TYPE"})
    assert parse_config(echoed, RoomConfig(), LIMITS) == config


def test_submission_of_some_fields_keeps_the_others() -> None:
    current = RoomConfig(name="Cave", description="Dark", persistent=True, password="pw", max_users=20)
    new = parse_config(
        submit(
            {
                "muc#roomconfig_roomname": "Coven",
                "muc#roomconfig_moderatedroom": "true",
                "muc#roomconfig_allowpm": "participants",
                "muc#roomconfig_maxusers": "none",
                "muc#maxhistoryfetch": "5",
                "muc#roomconfig_enablearchiving": "false",
            }
        ),
        current,
        LIMITS,
    )
    assert new == dataclasses.replace(
        current, name="Coven", moderated=True, allow_pm="participants", max_users=0, history_length=5, archiving=False
    )


def test_empty_submission_accepts_the_current_config() -> None:
    # §10.1.2: the instant room's <x type='submit'/>, without even a FORM_TYPE.
    current = RoomConfig(name="x", members_only=True)
    assert parse_config(submit({}, form_type=None), current, LIMITS) == current
    assert parse_config(submit({}), current, LIMITS) == current


@pytest.mark.parametrize(("text", "value"), [("1", True), ("true", True), ("0", False), ("false", False), ("", False)])
def test_booleans_in_both_lexical_styles(text: str, value: bool) -> None:
    # XEP-0004: 0/1/false/true; a field without value is the default, false.
    config = parse_config(submit({"muc#roomconfig_persistentroom": text}), RoomConfig(persistent=not value), LIMITS)
    assert config.persistent is value


def test_boolean_without_value_is_false() -> None:
    config = parse_config(submit({"muc#roomconfig_publicroom": []}), RoomConfig(public=True), LIMITS)
    assert config.public is False


def test_texts_can_be_emptied() -> None:
    config = parse_config(submit({"muc#roomconfig_roomdesc": []}), RoomConfig(description="old"), LIMITS)
    assert config.description == ""


def test_unknown_fields_are_ignored() -> None:
    # XEP-0004 §3.2: fields the processing entity does not understand are ignored, also the
    # registry's own ones that we do not offer.
    form = submit(
        {
            "muc#roomconfig_roomowners": ["hecate@shakespeare.lit"],
            "muc#roomconfig_presencebroadcast": ["moderator"],
            "muc#roomconfig_enablelogging": "maybe",
            "x-custom": "whatever",
            "muc#roomconfig_roomname": "Cave",
        }
    )
    assert parse_config(form, RoomConfig(), LIMITS) == RoomConfig(name="Cave")


def test_numbers_at_their_bounds() -> None:
    config = parse_config(submit({"muc#roomconfig_maxusers": "200", "muc#maxhistoryfetch": "0"}), RoomConfig(), LIMITS)
    assert (config.max_users, config.history_length) == (200, 0)
    config = parse_config(
        submit({"muc#roomconfig_maxusers": "+1", "muc#maxhistoryfetch": " 50 "}), RoomConfig(), LIMITS
    )
    assert (config.max_users, config.history_length) == (1, 50)


def test_maxusers_between_the_offered_steps() -> None:
    assert parse_config(submit({"muc#roomconfig_maxusers": "42"}), RoomConfig(), LIMITS).max_users == 42


# --- passwords --------------------------------------------------------------------------------------


def test_password_protection_follows_the_boolean() -> None:
    protect = submit({"muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": "pw"})
    assert parse_config(protect, RoomConfig(), LIMITS).password == "pw"
    # Unprotected: a secret that comes along is not kept.
    unprotect = submit({"muc#roomconfig_passwordprotectedroom": "0", "muc#roomconfig_roomsecret": "pw"})
    assert parse_config(unprotect, RoomConfig(password="old"), LIMITS).password == ""


def test_password_without_the_boolean() -> None:
    assert parse_config(submit({"muc#roomconfig_roomsecret": "new"}), RoomConfig(), LIMITS).password == "new"
    assert parse_config(submit({"muc#roomconfig_roomsecret": []}), RoomConfig(password="old"), LIMITS).password == ""


def test_protection_on_keeps_the_current_password() -> None:
    form = submit({"muc#roomconfig_passwordprotectedroom": "1"})
    assert parse_config(form, RoomConfig(password="old"), LIMITS).password == "old"


def test_protected_room_without_password_is_not_acceptable() -> None:
    # §10.1.3: "the password for a password-protected room is blank".
    refused("not-acceptable", submit({"muc#roomconfig_passwordprotectedroom": "1"}))
    error = refused(
        "not-acceptable", submit({"muc#roomconfig_passwordprotectedroom": "true", "muc#roomconfig_roomsecret": ""})
    )
    assert error.text is not None and "muc#roomconfig_roomsecret" in error.text


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        submit({"muc#roomconfig_roomname": "x"}, form_type="http://jabber.org/protocol/muc#register"),
        submit({"muc#roomconfig_roomname": "x"}, type_="form"),
        submit({}, type_="result"),
        etree.Element("{jabber:x:data}form", {"type": "submit"}),
        etree.Element("{urn:example}x", {"type": "submit"}),
    ],
    ids=["form-type", "type-form", "type-result", "wrong-tag", "wrong-namespace"],
)
def test_not_a_roomconfig_submission_is_a_bad_request(form: etree._Element) -> None:
    refused("bad-request", form)


def test_form_type_with_two_values_is_a_bad_request() -> None:
    refused("bad-request", submit({"FORM_TYPE": [ROOMCONFIG, ROOMCONFIG]}, form_type=None))


def test_field_twice_is_a_bad_request() -> None:
    form = submit({"muc#roomconfig_roomname": "a"})
    etree.SubElement(etree.SubElement(form, FIELD, {"var": "muc#roomconfig_roomname"}), VALUE).text = "b"
    refused("bad-request", form)


@pytest.mark.parametrize(
    ("var", "value", "names"),
    [
        ("muc#roomconfig_moderatedroom", "yes", "muc#roomconfig_moderatedroom"),
        ("muc#roomconfig_persistentroom", "True", "muc#roomconfig_persistentroom"),
        ("muc#roomconfig_whois", "none", "muc#roomconfig_whois"),  # §10.1.3: deprecated, not offered
        ("muc#roomconfig_whois", "", "muc#roomconfig_whois"),
        ("muc#roomconfig_allowpm", "visitors", "muc#roomconfig_allowpm"),
        ("muc#roomconfig_maxusers", "many", "muc#roomconfig_maxusers"),
        ("muc#roomconfig_maxusers", "0", "muc#roomconfig_maxusers"),
        ("muc#roomconfig_maxusers", "-5", "muc#roomconfig_maxusers"),
        ("muc#roomconfig_maxusers", "1_000", "muc#roomconfig_maxusers"),
        ("muc#maxhistoryfetch", "ten", "muc#maxhistoryfetch"),
        ("muc#maxhistoryfetch", "", "muc#maxhistoryfetch"),
    ],
)
def test_values_that_cannot_be_used_are_not_acceptable(var: str, value: str, names: str) -> None:
    error = refused("not-acceptable", submit({var: value}))
    assert error.text is not None and names in error.text


@pytest.mark.parametrize(
    ("var", "value", "limit"), [("muc#roomconfig_maxusers", "201", "200"), ("muc#maxhistoryfetch", "51", "50")]
)
def test_numbers_above_the_service_cap_are_refused_naming_the_limit(var: str, value: str, limit: str) -> None:
    error = refused("not-acceptable", submit({var: value}))
    assert error.text is not None and var in error.text and limit in error.text
    assert error.type == "modify"


def test_two_values_in_a_single_value_field_are_not_acceptable() -> None:
    refused("not-acceptable", submit({"muc#roomconfig_roomname": ["a", "b"]}))


def test_a_refused_submission_changes_nothing() -> None:
    current = RoomConfig(name="keep")
    with pytest.raises(StanzaError):
        parse_config(submit({"muc#roomconfig_roomname": "new", "muc#roomconfig_whois": "all"}), current, LIMITS)
    assert current.name == "keep"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_users"):
        ConfigLimits(max_users=0, max_history=10)
    with pytest.raises(ValueError, match="max_history"):
        ConfigLimits(max_users=10, max_history=-1)


# --- status codes of a change (§10.2.1) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "codes"),
    [
        (RoomConfig(), RoomConfig(), []),
        (RoomConfig(), RoomConfig(name="new"), ["104"]),
        (RoomConfig(), RoomConfig(password="pw"), ["104"]),
        (RoomConfig(archiving=False), RoomConfig(archiving=True), ["104", "170"]),
        (RoomConfig(archiving=True), RoomConfig(archiving=False), ["104", "171"]),
        (RoomConfig(whois="moderators"), RoomConfig(whois="anyone"), ["104", "172"]),
        (RoomConfig(whois="anyone"), RoomConfig(whois="moderators"), ["104", "173"]),
        (RoomConfig(archiving=False), RoomConfig(archiving=True, whois="anyone", name="x"), ["104", "170", "172"]),
    ],
)
def test_status_codes_of_a_change(old: RoomConfig, new: RoomConfig, codes: list[str]) -> None:
    assert changes(old, new) == codes


# --- disco#info (§6.4) ------------------------------------------------------------------------------


def test_features_of_the_default_room() -> None:
    assert room_features(RoomConfig()) == [
        "http://jabber.org/protocol/muc",
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
    ]


def test_features_of_the_opposite_room() -> None:
    config = RoomConfig(public=False, persistent=True, members_only=True, moderated=True, whois="anyone", password="x")
    assert room_features(config) == [
        "http://jabber.org/protocol/muc",
        "muc_hidden",
        "muc_persistent",
        "muc_membersonly",
        "muc_moderated",
        "muc_nonanonymous",
        "muc_passwordprotected",
    ]


def test_roominfo_with_everything_known() -> None:
    config = RoomConfig(
        name="A Dark Cave",
        description="The place for all good witches!",
        language="en",
        change_subject=True,
        allow_invites=True,
        allow_pm="none",
        history_length=50,
        password="never shown",
    )
    form = roominfo_form(config, 3, "Spells", contacts=["crone1@shakespeare.lit", "hecate@shakespeare.lit"])
    assert form.get("type") == "result"
    assert fields_of(form)["FORM_TYPE"].get("type") == "hidden"
    assert values_of(form) == {
        "FORM_TYPE": [ROOMINFO],
        "muc#roomconfig_roomname": ["A Dark Cave"],
        "muc#roominfo_description": ["The place for all good witches!"],
        "muc#roominfo_lang": ["en"],
        "muc#roominfo_subject": ["Spells"],
        "muc#roomconfig_changesubject": ["1"],
        "muc#roominfo_subjectmod": ["1"],
        "muc#roomconfig_allowinvites": ["1"],
        "muc#roomconfig_allowpm": ["none"],
        "muc#roominfo_occupants": ["3"],
        "muc#maxhistoryfetch": ["50"],
        "muc#roominfo_contactjid": ["crone1@shakespeare.lit", "hecate@shakespeare.lit"],
    }
    assert b"never shown" not in etree.tostring(form)


def test_roominfo_gives_only_fields_with_a_value() -> None:
    values = values_of(roominfo_form(RoomConfig(), 0, ""))
    assert set(values) == {
        "FORM_TYPE",
        "muc#roomconfig_changesubject",
        "muc#roominfo_subjectmod",
        "muc#roomconfig_allowinvites",
        "muc#roomconfig_allowpm",
        "muc#roominfo_occupants",
        "muc#maxhistoryfetch",
    }
    assert values["muc#roominfo_occupants"] == ["0"]


# --- registration (§7.10) ---------------------------------------------------------------------------


def test_register_form() -> None:
    form = register_form("thirdwitch")
    assert form.get("type") == "form"
    fields = fields_of(form)
    assert values_of(form) == {"FORM_TYPE": [REGISTER], "muc#register_roomnick": ["thirdwitch"]}
    nick = fields["muc#register_roomnick"]
    assert nick.get("type") == "text-single"
    assert nick.find(f"{{{DATA_NS}}}required") is not None
    assert values_of(register_form(None))["muc#register_roomnick"] == []


def test_parse_register() -> None:
    form = submit({"muc#register_roomnick": "thirdwitch", "muc#register_first": "Brunhilde"}, form_type=REGISTER)
    assert parse_register(form) == "thirdwitch"


@pytest.mark.parametrize(
    "form",
    [
        None,
        submit({}, form_type=REGISTER),
        submit({"muc#register_roomnick": []}, form_type=REGISTER),
        submit({"muc#register_roomnick": "  "}, form_type=REGISTER),
        submit({"muc#register_roomnick": "witch"}, form_type=ROOMCONFIG),
        submit({"muc#register_roomnick": "witch"}, form_type=REGISTER, type_="form"),
    ],
    ids=["no-form", "no-nick", "nick-without-value", "blank-nick", "form-type", "type-form"],
)
def test_register_without_a_valid_form_is_a_bad_request(form: etree._Element | None) -> None:
    # §7.10: "If the user did not include a valid data form, the room MUST return a bad-request".
    with pytest.raises(StanzaError) as caught:
        parse_register(form)
    assert caught.value.condition == "bad-request"


# --- persistence ------------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    config = RoomConfig(
        name="Cave", password="pw", max_users=30, whois="anyone", allow_pm="none", history_length=0, archiving=False
    )
    assert from_json(to_json(config)) == config
    assert from_json(to_json(RoomConfig())) == RoomConfig()


def test_json_from_an_older_version_loads() -> None:
    # Missing keys take their defaults; keys we no longer know are ignored.
    stored: dict[str, Any] = {"name": "Old room", "persistent": True, "logging": True, "max_history_fetch": 5}
    assert from_json(stored) == RoomConfig(name="Old room", persistent=True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", 5),
        ("persistent", "yes"),
        ("persistent", 1),
        ("max_users", True),
        ("max_users", -1),
        ("max_users", "10"),
        ("history_length", 2.5),
        ("whois", "none"),
        ("allow_pm", "everyone"),
        ("password", None),
    ],
)
def test_json_values_of_the_wrong_kind_fall_back_to_defaults(key: str, value: object) -> None:
    stored = {**to_json(RoomConfig(name="kept")), key: value}
    config = from_json(stored)
    assert getattr(config, key) == getattr(RoomConfig(), key)
    assert config.name == ("kept" if key != "name" else "")


@pytest.mark.parametrize("data", [None, [], "config", 3])
def test_json_that_is_not_an_object_gives_the_defaults(data: object) -> None:
    assert from_json(data) == RoomConfig()

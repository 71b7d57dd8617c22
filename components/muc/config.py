"""XEP-0045 room configuration, and the data forms built from it. No I/O: elements in, values out.

- `RoomConfig`, and the `muc#roomconfig` form an owner gets and submits (§10.1.3, §10.2), checked
  against the service's `ConfigLimits`;
- `changes`: the status codes a configuration change announces to the occupants (§10.2.1);
- `room_features` and `roominfo_form`: what disco#info tells about a room (§6.4, §16.5.4);
- `register_form` and `parse_register`: registration with a room (§7.10);
- `to_json` and `from_json`: the configuration of a persistent room as stored.

Errors in a submitted form (decided from XEP-0004 and XEP-0045, which say it the same way):
- `bad-request` when what came is not a form of the expected kind: not a `jabber:x:data` form of
  type submit, another FORM_TYPE, a field twice (XEP-0004 §3.2: 'var' identifies a field
  uniquely), and for §7.10 a registration without a nickname ("did not include a valid data
  form");
- `not-acceptable` when the form is the right one but a value cannot be used: a boolean that is
  not one of 0, 1, false, true, a value outside a list's options, a number out of range, several
  values in a single-value field, a password-protected room without a password. XEP-0004 §6
  ("SHOULD return a Not Acceptable error", with a text saying what is wrong) and XEP-0045 §10.1.3
  (options that "violate one or more service policies") both name not-acceptable for this.

Fields a submission leaves out keep their current value (XEP-0004 §3.4, incomplete submission),
and fields we do not offer are ignored, also those of the muc#roomconfig registry (XEP-0004
§3.2: the form-processing entity "MUST ignore any fields that it does not understand").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree

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

MUC_NS = "http://jabber.org/protocol/muc"
ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
REGISTER = "http://jabber.org/protocol/muc#register"

WHOIS = ("moderators", "anyone")
ALLOW_PM = ("anyone", "participants", "moderators", "none")

# Field names (the registry of §16.5.3, and the archive switch: see RoomConfig.archiving).
ROOMNAME = "muc#roomconfig_roomname"
ROOMDESC = "muc#roomconfig_roomdesc"
LANG = "muc#roomconfig_lang"
PERSISTENT = "muc#roomconfig_persistentroom"
PUBLIC = "muc#roomconfig_publicroom"
MEMBERSONLY = "muc#roomconfig_membersonly"
MODERATED = "muc#roomconfig_moderatedroom"
PASSWORDPROTECTED = "muc#roomconfig_passwordprotectedroom"
ROOMSECRET = "muc#roomconfig_roomsecret"
MAXUSERS = "muc#roomconfig_maxusers"
ROOM_WHOIS = "muc#roomconfig_whois"
ALLOWINVITES = "muc#roomconfig_allowinvites"
ALLOWPM = "muc#roomconfig_allowpm"
CHANGESUBJECT = "muc#roomconfig_changesubject"
MAXHISTORYFETCH = "muc#maxhistoryfetch"
ENABLEARCHIVING = "muc#roomconfig_enablearchiving"
ROOMNICK = "muc#register_roomnick"


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What an owner configures (§10.2). The fields of the XEP-0045 registry left out on purpose:

    - `passwordprotectedroom` is not a field of its own: a room is protected iff it has a
      password, so the two can never disagree (§10.1.3 refuses a protected room without one);
    - `presencebroadcast` and `getmemberlist`: §7.2.3 and §9.5 give the behaviour that follows
      from the roles and from `whois` (members of a non-anonymous room may get the member list,
      those of a semi-anonymous one may not), and no client we target sets them;
    - `roomadmins` and `roomowners`: affiliations, changed through muc#admin and muc#owner items
      (§9, §10.3-§10.8) and kept by the room, not part of its configuration;
    - `enablelogging`: public logs at a URL (muc#roominfo_logs), which we do not publish; the
      room's own archive is `archiving`;
    - `pubsub`: no associated node.
    """

    name: str = ""  # muc#roomconfig_roomname
    description: str = ""  # muc#roomconfig_roomdesc
    language: str = ""  # muc#roomconfig_lang
    persistent: bool = False  # muc#roomconfig_persistentroom
    public: bool = True  # muc#roomconfig_publicroom (listed in the service's disco#items)
    members_only: bool = False  # muc#roomconfig_membersonly
    moderated: bool = False  # muc#roomconfig_moderatedroom
    password: str = ""  # muc#roomconfig_roomsecret; the room is password-protected iff not empty
    max_users: int = 0  # muc#roomconfig_maxusers; 0 is "none": only the service's cap applies
    whois: str = "moderators"  # muc#roomconfig_whois: moderators (semi-anonymous) | anyone (non-anonymous)
    allow_invites: bool = False  # muc#roomconfig_allowinvites: occupants, not only admins, may invite
    allow_pm: str = "anyone"  # muc#roomconfig_allowpm: anyone | participants | moderators | none
    change_subject: bool = False  # muc#roomconfig_changesubject: participants may change the subject
    history_length: int = 20  # muc#maxhistoryfetch: messages kept for the discussion history
    # muc#roomconfig_enablearchiving (the name Prosody's MUC archive uses; XEP-0313 registers
    # none): the room's XEP-0313 archive. Status codes 170/171 ("room logging") announce it.
    archiving: bool = True


@dataclass(frozen=True, slots=True)
class ConfigLimits:
    """The service's caps on what an owner may configure."""

    max_users: int  # occupants of one room, whatever its own maxusers says
    max_history: int  # messages of discussion history a room may keep

    def __post_init__(self) -> None:
        if self.max_users < 1:
            raise ValueError(f"max_users must be at least 1, not {self.max_users}")
        if self.max_history < 0:
            raise ValueError(f"max_history must not be negative, not {self.max_history}")


# The maxusers options offered below the service's cap (which is always offered too).
_MAX_USERS_STEPS = (10, 20, 30, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_WHOIS_LABELS = {"moderators": "Moderators Only", "anyone": "Anyone"}
_ALLOW_PM_LABELS = {
    "anyone": "Anyone",
    "participants": "Anyone with Voice",
    "moderators": "Moderators Only",
    "none": "Nobody",
}
_BOOLEANS = {
    PERSISTENT: "persistent",
    PUBLIC: "public",
    MEMBERSONLY: "members_only",
    MODERATED: "moderated",
    ALLOWINVITES: "allow_invites",
    CHANGESUBJECT: "change_subject",
    ENABLEARCHIVING: "archiving",
}
_TEXTS = {ROOMNAME: "name", ROOMDESC: "description", LANG: "language"}
_CHOICES = {ROOM_WHOIS: ("whois", WHOIS), ALLOWPM: ("allow_pm", ALLOW_PM)}


# -- the configuration form (§10.1.3, §10.2) ----------------------------------------------------


def config_form(config: RoomConfig, limits: ConfigLimits) -> etree._Element:
    """The `<x xmlns='jabber:x:data' type='form'/>` an owner fills in, with the current values."""
    form = element(f"{{{DATA_NS}}}x", {"type": "form"})
    title = f'Configuration of "{config.name}"' if config.name else "Room configuration"
    element(f"{{{DATA_NS}}}title", parent=form).text = title
    add_field(form, "FORM_TYPE", "hidden", None, [ROOMCONFIG])
    add_field(form, ROOMNAME, "text-single", "Natural-Language Room Name", text_values(config.name))
    add_field(form, ROOMDESC, "text-single", "Short Description of Room", text_values(config.description))
    add_field(form, LANG, "text-single", "Natural Language for Room Discussions", text_values(config.language))
    add_field(form, PERSISTENT, "boolean", "Make Room Persistent?", bool_values(config.persistent))
    add_field(form, PUBLIC, "boolean", "Make Room Publicly Searchable?", bool_values(config.public))
    add_field(form, MEMBERSONLY, "boolean", "Make Room Members-Only?", bool_values(config.members_only))
    add_field(form, MODERATED, "boolean", "Make Room Moderated?", bool_values(config.moderated))
    add_field(form, PASSWORDPROTECTED, "boolean", "Password Required to Enter?", bool_values(bool(config.password)))
    add_field(
        form,
        ROOMSECRET,
        "text-private",
        "Password",
        text_values(config.password),
        desc="Needed when a password is required to enter",
    )
    add_field(
        form, ROOM_WHOIS, "list-single", "Who May Discover Real JIDs?", [config.whois], options=_WHOIS_LABELS.items()
    )
    add_field(form, ALLOWINVITES, "boolean", "Allow Occupants to Invite Others?", bool_values(config.allow_invites))
    add_field(
        form,
        ALLOWPM,
        "list-single",
        "Who Can Send Private Messages?",
        [config.allow_pm],
        options=_ALLOW_PM_LABELS.items(),
    )
    add_field(form, CHANGESUBJECT, "boolean", "Allow Occupants to Change Subject?", bool_values(config.change_subject))
    # A room configured before the operator lowered a cap shows (and keeps, if resubmitted) what
    # it can actually have.
    max_users = min(config.max_users, limits.max_users) if config.max_users else 0
    add_field(
        form,
        MAXUSERS,
        "list-single",
        "Maximum Number of Occupants",
        [str(max_users) if max_users else "none"],
        options=_max_users_options(max_users, limits.max_users),
    )
    add_field(
        form,
        MAXHISTORYFETCH,
        "text-single",
        "Maximum Number of History Messages Returned by Room",
        [str(min(config.history_length, limits.max_history))],
        desc=f"From 0 to {limits.max_history}",
    )
    add_field(
        form,
        ENABLEARCHIVING,
        "boolean",
        "Archive Messages?",
        bool_values(config.archiving),
        desc="Keep the room's messages in its archive, where occupants can search them (XEP-0313)",
    )
    return form


def _max_users_options(current: int, cap: int) -> list[tuple[str, str]]:
    steps = {n for n in _MAX_USERS_STEPS if n < cap} | {cap}
    if current:
        # The current value is an option, so that a client shows it selected.
        steps.add(current)
    options = [(str(n), str(n)) for n in sorted(steps)]
    # §10.2's "none": the room sets no limit of its own, so the service's cap is the one left.
    options.append(("none", f"No limit of the room's own (the service allows {cap})"))
    return options


def parse_config(form: etree._Element, current: RoomConfig, limits: ConfigLimits) -> RoomConfig:
    """The configuration a submitted form (`type='submit'`) asks for; StanzaError if it cannot be.

    An empty submission is the instant room's "accept the default configuration" (§10.1.2) and
    gives `current` back. A form of type cancel is the caller's to handle (§10.1.3, §10.2).
    """
    values = submitted_fields(form, ROOMCONFIG)
    updates: dict[str, Any] = {}
    for var, attribute in _TEXTS.items():
        if var in values:
            updates[attribute] = single_value(var, values[var])
    for var, attribute in _BOOLEANS.items():
        if var in values:
            updates[attribute] = boolean_value(var, values[var])
    for var, (attribute, allowed) in _CHOICES.items():
        if var in values:
            value = single_value(var, values[var]).strip()
            if value not in allowed:
                raise StanzaError("not-acceptable", f"{var} must be one of {', '.join(allowed)}, not {value!r}")
            updates[attribute] = value
    if MAXUSERS in values:
        updates["max_users"] = _max_users(values[MAXUSERS], limits.max_users)
    if MAXHISTORYFETCH in values:
        updates["history_length"] = count_value(MAXHISTORYFETCH, values[MAXHISTORYFETCH], 0, limits.max_history)
    if PASSWORDPROTECTED in values or ROOMSECRET in values:
        updates["password"] = _password(values, current)
    return dataclasses.replace(current, **updates)


def _max_users(values: list[str], cap: int) -> int:
    value = single_value(MAXUSERS, values).strip()
    if value == "none":
        return 0
    # Any count up to the cap, not only the offered steps: it means the same, and a client that
    # shows the field as text (some do, for a number) still works.
    return count_value(MAXUSERS, values, 1, cap)


def _password(values: dict[str, list[str]], current: RoomConfig) -> str:
    secret = single_value(ROOMSECRET, values[ROOMSECRET]) if ROOMSECRET in values else current.password
    # Without the boolean, the secret alone says it: submitting a password sets one, submitting
    # an empty one removes it.
    protected = (
        boolean_value(PASSWORDPROTECTED, values[PASSWORDPROTECTED]) if PASSWORDPROTECTED in values else bool(secret)
    )
    if not protected:
        return ""
    if not secret:
        # §10.1.3: "the password for a password-protected room is blank" is not acceptable.
        raise StanzaError("not-acceptable", f"a password-protected room needs a password ({ROOMSECRET})")
    return secret


def changes(old: RoomConfig, new: RoomConfig) -> list[str]:
    """The status codes that announce going from `old` to `new` to the occupants (§10.2.1).

    104 goes with every change, also next to a privacy code: §10.2.1 asks for it on "any other
    configuration change", but every change here alters what disco#info or the configuration
    form shows, and 104 is what clients refetch those on. 170/171 report the archive ("room
    logging"), 172/173 non-anonymous and semi-anonymous (registry, §16.6).
    """
    if old == new:
        return []
    codes = ["104"]
    if old.archiving != new.archiving:
        codes.append("170" if new.archiving else "171")
    if old.whois != new.whois:
        codes.append("172" if new.whois == "anyone" else "173")
    return codes


# -- disco#info (§6.4) --------------------------------------------------------------------------


def room_features(config: RoomConfig) -> list[str]:
    """The room's own disco#info features (§6.4, §16.3); the caller adds those of other XEPs."""
    return [
        MUC_NS,
        "muc_public" if config.public else "muc_hidden",
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.whois == "anyone" else "muc_semianonymous",
        "muc_passwordprotected" if config.password else "muc_unsecured",
    ]


def roominfo_form(config: RoomConfig, occupants: int, subject: str, *, contacts: Sequence[str] = ()) -> etree._Element:
    """The muc#roominfo extended disco#info (§6.4 with XEP-0128; fields of §16.5.4).

    `contacts` are the addresses to publish as muc#roominfo_contactjid (normally the owners',
    when the room wants them known). Only fields with a value are given. Whoever may query the
    room reads this, so it never carries the password.
    """
    form = element(f"{{{DATA_NS}}}x", {"type": "result"})
    add_field(form, "FORM_TYPE", "hidden", None, [ROOMINFO])
    # §6.4: any muc#roomconfig field may also appear here. Clients read the name, and whether
    # they may invite, send private messages or change the subject, from these.
    if config.name:
        add_field(form, ROOMNAME, "text-single", "Natural-Language Room Name", [config.name])
    if config.description:
        add_field(form, "muc#roominfo_description", "text-single", "Description", [config.description])
    if config.language:
        add_field(form, "muc#roominfo_lang", "text-single", "Language of discussion", [config.language])
    if subject:
        add_field(form, "muc#roominfo_subject", "text-single", "Current Discussion Topic", [subject])
    # The same fact under both names: §6.4's example uses the muc#roomconfig one, the §16.5.4
    # registry defines muc#roominfo_subjectmod, and clients read one or the other.
    add_field(form, CHANGESUBJECT, "boolean", "Subject can be modified", bool_values(config.change_subject))
    add_field(
        form,
        "muc#roominfo_subjectmod",
        "boolean",
        "Subject can be modified by participants",
        bool_values(config.change_subject),
    )
    add_field(form, ALLOWINVITES, "boolean", "Occupants may invite others", bool_values(config.allow_invites))
    add_field(form, ALLOWPM, "list-single", "Who may send private messages", [config.allow_pm])
    add_field(form, "muc#roominfo_occupants", "text-single", "Number of occupants", [str(occupants)])
    add_field(
        form,
        MAXHISTORYFETCH,
        "text-single",
        "Maximum Number of History Messages Returned by Room",
        [str(config.history_length)],
    )
    if contacts:
        add_field(form, "muc#roominfo_contactjid", "jid-multi", "Contact Addresses", list(contacts))
    return form


# -- registration (§7.10) -----------------------------------------------------------------------


def register_form(nick: str | None) -> etree._Element:
    """The muc#register form for a registration request (§7.10), with `nick` proposed."""
    form = element(f"{{{DATA_NS}}}x", {"type": "form"})
    element(f"{{{DATA_NS}}}title", parent=form).text = "Room registration"
    element(f"{{{DATA_NS}}}instructions", parent=form).text = "Choose the nickname to reserve in this room."
    add_field(form, "FORM_TYPE", "hidden", None, [REGISTER])
    nick_field = add_field(form, ROOMNICK, "text-single", "Desired Nickname", [nick] if nick else [])
    element(f"{{{DATA_NS}}}required", parent=nick_field)
    return form


def parse_register(form: etree._Element | None) -> str:
    """The nickname a submitted muc#register form asks for; StanzaError bad-request without one.

    The nickname comes back as given: the caller prepares it as it prepares the nick of a join
    (RFC 7622 resourcepart), so that both agree on what is the same nick.
    """
    if form is None:
        raise StanzaError("bad-request", "a muc#register data form is needed to register")
    values = submitted_fields(form, REGISTER)
    nick = single_value(ROOMNICK, values.get(ROOMNICK, []))
    if not nick.strip():
        # §7.10: "If the user did not include a valid data form", and the nick is <required/>.
        raise StanzaError("bad-request", f"{ROOMNICK} is required")
    return nick


# -- persistence --------------------------------------------------------------------------------


def to_json(config: RoomConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_json(data: object) -> RoomConfig:
    """The configuration stored by `to_json`, by this version or an older one.

    Keys we do not know are ignored, and a value of the wrong type (or outside its choices, or a
    negative count) falls back to the default, so that a room stored long ago still loads.
    """
    if not isinstance(data, dict):
        return RoomConfig()
    default = RoomConfig()
    values: dict[str, Any] = {}
    for item in dataclasses.fields(RoomConfig):
        value = data.get(item.name)
        expected = getattr(default, item.name)
        if isinstance(expected, bool):
            valid = isinstance(value, bool)
        elif isinstance(expected, int):
            # bool is an int to Python, not a count to us.
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            valid = isinstance(value, str)
        if valid and item.name == "whois":
            valid = value in WHOIS
        elif valid and item.name == "allow_pm":
            valid = value in ALLOW_PM
        if valid:
            values[item.name] = value
    return RoomConfig(**values)

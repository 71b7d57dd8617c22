"""RFC 7622: XMPP address format (JIDs) — parsing, preparation and comparison.

A JID is ``[localpart "@"] domainpart ["/" resourcepart]``. Every JID that exists in the server
is *prepared*: its parts have been enforced with the rules of RFC 7622 §3, so two JIDs name the
same entity exactly when their canonical strings are equal. That lets equality and hashing work
on one precomputed string, which matters because the router compares and hashes addresses for
every stanza.

Preparation, per part:

* localpart (§3.3): PRECIS UsernameCaseMapped (RFC 8265 §3.3) plus the eight code points that
  §3.3.1 forbids on top of it.
* domainpart (§3.2): the trailing dot is stripped first; IP literals are kept (canonicalised);
  otherwise labels are width-mapped, lower-cased and NFC-normalised, A-labels are turned into
  U-labels, and each label is checked against the IDNA2008 shape rules that matter for routing
  (see ``_prepare_domain_slow`` for what is and is not checked).
* resourcepart (§3.4): PRECIS OpaqueString (RFC 8265 §4.2).

Pure ASCII input takes fast paths that give the same result as the PRECIS profiles without
running them (the unit tests check that equivalence exhaustively over single characters and by
property over strings), and ``parse_jid`` is memoised, so a hot address costs one dict lookup.

This module is sans-IO: no asyncio, no sockets, no files.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from precis_i18n import get_profile
from precis_i18n.bidi import bidi_rule, has_rtl

__all__ = ["JID", "InvalidJID", "parse_jid", "prepare_localpart"]

# RFC 7622 §3.1: "each allowable portion of a JID ... MUST NOT be more than 1023 octets".
MAX_PART_OCTETS: Final = 1023

# Bound on raw input before any Unicode work, so a hostile 'to' attribute cannot make us run
# PRECIS over megabytes. Preparation can shrink a string (width mapping turns 3-octet fullwidth
# forms into ASCII, NFC composes sequences), so a legal part may arrive longer than 1023 octets;
# four characters per allowed octet is far beyond what any legal part can need.
_MAX_RAW_CHARS: Final = 4 * 3 * MAX_PART_OCTETS

_USERNAME = get_profile("UsernameCaseMapped")
_OPAQUE = get_profile("OpaqueString")
# The PRECIS IdentifierClass (RFC 8264 §4.2) is built from the categories IDNA2008 uses for its
# PVALID set (RFC 5892: LetterDigits, no compatibility forms, no symbols, CONTEXTJ/CONTEXTO
# rules), so it serves as the code point check for U-labels without adding an IDNA dependency.
_IDENTIFIER = get_profile("IdentifierClass")
_UCD = _USERNAME.base.ucd

# RFC 7622 §3.3.1: code points that a localpart MUST NOT contain although UsernameCaseMapped
# allows them (so that a JID stays unambiguous inside XMPP URIs and XML): " & ' / : < > @
_LOCAL_FORBIDDEN: Final = frozenset("\"&'/:<>@")

# Fast path for localparts: printable ASCII (U+0021..U+007E, all PVALID in the IdentifierClass
# per RFC 8264 §9.11 "ASCII7") minus the §3.3.1 characters. For such a string the width mapping,
# NFC and directionality rules of UsernameCaseMapped are no-ops and the case mapping is ASCII
# lower-casing, so ``str.lower`` is exactly the profile's output.
_LOCAL_ASCII = re.compile(r"[\x21\x23-\x25\x28-\x2e\x30-\x39\x3b\x3d\x3f\x41-\x7e]{1,1023}")

# Fast path for resourceparts: printable ASCII and SPACE are all valid in the FreeformClass
# (RFC 8264 §9.11, §9.14) and OpaqueString maps nothing among them, so the output is the input.
_RESOURCE_ASCII = re.compile(r"[\x20-\x7e]{1,1023}")

# An LDH label (RFC 5890 §2.3.1): letters, digits, hyphen, not starting or ending with a
# hyphen, at most 63 octets (RFC 1035 §2.3.4).
_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_LDH_LABEL_RE = re.compile(_LDH_LABEL)
_LDH_DOMAIN_RE = re.compile(rf"(?:{_LDH_LABEL}\.)*{_LDH_LABEL}")
_MAX_LABEL_OCTETS: Final = 63


class InvalidJID(ValueError):
    """The text is not a valid JID (RFC 7622); a stanza carrying it earns 'jid-malformed'."""


def _octets_ok(value: str) -> bool:
    # Strings are at most 4 octets per character in UTF-8: skip the encode for short ones.
    if len(value) * 4 <= MAX_PART_OCTETS:
        return True
    return len(value.encode("utf-8")) <= MAX_PART_OCTETS


def prepare_localpart(text: str) -> str:
    """RFC 7622 §3.3: enforce a localpart; returns the prepared form or raises InvalidJID.

    Public because an XMPP username (the SASL authcid, RFC 6120 §6.3.7) is a localpart.
    """
    if _LOCAL_ASCII.fullmatch(text):
        return text.lower()
    if not text:
        raise InvalidJID("empty localpart")
    try:
        prepared = _USERNAME.enforce(text)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid localpart: {_reason(exc)}") from None
    # Checked on the output: width mapping can turn e.g. U+FF20 FULLWIDTH COMMERCIAL AT into '@'.
    if not _LOCAL_FORBIDDEN.isdisjoint(prepared):
        raise InvalidJID("localpart contains a character forbidden by RFC 7622 §3.3.1")
    if not _octets_ok(prepared):
        raise InvalidJID("localpart longer than 1023 octets")
    return prepared


def _prepare_resource(text: str) -> str:
    """RFC 7622 §3.4: enforce the resourcepart (OpaqueString); raises InvalidJID."""
    if _RESOURCE_ASCII.fullmatch(text):
        return text
    if not text:
        raise InvalidJID("empty resourcepart")
    try:
        prepared = _OPAQUE.enforce(text)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid resourcepart: {_reason(exc)}") from None
    if not _octets_ok(prepared):
        raise InvalidJID("resourcepart longer than 1023 octets")
    return prepared


def _reason(exc: UnicodeError) -> str:
    # precis_i18n reports the failing rule (e.g. "DISALLOWED/symbols") as the codec reason.
    return getattr(exc, "reason", None) or str(exc)


def _prepare_domain(text: str) -> str:
    """RFC 7622 §3.2: enforce the domainpart; returns the prepared form or raises InvalidJID."""
    # §3.2: a final label separator "MUST be stripped ... before any other canonicalization
    # steps are taken". Only one: "example.com.." still has an empty label and is refused.
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise InvalidJID("empty domainpart")
    if text.isascii():
        domain = text.lower()
        if _LDH_DOMAIN_RE.fullmatch(domain) and "--" not in domain:
            # Without "--" there can be no A-label and no reserved (R-LDH) label, so an LDH
            # match is already a valid NR-LDH name, except for the all-numeric case below.
            last_dot = domain.rfind(".")
            if domain[last_dot + 1 :].isdigit():
                return _prepare_ipv4(domain)
            if len(domain) > MAX_PART_OCTETS:
                raise InvalidJID("domainpart longer than 1023 octets")
            return domain
        if domain.startswith("[") and domain.endswith("]"):
            return _prepare_ipv6(domain)
    prepared = _prepare_domain_slow(text)
    # The slow path mixes several mappings; insist the result is a fixed point so that
    # str(parse_jid(str(j))) == str(j) holds for every JID we hand out.
    if _prepare_domain_slow(prepared) != prepared:
        raise InvalidJID("domainpart is not stable under preparation")
    return prepared


def _prepare_ipv4(domain: str) -> str:
    # RFC 7622 §3.2 allows an IPv4 address (RFC 3986 §3.2.2 IPv4address) as the domainpart. A
    # name whose last label is all digits cannot be a DNS host name (RFC 3696 §2), so anything
    # that is not a valid dotted quad is refused rather than routed as a name.
    try:
        address = ipaddress.IPv4Address(domain)
    except ValueError:
        raise InvalidJID("domainpart is neither a host name nor an IPv4 address") from None
    return str(address)


def _prepare_ipv6(domain: str) -> str:
    # RFC 7622 §3.2: an IPv6 address in brackets (RFC 3986 §3.2.2 IP-literal). Zone identifiers
    # are not part of that grammar, and IPvFuture is not supported. The compressed lower-case
    # form (RFC 5952 §4) is canonical, so [::1] and [0:0::1] are the same JID.
    inner = domain[1:-1]
    if "%" in inner:
        raise InvalidJID("IPv6 zone identifiers are not allowed in a domainpart")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise InvalidJID("invalid IPv6 literal in domainpart") from None
    return f"[{address.compressed}]"


def _prepare_domain_slow(text: str) -> str:
    """Internationalised or unusual domainparts (RFC 7622 §3.2.1 and §3.2.2).

    Mapping (§3.2.2: "the normalization, case-mapping, and width-mapping rules"): fullwidth and
    halfwidth forms to their decompositions (this also turns U+FF0E FULLWIDTH FULL STOP into a
    label separator), upper case to lower case, then NFC. Each label is then checked:

    * ASCII labels must be LDH (RFC 5890 §2.3.1); "xn--" labels are A-labels and are converted
      to U-labels (§3.2.1 "each A-label MUST be converted to a U-label"), and must round-trip;
      other labels with "--" in positions 3 and 4 are reserved (R-LDH) and refused.
    * U-labels (RFC 5891 §4.2.3, §5.4): no leading combining mark, no leading or trailing
      hyphen, no "--" in positions 3-4, code points valid in the PRECIS IdentifierClass (our
      stand-in for the IDNA2008 PVALID/CONTEXT tables), ASCII only as LDH, at most 63 octets
      in A-label form, and the Bidi rule (RFC 5893) across a name that contains RTL labels.

    Not checked: the 253-octet DNS limit on the whole name (a component's domain need not be
    in the DNS; RFC 7622 itself only sets 1023 octets), and IDNA2008's per-version exception
    list beyond what the IdentifierClass covers.
    """
    if text.startswith("["):
        if text.endswith("]") and text.isascii():
            return _prepare_ipv6(text.lower())
        raise InvalidJID("malformed IP literal in domainpart")
    mapped = _USERNAME.width_mapping_rule(text)
    mapped = unicodedata.normalize("NFC", mapped.lower())
    labels = mapped.split(".")
    out: list[str] = []
    for label in labels:
        if not label:
            raise InvalidJID("empty label in domainpart")
        if label.isascii():
            out.append(_prepare_ascii_label(label))
        else:
            _check_u_label(label)
            out.append(label)
    if any(has_rtl(label, _UCD) for label in out):
        # RFC 5893 §2: in a "bidi domain name" every label must satisfy the Bidi rule.
        for label in out:
            if not bidi_rule(label, _UCD):
                raise InvalidJID("domainpart violates the Bidi rule (RFC 5893)")
    domain = ".".join(out)
    if domain[domain.rfind(".") + 1 :].isdigit():
        return _prepare_ipv4(domain)
    if not _octets_ok(domain):
        raise InvalidJID("domainpart longer than 1023 octets")
    return domain


def _prepare_ascii_label(label: str) -> str:
    if not _LDH_LABEL_RE.fullmatch(label):
        raise InvalidJID("domain label is not letters, digits and hyphens")
    if label[2:4] != "--":
        return label
    if not label.startswith("xn--"):
        raise InvalidJID("reserved domain label (hyphens in positions 3 and 4)")
    try:
        u_label = label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        raise InvalidJID("invalid A-label in domainpart") from None
    if u_label.isascii() or unicodedata.normalize("NFC", u_label.lower()) != u_label:
        raise InvalidJID("A-label does not decode to a valid U-label")
    _check_u_label(u_label)
    if _to_a_label(u_label) != label:
        # Only the canonical encoding is accepted, so one name has exactly one spelling.
        raise InvalidJID("non-canonical A-label in domainpart")
    return u_label


def _check_u_label(label: str) -> None:
    if label.startswith("-") or label.endswith("-") or label[2:4] == "--":
        raise InvalidJID("domain label has misplaced hyphens")
    if unicodedata.category(label[0]).startswith("M"):
        raise InvalidJID("domain label starts with a combining mark")
    for char in label:
        if char.isascii() and not (char.isalnum() or char == "-"):
            raise InvalidJID("domain label contains ASCII other than letters, digits, hyphen")
    try:
        _IDENTIFIER.enforce(label)
    except UnicodeError as exc:
        raise InvalidJID(f"invalid domain label: {_reason(exc)}") from None
    try:
        a_label = _to_a_label(label)
    except UnicodeError:
        raise InvalidJID("domain label cannot be encoded as an A-label") from None
    if len(a_label) > _MAX_LABEL_OCTETS:
        raise InvalidJID("domain label longer than 63 octets")


def _to_a_label(u_label: str) -> str:
    return "xn--" + u_label.encode("punycode").decode("ascii")


_set = object.__setattr__


@dataclass(frozen=True, slots=True, eq=False)
class JID:
    """A prepared XMPP address.

    Constructing ``JID(local, domain, resource)`` prepares the parts (raising InvalidJID); a
    JID coming from ``parse_jid`` is already prepared and skips that. Either way the fields hold
    the prepared parts and equality/hashing use the canonical string, computed once.
    """

    local: str | None
    domain: str
    resource: str | None
    # Canonical string form, computed once: __str__ runs for every stanza we serialize.
    _str: str = field(init=False, repr=False, compare=False)
    # The bare form of a full JID, made on first use and kept (sessions ask for it often).
    _bare: JID | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        local = None if self.local is None else prepare_localpart(self.local)
        domain = _prepare_domain(self.domain)
        resource = None if self.resource is None else _prepare_resource(self.resource)
        _set(self, "local", local)
        _set(self, "domain", domain)
        _set(self, "resource", resource)
        _set(self, "_str", _join(local, domain, resource))
        _set(self, "_bare", None)

    @property
    def bare(self) -> JID:
        """The JID without its resource; ``self`` when it has none."""
        if self.resource is None:
            return self
        bare = self._bare
        if bare is None:
            text = self._str[: len(self._str) - len(self.resource) - 1]
            bare = _make(self.local, self.domain, None, text)
            _set(self, "_bare", bare)
        return bare

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        """True for a domain JID (no localpart, no resource): a server or component."""
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> JID:
        """This JID's bare form with ``resource`` (prepared per RFC 7622 §3.4) as resource."""
        prepared = _prepare_resource(resource)
        bare = self.bare
        return _make(self.local, self.domain, prepared, f"{bare._str}/{prepared}")

    def __str__(self) -> str:
        return self._str

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, JID):
            # The canonical string determines the parts: neither localpart nor domainpart may
            # contain '@' or '/', so it splits back in exactly one way.
            return self._str == other._str
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._str)


def _join(local: str | None, domain: str, resource: str | None) -> str:
    text = domain if local is None else f"{local}@{domain}"
    return text if resource is None else f"{text}/{resource}"


def _make(local: str | None, domain: str, resource: str | None, text: str) -> JID:
    """Build a JID from parts already prepared, bypassing __post_init__."""
    jid = object.__new__(JID)
    _set(jid, "local", local)
    _set(jid, "domain", domain)
    _set(jid, "resource", resource)
    _set(jid, "_str", text)
    _set(jid, "_bare", None)
    return jid


def _parse(text: str) -> JID:
    if len(text) > _MAX_RAW_CHARS:
        raise InvalidJID("address too long")
    # RFC 7622 §3.1 (and the parsing steps of §3.2): separators are found before any
    # transformation, since mapping could produce '@' or '/'. The resourcepart starts after the
    # first '/', so it may itself contain '@' and '/'; the localpart ends at the first '@'
    # before that.
    slash = text.find("/")
    if slash >= 0:
        rest = text[:slash]
        resource: str | None = _prepare_resource(text[slash + 1 :])
    else:
        rest = text
        resource = None
    at = rest.find("@")
    if at >= 0:
        local: str | None = prepare_localpart(rest[:at])
        domain = _prepare_domain(rest[at + 1 :])
    else:
        local = None
        domain = _prepare_domain(rest)
    return _make(local, domain, resource, _join(local, domain, resource))


# 65536 entries: a few MB, enough for every address active on a busy node. Failures are not
# cached (lru_cache does not store exceptions), which keeps junk from evicting real entries.
_parse_cached = functools.lru_cache(maxsize=65536)(_parse)


def parse_jid(text: str) -> JID:
    """Parse and prepare ``text`` as a JID (RFC 7622); raises InvalidJID. Memoised."""
    return _parse_cached(text)

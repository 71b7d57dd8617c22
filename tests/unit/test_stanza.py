"""RFC 6120 §8 stanzas (xmppd.stanza): parsing, addressing, replies, error replies (§8.3.1), copies."""

from __future__ import annotations

import pytest
from lxml import etree

from xmppd.errors import STANZA_ERRORS_NS, StanzaError
from xmppd.jid import parse_jid
from xmppd.stanza import CLIENT_NS, Stanza

ERROR = f"{{{CLIENT_NS}}}error"
BODY = f"{{{CLIENT_NS}}}body"
PING = "{urn:xmpp:ping}ping"
JULIET = "juliet@example.com/balcony"
ROMEO = "romeo@example.net/orchard"


def xml(text: str) -> etree._Element:
    """An element in jabber:client, written without the namespace for brevity."""
    return etree.fromstring(f"<wrapper xmlns='{CLIENT_NS}'>{text}</wrapper>")[0]


def parse(text: str) -> Stanza:
    return Stanza.parse(xml(text))


def child_tags(element: etree._Element) -> list[str]:
    return [child.tag for child in element if isinstance(child.tag, str)]


# --- parse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["message", "presence", "iq"])
def test_parse_kinds(kind: str) -> None:
    element = xml(f"<{kind} to='{JULIET}' from='{ROMEO}' type='t' id='i1'/>")
    stanza = Stanza.parse(element)
    assert stanza.kind == kind
    assert stanza.element is element
    assert stanza.to == parse_jid(JULIET)
    assert stanza.from_ == parse_jid(ROMEO)
    assert stanza.type == "t"
    assert stanza.id == "i1"


def test_parse_without_attributes() -> None:
    stanza = parse("<presence/>")
    assert stanza.kind == "presence"
    assert stanza.to is None
    assert stanza.from_ is None
    assert stanza.type is None
    assert stanza.id is None


def test_parse_prepares_addresses() -> None:
    stanza = parse("<message to='Juliet@Example.COM/Balcony' from='EXAMPLE.net'/>")
    assert str(stanza.to) == "juliet@example.com/Balcony"
    assert str(stanza.from_) == "example.net"


@pytest.mark.parametrize(
    "element",
    [
        # Right name, wrong namespace: server-to-server and component stanzas are translated at the edge.
        "<message xmlns='jabber:server'/>",
        "<iq xmlns='jabber:component:accept' type='get' id='1'/>",
        "<message/>",  # no namespace at all
        f"<body xmlns='{CLIENT_NS}'/>",
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
    ],
)
def test_parse_non_stanza_raises_value_error(element: str) -> None:
    with pytest.raises(ValueError, match="not a stanza"):
        Stanza.parse(etree.fromstring(element))


@pytest.mark.parametrize("attribute", ["to", "from"])
@pytest.mark.parametrize("bad", ["@example.com", "juliet@", "example.com/", "a@b@c"])
def test_parse_bad_address_is_jid_malformed(attribute: str, bad: str) -> None:
    with pytest.raises(StanzaError) as info:
        parse(f"<message {attribute}='{bad}'/>")
    assert info.value.condition == "jid-malformed"
    assert info.value.type == "modify"
    assert info.value.text is not None
    assert f"'{attribute}'" in info.value.text


def test_jid_malformed_is_not_a_value_error() -> None:
    # Callers tell "not a stanza" (ValueError) from "a stanza with a bad address" (answerable).
    with pytest.raises(StanzaError) as info:
        parse("<iq to='@bad' type='get' id='1'/>")
    assert not isinstance(info.value, ValueError)


def test_payload_is_first_child_element() -> None:
    stanza = parse("<iq type='get' id='1'><!-- note --><ping xmlns='urn:xmpp:ping'/><other xmlns='x'/></iq>")
    payload = stanza.payload()
    assert payload is not None
    assert payload.tag == PING
    assert parse("<iq type='result' id='1'><!-- only a comment --></iq>").payload() is None


# --- reply ------------------------------------------------------------------------------------------


def test_iq_reply_is_an_empty_result() -> None:
    request = parse(f"<iq to='{JULIET}' from='{ROMEO}' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = request.reply()
    assert reply.kind == "iq"
    assert reply.type == reply.element.get("type") == "result"
    assert reply.id == reply.element.get("id") == "q1"
    assert reply.to == parse_jid(ROMEO)
    assert reply.from_ == parse_jid(JULIET)
    assert reply.element.get("to") == ROMEO
    assert reply.element.get("from") == JULIET
    assert reply.element.tag == f"{{{CLIENT_NS}}}iq"
    assert len(reply.element) == 0


def test_message_reply_keeps_type() -> None:
    message = parse(f"<message to='{JULIET}' from='{ROMEO}' type='chat' id='m1'><body>hi</body></message>")
    reply = message.reply()
    assert (reply.kind, reply.type, reply.id) == ("message", "chat", "m1")
    assert (reply.to, reply.from_) == (parse_jid(ROMEO), parse_jid(JULIET))
    assert len(reply.element) == 0


def test_reply_without_addresses_or_id() -> None:
    reply = parse("<iq type='set'><query xmlns='jabber:iq:roster'/></iq>").reply()
    assert reply.to is None
    assert reply.from_ is None
    assert reply.id is None
    for attribute in ("to", "from", "id"):
        assert reply.element.get(attribute) is None


# --- error_reply (RFC 6120 §8.3.1) ------------------------------------------------------------------


def assert_error_child(error: etree._Element, error_type: str, condition: str, text: str | None) -> None:
    assert error.tag == ERROR
    assert error.get("type") == error_type
    assert child_tags(error)[0] == f"{{{STANZA_ERRORS_NS}}}{condition}"
    text_element = error.find(f"{{{STANZA_ERRORS_NS}}}text")
    if text is None:
        assert text_element is None
    else:
        assert text_element is not None
        assert text_element.text == text


@pytest.mark.parametrize("kind", ["message", "presence", "iq"])
def test_error_reply_same_kind_and_id_swapped_addresses(kind: str) -> None:
    original = parse(f"<{kind} to='{JULIET}' from='{ROMEO}' type='get' id='e1'/>")
    reply = original.error_reply(StanzaError("service-unavailable"))
    assert reply.kind == kind
    assert reply.element.tag == f"{{{CLIENT_NS}}}{kind}"
    assert reply.id == reply.element.get("id") == "e1"
    assert reply.type == reply.element.get("type") == "error"
    assert (reply.to, reply.from_) == (parse_jid(ROMEO), parse_jid(JULIET))
    assert (reply.element.get("to"), reply.element.get("from")) == (ROMEO, JULIET)
    assert child_tags(reply.element) == [ERROR]
    assert_error_child(reply.element[0], "cancel", "service-unavailable", None)


def test_error_reply_error_element_carries_type_and_text() -> None:
    original = parse(f"<iq to='{JULIET}' from='{ROMEO}' type='set' id='e2'/>")
    reply = original.error_reply(StanzaError("not-allowed", "no thanks", error_type="auth"))
    assert_error_child(reply.element[0], "auth", "not-allowed", "no thanks")


def test_iq_error_reply_carries_only_the_error() -> None:
    request = parse(
        f"<iq to='{JULIET}' from='{ROMEO}' type='set' id='e3'>"
        "<query xmlns='jabber:iq:roster'><item jid='nurse@example.com'/></query></iq>"
    )
    reply = request.error_reply(StanzaError("forbidden"))
    assert child_tags(reply.element) == [ERROR]
    assert_error_child(reply.element[0], "auth", "forbidden", None)


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_message_and_presence_error_reply_keep_payload(kind: str) -> None:
    original = parse(
        f"<{kind} to='{JULIET}' from='{ROMEO}' id='e4'>"
        "<body>Wherefore art thou?</body><!-- a comment -->"
        f"<thread>t1</thread><x xmlns='urn:example:x' a='1'><y/></x></{kind}>"
    )
    reply = original.error_reply(StanzaError("recipient-unavailable"))
    assert child_tags(reply.element) == [BODY, f"{{{CLIENT_NS}}}thread", "{urn:example:x}x", ERROR]
    assert reply.element[0].text == "Wherefore art thou?"
    kept = reply.element[2]
    assert kept.get("a") == "1"
    assert child_tags(kept) == ["{urn:example:x}y"]
    assert_error_child(reply.element[-1], "wait", "recipient-unavailable", None)


def test_error_reply_drops_a_previous_error() -> None:
    original = parse(
        f"<message to='{JULIET}' from='{ROMEO}' type='error' id='e5'><body>hi</body>"
        f"<error type='cancel'><item-not-found xmlns='{STANZA_ERRORS_NS}'/></error></message>"
    )
    reply = original.error_reply(StanzaError("bad-request"))
    assert child_tags(reply.element) == [BODY, ERROR]
    assert len(reply.element.findall(ERROR)) == 1
    assert_error_child(reply.element[1], "modify", "bad-request", None)


def test_error_reply_copies_payload_and_leaves_original_untouched() -> None:
    original = parse(f"<message to='{JULIET}' from='{ROMEO}' id='e6'><body>hi</body></message>")
    before = etree.tostring(original.element)
    reply = original.error_reply(StanzaError("forbidden"))

    reply.element[0].text = "changed"
    assert etree.tostring(original.element) == before
    assert original.element[0].text == "hi"
    assert (original.to, original.from_, original.type) == (parse_jid(JULIET), parse_jid(ROMEO), None)


def test_error_reply_serialises_without_invented_prefixes() -> None:
    original = parse(f"<iq to='{JULIET}' from='{ROMEO}' type='get' id='e7'/>")
    data = etree.tostring(original.error_reply(StanzaError("item-not-found", "gone away")).element)
    assert b"ns0:" not in data
    assert data.startswith(f'<iq xmlns="{CLIENT_NS}"'.encode())


# --- set_from / set_to ------------------------------------------------------------------------------


def test_set_from_updates_attribute_and_jid() -> None:
    stanza = parse(f"<message to='{JULIET}'/>")
    new = parse_jid(ROMEO)
    stanza.set_from(new)
    assert stanza.from_ == new
    assert stanza.element.get("from") == ROMEO
    assert Stanza.parse(stanza.element).from_ == new
    assert stanza.to == parse_jid(JULIET)


def test_set_to_updates_attribute_and_jid() -> None:
    stanza = parse(f"<message to='{JULIET}' from='{ROMEO}'/>")
    new = parse_jid("nurse@example.com")
    stanza.set_to(new)
    assert stanza.to == new
    assert stanza.element.get("to") == "nurse@example.com"
    assert Stanza.parse(stanza.element).to == new
    assert stanza.from_ == parse_jid(ROMEO)


def test_set_to_on_a_stanza_without_addresses() -> None:
    stanza = parse("<presence/>")
    stanza.set_to(parse_jid("example.com"))
    stanza.set_from(parse_jid(ROMEO))
    assert (stanza.element.get("to"), stanza.element.get("from")) == ("example.com", ROMEO)
    assert (str(stanza.to), str(stanza.from_)) == ("example.com", ROMEO)


# --- copy -------------------------------------------------------------------------------------------


def test_copy_is_equal_but_independent() -> None:
    original = parse(f"<message to='{JULIET}' from='{ROMEO}' type='chat' id='c1'><body>hi</body></message>")
    before = etree.tostring(original.element)
    duplicate = original.copy()

    assert duplicate is not original
    assert duplicate.element is not original.element
    assert etree.tostring(duplicate.element) == before
    assert (duplicate.kind, duplicate.to, duplicate.from_, duplicate.type, duplicate.id) == (
        "message",
        parse_jid(JULIET),
        parse_jid(ROMEO),
        "chat",
        "c1",
    )

    duplicate.set_to(parse_jid("nurse@example.com"))
    duplicate.set_from(parse_jid("example.net"))
    duplicate.element[0].text = "changed"
    etree.SubElement(duplicate.element, f"{{{CLIENT_NS}}}thread").text = "t"

    assert original.to == parse_jid(JULIET)
    assert original.from_ == parse_jid(ROMEO)
    assert etree.tostring(original.element) == before


def test_copy_does_not_follow_later_changes_to_the_original() -> None:
    original = parse(f"<iq to='{JULIET}' from='{ROMEO}' type='get' id='c2'><ping xmlns='urn:xmpp:ping'/></iq>")
    duplicate = original.copy()
    before = etree.tostring(duplicate.element)

    original.set_to(parse_jid("example.org"))
    original.element.remove(original.element[0])

    assert duplicate.to == parse_jid(JULIET)
    assert etree.tostring(duplicate.element) == before
    payload = duplicate.payload()
    assert payload is not None
    assert payload.tag == PING

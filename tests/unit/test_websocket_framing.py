"""XMPP over WebSocket framing (RFC 7395), sans-IO (xmppd/framing.py): our `<open/>`, features and
`<close/>` messages, text frame headers (RFC 6455 §5.2), stanzas made documents of their own, and
the client's messages read one at a time: one element each, anything else refused with its
stream error condition, garbage only ever raising StreamError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from xmppd.errors import STREAM_ERRORS_NS, STREAMS_NS, StreamError
from xmppd.framing import (
    FRAMING_NS,
    WS_CLOSE,
    Opening,
    WebSocketParser,
    ws_close,
    ws_features,
    ws_frame_header,
    ws_is_close,
    ws_open,
    ws_qualified,
)
from xmppd.xml import StreamClosed, StreamOpened

CLIENT = "jabber:client"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
OPEN = f"<open xmlns='{FRAMING_NS}' to='example.org' version='1.0' xml:lang='en'/>".encode()
CLOSE = f"<close xmlns='{FRAMING_NS}'/>".encode()
MESSAGE = (
    b"<message xmlns='jabber:client' to='juliet@example.org' type='chat'><body>Wherefore? \xc3\xa9</body></message>"
)


def parser(limit: int = 64 * 1024) -> WebSocketParser:
    return WebSocketParser(limit, max_attributes=8, max_children=16, max_depth=8)


def standalone(message: bytes) -> etree._Element:
    """A message as a client parses it: a document of its own (RFC 7395 §3.3.3)."""
    return etree.fromstring(message)


def condition(message: bytes, *, limit: int = 64 * 1024) -> str:
    with pytest.raises(StreamError) as info:
        parser(limit).message(message)
    return info.value.condition


# --- what we send ----------------------------------------------------------------------------------


def test_open_carries_the_stream_header_attributes() -> None:
    opened = standalone(ws_open(Opening("example.org", "a1b2")))
    assert opened.tag == f"{{{FRAMING_NS}}}open"
    assert dict(opened.attrib) == {"from": "example.org", "id": "a1b2", "version": "1.0", XML_LANG: "en"}
    assert len(opened) == 0


def test_open_escapes_its_attributes_and_may_have_no_from() -> None:
    assert standalone(ws_open(Opening("a'<&b", "x"))).get("from") == "a'<&b"
    assert standalone(ws_open(Opening(None, "x"))).get("from") is None


def test_features_are_a_message_of_their_own() -> None:
    mechanisms = b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>"
    features = standalone(ws_features(mechanisms))
    assert features.tag == f"{{{STREAMS_NS}}}features"
    assert [child.tag for child in features] == ["{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms"]
    assert features.findtext(".//{urn:ietf:params:xml:ns:xmpp-sasl}mechanism") == "PLAIN"


def test_close_alone_is_the_close_element() -> None:
    assert ws_close(None) == [WS_CLOSE]
    closed = standalone(WS_CLOSE)
    assert closed.tag == f"{{{FRAMING_NS}}}close" and len(closed) == 0 and not closed.attrib


def test_close_with_an_error_sends_the_error_then_close() -> None:
    error, close = ws_close(StreamError("not-well-formed", "two elements"))
    element = standalone(error)
    assert element.tag == f"{{{STREAMS_NS}}}error"
    assert [child.tag for child in element] == [
        f"{{{STREAM_ERRORS_NS}}}not-well-formed", f"{{{STREAM_ERRORS_NS}}}text",
    ]
    assert element[1].text == "two elements"
    assert close == WS_CLOSE


def test_an_error_before_our_open_comes_after_an_open() -> None:
    # RFC 7395 §3.5: an error while opening the stream follows our <open/>, in a message of its own.
    messages = ws_close(StreamError("host-unknown"), Opening("example.org", "s1"))
    assert [standalone(m).tag for m in messages] == [
        f"{{{FRAMING_NS}}}open", f"{{{STREAMS_NS}}}error", f"{{{FRAMING_NS}}}close",
    ]
    assert standalone(messages[0]).get("id") == "s1"


def test_the_close_of_a_peer_is_told_without_parsing() -> None:
    assert ws_is_close(CLOSE)
    assert ws_is_close(b"\n <close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\"></close>")
    assert not ws_is_close(b"<close/>")  # another namespace
    assert not ws_is_close(MESSAGE)


def decode_header(frame: bytes) -> tuple[int, bool, int, bytes]:
    """(opcode, masked, payload length, payload) of one frame (RFC 6455 §5.2)."""
    first, second = frame[0], frame[1]
    assert first & 0x80, "FIN"
    assert not first & 0x70, "no extension bits"
    length, offset = second & 0x7F, 2
    if length == 126:
        (length,), offset = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), offset = struct.unpack("!Q", frame[2:10]), 10
    return first & 0x0F, bool(second & 0x80), length, frame[offset:]


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 300_000])
def test_frame_headers_for_every_length_encoding(length: int) -> None:
    payload = b"x" * length
    opcode, masked, decoded, rest = decode_header(ws_frame_header(length) + payload)
    assert (opcode, masked, decoded, rest) == (1, False, length, payload)  # text, unmasked from a server
    # The shortest encoding is used (RFC 6455 §5.2: "the minimal number of bytes MUST be used").
    assert len(ws_frame_header(length)) == (2 if length < 126 else 4 if length < 65536 else 10)


# --- every element we write stands alone -----------------------------------------------------------


def test_a_serialised_stanza_is_left_as_it_is() -> None:
    stanza = etree.tostring(etree.fromstring(MESSAGE))
    assert ws_qualified(stanza) is stanza
    addressed = b'<message to="romeo@example.net" xmlns="jabber:client"><body>x</body></message>'  # router.Template
    assert ws_qualified(addressed) is addressed


@pytest.mark.parametrize(
    "written",
    [
        b"<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>a@b/c</jid></bind></iq>",
        b"<iq id='x&gt;y' type='error'/>",
        b"<iq id='a>b' type='error'/>",
        b"<presence/>",
        b"<message\n  type='chat'><body>hi</body></message>",
    ],
)
def test_an_element_written_for_a_tcp_stream_gets_the_client_namespace(written: bytes) -> None:
    element = standalone(ws_qualified(written))
    # What it meant inside a jabber:client stream, now standing alone.
    (meant,) = etree.fromstring(b"<stream xmlns='jabber:client'>" + written + b"</stream>")
    assert element.tag == meant.tag == f"{{{CLIENT}}}{etree.QName(meant).localname}"
    assert dict(element.attrib) == dict(meant.attrib)
    assert etree.tostring(element) == etree.tostring(meant)


@pytest.mark.parametrize(
    "written",
    [
        b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
        b'<a xmlns="urn:xmpp:sm:3" h="3"/>',
        b'<stream:error xmlns:stream="http://etherx.jabber.org/streams"><conflict '
        b'xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>',
        b"<r id='x' xmlns = 'urn:xmpp:sm:3'/>",
    ],
)
def test_an_element_with_its_own_namespace_is_left_as_it_is(written: bytes) -> None:
    assert ws_qualified(written) == written


# --- what the client sends -------------------------------------------------------------------------


def test_open_is_the_stream_header() -> None:
    events = parser().message(OPEN)
    assert events == [
        StreamOpened({"to": "example.org", "version": "1.0", XML_LANG: "en"}, CLIENT),
    ]


def test_close_is_the_end_of_the_stream() -> None:
    reader = parser()
    assert not reader.peer_closed
    assert reader.message(CLOSE) == [StreamClosed()]
    assert reader.peer_closed


@pytest.mark.parametrize(
    "message",
    [
        MESSAGE,
        MESSAGE.replace(b" xmlns='jabber:client'", b""),  # lenient: what else could it mean
        b"<?xml version='1.0' encoding='UTF-8'?>\n" + MESSAGE,  # allowed, if NOT RECOMMENDED
        b"\n  " + MESSAGE + b"\r\n",
    ],
    ids=["declared", "undeclared", "xml-declaration", "whitespace-around"],
)
def test_a_stanza_in_a_message_is_an_element_in_jabber_client(message: bytes) -> None:
    (element,) = parser().message(message)
    assert isinstance(element, etree._Element)
    assert element.tag == f"{{{CLIENT}}}message"
    assert element.findtext(f"{{{CLIENT}}}body") == "Wherefore? \u00e9"
    # Serialised alone, with only its own namespace: ready to route.
    assert etree.tostring(element).startswith(b'<message xmlns="jabber:client" to="juliet@example.org"')


def test_an_element_of_another_namespace_keeps_it() -> None:
    (element,) = parser().message(b"<r xmlns='urn:xmpp:sm:3'/>")
    assert isinstance(element, etree._Element)
    assert element.tag == "{urn:xmpp:sm:3}r"


def test_whitespace_alone_is_a_keepalive() -> None:
    reader = parser()
    assert reader.message(b" ") == []
    assert reader.message(b"\r\n\t") == []
    assert reader.message(b"") == []
    assert len(reader.message(MESSAGE)) == 1


def test_a_whole_negotiation_and_a_restart() -> None:
    reader = parser()
    assert isinstance(reader.message(OPEN)[0], StreamOpened)
    (auth,) = reader.message(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
    assert isinstance(auth, etree._Element) and auth.text == "AGEAYg=="
    reader.reset()  # after SASL success (RFC 7395 §3.4: the client opens anew)
    assert isinstance(reader.message(OPEN)[0], StreamOpened)
    for _ in range(3):
        (element,) = reader.message(MESSAGE)
        assert isinstance(element, etree._Element)
    assert reader.message(CLOSE) == [StreamClosed()]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (MESSAGE + MESSAGE, "not-well-formed"),  # two elements in one message
        (b"<a/><b/>", "not-well-formed"),
        (b"hello", "not-well-formed"),  # garbage
        (b"hello <a/>", "not-well-formed"),  # text before the element
        (b"<a/>hello", "not-well-formed"),  # text after it
        (b"<a/>x>", "not-well-formed"),
        (b"<a/><![CDATA[x]]>", "not-well-formed"),
        (b"<message><body>cut", "not-well-formed"),  # an element cut short
        (b"<a/><b>", "not-well-formed"),  # one element and the start of another
        (b"<a/><b><c/>", "not-well-formed"),
        (b"<a/><b", "not-well-formed"),
        (b"</message>", "not-well-formed"),
        (b"</stream:stream>", "not-well-formed"),  # TCP framing on a WebSocket
        (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a'>",
         "not-well-formed"),
        (b"<x:y/>", "not-well-formed"),  # an undeclared prefix
        (b"<message><body>\xff</body></message>", "not-well-formed"),  # not UTF-8
        (b"<?xml version='1.0'", "not-well-formed"),
        (b"<a><!-- hi --></a>", "restricted-xml"),
        (b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", "restricted-xml"),
        (b"<?pi x?><a/>", "restricted-xml"),
        (b"<open to='example.org' version='1.0'/>", "invalid-namespace"),  # not in the framing namespace
        (b"<close xmlns='jabber:client'/>", "invalid-namespace"),
        (b"<a " + b" ".join(b"a%d='1'" % i for i in range(9)) + b"/>", "policy-violation"),  # max_attributes
        (b"<a>" + b"<b/>" * 17 + b"</a>", "policy-violation"),  # max_children
        (b"<a>" + b"<b>" * 8 + b"</b>" * 8 + b"</a>", "policy-violation"),  # max_depth
    ],
)
def test_what_is_not_one_element_ends_the_stream(message: bytes, expected: str) -> None:
    assert condition(message) == expected


def test_a_message_over_the_stanza_limit_is_refused_before_parsing() -> None:
    big = b"<message><body>" + b"x" * 2000 + b"</body></message>"
    assert condition(big, limit=1024) == "policy-violation"
    assert len(parser(len(big)).message(big)) == 1


def test_a_binary_message_is_bad_format() -> None:
    with pytest.raises(StreamError) as info:
        parser().binary()
    assert info.value.condition == "bad-format"


# --- properties -------------------------------------------------------------------------------------

def _with_text(element: etree._Element, text: str) -> etree._Element:
    element.text = text
    return element


def _with_children(name: str, children: list[etree._Element]) -> etree._Element:
    element = etree.Element(name)
    element.extend(children)
    return element


ELEMENT = st.recursive(
    st.builds(
        lambda name, text: etree.Element(name) if text is None else _with_text(etree.Element(name), text),
        st.sampled_from(["message", "body", "x", "presence", "item"]),
        st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=10),
    ),
    lambda children: st.builds(
        _with_children, st.sampled_from(["message", "query", "x"]), st.lists(children, max_size=4)
    ),
    max_leaves=12,
)


def shape(element: etree._Element) -> tuple[object, ...]:
    """Names, text and children, whatever the namespace."""
    return (etree.QName(element).localname, element.text or "", [shape(child) for child in element])


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@fuzz(200)
@given(ELEMENT)
def test_any_element_is_read_back_as_itself(element: etree._Element) -> None:
    data = etree.tostring(element, encoding="utf-8")
    reader = WebSocketParser(1024 * 1024, max_children=64, max_depth=64)
    (read,) = reader.message(data)
    assert isinstance(read, etree._Element)
    assert shape(read) == shape(element)
    assert {etree.QName(e).namespace for e in read.iter()} == {CLIENT}  # read as in jabber:client
    # and the next message is read as well: nothing of this one is left over
    assert len(reader.message(MESSAGE)) == 1


@fuzz(200)
@given(ELEMENT, ELEMENT)
def test_two_elements_in_one_message_are_always_refused(first: etree._Element, second: etree._Element) -> None:
    reader = WebSocketParser(1024 * 1024, max_children=64, max_depth=64)
    with pytest.raises(StreamError) as info:
        reader.message(etree.tostring(first) + etree.tostring(second))
    assert info.value.condition == "not-well-formed"


@fuzz(500)
@given(st.binary(max_size=200) | st.text(alphabet="<>/='\"ab:x &;![]?-", max_size=60).map(str.encode))
def test_garbage_only_ever_raises_stream_errors(data: bytes) -> None:
    try:
        events = parser().message(data)
    except StreamError:
        return
    # What is accepted is one event (or none for whitespace), never more.
    assert len(events) <= 1

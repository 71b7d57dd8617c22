"""Framing and marker scanning of the load generator, fed whole and byte by byte (not timed)."""

from lxml import etree

from bench.stream import Framer, MarkerScanner, StreamClosed, StreamOpened, chat, stamp_body

STREAM = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' from='bench.local' id='s1' version='1.0'>"
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    b"<mechanism>SCRAM-SHA-256</mechanism></mechanisms></stream:features>"
    b"<message from='a@bench.local/r' type='chat'><body>hi &amp; bye</body></message>"
    b"</stream:stream>"
)


def _kinds(chunks: list[bytes]) -> list[str]:
    framer = Framer()
    out: list[str] = []
    for chunk in chunks:
        for ev in framer.feed(chunk):
            if isinstance(ev, StreamOpened):
                out.append("open:" + ev.attrs["id"])
            elif isinstance(ev, StreamClosed):
                out.append("close")
            else:
                out.append(ev.tag)
    return out


def test_whole_and_bytewise_framing_agree() -> None:
    expected = [
        "open:s1",
        "{http://etherx.jabber.org/streams}features",
        "{jabber:client}message",
        "close",
    ]
    assert _kinds([STREAM]) == expected
    assert _kinds([STREAM[i : i + 1] for i in range(len(STREAM))]) == expected


def test_root_is_emptied_after_each_stanza() -> None:
    framer = Framer()
    events = framer.feed(STREAM[:-16])
    message = events[-1]
    assert isinstance(message, etree._Element)
    assert message.findtext("{jabber:client}body") == "hi & bye"
    assert message.getparent() is None


def test_marker_scanner_survives_any_split() -> None:
    data = b"".join(chat("b@x/r", stamp_body(t, "pad")) for t in (11, 2222, 333333)) + b"</stream:stream>"
    for size in (1, 2, 3, 7, len(data)):
        scanner = MarkerScanner()
        stamps: list[int] = []
        for i in range(0, len(data), size):
            stamps += scanner.feed(data[i : i + size])
        assert stamps == [11, 2222, 333333], size
        assert scanner.closed

"""messages-sm and idle-sm's pure parts: the XEP-0198 counter on bytes (h, the answers to the
server's <r/>, the checks of its <a/>, the client's own <r/> every 5 stanzas) fed whole and in
every split, the client protocol around it, the summary of a run and its report rows (not timed,
no server)."""

import asyncio
from typing import Any

import pytest
from lxml import etree

from bench import report
from bench.client import LoginError, NotOffered, Session, Target, XmppProtocol, enable_stream_management
from bench.loadgen import markdown, sm_note
from bench.scenarios import Outcome, SmMismatch, sm_summary
from bench.stream import SM_MODULO, SM_REQUEST, SmCounter, count_stanzas, sm_answer, sm_enable
from xmppd.elements import element
from xmppd.modules.smacks import NS, REQUEST

# What xmppd writes (its own serialisations), and the same in the other quote style.
ENABLED = etree.tostring(element(f"{{{NS}}}enabled", {"id": "abc", "resume": "true", "max": "300"}))
R = REQUEST
R_DQ = b'<r xmlns="urn:xmpp:sm:3"/>'
MSG = b"<message from='u2@bench.local/bench' to='u1@bench.local/bench' type='chat'><body>bt:1:xx</body></message>"
PRESENCE = b"<presence from='u3@bench.local/bench' to='u1@bench.local'/>"
IQ = b'<iq type="result" id="ready" from="bench.local" to="u1@bench.local/bench"/>'


def _a(h: int) -> bytes:
    return etree.tostring(element(f"{{{NS}}}a", {"h": str(h)}))


def _feed(counter: SmCounter, data: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        out += counter.feed(data[i : i + size])
    return out


def test_xmppd_writes_what_the_counter_reads() -> None:
    assert ENABLED.startswith(b'<enabled xmlns="urn:xmpp:sm:3"')
    assert R == SM_REQUEST
    assert _a(7) == b'<a xmlns="urn:xmpp:sm:3" h="7"/>'


# Before <enabled/>: nothing counts (a presence, even a request). Then 2 stanzas and a request (h=2),
# 3 more of every kind and a request in the other quote style (h=5), 1 more, and a request (h=6).
STREAM = PRESENCE + R + ENABLED + MSG + PRESENCE + R + MSG + IQ + MSG + R_DQ + b"<iq type='get' id='p'><ping/></iq>" + R


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, len(STREAM)])
def test_answers_each_request_with_the_stanzas_before_it_whatever_the_split(size: int) -> None:
    counter = SmCounter()
    answers = _feed(counter, STREAM, size)
    assert answers == sm_answer(2) + sm_answer(5) + sm_answer(6)
    assert (counter.enabled, counter.resume, counter.failed) == (True, True, False)
    assert counter.received == 6  # no <r/>, <a/> or <enabled/> counted
    assert (counter.requests_received, counter.answers_sent) == (3, 3)
    assert counter.unacknowledged == 0


def test_a_request_split_across_two_reads_is_answered_once_complete() -> None:
    counter = SmCounter()
    assert counter.feed(ENABLED + MSG + MSG + b"<r xmlns='urn:x") == b""
    assert counter.feed(b"mpp:sm:3'/>" + MSG) == b"<a xmlns='urn:xmpp:sm:3' h='2'/>"
    assert counter.received == 3
    assert counter.unacknowledged == 1  # the message after the request


def test_a_stanza_split_after_its_name_counts_once() -> None:
    counter = SmCounter()
    counter.feed(ENABLED + b"<message")
    counter.feed(b" to='x'><body>a</body></mess")
    counter.feed(b"age><presence/>")
    assert counter.received == 2


def test_lookalikes_are_not_stanzas_or_requests() -> None:
    counter = SmCounter()
    html = b"<html xmlns='http://jabber.org/protocol/xhtml-im'><a href='x'>l</a></html>"
    chatty = b"<active xmlns='http://jabber.org/protocol/chatstates'/><reason>r</reason><iqx/><r/>"
    assert counter.feed(ENABLED + b"<message><body>&lt;r/&gt; &lt;iq </body>" + html + chatty + b"</message>") == b""
    assert (counter.received, counter.answers_received, counter.h_errors) == (1, 0, 0)


def test_server_answers_are_checked_against_what_was_sent() -> None:
    counter = SmCounter()
    counter.feed(ENABLED)
    counter.sent_stanzas(3)
    counter.feed(_a(2) + _a(3))
    assert (counter.answers_received, counter.server_h, counter.h_errors) == (2, 3, 0)
    counter.feed(_a(4))  # only 3 were sent
    assert counter.h_errors == 1
    assert "h=4 but 3 stanzas sent" in counter.h_error_detail
    counter.feed(_a(1))  # counts never go back
    assert (counter.h_errors, counter.server_h) == (2, 3)
    counter.feed(b"<a xmlns='urn:xmpp:sm:3' h='x'/>")
    assert counter.h_errors == 3
    assert counter.answers_received == 5


def test_counts_wrap_at_two_to_the_32() -> None:
    counter = SmCounter()
    counter.feed(ENABLED)
    counter.received = SM_MODULO - 1
    counter.sent = counter.server_h = SM_MODULO - 2
    assert counter.feed(MSG + R) == b"<a xmlns='urn:xmpp:sm:3' h='0'/>"
    counter.sent_stanzas(3)  # sent is 2^32 + 1: the server's h is 1 at most
    counter.feed(_a(1))
    assert (counter.server_h, counter.h_errors) == (1, 0)
    counter.feed(_a(2))
    assert counter.h_errors == 1


def test_failed_instead_of_enabled() -> None:
    counter = SmCounter()
    counter.feed(b"<failed xmlns='urn:xmpp:sm:3'><unexpected-request/></failed>" + MSG + R)
    assert (counter.enabled, counter.failed, counter.received, counter.requests_received) == (False, True, 0, 0)


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_stream_error_is_caught_with_its_condition(size: int) -> None:
    error = (
        b"<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/></stream:error></stream:stream>"
    )
    counter = SmCounter()
    _feed(counter, ENABLED + MSG + error + MSG + R, size)
    assert (counter.stream_error, counter.received, counter.requests_received) == ("undefined-condition", 1, 0)


def test_a_burst_requests_after_every_fifth_stanza_across_bursts() -> None:
    counter = SmCounter()
    stanza = b"<message to='b'><body>x</body></message>"
    sent = b"".join(counter.burst(stanza, n) for n in (3, 4, 10, 1, 2, 0, 7))  # 27 stanzas
    pieces = sent.split(SM_REQUEST)
    assert [p.count(b"<message") for p in pieces] == [5, 5, 5, 5, 5, 2]
    assert (counter.sent, counter.requests_sent) == (27, 5)


def test_single_sends_request_when_they_cross_a_multiple_of_five() -> None:
    counter = SmCounter()
    due = [counter.sent_stanzas(n) for n in (1, 1, 1, 1, 1, 1, 9)]
    assert due == [b"", b"", b"", b"", SM_REQUEST, b"", SM_REQUEST * 2]
    assert (counter.sent, counter.requests_sent) == (15, 3)


def test_all_handled_needs_every_request_answered_with_every_stanza() -> None:
    counter = SmCounter()
    counter.feed(ENABLED)
    counter.burst(MSG, 5)
    assert not counter.all_handled  # one request out
    counter.feed(_a(4))
    assert not counter.all_handled  # answered, but one stanza short
    counter.request()
    counter.feed(_a(5))
    assert counter.all_handled


def test_outgoing_stanza_count_and_enable() -> None:
    assert count_stanzas(b"<presence/><iq type='get' id='x'><query/></iq>" + MSG + SM_REQUEST + sm_answer(3)) == 3
    assert sm_enable() == b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>"
    assert sm_enable(resume=False) == b"<enable xmlns='urn:xmpp:sm:3'/>"


# --- the client protocol around the counter ----------------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.wrote = asyncio.Event()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        self.wrote.set()

    async def first_write(self) -> None:
        await asyncio.wait_for(self.wrote.wait(), 5)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _session() -> tuple[Session, FakeTransport]:
    proto = XmppProtocol()
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.framer.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    return Session(Target("127.0.0.1", 1, "bench.local"), proto, jid="u1@bench.local/bench"), transport


FEATURES = etree.fromstring(
    "<features xmlns='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
    "<sm xmlns='urn:xmpp:sm:3'/></features>"
)


async def test_enable_then_requests_answered_while_parsing_and_in_a_sink() -> None:
    session, transport = _session()
    task = asyncio.create_task(enable_stream_management(session, FEATURES))
    await transport.first_write()  # <enable/> went out
    assert transport.written == [sm_enable()]
    session.proto.data_received(ENABLED + MSG)
    await task
    sm = session.sm
    assert sm is not None and sm.enabled and sm.resume

    # Parsing: <r/> is answered on arrival and hidden from the waits; stanzas still reach them.
    session.proto.data_received(R + IQ)
    assert transport.written[-1] == sm_answer(1)
    assert [getattr(ev, "tag", ev) for ev in session.proto.events] == ["{jabber:client}message", "{jabber:client}iq"]

    # Every fifth stanza sent is followed by a <r/>.
    for _ in range(5):
        session.send(b"<presence/>")
    assert transport.written[-1] == b"<presence/>" + SM_REQUEST
    assert transport.written[-2] == b"<presence/>"

    # A byte sink: the counter still answers (the server's <a/> counted, not handed on).
    seen: list[bytes] = []
    session.use_sink(seen.append)
    session.proto.data_received(_a(5) + MSG + b"<r xmlns='urn:xmpp:sm:3'/")
    session.proto.data_received(b">")
    assert transport.written[-1] == sm_answer(3)
    assert (sm.answers_received, sm.server_h, sm.requests_received) == (1, 5, 2)
    assert len(seen) == 2

    # Closing acknowledges everything received first.
    session.close()
    assert transport.written[-1] == sm_answer(3) + b"</stream:stream>"


async def test_not_offered_and_refused() -> None:
    session, transport = _session()
    bare = etree.fromstring("<features xmlns='http://etherx.jabber.org/streams'/>")
    with pytest.raises(NotOffered):
        await enable_stream_management(session, bare)
    assert session.sm is None
    task = asyncio.create_task(enable_stream_management(session, FEATURES))
    await transport.first_write()  # <enable/> went out
    session.proto.data_received(
        b"<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    )
    with pytest.raises(LoginError, match="unexpected-request"):
        await task


def test_summary_adds_up_sessions_and_reports_each_mismatch() -> None:
    good, _ = _session()
    bad, _ = _session()
    bad.jid = "u2@bench.local/bench"
    for s in (good, bad):
        s.proto.sm = SmCounter()
        s.proto.sm.feed(ENABLED + MSG * 6 + R)
        s.proto.sm.burst(MSG, 10)  # 2 requests
    assert good.sm is not None and bad.sm is not None
    good.sm.feed(_a(5) + _a(10))
    bad.sm.feed(_a(5) + _a(11))  # above what was sent
    out = Outcome()
    sm_summary([good, bad], out, final=True)
    assert out.counts["sm_sessions"] == 2
    assert out.counts["sm_server_requests"] == out.counts["sm_client_answers"] == 2
    assert out.counts["sm_client_requests"] == 4
    assert out.counts["sm_server_answers"] == 4
    assert out.counts["sm_server_h_errors"] == 1
    assert out.counts["sm_final_h_mismatches"] == 1  # bad's last valid h is 5 of 10
    assert out.counts["sm_stanzas_sent"] == 20
    assert out.counts["sm_stanzas_received"] == 12
    assert out.counts["sm_unacked_at_end"] == 0  # each answered the request after its 6 stanzas
    assert out.error_count == 2
    assert all(SmMismatch.__name__ in e and "u2@" in e for e in out.errors)
    assert "h=11 but 10 stanzas sent" in out.errors[0]


# --- report rows --------------------------------------------------------------------------------------


def _rec(target: str, scenario: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "target": target,
        "scenario": scenario,
        "params": {"rate": 0.0, "archive": "off", "tls": "starttls"},
        "results": {},
        "errors": 0,
        "cpu": {"server_cpu_pct": 99.0, "loadgen_cpu_pct": 40.0},
        "rate_unit": "msg/s",
    }
    rec.update(kw)
    return rec


def _rows(md: str) -> dict[str, list[str]]:
    lines = [line for line in md.splitlines()[2:] if line.startswith("|")]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines}


SM_RESULTS = {
    "sm_sessions": 100, "sm_server_requests": 2000, "sm_client_answers": 2000, "sm_client_requests": 2100,
    "sm_server_answers": 2100, "sm_server_unanswered": 0, "sm_server_h_errors": 0, "sm_final_h_mismatches": 0,
}  # fmt: skip


def test_report_rows_for_stream_management() -> None:
    x, p = "xmppd abc (postgresql)", "prosody 0.12"
    records = [
        _rec(x, "messages", rate=10000.0),
        _rec(x, "messages-sm", rate=9000.0, results=SM_RESULTS),
        _rec(p, "messages", rate=8000.0),
        _rec(p, "messages-sm", rate=6000.0, results={**SM_RESULTS, "sm_server_h_errors": 3}),
        _rec(x, "idle", results={"kb_per_session": 30.0}),
        _rec(x, "idle-sm", results={"kb_per_session": 31.5}),
        _rec(p, "idle", results={"kb_per_session": 40.0}),
        {"target": p, "scenario": "idle-sm", "skipped": "not offered: bench.local offers no stream management"},
    ]
    md = report.table(records)
    rows = _rows(md)
    assert rows["1:1 msg/s, stream management on (ack every 5)"] == ["9,000", "6,000", "1.50x"]
    assert rows["1:1 msg/s with stream management / without (same server)"] == ["0.90", "0.75", ""]
    assert rows["idle KB/session, TLS + stream management"] == ["31.5", "", ""]
    assert rows["idle KB/session: stream management's extra over TLS (same server)"] == ["1.5", "", ""]
    acks = rows["stream management acks during 1:1 max (requests, answers)"]
    assert acks[0] == "server asked 2,000, answered 2,000; client asked 2,100, answered 2,100; no mismatch"
    assert acks[1].endswith("3 mismatches")
    assert "- prosody 0.12: idle-sm skipped: not offered: bench.local offers no stream management" in md


def test_report_has_no_stream_management_rows_without_its_records() -> None:
    rows = _rows(report.table([_rec("xmppd", "messages", rate=100.0), _rec("xmppd", "idle", results={})]))
    assert not [k for k in rows if "stream management" in k]


def test_loadgen_note_spells_out_the_acks() -> None:
    rec = _rec("xmppd", "messages-sm", rate=9000.0, results={**SM_RESULTS, "sm_final_h_mismatches": 2})
    note = sm_note(rec)
    assert "server asked 2,000 acks, clients answered 2,000; clients asked 2,100, server answered 2,100" in note
    assert note.endswith("mismatches: final_h_mismatches 2")
    assert note in markdown([rec])
    assert sm_note(_rec("x", "idle-sm", results=SM_RESULTS)).endswith("no mismatch")

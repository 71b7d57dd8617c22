"""The sans-IO side of BOSH (xmppd/bosh.py): request bodies in, stream events and answers out, with
the time passed in. No event loop, no sockets: session creation, the order of rids, answers
kept for a repeated rid, the window, overactivity, restart, terminate, errors, inactivity."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from xmppd.bosh import (
    BOSH_NS,
    XBOSH_NS,
    Body,
    BoshError,
    BoshService,
    BoshSession,
    Limits,
    Settings,
    State,
    broken_sid,
    channel,
    lookup,
    parse_body,
    qualify,
    serve_bosh,
)
from xmppd.config import load_config
from xmppd.errors import STREAM_ERRORS_NS, STREAMS_NS, StreamError
from xmppd.framing import CLIENT_NS, Opening
from xmppd.server import Server
from xmppd.xml import StreamClosed, StreamOpened

SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
MECHANISMS = f"<mechanisms xmlns='{SASL_NS}'><mechanism>PLAIN</mechanism></mechanisms>".encode()
RID = 1000


def body(rid: int | None = None, inner: str = "", *, sid: str | None = "s", **attributes: str) -> Body:
    """A request as a client sends it (attributes named `xmpp_x` are `xmpp:x`)."""
    attrs = {"rid": str(rid)} if rid is not None else {}
    if sid is not None:
        attrs["sid"] = sid
    attrs.update({name.replace("xmpp_", "xmpp:").replace("lang", "xml:lang"): v for name, v in attributes.items()})
    text = " ".join(f"{name}='{value}'" for name, value in attrs.items())
    data = f"<body {text} xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}'>{inner}</body>"
    return parse_body(data.encode(), Limits())


def creation(rid: int = RID, **attributes: str) -> Body:
    defaults = {"to": "localhost", "wait": "60", "hold": "1", "ver": "1.6", "xmpp_version": "1.0"}
    return body(rid, sid=None, **{**defaults, **attributes})


def answers(session: BoshSession) -> dict[int, etree._Element]:
    return {rid: etree.fromstring(data) for rid, data in session.take_answers()}


def opened(now: float = 0.0, settings: Settings | None = None, **attributes: str) -> BoshSession:
    """A session whose stream is open: the session request read and answered with features."""
    session = BoshSession("s", creation(**attributes), now, settings or Settings())
    assert isinstance(session.next_events(now)[0], StreamOpened)  # type: ignore[index]
    session.open(Opening("localhost", "id1"), MECHANISMS, now)
    session.flush(now)
    assert list(answers(session)) == [RID]
    return session


def payload(element: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in element]


# -- session creation ---------------------------------------------------------------------------
def test_the_session_request_opens_the_stream_and_its_answer_carries_the_session() -> None:
    session = BoshSession("sid1", creation(wait="90", hold="2", ver="1.6", lang="fr"), 5.0)
    assert session.take_answers() == []  # held: nothing to say before the features
    (event,) = session.next_events(5.0) or []
    assert isinstance(event, StreamOpened)
    assert event.content_ns == CLIENT_NS
    assert event.attributes == {"to": "localhost", "version": "1.0", "{http://www.w3.org/XML/1998/namespace}lang": "fr"}
    session.open(Opening("localhost", "stream1"), MECHANISMS, 5.0)
    session.flush(5.0)
    ((rid, data),) = session.take_answers()
    assert rid == RID
    answer = etree.fromstring(data)
    assert answer.tag == f"{{{BOSH_NS}}}body"
    names = ("sid", "wait", "hold", "requests", "inactivity", "polling", "ver", "from")
    assert {name: answer.get(name) for name in names} == {
        "sid": "sid1", "wait": "60", "hold": "1", "requests": "2", "inactivity": "60", "polling": "5",
        "ver": "1.6", "from": "localhost",
    }
    assert answer.get(f"{{{XBOSH_NS}}}version") == "1.0"
    assert answer.get(f"{{{XBOSH_NS}}}restartlogic") == "true"
    features = answer.find(f"{{{STREAMS_NS}}}features")
    assert features is not None and features.find(f"{{{SASL_NS}}}mechanisms") is not None
    assert answer.get("type") is None


def test_what_the_client_asks_for_is_granted_up_to_the_limits() -> None:
    session = BoshSession("s", creation(wait="20", hold="0", ver="1.12"), 0.0)
    assert (session.wait, session.hold, session.version) == (20, 0, (1, 11))
    # A polling session (hold 0) may be inactive longer than the polling interval (§12).
    assert session.inactivity > 60
    assert BoshSession("s", creation(ver="banana"), 0.0).version == (1, 11)
    plain = "text/plain; charset=utf-8"
    assert BoshSession("s", creation(content=plain), 0.0).content_type == plain
    assert BoshSession("s", creation(content="text/plain\r\nX: y"), 0.0).content_type == "text/xml; charset=utf-8"


@pytest.mark.parametrize(
    ("request_body", "condition"),
    [
        (creation(to=""), "improper-addressing"),
        (body(None, sid=None, to="localhost"), "bad-request"),
        (body(0, sid=None, to="localhost"), "bad-request"),
        (body(2**53, sid=None, to="localhost"), "bad-request"),
        (creation(wait="soon"), "bad-request"),
    ],
)
def test_a_bad_session_request_is_refused(request_body: Body, condition: str) -> None:
    with pytest.raises(BoshError) as raised:
        BoshSession("s", request_body, 0.0)
    assert raised.value.condition == condition
    answer = etree.fromstring(raised.value.response())
    assert (answer.get("type"), answer.get("condition")) == ("terminate", condition)


def test_without_anything_to_say_the_session_answer_comes_after_wait_seconds() -> None:
    session = BoshSession("s", creation(wait="10"), 0.0)
    session.next_events(0.0)
    assert session.deadline() == 10.0
    session.tick(9.9)
    assert session.take_answers() == []
    session.tick(10.0)
    (answer,) = answers(session).values()
    assert answer.get("sid") == "s" and len(answer) == 0


# -- requests and answers -------------------------------------------------------------------------
def test_a_request_is_held_until_there_is_output_then_the_next_one_takes_its_place() -> None:
    session = opened()
    assert session.receive(body(RID + 1), 1.0) == RID + 1
    assert session.next_events(1.0) == []
    assert session.take_answers() == []  # held (hold = 1)
    session.receive(body(RID + 2, "<presence/>"), 2.0)
    assert session.take_answers() == []  # its payloads are not read yet: no answer for the one held
    (presence,) = session.next_events(2.0) or []
    assert etree.QName(presence).namespace == CLIENT_NS
    held = answers(session)
    assert list(held) == [RID + 1] and len(held[RID + 1]) == 0  # released, empty: hold is 1
    session.queue(b"<message xmlns='jabber:client'><body>hi</body></message>", 3.0)
    session.queue(b"<presence xmlns='jabber:client'/>", 3.0)
    session.flush(3.0)
    out = answers(session)
    assert list(out) == [RID + 2] and payload(out[RID + 2]) == ["message", "presence"]
    assert out[RID + 2].get("sid") is None  # the session attributes are for the first answer only


def test_requests_are_read_and_answered_in_rid_order_whatever_order_they_arrive_in() -> None:
    session = opened()
    session.receive(body(RID + 2, "<message id='second'/>"), 1.0)
    assert session.next_events(1.0) is None  # RID + 1 is missing
    session.receive(body(RID + 1, "<message id='first'/>"), 1.5)
    first = session.next_events(1.5) or []
    second = session.next_events(1.5) or []
    assert [e.get("id") for e in first + second] == ["first", "second"]  # type: ignore[union-attr]
    # RID + 1 was released for RID + 2 (hold 1); RID + 2 gets the output.
    assert list(answers(session)) == [RID + 1]
    session.queue(b"<iq xmlns='jabber:client' type='result' id='x'/>", 2.0)
    session.flush(2.0)
    assert list(answers(session)) == [RID + 2]


def test_a_repeated_rid_gets_the_same_answer_again_and_its_payloads_are_not_read_twice() -> None:
    session = opened()
    session.receive(body(RID + 1, "<message id='m1'/>"), 1.0)
    assert len(session.next_events(1.0) or []) == 1
    session.queue(b"<message xmlns='jabber:client' id='reply'/>", 1.0)
    session.flush(1.0)
    ((rid, first),) = session.take_answers()
    assert rid == RID + 1
    again = session.receive(body(RID + 1, "<message id='m1'/>"), 2.0)
    assert again == first  # §14.3: the kept answer, bytes for bytes
    assert session.next_events(2.0) is None
    # The session request's answer is still kept too (the last `requests` answers are).
    assert isinstance(session.receive(creation(), 2.0), bytes)


def test_a_rid_sent_again_before_its_answer_shares_the_one_answer() -> None:
    session = opened()
    assert session.receive(body(RID + 1), 1.0) == RID + 1
    session.next_events(1.0)
    assert session.receive(body(RID + 1), 2.0) == RID + 1  # the connection broke: the client asks again
    session.queue(b"<presence xmlns='jabber:client'/>", 3.0)
    session.flush(3.0)
    assert list(answers(session)) == [RID + 1]


def test_a_rid_beyond_the_window_ends_the_session_with_item_not_found() -> None:
    session = opened()
    session.receive(body(RID + 1), 1.0)
    session.next_events(1.0)
    with pytest.raises(BoshError) as raised:
        session.receive(body(RID + 4), 2.0)  # the window is `requests` (2) above the last in order
    assert raised.value.condition == "item-not-found"
    held = answers(session)[RID + 1]
    assert (held.get("type"), held.get("condition")) == ("terminate", "other-request")
    assert session.state is State.CLOSED and session.ended
    assert session.failure is not None  # the stream driver is told why (read() raises it)
    with pytest.raises(BoshError) as after:
        session.receive(body(RID + 2), 3.0)  # the session is over
    assert after.value.condition == "item-not-found"


def test_an_old_rid_whose_answer_is_no_longer_kept_ends_the_session() -> None:
    session = opened()
    for rid in range(RID + 1, RID + 4):
        session.receive(body(rid), float(rid))
        session.next_events(float(rid))
    session.take_answers()
    with pytest.raises(BoshError) as raised:
        session.receive(body(RID), 9e3)
    assert raised.value.condition == "item-not-found"


def test_more_requests_at_once_than_allowed_is_a_policy_violation_except_to_terminate() -> None:
    session = opened()
    session.receive(body(RID + 1), 1.0)
    session.next_events(1.0)
    session.receive(body(RID + 2), 1.0)  # not read yet: RID + 1 stays held, two outstanding
    terminating = opened()
    terminating.receive(body(RID + 1), 1.0)
    terminating.next_events(1.0)
    terminating.receive(body(RID + 2), 1.0)
    assert terminating.receive(body(RID + 3, type="terminate"), 1.0) == RID + 3  # §11: one more to terminate
    with pytest.raises(BoshError) as raised:
        session.receive(body(RID + 3), 1.0)
    assert raised.value.condition == "policy-violation"


def test_a_gap_that_never_fills_ends_the_session() -> None:
    session = opened(wait="10")
    session.receive(body(RID + 2), 1.0)
    assert session.deadline() == 21.0  # 2 x wait
    session.tick(21.0)
    assert session.state is State.CLOSED
    assert answers(session)[RID + 2].get("condition") == "other-request"
    assert session.failure is not None and "never arrived" in str(session.failure)


# -- restart and terminate --------------------------------------------------------------------------
def test_xmpp_restart_opens_a_new_stream_for_the_same_host() -> None:
    session = opened()
    session.receive(body(RID + 1, f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AGEAYg==</auth>"), 1.0)
    (auth,) = session.next_events(1.0) or []
    assert auth.tag == f"{{{SASL_NS}}}auth"  # type: ignore[union-attr]
    session.queue(f"<success xmlns='{SASL_NS}'/>".encode(), 1.0)
    session.flush(1.0)
    assert payload(answers(session)[RID + 1]) == ["success"]
    session.receive(body(RID + 2, xmpp_restart="true", to="localhost", lang="en"), 2.0)
    (restarted,) = session.next_events(2.0) or []
    assert isinstance(restarted, StreamOpened)
    assert restarted.attributes["to"] == "localhost" and restarted.attributes["version"] == "1.0"
    session.open(Opening("localhost", "id2"), b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>", 2.0)
    session.flush(2.0)
    answer = answers(session)[RID + 2]
    assert payload(answer) == ["features"] and answer.get("sid") is None


def test_a_restart_request_must_be_empty() -> None:
    session = opened()
    with pytest.raises(BoshError) as raised:
        session.receive(body(RID + 1, "<presence/>", xmpp_restart="true"), 1.0)
    assert raised.value.condition == "bad-request"
    assert session.state is State.CLOSED


def test_terminate_hands_its_payloads_and_the_end_of_the_stream_to_the_driver() -> None:
    session = opened()
    session.receive(body(RID + 1, "<presence type='unavailable'/>", type="terminate"), 1.0)
    presence, closed = session.next_events(1.0) or []
    assert presence.get("type") == "unavailable" and isinstance(closed, StreamClosed)  # type: ignore[union-attr]
    session.queue(b"<presence xmlns='jabber:client' type='unavailable'/>", 1.0)
    session.close(None, 1.0)  # the driver answers the client's close with ours
    answer = answers(session)[RID + 1]
    assert answer.get("type") == "terminate" and answer.get("condition") is None
    assert payload(answer) == ["presence"]  # what was still queued goes with it
    assert session.state is State.CLOSED and session.ended
    assert session.deadline() is None
    assert session.next_events(2.0) is None


def test_a_stream_error_ends_the_session_with_remote_stream_error_after_the_queued_stanzas() -> None:
    session = opened()
    session.queue(b"<message xmlns='jabber:client' id='last'/>", 1.0)
    session.close(StreamError("policy-violation", "too many stanzas"), 1.0)
    assert session.take_answers() == []  # no request to carry it: the terminate waits for one
    assert session.state is State.CLOSING
    session.receive(body(RID + 1), 2.0)
    answer = answers(session)[RID + 1]
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "remote-stream-error")
    message, error = answer
    assert message.get("id") == "last"
    assert error.tag == f"{{{STREAMS_NS}}}error" and error[0].tag == f"{{{STREAM_ERRORS_NS}}}policy-violation"
    assert session.state is State.CLOSED


@pytest.mark.parametrize("condition", ["host-unknown", "system-shutdown"])
def test_stream_errors_with_a_binding_condition_of_their_own(condition: str) -> None:
    session = BoshSession("s", creation(to="nowhere.example"), 0.0)
    session.next_events(0.0)
    session.close(StreamError(condition), 0.0)
    answer = answers(session)[RID]
    assert (answer.get("type"), answer.get("condition"), len(answer)) == ("terminate", condition, 0)


def test_abort_answers_what_waits_and_ends_the_session_as_a_lost_connection() -> None:
    session = opened()
    session.receive(body(RID + 1), 1.0)
    session.next_events(1.0)
    session.abort(2.0)
    assert answers(session)[RID + 1].get("condition") == "remote-connection-failed"
    assert session.state is State.CLOSED and not session.ended


# -- time and limits ----------------------------------------------------------------------------------
def test_a_session_with_no_request_for_inactivity_seconds_ends_as_a_lost_connection() -> None:
    session = opened(now=100.0)
    assert session.deadline() == 160.0
    session.tick(159.0)
    assert session.state is State.OPEN
    session.receive(body(RID + 1), 159.0)  # a request waiting: never inactive
    session.next_events(159.0)
    assert session.deadline() == 219.0  # its wait
    session.tick(219.0)
    assert list(answers(session)) == [RID + 1]
    assert session.deadline() == 279.0
    session.tick(279.0)
    assert session.state is State.CLOSED
    assert not session.ended and session.failure is None  # not ended by us: resumable (XEP-0198)
    assert session.take_answers() == []


def test_a_client_that_stops_polling_is_cut_off_past_the_output_bound() -> None:
    session = opened(settings=Settings(max_pending=1000))
    for _ in range(7):  # 131 bytes each
        session.queue(b"<message xmlns='jabber:client'>" + b"x" * 90 + b"</message>", 1.0)
    assert session.state is State.OPEN
    session.queue(b"<message xmlns='jabber:client'>" + b"x" * 90 + b"</message>", 1.0)
    assert session.state is State.CLOSING and session.ended
    session.receive(body(RID + 1), 2.0)
    answer = answers(session)[RID + 1]
    assert answer.get("condition") == "remote-stream-error"
    assert payload(answer) == ["error"]  # what piled up is dropped, the error stays


# -- bodies -------------------------------------------------------------------------------------------
def test_stanzas_come_out_in_jabber_client_without_the_body_s_declarations() -> None:
    parsed = body(1, "<message to='a@localhost'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
                     "<iq xmlns='jabber:client' type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>")
    message, iq = parsed.payloads
    assert message.tag == f"{{{CLIENT_NS}}}message" and message[0].tag == f"{{{CLIENT_NS}}}body"
    assert etree.tostring(message) == (
        b'<message xmlns="jabber:client" to="a@localhost"><body>hi</body><x xmlns="urn:x"><y/></x></message>'
    )
    assert etree.tostring(iq) == b'<iq xmlns="jabber:client" type="get" id="1"><query xmlns="jabber:iq:roster"/></iq>'
    assert message.getparent() is None and iq.getparent() is None
    # The body's own declarations stay with it; a body with a prefix leaves its stanzas in no
    # namespace at all: they are jabber:client too.
    prefixed = parse_body(
        f"<b:body rid='1' xmlns:b='{BOSH_NS}' xmlns:stream='{STREAMS_NS}'><presence><show>away</show></presence>"
        f"<q:x xmlns:q='urn:q' q:a='1'/></b:body>".encode(), Limits(),
    )
    presence, other = prefixed.payloads
    assert etree.tostring(presence) == b'<presence xmlns="jabber:client"><show>away</show></presence>'
    assert etree.tostring(other) == b'<q:x xmlns:q="urn:q" q:a="1"/>'


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><message>", "bad-request"),
        (b"not xml", "bad-request"),
        (b"", "bad-request"),
        (b"<body rid='1' xmlns='urn:other'/>", "bad-request"),
        (b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'/><body/>", "bad-request"),
        (b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'>text</body>", "bad-request"),
        (b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><!-- hi --></body>", "bad-request"),
        (b"<!DOCTYPE body [<!ENTITY a 'b'>]><body xmlns='http://jabber.org/protocol/httpbind'/>", "bad-request"),
        (b"<body xmlns='http://jabber.org/protocol/httpbind'>" + b"<a>" * 40 + b"</a>" * 40 + b"</body>",
         "remote-stream-error"),
        (b"<body xmlns='http://jabber.org/protocol/httpbind'><m>" + b"x" * 2000 + b"</m></body>",
         "remote-stream-error"),
    ],
)
def test_a_body_that_is_not_well_formed_or_over_the_limits_is_refused(data: bytes, condition: str) -> None:
    with pytest.raises(BoshError) as raised:
        parse_body(data, Limits(max_body=1024))
    assert raised.value.condition == condition
    answer = etree.fromstring(raised.value.response())
    assert (answer.get("type"), answer.get("condition")) == ("terminate", condition)
    if condition == "remote-stream-error":
        assert answer[0].tag == f"{{{STREAMS_NS}}}error"


def test_an_xml_declaration_before_the_body_is_allowed_and_stanzas_get_one_more_level() -> None:
    deep = "<a>" * 31 + "</a>" * 31  # a stanza at depth 32 (max_depth) counting from itself
    parsed = parse_body(f"<?xml version='1.0'?>\n<body rid='5' xmlns='{BOSH_NS}'>{deep}</body>".encode(), Limits())
    assert parsed.rid() == 5 and len(parsed.payloads) == 1


def test_the_session_a_broken_body_names_can_still_be_found() -> None:
    assert broken_sid(b"<body sid='abc' rid='2' xmlns='http://jabber.org/protocol/httpbind'><message>") == "abc"
    assert broken_sid(b"garbage") is None
    assert broken_sid(b"<other sid='abc'/>") is None


def test_a_request_for_an_unknown_session_is_item_not_found() -> None:
    sessions = {"known": "a session"}
    assert lookup(sessions, body(1, sid="known")) == "a session"
    assert lookup(sessions, creation()) is None  # no sid: a session request
    with pytest.raises(BoshError) as raised:
        lookup(sessions, body(1, sid="unknown"))
    assert raised.value.condition == "item-not-found"


def test_elements_sent_without_a_namespace_get_jabber_client() -> None:
    assert qualify(b"<iq type='result' id='a>b'><bind xmlns='x'/></iq>") == (
        b"<iq xmlns='jabber:client' type='result' id='a>b'><bind xmlns='x'/></iq>"
    )
    for unchanged in (b'<message xmlns="jabber:client" to="a"/>', b"<a xmlns='urn:xmpp:sm:3' h='1'/>",
                      b"<stream:error xmlns:stream='x'/>", b"<r xmlns = 'urn:xmpp:sm:3'/>"):
        assert qualify(unchanged) == unchanged


# -- who may use it -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("remote", "secure", "headers", "expected"),
    [
        ("203.0.113.5", True, {}, (True, "203.0.113.5")),
        ("203.0.113.5", False, {}, (False, "203.0.113.5")),
        ("203.0.113.5", False, {"X-Forwarded-For": "127.0.0.1"}, (False, "203.0.113.5")),  # not trusted
        ("127.0.0.1", False, {}, (True, "127.0.0.1")),
        ("::1", False, {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, (True, "203.0.113.9")),
        ("::ffff:127.0.0.1", False, {"X-Forwarded-For": "bogus"}, (True, "::ffff:127.0.0.1")),
        ("127.0.0.1", False, {"X-Forwarded-Proto": "http", "X-Forwarded-For": "203.0.113.9"}, (False, "203.0.113.9")),
        ("127.0.0.1", False, {"X-Forwarded-Proto": "https"}, (True, "127.0.0.1")),
        (None, False, {}, (False, "")),
    ],
)
def test_only_https_or_this_machine_may_carry_a_stream(
    remote: str | None, secure: bool, headers: dict[str, str], expected: tuple[bool, str]
) -> None:
    assert channel(remote, secure, headers) == expected


def test_the_http_config_sets_what_sessions_are_granted(tmp_path: Path) -> None:
    config = tmp_path / "xmppd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n'
        "[http]\nbosh_max_wait = 20\nbosh_inactivity = 30\nbosh_max_pending = 65536\n"
    )
    server = Server(load_config(config))
    serve_bosh(server, "/http-bind")
    handler = server.http.routes[("POST", "/http-bind")]
    service = handler.__self__  # the bound BoshService.handle
    assert isinstance(service, BoshService)
    assert (service.settings.max_wait, service.settings.inactivity, service.settings.max_pending) == (20, 30, 65536)

"""Regression tests for negotiation fixes found in review."""

from __future__ import annotations

import base64

from lxml import etree

from xmppd.negotiation import SASL_NS, C2SNegotiation, CheckPlain, Close, Policy, Send
from xmppd.xml import StreamOpened

HEADER = {"to": "localhost", "version": "1.0"}


def negotiation() -> C2SNegotiation:
    policy = Policy(served=lambda domain: domain in ("localhost", "other.test"), tls_available=True)
    flow = C2SNegotiation(policy, tls_active=True)
    flow.receive(StreamOpened(HEADER, "jabber:client"))
    return flow


def sasl(name: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.Element(f"{{{SASL_NS}}}{name}", attrib)
    element.text = text
    return element


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    flow = negotiation()
    actions = flow.receive(sasl("auth", mechanism="PLAIN"))
    assert actions == [Send(f"<challenge xmlns='{SASL_NS}'/>".encode())]
    token = base64.b64encode(b"\0alice\0secret").decode()
    actions = flow.receive(sasl("response", token))
    assert actions == [CheckPlain("localhost", "alice", "secret")]


def test_restarted_stream_must_be_for_the_same_host() -> None:
    flow = negotiation()
    flow.receive(sasl("auth", base64.b64encode(b"\0alice\0secret").decode(), mechanism="PLAIN"))
    flow.plain_checked(True)
    actions = flow.receive(StreamOpened({"to": "other.test", "version": "1.0"}, "jabber:client"))
    assert isinstance(actions[-1], Close) and actions[-1].reason == "host-unknown"

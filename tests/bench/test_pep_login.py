"""The logins-pep scenario's pure parts: the caps verification string, the disco#info answer
behind it (checked with xmppd's own verifier), the publish request (checked with the pubsub
component's form parser), the classification of the events a session receives, the accounts the
scenario seeds, and its report rows (not timed)."""

from lxml import etree

from bench import pep, report
from bench.pep import CLIENT, Caps, caps_ver
from bench.scenarios import _with_contacts
from components.pubsub.forms import parse_publish_options
from components.pubsub.node import Limits
from xmppd.modules.caps import verified_features

NOTIFY = (
    "urn:xmpp:omemo:2:devices+notify",
    "eu.siacs.conversations.axolotl.devicelist+notify",
    "urn:xmpp:avatar:metadata+notify",
    "http://jabber.org/protocol/nick+notify",
)


def test_ver_of_the_xep_0115_simple_example() -> None:
    # XEP-0115 §5.2: Exodus 0.9.1 with caps, disco#info, disco#items and MUC.
    features = [
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/muc",
    ]
    assert caps_ver([("client", "pc", "", "Exodus 0.9.1")], reversed(features)) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_identities_sort_by_category_then_type_not_by_their_text() -> None:
    a, b = ("x", "a", "", ""), ("x-y", "a", "", "")  # "x/" sorts after "x-" as text, before as a category
    assert caps_ver([b, a], []) == caps_ver([a, b], [])
    assert Caps("n", (a, b), ()).ver != caps_ver([], [])


def test_presence_announces_the_ver_of_the_features() -> None:
    c = etree.fromstring(CLIENT.presence()).find(f"{{{pep.NS_CAPS}}}c")
    assert c is not None
    assert (c.get("hash"), c.get("node"), c.get("ver")) == ("sha-1", CLIENT.node, CLIENT.ver)
    assert set(NOTIFY) <= set(CLIENT.features)


def _server_asks(node: str) -> etree._Element:
    return etree.fromstring(
        "<iq xmlns='jabber:client' type='get' id='q1' from='bench.local' to='u1@bench.local/bench'>"
        f"<query xmlns='{pep.NS_DISCO_INFO}' node='{node}'/></iq>"
    )


def test_the_disco_answer_verifies_as_the_server_checks_it() -> None:
    node = f"{CLIENT.node}#{CLIENT.ver}"
    reply = pep.answer(_server_asks(node), CLIENT)
    assert reply is not None
    iq = etree.fromstring(reply)
    assert (iq.get("type"), iq.get("id"), iq.get("to")) == ("result", "q1", "bench.local")
    query = iq.find(f"{{{pep.NS_DISCO_INFO}}}query")
    assert query is not None and query.get("node") == node
    assert verified_features(query, CLIENT.ver) == frozenset(CLIENT.features)


def test_other_requests_get_an_error_and_other_stanzas_no_reply() -> None:
    ping = etree.fromstring("<iq xmlns='jabber:client' type='get' id='p' from='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    reply = pep.answer(ping, CLIENT)
    assert reply is not None and b"type='error'" in reply and b"service-unavailable" in reply
    assert pep.answer(etree.fromstring("<iq xmlns='jabber:client' type='result' id='r'/>"), CLIENT) is None
    assert pep.answer(etree.fromstring("<message xmlns='jabber:client'/>"), CLIENT) is None


def test_publish_is_a_device_list_with_an_open_access_precondition() -> None:
    iq = etree.fromstring(pep.publish_devices("pub", "u7@bench.local", 123))
    publish = iq.find(f"{{{pep.NS_PUBSUB}}}pubsub/{{{pep.NS_PUBSUB}}}publish")
    assert publish is not None and publish.get("node") == pep.DEVICES_NODE
    device = publish.find(f"*/{{{pep.NS_OMEMO}}}devices/{{{pep.NS_OMEMO}}}device")
    assert device is not None
    assert device.get("id") == str(pep.device_id("u7@bench.local"))
    assert 1 <= pep.device_id("u7@bench.local") < 2**31
    form = iq.find(f"*/{{{pep.NS_PUBSUB}}}publish-options/{{jabber:x:data}}x")
    assert parse_publish_options(form, Limits(256, 65536, 256)) == {"pubsub#access_model": "open"}


def _event(sender: str, published_ns: int, node: str = pep.DEVICES_NODE) -> etree._Element:
    """A device-list event as a server sends it, with the payload the sender published."""
    devices = next(etree.fromstring(pep.publish_devices("x", sender, published_ns)).iter(f"{{{pep.NS_OMEMO}}}devices"))
    message = etree.fromstring(
        f"<message xmlns='jabber:client' from='{sender}' type='headline'>"
        f"<event xmlns='{pep.NS_PUBSUB_EVENT}'><items node='{node}'><item id='current'/></items></event></message>"
    )
    next(message.iter(f"{{{pep.NS_PUBSUB_EVENT}}}item")).append(devices)
    return message


def test_events_by_kind() -> None:
    me = "u5@bench.local"
    assert pep.event_kind(_event("u6@bench.local", 200), me, available_ns=100) == "notifications"
    assert pep.event_kind(_event("u6@bench.local", 50), me, available_ns=100) == "last_items"
    assert pep.event_kind(_event(me, 200), me, available_ns=100) == "own_events"
    assert pep.event_kind(_event("u6@bench.local", 200, node="urn:xmpp:avatar:metadata"), me, 100) is None
    assert pep.event_kind(etree.fromstring("<iq xmlns='jabber:client' type='result'/>"), me, 100) is None


def test_seeds_are_the_logins_and_their_contacts() -> None:
    seeds = _with_contacts([1, 2], roster_pool=100)
    assert seeds == sorted({*range(1, 13), *range(91, 101)})  # 1's contacts wrap around the pool


def _pep_record(target: str, rate: float) -> dict[str, object]:
    return {
        "target": target, "scenario": "logins-pep", "params": {"count": 500}, "rate": rate, "errors": 0,
        "results": {"logins": 500, "notifications": 1000, "last_items": 10000, "own_events": 1000},
        "latency": {"p50_ms": 70.0, "p99_ms": 140.0},
    }  # fmt: skip


def test_report_rows_for_pep_logins() -> None:
    md = report.table([_pep_record("xmppd abc (postgresql)", 240.0), _pep_record("prosody 0.12", 200.0)])
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()[2:]}
    assert rows["logins/s with PEP publish + caps (OMEMO device list, 4 +notify)"] == ["240", "200", "1.20x"]
    assert rows["PEP login p99 ms"] == ["140.0", "140.0", "1.00x"]
    events = rows["PEP: contacts' device-list events received per login"]
    assert events == ["2.0 notifications + 20.0 last items"] * 2 + [""]

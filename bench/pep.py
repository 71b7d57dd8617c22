"""What a client like Conversations, Gajim or Dino says about PEP at login, without I/O: its
XEP-0115 caps in the initial presence, the disco#info answer behind them, and the publication of its
OMEMO device list (XEP-0384) as a XEP-0163 publish with publish-options; and, for the record, what
kind of device-list event the server sends it.

A device list names the account's devices by id; this one also carries, in the device's label, the
load generator's CLOCK_MONOTONIC time of the publication, so that a receiver tells a notification
(published while it was online) from a last published item (published before it came online)
whatever the server puts around it: not every server stamps a last item with a XEP-0203 delay.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from bench import stream as xs

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NS_OMEMO = "urn:xmpp:omemo:2"
DEVICES_NODE = "urn:xmpp:omemo:2:devices"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
LABEL_PREFIX = "bench "  # the device label: LABEL_PREFIX + publication time (monotonic ns)

Identity = tuple[str, str, str, str]  # category, type, xml:lang, name


@dataclass(frozen=True)
class Caps:
    """A client's disco#info identity and features, and the XEP-0115 caps that name them."""

    node: str
    identities: tuple[Identity, ...]
    features: tuple[str, ...]

    @property
    def ver(self) -> str:
        return caps_ver(self.identities, self.features)

    def presence(self) -> bytes:
        c = f"<c xmlns='{NS_CAPS}' hash='sha-1' node={quoteattr(self.node)} ver='{self.ver}'/>"
        return f"<presence>{c}</presence>".encode()

    def query(self, node: str) -> str:
        """The disco#info `<query/>` answering a request for `node`."""
        node_attr = f" node={quoteattr(node)}" if node else ""
        identities = "".join(
            f"<identity category={quoteattr(c)} type={quoteattr(t)}"
            + (f" xml:lang={quoteattr(lang)}" if lang else "")
            + (f" name={quoteattr(name)}" if name else "")
            + "/>"
            for c, t, lang, name in self.identities
        )
        features = "".join(f"<feature var={quoteattr(f)}/>" for f in self.features)
        return f"<query xmlns='{NS_DISCO_INFO}'{node_attr}>{identities}{features}</query>"


# The notifications a current OMEMO client asks for (XEP-0163 §4.2: `<node>+notify`): OMEMO 2 and
# legacy (siacs) device lists, avatar metadata (XEP-0084) and nicknames (XEP-0172).
CLIENT = Caps(
    node="https://xmppd.invalid/bench-loadgen",
    identities=(("client", "pc", "", "xmppd bench"),),
    features=(
        NS_CAPS,
        NS_DISCO_INFO,
        f"{DEVICES_NODE}+notify",
        "eu.siacs.conversations.axolotl.devicelist+notify",
        "urn:xmpp:avatar:metadata+notify",
        "http://jabber.org/protocol/nick+notify",
    ),
)


def caps_ver(identities: Iterable[Identity], features: Iterable[str]) -> str:
    """XEP-0115 §5.1: identities sorted by category, type and xml:lang, each as
    category/type/lang/name<, then the features sorted, each followed by <; SHA-1, base64. (No
    XEP-0128 extended forms: this client has none.)"""
    text = "".join(f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in sorted(identities))
    text += "".join(f"{f}<" for f in sorted(features))
    # SHA-1 is what XEP-0115 names ('hash' = sha-1), not a security choice of ours.
    return base64.b64encode(hashlib.sha1(text.encode(), usedforsecurity=False).digest()).decode()


def device_id(account: str) -> int:
    """A stable OMEMO device id per account (XEP-0384: between 1 and 2^31 - 1)."""
    return zlib.crc32(account.encode()) % (2**31 - 1) + 1


def publish_devices(iq_id: str, account: str, published_ns: int) -> bytes:
    """XEP-0384 §5.3.1: the device list as item 'current', with publish-options asking for an open
    node (XEP-0060 §7.1.5: created so, or a precondition on an existing node)."""
    device = f"<device id='{device_id(account)}' label='{LABEL_PREFIX}{published_ns}'/>"
    options = (
        f"<x xmlns='{xs.NS_DATA}' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PUBLISH_OPTIONS}</value></field>"
        "<field var='pubsub#access_model'><value>open</value></field></x>"
    )
    payload = (
        f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{DEVICES_NODE}'><item id='current'>"
        f"<devices xmlns='{NS_OMEMO}'>{device}</devices></item></publish>"
        f"<publish-options>{options}</publish-options></pubsub>"
    )
    return xs.iq("set", iq_id, payload)


def answer(stanza: etree._Element, caps: Caps) -> bytes | None:
    """The client's reply to an iq request from the server: its disco#info for a caps query
    (XEP-0115 §6.2, for `node#ver`), service-unavailable to anything else (RFC 6120 §8.2.3);
    None when the stanza is no iq request."""
    if stanza.tag != "{jabber:client}iq" or stanza.get("type") not in ("get", "set"):
        return None
    to = stanza.get("from")
    query = stanza.find(f"{{{NS_DISCO_INFO}}}query")
    if stanza.get("type") == "get" and query is not None:
        return xs.iq("result", stanza.get("id", ""), caps.query(query.get("node", "")), to=to)
    error = f"<error type='cancel'><service-unavailable xmlns='{NS_STANZAS}'/></error>"
    return xs.iq("error", stanza.get("id", ""), error, to=to)


_DEVICE = (
    f"{{{NS_PUBSUB_EVENT}}}event/{{{NS_PUBSUB_EVENT}}}items[@node='{DEVICES_NODE}']/"
    f"{{{NS_PUBSUB_EVENT}}}item/{{{NS_OMEMO}}}devices/{{{NS_OMEMO}}}device"
)


def event_kind(stanza: etree._Element, account: str, available_ns: int) -> str | None:
    """For a device-list event sent to a session of `account` that became available at
    `available_ns`: "own_events" (its own account's), "notifications" (a contact's list published
    since) or "last_items" (a contact's published before); None for any other stanza."""
    if stanza.tag != "{jabber:client}message":
        return None
    device = stanza.find(_DEVICE)
    if device is None:
        return None
    if (stanza.get("from") or "").partition("/")[0] == account:
        return "own_events"
    label = device.get("label", "")
    published = label[len(LABEL_PREFIX) :] if label.startswith(LABEL_PREFIX) else ""
    return "notifications" if published.isdigit() and int(published) > available_ns else "last_items"

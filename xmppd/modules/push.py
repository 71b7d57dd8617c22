"""XEP-0357: Push Notifications (urn:xmpp:push:0), the user's server side.

A phone app cannot keep a stream open; its vendor's push service (APNs, FCM) can wake it. The
client names an *app server* (an XMPP pubsub service run for its app) and a node there; when a
message waits for the account, this module publishes a small notification to that node, and the
app server turns it into a push that wakes the app, which connects and fetches its messages.

Theory of operation
-------------------
Registrations. `<enable jid='APP-SERVER' node='NODE'/>` sent to one's own account (§5) stores a
registration: the app server's JID, the node, the optional publish-options form (kept as XML
text, sent back with every publish), the full JID of the session that enabled it (its device)
and when. One per (jid, node): enabling the same pair again replaces it (§5, "the last received
request"). `<disable jid='APP-SERVER' [node='NODE']/>` removes that one, or every registration
for that app server when no node is given (§6). They live in the "push" key-value store (one
document per registration, keyed by a hash of jid and node, so any JID and node fit a key), and
in memory: an account's registrations are read once and kept, current, in a least-recently-used
cache of `cache_size` accounts; an account known to have none costs a dict lookup per message.

When to notify, only for a message worth waking a phone for: one with a `<body/>`, or an
end-to-end encrypted payload (OMEMO `<encrypted/>` of eu.siacs.conversations.axolotl or
urn:xmpp:omemo:2, OpenPGP for XMPP's `<openpgp/>`), which often has no body. Chat states,
receipts and markers alone never wake anyone.

1. `message/offline`: an existing account has no resource to take a chat or normal message. The
   handler runs before offline storage (priority 1 over its 0), observes and never takes the
   message. Whether storage keeps it is told by `offline.decide` (no I/O): messages it drops
   (standalone chat states) or refuses (the no-store hint) wake nobody. A full queue (XEP-0160
   §2 step 3) is not foreseen: telling costs a count query per message, and a phone woken for
   it finds the message in its archive if there is one. Every registration of the account gets
   the notification: the account has no resource at all.
2. `detached-stanza`: stream management kept a stanza for a hibernating session. Only chat and
   normal messages count (a room's groupchat traffic would wake the phone for every line, and a
   carbon copy's body sits inside `<forwarded/>`: the message went to another device). Only
   the registrations enabled from that very session (same full JID) get it: the stanza waits in
   that session's queue, so waking any other device wakes one that will not receive it. With
   none, nobody is notified. Clients enable push again after each bind (a replacement records
   the new session), so a registration follows its device.

What a notification says (§7): an iq set from the account's bare JID to the app server,
publishing to the node an item `<notification xmlns='urn:xmpp:push:0'>` with the
urn:xmpp:push:summary form: `message-count`, `last-message-sender` (the sender's full JID, unless
`include_sender` is false), and `last-message-body` only when `include_body` allows it and the
message is not encrypted (an encrypted message's body is a fallback text such as "this message
is encrypted", and its real content must not leave the server anyway), cut to BODY_LIMIT
characters. The stored publish-options form goes in `<publish-options/>`. Bodies are off by
default: §9 says private content should not go through third parties unless the user wants it,
and a server-wide option is the out-of-band setting §9 asks for.

`message-count` is the number of messages this notification stands for: the ones since the
previous notification sent to that registration. It is not a running unread total: nothing here
learns reliably when a device has read its messages (a resumed stream fires no event), and a
total that only grows would be worse than none.

Pacing. At most one notification per registration every `min_interval` seconds (the server's
clock, `mod.time()`); a message within the interval is counted into the next notification of
that registration, and if none comes, it is never announced on its own: the device woken by the
previous notification connects and fetches everything, and a trailing notification would wake
it a second time for the same burst. (A clock that jumps back does not hold notifications up.)
When the device's session binds again (`session-bound` with the registration's full JID), its
count and interval start over: it has caught up, so the next message is news. Other devices'
counts are untouched: one device binding does not mean another has seen anything.

Sending never holds up delivery: each notification is a task of its own (`mod.spawn`); an
account not in the cache is read in that task as well, never on the message's path.

Errors (§7.1, "Publish Errors"). An error answer disables the registration (it is removed from
the store and from memory, and logged), except a transient one: an error of type "wait" (RFC
6120 §8.3.2: retry later), which includes our own timeout (remote-server-timeout, when the app
server does not answer within PATIENCE seconds). §7.1 allows keeping a registration through
such errors "until a sufficient number of errors have been received in a row": after
`max_transient_errors` transient errors in a row it is disabled too; an answered publish resets
the count.

Remote disabling (§8). An app server that stops accepting notifications may tell the account
with a message carrying `<pubsub node='NODE'><affiliation jid='ACCOUNT' affiliation='none'/>`
(or XEP-0060's `<affiliations node='NODE'>` form; 'outcast' too). Such a message from the JID of
a registration of the account removes that registration and goes no further (it is addressed to
the server's bookkeeping, not to a person); any other goes on as usual.

Requests. A missing or malformed `jid`, a missing or empty `node` on enable (the XEP says SHOULD
but nothing can be published without a node), an empty `node` on disable, more than one form, or
a form that is not a publish-options submission (FORM_TYPE required; a form without a type, as
in the XEP's example, is taken as a submission): bad-request, nothing stored. Beyond
`max_registrations` per account: not-acceptable (type modify), because the client can change its
request (disable a registration it no longer uses) and succeed; resource-constraint's type
"wait" would tell it to retry the same request, which would fail the same way.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.dataforms import DATA_NS, add_field, submitted_fields
from xmppd.datetimes import stamp
from xmppd.elements import element, from_text, to_text
from xmppd.errors import StanzaError
from xmppd.events import AccountEvent, DetachedStanzaEvent, SessionEvent
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.modules.offline import decide

if TYPE_CHECKING:
    from storage.shapes import KeyValue

PROTOCOLS = [
    ("XEP-0357", "0.4.1", "complete",
     "notifies on offline storage and on stanzas kept for hibernating sessions; summary form; publish "
     "errors and remote disabling remove a registration"),
]
NS = "urn:xmpp:push:0"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUMMARY = "urn:xmpp:push:summary"
# End-to-end encrypted payloads: OMEMO (XEP-0384, old and current namespaces), OpenPGP (XEP-0373).
ENCRYPTED = frozenset((
    "{eu.siacs.conversations.axolotl}encrypted",
    "{urn:xmpp:omemo:2}encrypted",
    "{urn:xmpp:openpgp:0}openpgp",
))
KV_STORE = "push"
OFFLINE_PRIORITY = 1  # before offline storage (0), which takes the message
REVOKE_PRIORITY = 60  # after blocking (100); before the archive (50): a control message is no chat
BODY_LIMIT = 256  # characters: a lock-screen preview, well within push payload limits (APNs: 4 KB)
PATIENCE = 30.0  # seconds an app server has to answer a publish
OPTIONS = {
    "max_registrations": Option(
        10, "push registrations (devices) one account may have; more are refused with not-acceptable", minimum=1
    ),
    "min_interval": Option(
        1.0, "seconds between two notifications to one registration; messages in between are counted into "
        "the next one (0: no limit)", kind=float, minimum=0,
    ),
    "include_body": Option(False, "put the last message's body in notifications (never an encrypted one's)"),
    "include_sender": Option(True, "put the last message's sender in notifications"),
    "max_transient_errors": Option(
        3, "transient publish errors (type wait, timeouts) in a row after which a registration is removed",
        minimum=1,
    ),
    "cache_size": Option(
        10000, "accounts whose registrations are kept in memory (the least recently used are dropped)", minimum=1
    ),
}


# -- what is stored -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """One device's request for notifications (§5)."""

    service: JID  # the app server
    node: str
    form: str | None  # the publish-options form, as XML text
    session: JID  # the full JID that enabled it
    enabled: str  # XEP-0082 stamp

    @property
    def key(self) -> str:
        return registration_key(self.service, self.node)

    def to_json(self) -> dict[str, Any]:
        return {
            "jid": str(self.service), "node": self.node, "form": self.form,
            "session": str(self.session), "enabled": self.enabled,
        }

    @classmethod
    def from_json(cls, value: Any) -> Registration:
        """ValueError (InvalidJID is one) or KeyError/TypeError for what is not a stored registration."""
        return cls(
            parse_jid(value["jid"]), str(value["node"]), value.get("form"),
            parse_jid(value["session"]), str(value.get("enabled", "")),
        )


def registration_key(service: JID, node: str) -> str:
    """The store key of (jid, node): a digest, so that any JID and node fit a key column; a JID has
    no line feed (RFC 7622 disallows controls), so the joined text names one pair only."""
    return hashlib.sha256(f"{service}\n{node}".encode()).hexdigest()


# -- reading requests (no I/O) --------------------------------------------------------------------------


def _service(payload: etree._Element) -> JID:
    text = payload.get("jid")
    if not text:
        raise StanzaError("bad-request", "the app server's 'jid' is missing")
    try:
        return parse_jid(text)
    except InvalidJID as exc:
        raise StanzaError("bad-request", f"'jid' is not a JID: {exc}") from None


def _publish_options(payload: etree._Element) -> str | None:
    """The enable request's publish-options form as XML text to store, or None."""
    forms = list(payload.iterchildren(f"{{{DATA_NS}}}x"))
    if not forms:
        return None
    if len(forms) > 1:
        raise StanzaError("bad-request", "one publish-options form at most")
    form = copy.deepcopy(forms[0])
    # The XEP's own example has no type; what it carries is the submission XEP-0060 §7.1.5 publishes.
    if form.get("type") is None:
        form.set("type", "submit")
    submitted_fields(form, PUBLISH_OPTIONS, require_type=True)  # bad-request when it is anything else
    return to_text(form)


def parse_enable(payload: etree._Element) -> tuple[JID, str, str | None]:
    """§5: (app server, node, publish-options form text); StanzaError bad-request otherwise."""
    service = _service(payload)
    node = payload.get("node")
    if not node:
        raise StanzaError("bad-request", "the app server's 'node' is missing")
    return service, node, _publish_options(payload)


def parse_disable(payload: etree._Element) -> tuple[JID, str | None]:
    """§6: (app server, node or None for all of its nodes); StanzaError bad-request otherwise."""
    service = _service(payload)
    node = payload.get("node")
    if node == "":
        raise StanzaError("bad-request", "an empty 'node' names no registration")
    return service, node


# -- reading messages (no I/O) --------------------------------------------------------------------------


def encrypted(msg: etree._Element) -> bool:
    return any(child.tag in ENCRYPTED for child in msg)


def _body(msg: etree._Element) -> etree._Element | None:
    # The body is in the stanza's own namespace (jabber:client here; none in bytes written without it).
    ns = etree.QName(msg).namespace
    return msg.find(f"{{{ns}}}body" if ns else "body")


def worth_waking(msg: etree._Element) -> bool:
    """A message a person would want to be woken for: a body, or an encrypted payload."""
    return _body(msg) is not None or encrypted(msg)


def waking_message(msg: etree._Element) -> bool:
    """A stanza kept for a hibernating session that warrants a notification (see the docstring)."""
    if etree.QName(msg).localname != "message" or (msg.get("type") or "normal") not in ("chat", "normal"):
        return False
    return worth_waking(msg)


def preview(msg: etree._Element) -> str | None:
    """The body a notification may show: none for an encrypted message; cut to BODY_LIMIT."""
    body = _body(msg)
    if body is None or encrypted(msg):
        return None
    return (body.text or "")[:BODY_LIMIT]


def _affiliation_nodes(pubsub: etree._Element) -> Iterable[tuple[str | None, etree._Element]]:
    # §8's example: <pubsub node=...><affiliation/>; XEP-0060 §8.9.4: <pubsub><affiliations node=...>.
    for child in pubsub.iterchildren(f"{{{PUBSUB_NS}}}affiliation"):
        yield pubsub.get("node"), child
    for group in pubsub.iterchildren(f"{{{PUBSUB_NS}}}affiliations"):
        for child in group.iterchildren(f"{{{PUBSUB_NS}}}affiliation"):
            yield group.get("node"), child


def revoked_node(msg: etree._Element, account: JID) -> str | None:
    """§8: the node whose publishing right a message takes from `account`, or None."""
    pubsub = msg.find(f"{{{PUBSUB_NS}}}pubsub")
    if pubsub is None:
        return None
    for node, affiliation in _affiliation_nodes(pubsub):
        if node and affiliation.get("affiliation") in ("none", "outcast") and _names(affiliation.get("jid"), account):
            return node
    return None


def _names(text: str | None, account: JID) -> bool:
    try:
        return text is not None and parse_jid(text).bare == account
    except InvalidJID:
        return False


# -- the notification (no I/O) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """What one notification says (urn:xmpp:push:summary)."""

    count: int
    sender: str | None
    body: str | None


def notification(account: JID, registration: Registration, summary: Summary) -> Stanza:
    """§7: the publish of a notification to the registration's node, from the account."""
    iq = Stanza.build("iq", to=registration.service, from_=account, type_="set")
    pubsub = element(f"{{{PUBSUB_NS}}}pubsub", parent=iq.element)
    publish = element(f"{{{PUBSUB_NS}}}publish", {"node": registration.node}, parent=pubsub)
    item = element(f"{{{PUBSUB_NS}}}item", parent=publish)
    note = element(f"{{{NS}}}notification", parent=item)
    form = element(f"{{{DATA_NS}}}x", {"type": "submit"}, parent=note)
    add_field(form, "FORM_TYPE", "hidden", None, [SUMMARY])
    add_field(form, "message-count", "text-single", None, [str(summary.count)])
    if summary.sender is not None:
        add_field(form, "last-message-sender", "jid-single", None, [summary.sender])
    if summary.body is not None:
        add_field(form, "last-message-body", "text-single", None, [summary.body])
    if registration.form is not None:
        options = element(f"{{{PUBSUB_NS}}}publish-options", parent=pubsub)
        options.append(from_text(registration.form))
    return iq


# -- one registration in memory -------------------------------------------------------------------------


@dataclass(slots=True)
class Device:
    """A registration and its pacing: what the next notification will say, when the last went."""

    registration: Registration
    count: int = 0  # messages since the last notification
    sender: str | None = None
    body: str | None = None
    sent_at: float | None = None
    failures: int = 0  # transient publish errors in a row

    def note(self, sender: str | None, body: str | None, now: float, interval: float) -> Summary | None:
        """Count a message; the notification to send now, or None within the interval."""
        self.count += 1
        self.sender, self.body = sender, body
        if self.sent_at is not None and 0 <= now - self.sent_at < interval:
            return None
        summary = Summary(self.count, self.sender, self.body)
        self.count, self.sender, self.body, self.sent_at = 0, None, None, now
        return summary

    def caught_up(self) -> None:
        """The device connected: what it was not told of, it fetches now."""
        self.count, self.sender, self.body, self.sent_at = 0, None, None, None


Devices = dict[str, Device]  # an account's registrations by key


class Registry:
    """The registrations of one host's accounts: the store, and in memory the accounts in use."""

    def __init__(self, store: KeyValue, capacity: int) -> None:
        self._kv = store
        self._accounts: LRU[JID, Devices] = LRU(capacity)
        # Changes are rare: one lock keeps each read-check-write whole.
        self.changing = asyncio.Lock()
        # Counts finished changes: a load that overlapped one may have read too early.
        self._changes = 0

    def cached(self, account: JID) -> Devices | None:
        """The account's registrations if they are in memory (None: `get` must read them)."""
        return self._accounts.get(account)

    async def get(self, account: JID) -> Devices:
        devices = self.cached(account)
        while devices is None:
            before = self._changes
            loaded = await self._load(account)
            devices = self.cached(account)
            if devices is None and self._changes == before:
                devices = loaded
                self._accounts.put(account, devices)
        return devices

    async def _load(self, account: JID) -> Devices:
        assert account.local is not None
        devices: Devices = {}
        for key, value in (await self._kv.all(account.domain, account.local)).items():
            try:
                devices[key] = Device(Registration.from_json(value))
            except (ValueError, KeyError, TypeError):
                continue  # not ours to read: never written by this module
        return devices

    async def put(self, account: JID, registration: Registration) -> None:
        assert account.local is not None
        await self._kv.set(account.domain, account.local, registration.key, registration.to_json())
        self._changed(account, {registration.key: Device(registration)}, ())

    async def remove(self, account: JID, keys: Iterable[str]) -> None:
        assert account.local is not None
        keys = list(keys)
        for key in keys:
            await self._kv.set(account.domain, account.local, key, None)
        self._changed(account, {}, keys)

    def forget(self, account: JID) -> None:
        self._accounts.pop(account)
        self._changes += 1

    def _changed(self, account: JID, added: Devices, removed: Iterable[str]) -> None:
        # After the write, in the same step: the memory never holds what the store lacks.
        self._changes += 1
        devices = self._accounts.peek(account)  # a change is not a use
        if devices is None:
            return
        devices.update(added)
        for key in removed:
            devices.pop(key, None)


# -- the module -----------------------------------------------------------------------------------------


def setup(mod: ModuleAPI) -> None:
    push = Push(mod)
    mod.add_account_feature(NS)
    mod.on_iq("set", NS, "enable", push.enable, targets=("self",))
    mod.on_iq("set", NS, "disable", push.disable, targets=("self",))
    mod.on(events.MESSAGE_OFFLINE, push.offline_message, OFFLINE_PRIORITY)
    mod.on(events.DETACHED_STANZA, push.detached_stanza)
    mod.on(events.SESSION_BOUND, push.bound)
    mod.on(events.ACCOUNT_DELETED, push.account_deleted)
    mod.on("message/bare", push.revoked, REVOKE_PRIORITY)


def _refuse(ev: StanzaEvent, error: StanzaError) -> bool:
    return ev.error(error.condition, error.text, error.type)


class Push:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        options = mod.options
        self.registry = Registry(mod.open_store(KV_STORE, KEY_VALUE), options["cache_size"])
        self.max_registrations: int = options["max_registrations"]
        # A float option cannot carry a minimum (config.py reads those as integers): below 0 means none.
        self.interval: float = options["min_interval"]
        self.include_body: bool = options["include_body"]
        self.include_sender: bool = options["include_sender"]
        self.max_transient: int = options["max_transient_errors"]

    # -- §5, §6 --------------------------------------------------------------------------------------

    async def enable(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None  # `self`: the sender's own account
        payload = ev.stanza.payload()
        assert payload is not None
        try:
            service, node, form = parse_enable(payload)
        except StanzaError as error:
            return _refuse(ev, error)
        account = ev.origin.bare
        registration = Registration(service, node, form, ev.origin.jid, stamp(int(self.mod.time() * 1000)))
        async with self.registry.changing:
            devices = await self.registry.get(account)
            if registration.key not in devices and len(devices) >= self.max_registrations:
                return ev.error("not-acceptable", f"an account may have {self.max_registrations} push registrations")
            await self.registry.put(account, registration)
        ev.respond(ev.stanza.reply())
        return True

    async def disable(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None
        payload = ev.stanza.payload()
        assert payload is not None
        try:
            service, node = parse_disable(payload)
        except StanzaError as error:
            return _refuse(ev, error)
        account = ev.origin.bare
        async with self.registry.changing:
            devices = await self.registry.get(account)
            gone = [
                key for key, device in devices.items()
                if device.registration.service == service and node in (None, device.registration.node)
            ]
            if gone:
                await self.registry.remove(account, gone)
        ev.respond(ev.stanza.reply())  # §6: nothing to remove is no error
        return True

    # -- when to notify ------------------------------------------------------------------------------

    def offline_message(self, ev: StanzaEvent) -> None:
        """`message/offline`: observe, never take (offline storage does)."""
        stanza = ev.stanza
        if decide(stanza) != "store" or not worth_waking(stanza.element):
            return
        assert stanza.to is not None
        self.wake(stanza.to.bare, stanza.element, None)

    def detached_stanza(self, ev: DetachedStanzaEvent) -> None:
        msg = ev.stanza if ev.stanza is not None else _parse(ev.data)
        if msg is None or not waking_message(msg):
            return
        self.wake(ev.session.bare, msg, ev.session.jid)

    def bound(self, ev: SessionEvent) -> None:
        """The device of a registration connected: its count and interval start over."""
        for device in (self.registry.cached(ev.session.bare) or {}).values():
            if device.registration.session == ev.session.jid:
                device.caught_up()

    def account_deleted(self, ev: AccountEvent) -> None:
        self.registry.forget(ev.account)  # its store rows go with the account

    def wake(self, account: JID, msg: etree._Element, only: JID | None) -> None:
        """Notify the registrations of `account` (those of the session `only`, when given)."""
        sender = msg.get("from") if self.include_sender else None
        body = preview(msg) if self.include_body else None
        devices = self.registry.cached(account)
        if devices is None:
            self.mod.spawn(self._wake_later(account, sender, body, only))
        else:
            self._notify(account, devices, sender, body, only)

    async def _wake_later(self, account: JID, sender: str | None, body: str | None, only: JID | None) -> None:
        self._notify(account, await self.registry.get(account), sender, body, only)

    def _notify(self, account: JID, devices: Devices, sender: str | None, body: str | None, only: JID | None) -> None:
        now = self.mod.time()
        for device in list(devices.values()):
            if only is not None and device.registration.session != only:
                continue
            summary = device.note(sender, body, now, self.interval)
            if summary is not None:
                self.mod.spawn(self._publish(account, device, summary))

    # -- §7, §7.1 ------------------------------------------------------------------------------------

    async def _publish(self, account: JID, device: Device, summary: Summary) -> None:
        registration = device.registration
        try:
            await self.mod.send_iq(notification(account, registration, summary), PATIENCE)
        except StanzaError as error:
            if error.type == "wait":
                device.failures += 1
                if device.failures < self.max_transient:
                    self.mod.log.info(
                        "push to %s node %s for %s failed (%s), kept", registration.service, registration.node,
                        account, error,
                    )
                    return
            await self._disable(account, registration, f"the app server answered {error}")
        else:
            device.failures = 0

    async def _disable(self, account: JID, registration: Registration, why: str) -> None:
        async with self.registry.changing:
            current = (await self.registry.get(account)).get(registration.key)
            # Enabled again meanwhile: the new registration has not failed.
            if current is None or current.registration != registration:
                return
            await self.registry.remove(account, [registration.key])
        self.mod.log.info("push to %s node %s for %s disabled: %s", registration.service, registration.node,
                          account, why)

    # -- §8 ------------------------------------------------------------------------------------------

    async def revoked(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        to, from_ = stanza.to, stanza.from_
        if from_ is None or to is None or stanza.type == "error":
            return False
        node = revoked_node(stanza.element, to.bare)
        if node is None:
            return False
        device = (await self.registry.get(to.bare)).get(registration_key(from_, node))
        if device is None:
            return False  # not an app server of this account: an ordinary message
        await self._disable(to.bare, device.registration, "the app server revoked it")
        return True


def _parse(data: bytes) -> etree._Element | None:
    try:
        return from_text(data.decode())
    except (etree.XMLSyntaxError, UnicodeDecodeError, ValueError):
        return None


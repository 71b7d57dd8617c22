"""XEP-0163: Personal Eventing Protocol, a XEP-0060 publish-subscribe service on every account,
with the XEP-0222 and XEP-0223 profiles for persistent public and private data. What OMEMO
(device lists, bundles), avatars, nicknames and bookmarks are stored in.

Theory of operation
-------------------
Nodes. An account's nodes are `components.pubsub` nodes (configuration, items, affiliations; no
I/O), stored in the "pep" KEY_VALUE store (key: the node's name, value: `Node.to_json()`), so
deleting the account deletes them (and `account-deleted` drops them from memory). `NodeCache` reads
an account's nodes once and keeps them for the `cache_size` accounts used most recently: a login
that is sent the last items of twenty contacts reads nothing when they are in memory. A change holds
the account's lock from reading its nodes until the changed node is written and notified, so that
notifications keep the order of the changes (two resources of an account publishing their OMEMO
device lists at once); a change whose write fails drops the account from the cache (it is read again
next time), so memory never holds what the database lacks.

Requests (XEP-0060 as XEP-0163 §3 and §5 use it), to one's own bare JID: publish (a node that does
not exist is created, with the publish-options as its configuration; on an existing node they are
preconditions, §7.1.5), retract, create (and configure), configure, delete, purge, the default
configuration, and the affiliations that make a whitelist. Another account may only retrieve
items (§6.5), when the node's access model lets it (components/pubsub/access.py), judged by the
owner's roster: a subscription from/both, and the groups.

Notifications (XEP-0163 §4.3, XEP-0060 §7.1.2.1): a headline message from the owner's bare JID,
to each available resource of the owner and of each contact with a presence subscription to the
owner (from/both) that may access the node, when the resource's XEP-0115 features (caps.py) ask
for `<node>+notify` (§4.2, filtered notifications). The same stanza goes to all of them through
`send_copies`: serialised once, and its `copies` event lets blocking (XEP-0191) leave out those
who blocked the owner and those the owner blocked (§4.3.3 item 3). Retractions, purges and
deletions are notified the same way when the node's configuration says so.

The last published item (§4.3.3 item 2, §4.3.4): when a session's caps become known
(`caps-known`, once per availability), it is sent the last item of each node it asked for, that
says send_last_published_item = on_sub_and_presence and that it may access: its own account's,
and those of the local contacts whose presence it receives (subscription to/both), with the time
the item was published (XEP-0203). `LastItemMessages` makes that message once per item, for all.

Changes fire `pep-changed` (events.PepChanged) on the account's host once stored and notified,
outside the account's lock: what another module mirrors (XEP-0411 bookmarks) follows every change,
its own included, which it must recognise to not loop.

Not offered: explicit subscriptions (subscribe, unsubscribe, their options), node discovery
(disco#items of an account), instant nodes, pubsub#notify_config, XEP-0033 replyto, and the last
item for a contact that subscribes or gains access while already online (it gets it at its next
availability).
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from components.pubsub.access import Relation, may_access
from components.pubsub.forms import (
    PubsubError,
    config_from_options,
    node_config_form,
    parse_node_config,
    parse_publish_options,
    precondition_met,
)
from components.pubsub.node import Item, Limits, Node, NodeConfig
from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.batching import BatchWriter
from xmppd.dataforms import DATA_NS
from xmppd.datetimes import stamp
from xmppd.elements import element, from_text, to_text
from xmppd.errors import StanzaError
from xmppd.events import SessionEvent
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.modules.caps import client_caps
from xmppd.router import Template, template

NodeWrite = tuple[str, str, str, Any]  # host, username, node name, Node.to_json() (None: deleted)
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]

if TYPE_CHECKING:
    from storage.model import RosterItem
    from storage.shapes import KeyValue
    from xmppd.session import Session

PROTOCOLS = [
    ("XEP-0060", "1.30.0", "partial", "the PEP subset: no explicit subscriptions"),
    ("XEP-0163", "1.2.2", "partial", "no explicit subscriptions, no node discovery (disco#items)"),
    ("XEP-0222", "1.0"),
    ("XEP-0223", "1.1.1"),
    # What clients keep in PEP: their server's part is the above (tests/modules/test_pep_payloads.py).
    ("XEP-0084", "1.1.4"),
    ("XEP-0172", "1.1"),
    ("XEP-0292", "0.12.0"),
    (
        "XEP-0384",
        "0.9.1",
        "complete",
        "the server's part of OMEMO: open device lists and bundles through publish-options, for OMEMO 2"
        " (urn:xmpp:omemo:2) and the legacy eu.siacs.conversations.axolotl",
    ),
]
NS = "http://jabber.org/protocol/pubsub"
OWNER_NS = f"{NS}#owner"
EVENT_NS = f"{NS}#event"
DELAY_NS = "urn:xmpp:delay"
STORE = "pep"
OPTIONS = {
    "max_items": Option(
        256, "most items one node keeps; what a client asking for pubsub#max_items 'max' gets", minimum=1
    ),
    "max_item_size": Option(
        128 * 1024, "largest item accepted, in bytes of XML (an avatar's data is its image in base64)", minimum=1
    ),
    "max_nodes": Option(256, "nodes one account may have", minimum=1),
    "cache_size": Option(
        5000, "accounts whose nodes are kept in memory (the least recently used are dropped)", minimum=1
    ),
}
# XEP-0060 §10 features (http://jabber.org/protocol/pubsub#<name>), exactly those served here.
FEATURES = (
    "access-open", "access-presence", "access-roster", "access-whitelist", "auto-create", "auto-subscribe",
    "config-node", "config-node-max", "create-and-configure", "create-nodes", "delete-items", "delete-nodes",
    "filtered-notifications", "item-ids", "last-published", "member-affiliation", "modify-affiliations",
    "multi-items", "outcast-affiliation", "persistent-items", "publish", "publish-options", "purge-nodes",
    "retract-items", "retrieve-default", "retrieve-items",
)
NOTIFY = "+notify"  # XEP-0163 §4.2: `<node>+notify` among a client's features asks for its events
# Roster subscriptions (RFC 6121 §2.1.2.5) seen from the owner: the contact receives the owner's
# presence; seen from the contact: it receives the owner's.
SUBSCRIBED_TO_OWNER = ("from", "both")
SUBSCRIBED_TO_CONTACT = ("to", "both")

OWNER = Relation(is_owner=True, subscribed=True, groups=frozenset())
SUBSCRIBER = Relation(is_owner=False, subscribed=True, groups=frozenset())
STRANGER = Relation(is_owner=False, subscribed=False, groups=frozenset())


def setup(mod: ModuleAPI) -> None:
    pep = pep_service(mod)
    requests = Requests(pep)
    mod.add_account_identity("pubsub", "pep")  # XEP-0163 §6.1
    for feature in FEATURES:
        mod.add_account_feature(f"{NS}#{feature}")
    # Only retrieval is open to other accounts; `Requests` refuses the rest to them.
    targets = ("self", "bare")
    mod.on_iq("get", NS, "pubsub", requests.get, targets=targets)
    mod.on_iq("set", NS, "pubsub", requests.set, targets=targets)
    mod.on_iq("get", OWNER_NS, "pubsub", requests.owner_get, targets=targets)
    mod.on_iq("set", OWNER_NS, "pubsub", requests.owner_set, targets=targets)
    mod.on(events.CAPS_KNOWN, pep.caps_known)
    mod.on(events.ACCOUNT_DELETED, pep.account_deleted)


def pep_service(mod: ModuleAPI) -> Pep:
    """The server's PEP service, one for every host (an account's contacts may live on another
    one), made by whichever module asks first: vCard and bookmark compatibility publish through it."""
    pep = mod.common("pep", lambda: Pep(mod))
    # `pep-changed` fires on the account's host, through the API of a module there: every host
    # whose accounts can change nodes has one that asked for the service (pep itself, at least).
    pep.hosts.setdefault(mod.host.name, mod)
    return pep


def _local(account: JID) -> str:
    assert account.local is not None, f"{account} is not an account"
    return account.local


class Unsupported(PubsubError):
    """feature-not-implemented with <unsupported feature='…'/>: a use case not offered (XEP-0060
    §6.1.3.10, §8.9.2.3, ...)."""

    def __init__(self, feature: str) -> None:
        super().__init__("feature-not-implemented", "unsupported", f"{feature} is not supported here")
        self.feature = feature

    def to_element(self, client_ns: str) -> etree._Element:
        error = super().to_element(client_ns)
        error[-1].set("feature", self.feature)
        return error


def _not_found(what: str) -> StanzaError:
    return StanzaError("item-not-found", f"no {what}")


# -- the nodes of the accounts ------------------------------------------------------------------


class NodeCache:
    """Every account's nodes by name, read from storage once and kept for the `capacity` accounts
    used most recently (see the module docstring)."""

    def __init__(self, store: KeyValue, capacity: int, spawn: Spawn | None = None) -> None:
        self._kv = store
        # Group commit: the nodes that concurrent publishes change (every login publishes its
        # device list) are written together, one transaction for all (xmppd/batching.py).
        self._writes: BatchWriter[NodeWrite] = BatchWriter(store.set_many, spawn=spawn)
        self._accounts: LRU[JID, dict[str, Node]] = LRU(capacity)
        self._locks: weakref.WeakValueDictionary[JID, asyncio.Lock] = weakref.WeakValueDictionary()

    def cached(self, account: JID) -> dict[str, Node] | None:
        return self._accounts.get(account)

    async def nodes(self, account: JID) -> dict[str, Node]:
        """The account's nodes, to read: change them within `changing`."""
        nodes = self.cached(account)
        if nodes is not None:
            return nodes
        # Under the lock: a read racing with a change would cache what the change is overwriting.
        async with self._lock(account):
            return await self._load(account)

    @asynccontextmanager
    async def changing(self, account: JID) -> AsyncIterator[dict[str, Node]]:
        """The account's nodes to change and `save`, with no other change in between. A
        StanzaError must come before anything changed; after any other error memory may be ahead
        of storage, so the account is read again next time."""
        async with self._lock(account):
            nodes = await self._load(account)
            try:
                yield nodes
            except StanzaError:
                raise
            except BaseException:
                self.forget(account)
                raise

    async def save(self, account: JID, node: Node) -> None:
        await self._writes.write((account.domain, _local(account), node.name, node.to_json()))

    async def drop(self, account: JID, name: str) -> None:
        await self._writes.write((account.domain, _local(account), name, None))

    def forget(self, account: JID) -> None:
        self._accounts.pop(account)

    def _lock(self, account: JID) -> asyncio.Lock:
        lock = self._locks.get(account)
        if lock is None:
            lock = self._locks[account] = asyncio.Lock()
        return lock

    async def _load(self, account: JID) -> dict[str, Node]:
        """With the account's lock held."""
        nodes = self.cached(account)
        if nodes is None:
            stored = await self._kv.all(account.domain, _local(account))
            nodes = {name: Node.from_json(name, data) for name, data in stored.items()}
            self._accounts.put(account, nodes)
        return nodes


class LastItemMessages:
    """The message that sends a node's last item to a resource coming online (§4.3.4), made and
    serialised once per item and kept for the `capacity` nodes sent most recently: a login is
    sent the last items of all its contacts, and each is the same stanza for every recipient but
    for the `to`, so all logins share one, id included (one item, one notification). An entry
    holds while its node's newest item and configuration are the very objects it was made from:
    a publish, retraction, purge or reconfiguration replaces them, and the next login makes it
    again."""

    def __init__(self, capacity: int) -> None:
        self._messages: LRU[tuple[JID, str], tuple[Item, NodeConfig, Stanza, Template]] = LRU(capacity)

    def message(self, owner: JID, node: Node, item: Item) -> tuple[Stanza, Template]:
        key = (owner, node.name)
        entry = self._messages.get(key)
        if entry is None or entry[0] is not item or entry[1] is not node.config:
            message = notification(owner, items_event(node, item))
            element(f"{{{DELAY_NS}}}delay", {"stamp": stamp(round(item.published * 1000))}, parent=message.element)
            entry = (item, node.config, message, template(message.element))
            self._messages.put(key, entry)
        return entry[2], entry[3]


# -- the service --------------------------------------------------------------------------------


class Pep:
    """Nodes, changes and notifications; the iq protocol is `Requests`'."""

    def __init__(self, mod: ModuleAPI) -> None:
        # The module's options whichever module makes the service (vCard may, before PEP).
        options = {**{key: option.default for key, option in OPTIONS.items()}, **mod.config.options_for("pep")}
        self.mod = mod
        self.sessions = mod.sessions
        self.rosters = mod.rosters
        self.caps = client_caps(mod)
        self.limits = Limits(options["max_items"], options["max_item_size"], options["max_nodes"])
        self.nodes = NodeCache(mod.open_store(STORE, KEY_VALUE), options["cache_size"], mod.spawn)
        self.last_items = LastItemMessages(options["cache_size"])
        self.hosts: dict[str, ModuleAPI] = {}  # by host name: where `pep-changed` fires (pep_service)

    async def node(self, account: JID, name: str) -> Node | None:
        return (await self.nodes.nodes(account)).get(name)

    # -- changes --------------------------------------------------------------------------------

    async def publish(
        self,
        account: JID,
        node: str,
        item_id: str | None,
        payload: etree._Element,
        options: dict[str, object] | None = None,
    ) -> str:
        """Publish as the owner would (XEP-0060 §7.1): the node is created with `options` as its
        configuration if it does not exist, else they are preconditions; its subscribers are
        notified. Returns the item's id; StanzaError when refused, with nothing changed."""
        text = to_text(payload)
        if len(text.encode()) > self.limits.max_item_size:
            raise PubsubError("not-acceptable", "payload-too-big", f"at most {self.limits.max_item_size} bytes")
        item = Item(item_id or secrets.token_hex(8), text, str(account), self.mod.time())
        async with self.nodes.changing(account) as nodes:
            target = nodes.get(node)
            if target is None:
                target = self._add(nodes, node, config_from_options(options or {}, self.limits))
            elif options and not precondition_met(target.config, options):
                raise PubsubError("conflict", "precondition-not-met", "the node is configured otherwise")
            # The same item again (clients publish their device list, nick or avatar metadata at
            # every login): storage has it already, so nothing is written and no change is
            # announced; subscribers are notified as for any publish (§7.1.2).
            changed = not target.holds(item)
            if changed:
                # Items evicted by max_items are not notified as retracted (§7.1.2.5 leaves it to
                # the service): with one item per node, each publish would cost a second notification.
                target.publish(item)
                await self.nodes.save(account, target)
            await self._notify(account, target, items_event(target, item))
        if changed:
            await self._changed(events.PepChanged(account, node, "publish", item.id, payload))
        return item.id

    async def create(self, account: JID, name: str, config: NodeConfig) -> None:
        async with self.nodes.changing(account) as nodes:
            if name in nodes:
                raise StanzaError("conflict", f"node {name} exists")  # §8.1.1
            await self.nodes.save(account, self._add(nodes, name, config))

    def _add(self, nodes: dict[str, Node], name: str, config: NodeConfig) -> Node:
        if len(nodes) >= self.limits.max_nodes:
            # The account is PEP's root collection node (XEP-0163 §5), and XEP-0248 refuses a
            # child too many this way ("Maximum Number of Children Exceeded").
            raise PubsubError("not-allowed", "max-nodes-exceeded", f"at most {self.limits.max_nodes} nodes")
        node = nodes[name] = Node(name, config)
        return node

    async def retract(self, account: JID, name: str, item_id: str, *, notify: bool) -> None:
        async with self._existing(account, name) as node:
            if not node.retract(item_id):
                raise _not_found(f"item {item_id}")  # §7.2.3.2
            await self.nodes.save(account, node)
            if notify or node.config.notify_retract:  # §7.2.2.1
                await self._notify(account, node, retract_event(name, item_id))
        await self._changed(events.PepChanged(account, name, "retract", item_id))

    async def configure(self, account: JID, name: str, form: etree._Element) -> None:
        async with self._existing(account, name) as node:
            # Items beyond a lower max_items go silently, as on publish.
            node.reconfigure(parse_node_config(form, node.config, self.limits))
            await self.nodes.save(account, node)

    async def purge(self, account: JID, name: str) -> None:
        async with self._existing(account, name) as node:
            node.purge()
            await self.nodes.save(account, node)
            if node.config.notify_retract:  # §8.5.2: one notification for all the items
                await self._notify(account, node, node_event("purge", name))
        await self._changed(events.PepChanged(account, name, "purge"))

    async def set_affiliations(self, account: JID, name: str, changes: Mapping[str, str]) -> None:
        async with self._existing(account, name) as node:
            for jid, affiliation in changes.items():
                if affiliation == "none":
                    node.affiliations.pop(jid, None)
                else:
                    node.affiliations[jid] = affiliation
            await self.nodes.save(account, node)

    async def delete(self, account: JID, name: str) -> None:
        async with self.nodes.changing(account) as nodes:
            node = nodes.pop(name, None)
            if node is None:
                raise _not_found(f"node {name}")
            await self.nodes.drop(account, name)
            if node.config.notify_delete:  # §8.4.2
                await self._notify(account, node, node_event("delete", name))
        await self._changed(events.PepChanged(account, name, "delete"))

    async def _changed(self, change: events.PepChanged) -> None:
        """After the account's lock is released: a handler may change its nodes in turn."""
        mod = self.hosts.get(change.account.domain)
        if mod is not None:
            await mod.fire(events.PEP_CHANGED, change)

    @asynccontextmanager
    async def _existing(self, account: JID, name: str) -> AsyncIterator[Node]:
        """An existing node to change, store and notify, with the account's lock held;
        item-not-found when there is none."""
        async with self.nodes.changing(account) as nodes:
            node = nodes.get(name)
            if node is None:
                raise _not_found(f"node {name}")
            yield node

    # -- who may see what ---------------------------------------------------------------------

    async def relation(self, owner: JID, requester: JID) -> Relation:
        """What the owner's roster says of a requester (a bare JID)."""
        if requester == owner:
            return OWNER
        item = await self.rosters.item(owner.domain, _local(owner), str(requester))
        return contact_relation(item) if item is not None else STRANGER

    async def roster_groups(self, owner: JID) -> list[str]:
        _, items = await self.rosters.items(owner.domain, _local(owner))
        return sorted({group for item in items for group in item.groups})

    # -- notifications --------------------------------------------------------------------------

    async def _notify(self, owner: JID, node: Node, event: etree._Element) -> None:
        recipients = await self._subscribers(owner, node)
        if recipients:
            await self.mod.send_copies(notification(owner, event), recipients)

    async def _subscribers(self, owner: JID, node: Node) -> list[JID]:
        """XEP-0163 §4.3.1-§4.3.2: the available resources that asked for the node's events, of
        the owner and of the contacts subscribed to the owner's presence that may access it."""
        recipients = self._wanting(owner, node.name)
        for item in await self._contacts(owner, SUBSCRIBED_TO_OWNER):
            resources = self._wanting(parse_jid(item.jid), node.name)
            if resources and may_access(node, item.jid, contact_relation(item)):
                recipients.extend(resources)
        return recipients

    async def _contacts(self, account: JID, subscriptions: tuple[str, ...]) -> list[RosterItem]:
        """The account's roster items with one of `subscriptions`, but for itself (a client may
        list its own account, which is served as the owner)."""
        _, items = await self.rosters.items(account.domain, _local(account))
        own = str(account)
        return [item for item in items if item.subscription in subscriptions and item.jid != own]

    def _wanting(self, account: JID, node: str) -> list[JID]:
        wants = self.caps.wants
        return [session.jid for session in self.sessions.available(account) if wants(session.jid, node)]

    # -- the last published item (XEP-0163 §4.3.4) ------------------------------------------------

    async def caps_known(self, ev: SessionEvent) -> None:
        """A session's features are known for a new availability: the last items it asked for."""
        session = ev.session
        features = self.caps.features(session.jid) or ()
        wanted = {feature[: -len(NOTIFY)] for feature in features if feature.endswith(NOTIFY)}
        if not wanted:
            return
        account = session.bare
        await self._send_last(session, account, wanted, OWNER)
        for item in await self._contacts(account, SUBSCRIBED_TO_CONTACT):
            contact = parse_jid(item.jid)
            if contact.local is not None and self.mod.is_user_host(contact.domain):
                await self._send_last(session, contact, wanted, None)

    async def _send_last(self, session: Session, owner: JID, wanted: set[str], relation: Relation | None) -> None:
        """The last item of each of `owner`'s nodes in `wanted` that `session` may access;
        `relation` None: `session`'s account receives the owner's presence."""
        nodes = await self.nodes.nodes(owner)
        for name, node in nodes.items():
            if name not in wanted or node.config.send_last_published_item != "on_sub_and_presence":
                continue
            last = node.last()
            if last is None:
                continue
            seen = relation if relation is not None else await self._as_subscriber(owner, session.bare, node)
            if not may_access(node, str(session.bare), seen):
                continue
            message, serialised = self.last_items.message(owner, node, last)
            await self.mod.send_copies(message, [session.jid], serialised)

    async def _as_subscriber(self, owner: JID, subscriber: JID, node: Node) -> Relation:
        """The relation of an account whose roster says it receives the owner's presence. RFC
        6121 keeps both sides of a local subscription in step, so the owner's roster says from or
        both: only a roster-model node needs that item, for its groups. A login thus reads no
        contact's roster from storage."""
        if node.config.access_model == "roster":
            return await self.relation(owner, subscriber)
        return SUBSCRIBER

    # -- deleted accounts -----------------------------------------------------------------------

    async def account_deleted(self, ev: events.AccountEvent) -> None:
        """The account's nodes went with it in storage; they leave memory too, so that an account
        made again with that name starts with none."""
        self.nodes.forget(ev.account)


def contact_relation(item: RosterItem) -> Relation:
    return Relation(
        is_owner=False, subscribed=item.subscription in SUBSCRIBED_TO_OWNER, groups=frozenset(item.groups)
    )


# -- what is sent (no I/O) ----------------------------------------------------------------------


def notification(owner: JID, event: etree._Element) -> Stanza:
    """XEP-0163 §4.3.1: from the owner's bare JID, with an id of its own (XEP-0060 §7.1.2.1);
    the `to` of each copy is `send_copies`'."""
    stanza = Stanza.build("message", to=None, from_=owner, type_="headline", id_=f"pep-{secrets.token_hex(8)}")
    stanza.element.append(event)
    return stanza


def _event(kind: str, node: str) -> tuple[etree._Element, etree._Element]:
    event = element(f"{{{EVENT_NS}}}event")
    return event, element(f"{{{EVENT_NS}}}{kind}", {"node": node}, parent=event)


def items_event(node: Node, item: Item) -> etree._Element:
    """§7.1.2.1, or §7.1.2.2 without the payload when the node does not deliver payloads."""
    event, items = _event("items", node.name)
    items.append(item_element(EVENT_NS, item, payload=node.config.deliver_payloads))
    return event


def retract_event(node: str, item_id: str) -> etree._Element:
    event, items = _event("items", node)
    element(f"{{{EVENT_NS}}}retract", {"id": item_id}, parent=items)
    return event


def node_event(kind: str, node: str) -> etree._Element:
    """A node's deletion (§8.4.2) or purge (§8.5.2)."""
    return _event(kind, node)[0]


def item_element(ns: str, item: Item, *, payload: bool = True) -> etree._Element:
    entry = element(f"{{{ns}}}item", {"id": item.id})
    if payload:
        entry.append(from_text(item.payload))
    return entry


# -- the iq protocol ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A pubsub request: whose service it addresses, who asks, and what."""

    owner: JID  # bare
    requester: JID  # bare
    pubsub: etree._Element  # the <pubsub/> payload
    action: etree._Element  # its first child: <publish/>, <items/>, <configure/>...

    def node(self) -> str:
        name = self.action.get("node")
        if not name:
            raise PubsubError("bad-request", "nodeid-required")
        return name


Handler = Callable[[Request], Awaitable[etree._Element | None]]  # the result's payload, if any
IqHandler = Callable[[StanzaEvent], Awaitable[bool]]
# Use cases not offered, by request element, with the feature XEP-0060 names for each.
UNSUPPORTED = {
    "subscribe": "subscribe",
    "unsubscribe": "subscribe",
    "options": "subscription-options",
    "subscriptions": "retrieve-subscriptions",
    "affiliations": "retrieve-affiliations",
    "default": "retrieve-default-sub",
}
OWNER_UNSUPPORTED = {"subscriptions": "manage-subscriptions"}
GRANTABLE = ("member", "outcast", "none")  # what an owner may give others (§8.9)


class Requests:
    """XEP-0060's requests on an account's service: each handler gets a `Request` and returns
    the payload of the result (None: an empty result) or raises StanzaError."""

    def __init__(self, pep: Pep) -> None:
        self.pep = pep
        self.limits = pep.limits
        self.get = self._answering({"items": self.items}, UNSUPPORTED)
        self.set = self._answering(
            {"publish": self.publish, "retract": self.retract, "create": self.create}, UNSUPPORTED
        )
        self.owner_get = self._answering(
            {"configure": self.configuration, "default": self.default, "affiliations": self.affiliations},
            OWNER_UNSUPPORTED,
        )
        self.owner_set = self._answering(
            {
                "configure": self.configure,
                "delete": self.delete,
                "purge": self.purge,
                "affiliations": self.set_affiliations,
            },
            OWNER_UNSUPPORTED,
        )

    def _answering(self, handlers: Mapping[str, Handler], unsupported: Mapping[str, str]) -> IqHandler:
        """The iq handler that dispatches a `<pubsub/>` request by its first child and answers it."""

        async def answer(ev: StanzaEvent) -> bool:
            stanza = ev.stanza
            try:
                payload = await self._answer(_request(stanza), handlers, unsupported)
            except StanzaError as error:
                ev.router.bounce(stanza, error, ev.origin)
                return True
            reply = stanza.reply()
            if payload is not None:
                reply.element.append(payload)
            ev.respond(reply)
            return True

        return answer

    async def _answer(
        self, request: Request, handlers: Mapping[str, Handler], unsupported: Mapping[str, str]
    ) -> etree._Element | None:
        name = etree.QName(request.action).localname
        handler = handlers.get(name)
        if handler is None:
            raise Unsupported(unsupported[name]) if name in unsupported else StanzaError("feature-not-implemented")
        if request.requester != request.owner:
            if not await self.pep.mod.account_exists(request.owner):
                raise StanzaError("service-unavailable")  # RFC 6121 §8.5.1: no such account
            # §6.5: retrieving items is the one use case open to others (XEP-0163 §2.2: one
            # publisher, the owner); the rest is the owner's (§7.1.3.1, §8.1.1: forbidden).
            if name != "items":
                raise StanzaError("forbidden", "only the account's owner may do this")
        return await handler(request)

    # -- <pubsub xmlns='http://jabber.org/protocol/pubsub'/> -----------------------------------

    async def items(self, request: Request) -> etree._Element:
        """§6.5: all items, those asked for by id, or the `max_items` newest; newest first."""
        name = request.node()
        node = await self.pep.node(request.owner, name)
        if node is None:
            raise _not_found(f"node {name}")  # §6.5.9.11
        await self._check_access(request, node)
        items = node.newest(_max_items(request.action))
        ids = {item.get("id") for item in request.action.iterchildren(f"{{{NS}}}item")}
        if ids:
            items = [item for item in items if item.id in ids]
        pubsub, container = reply_payload(NS, "items", {"node": name})
        for item in items:
            container.append(item_element(NS, item))
        return pubsub

    async def _check_access(self, request: Request, node: Node) -> None:
        requester = str(request.requester)
        if may_access(node, requester, await self.pep.relation(request.owner, request.requester)):
            return
        if node.affiliations.get(requester) == "outcast":
            raise StanzaError("forbidden")  # §6.5.9.10
        model = node.config.access_model
        if model == "presence":
            raise PubsubError("not-authorized", "presence-subscription-required")  # §6.5.9.6
        if model == "roster":
            raise PubsubError("not-authorized", "not-in-roster-group")  # §6.5.9.7
        raise PubsubError("not-allowed", "closed-node")  # §6.5.9.8

    async def publish(self, request: Request) -> etree._Element:
        """§7.1, with publish-options (§7.1.5) and auto-create (§7.1.4)."""
        name = request.node()
        item = _single_item(request.action)
        options = parse_publish_options(_form(request.pubsub.find(f"{{{NS}}}publish-options")), self.limits)
        item_id = await self.pep.publish(request.owner, name, item.get("id") or None, _payload(item), options)
        pubsub, publish = reply_payload(NS, "publish", {"node": name})
        element(f"{{{NS}}}item", {"id": item_id}, parent=publish)
        return pubsub

    async def retract(self, request: Request) -> None:
        """§7.2: one item, by id."""
        name = request.node()
        ids = [item.get("id") for item in request.action.iterchildren(f"{{{NS}}}item")]
        if len(ids) != 1 or not ids[0]:
            raise PubsubError("bad-request", "item-required")  # §7.2.3.4
        notify = request.action.get("notify") in ("1", "true")
        await self.pep.retract(request.owner, name, ids[0], notify=notify)

    async def create(self, request: Request) -> None:
        """§8.1, with its configuration when one comes (§8.1.3)."""
        name = request.action.get("node")
        if not name:
            raise PubsubError("not-acceptable", "nodeid-required")  # §8.1.1: no instant nodes
        form = _form(request.pubsub.find(f"{{{NS}}}configure"))
        config = NodeConfig() if form is None else parse_node_config(form, NodeConfig(), self.limits)
        await self.pep.create(request.owner, name, config)

    # -- <pubsub xmlns='http://jabber.org/protocol/pubsub#owner'/> -----------------------------

    async def configuration(self, request: Request) -> etree._Element:
        """§8.2.1: the form, with the current values."""
        name = request.node()
        node = await self._own_node(request.owner, name)
        pubsub, configure = reply_payload(OWNER_NS, "configure", {"node": name})
        configure.append(await self._config_form(request.owner, node.config))
        return pubsub

    async def default(self, request: Request) -> etree._Element:
        """§8.3: what a node gets when created without a configuration."""
        pubsub, default = reply_payload(OWNER_NS, "default", {})
        default.append(await self._config_form(request.owner, NodeConfig()))
        return pubsub

    async def _config_form(self, owner: JID, config: NodeConfig) -> etree._Element:
        return node_config_form(config, self.limits, roster_groups=await self.pep.roster_groups(owner))

    async def configure(self, request: Request) -> None:
        """§8.2.4: a submitted form changes the configuration, a cancelled one nothing."""
        name = request.node()
        form = _form(request.action)
        if form is None:
            raise StanzaError("bad-request", "a configuration form is needed")
        if form.get("type") == "cancel":
            await self._own_node(request.owner, name)
            return
        await self.pep.configure(request.owner, name, form)

    async def delete(self, request: Request) -> None:
        await self.pep.delete(request.owner, request.node())  # §8.4

    async def purge(self, request: Request) -> None:
        await self.pep.purge(request.owner, request.node())  # §8.5

    async def affiliations(self, request: Request) -> etree._Element:
        """§8.9.1: the owner and whoever has an affiliation."""
        name = request.node()
        node = await self._own_node(request.owner, name)
        pubsub, container = reply_payload(OWNER_NS, "affiliations", {"node": name})
        for jid, affiliation in [(str(request.owner), "owner"), *sorted(node.affiliations.items())]:
            element(f"{{{OWNER_NS}}}affiliation", {"jid": jid, "affiliation": affiliation}, parent=container)
        return pubsub

    async def set_affiliations(self, request: Request) -> None:
        """§8.9.2: the changes only; all of them or none."""
        name = request.node()
        changes = _affiliation_changes(request.action, request.owner)
        await self.pep.set_affiliations(request.owner, name, changes)

    async def _own_node(self, owner: JID, name: str) -> Node:
        node = await self.pep.node(owner, name)
        if node is None:
            raise _not_found(f"node {name}")
        return node


def _request(stanza: Stanza) -> Request:
    pubsub = stanza.payload()
    assert pubsub is not None and stanza.from_ is not None
    action = next((child for child in pubsub if isinstance(child.tag, str)), None)
    if action is None:
        raise StanzaError("bad-request", "an empty pubsub request")
    requester = stanza.from_.bare
    return Request(stanza.to.bare if stanza.to is not None else requester, requester, pubsub, action)


def reply_payload(ns: str, name: str, attrib: dict[str, str]) -> tuple[etree._Element, etree._Element]:
    pubsub = element(f"{{{ns}}}pubsub")
    return pubsub, element(f"{{{ns}}}{name}", attrib, parent=pubsub)


def _form(container: etree._Element | None) -> etree._Element | None:
    return container.find(f"{{{DATA_NS}}}x") if container is not None else None


def _max_items(items: etree._Element) -> int | None:
    value = items.get("max_items")
    if value is None:
        return None
    if not value.isdigit():
        raise StanzaError("bad-request", f"max_items must be a number, not {value!r}")
    return int(value)


def _single_item(publish: etree._Element) -> etree._Element:
    """§7.1.3.7: a persistent node needs an item, and batches are gone (§7.1.1)."""
    items = list(publish.iterchildren(f"{{{NS}}}item"))
    if not items:
        raise PubsubError("bad-request", "item-required")
    if len(items) > 1:
        raise PubsubError("bad-request", "invalid-payload", "one item per publish")
    return items[0]


def _payload(item: etree._Element) -> etree._Element:
    """§7.1.3.6, §7.1.3.7: exactly one payload element."""
    payloads = [child for child in item if isinstance(child.tag, str)]
    if not payloads:
        raise PubsubError("bad-request", "payload-required")
    if len(payloads) > 1:
        raise PubsubError("bad-request", "invalid-payload", "one payload element per item")
    return payloads[0]


def _affiliation_changes(affiliations: etree._Element, owner: JID) -> dict[str, str]:
    """The changes asked for, by bare JID; not-acceptable for any that cannot be made (§8.9.2.4),
    so that none is. A missing 'affiliation' changes nothing (§8.9.2.1)."""
    changes: dict[str, str] = {}
    for entry in affiliations.iterchildren(f"{{{OWNER_NS}}}affiliation"):
        affiliation = entry.get("affiliation")
        if affiliation is None:
            continue
        if affiliation in ("publisher", "publish-only"):
            raise Unsupported(f"{affiliation}-affiliation")  # XEP-0163 §2.2: one publisher, the owner
        try:
            jid = parse_jid(entry.get("jid", "")).bare
        except InvalidJID:
            raise StanzaError("not-acceptable", f"not a JID: {entry.get('jid')!r}") from None
        if jid == owner or affiliation not in GRANTABLE:
            raise StanzaError("not-acceptable", f"{jid} cannot be made {affiliation}")
        changes[str(jid)] = affiliation
    return changes

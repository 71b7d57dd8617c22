"""A XEP-0060 node as data: its configuration, its items and its affiliations. No I/O.

Items are kept in publication order, newest last (§13.9: publishing an id that exists overwrites
the item, and here also makes it the newest, since it is now the last published). A node keeps at
most `NodeConfig.capacity` items and evicts the oldest beyond that.

A non-persistent node (pubsub#persist_items false) still keeps its last item, in memory only:
§13.10 lets a service cache the last item of a transient node, and XEP-0163 §4.3.4 requires PEP
to send the last published item to every newly available subscriber resource, which it could not
do otherwise. `to_json` leaves that item out, since the owner asked for items not to be persisted
to storage: it lasts as long as the `Node` object does.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
# §4.1; "none" is the absence of an entry, and the owner of a PEP node is its account.
AFFILIATIONS = ("owner", "publisher", "member", "outcast")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the service allows (from the PEP module's options)."""

    max_items: int  # what pubsub#max_items = "max" means, and the highest number accepted
    max_item_size: int  # bytes of one item's serialised payload
    max_nodes: int  # nodes per account

    def __post_init__(self) -> None:
        for name in ("max_items", "max_item_size", "max_nodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The pubsub#node_config fields we implement (§17.4.4), with PEP's defaults.

    XEP-0163 §5 makes "presence" the default access model and on_sub_and_presence the default of
    send_last_published_item; XEP-0060 defaults the rest. One item by default: PEP nodes mostly
    hold one state (a tune, an avatar, an OMEMO device list), and a client that wants more says
    so with pubsub#max_items (XEP-0402 bookmarks ask for "max").
    """

    access_model: str = "presence"
    persist_items: bool = True
    max_items: int = 1  # "max" is stored as Limits.max_items when a form is parsed
    send_last_published_item: str = "on_sub_and_presence"
    notify_retract: bool = True
    notify_delete: bool = True
    deliver_payloads: bool = True
    roster_groups_allowed: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        # A set of groups in a canonical order, so that equal configurations compare equal (a
        # publish-options precondition is an equality); JSON gives it back as a list.
        object.__setattr__(self, "roster_groups_allowed", tuple(sorted(set(self.roster_groups_allowed))))
        if self.access_model not in ACCESS_MODELS:
            raise ValueError(f"unknown access model {self.access_model!r}")
        if self.send_last_published_item not in SEND_LAST:
            raise ValueError(f"unknown send_last_published_item {self.send_last_published_item!r}")
        if self.max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {self.max_items}")

    @property
    def capacity(self) -> int:
        """How many items the node keeps: a non-persistent node caches its last one only."""
        return self.max_items if self.persist_items else 1


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    payload: str  # the one payload element, serialised (XML text)
    publisher: str  # bare JID
    published: float  # seconds since the epoch


class Node:
    """One node of a pubsub service (for PEP, of an account)."""

    __slots__ = ("affiliations", "config", "items", "name")

    def __init__(self, name: str, config: NodeConfig) -> None:
        self.name = name
        self.config = config
        self.items: dict[str, Item] = {}  # insertion order, newest last
        self.affiliations: dict[str, str] = {}  # bare JID -> one of AFFILIATIONS

    def publish(self, item: Item) -> list[str]:
        """Add `item` as the newest; the ids evicted to stay within the node's capacity."""
        self.items.pop(item.id, None)
        self.items[item.id] = item
        return self._evict()

    def last(self) -> Item | None:
        """The newest item, if any (the last published, §4.3.4 of XEP-0163)."""
        return next(reversed(self.items.values()), None)

    def holds(self, item: Item) -> bool:
        """Whether `item` is already the newest item, same id, payload and publisher: publishing
        it again would change nothing but its publication time."""
        newest = self.last()
        return (
            newest is not None
            and newest.id == item.id
            and newest.payload == item.payload
            and newest.publisher == item.publisher
        )

    def retract(self, item_id: str) -> bool:
        return self.items.pop(item_id, None) is not None

    def purge(self) -> list[str]:
        """Remove every item; their ids, oldest first."""
        removed = list(self.items)
        self.items.clear()
        return removed

    def newest(self, count: int | None = None) -> list[Item]:
        """The `count` newest items (all of them when None), newest first."""
        newest_first = list(reversed(self.items.values()))
        return newest_first if count is None else newest_first[: max(count, 0)]

    def reconfigure(self, config: NodeConfig) -> list[str]:
        """Take `config`; the ids of the oldest items it no longer leaves room for."""
        self.config = config
        return self._evict()

    def _evict(self) -> list[str]:
        excess = len(self.items) - self.config.capacity
        evicted = list(itertools.islice(self.items, max(excess, 0)))
        for item_id in evicted:
            del self.items[item_id]
        return evicted

    def to_json(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict, which deep-copies every value: this runs
        # at each publish (every login publishes its OMEMO device list).
        config: dict[str, Any] = {name: getattr(self.config, name) for name in _CONFIG_FIELDS}
        config["roster_groups_allowed"] = list(self.config.roster_groups_allowed)
        items = (
            [{name: getattr(item, name) for name in _ITEM_FIELDS} for item in self.items.values()]
            if self.config.persist_items
            else []
        )
        return {"config": config, "items": items, "affiliations": dict(self.affiliations)}

    @classmethod
    def from_json(cls, name: str, data: object) -> Node:
        """The node `to_json` stored, by this version or an older one; never raises.

        What cannot be used falls back to the default, field by field: a configuration value of
        the wrong type or outside its choices, an item or an affiliation that is not well formed.
        Items beyond the configured capacity are evicted, oldest first.
        """
        fields = data if isinstance(data, dict) else {}
        node = cls(name, _config_from_json(fields.get("config")))
        stored_items = fields.get("items")
        for entry in stored_items if isinstance(stored_items, list) else []:
            item = _item_from_json(entry)
            if item is not None:
                node.publish(item)
        affiliations = fields.get("affiliations")
        if isinstance(affiliations, dict):
            node.affiliations = {
                jid: affiliation
                for jid, affiliation in affiliations.items()
                if isinstance(jid, str) and affiliation in AFFILIATIONS
            }
        return node


_CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(NodeConfig))
_ITEM_FIELDS = tuple(field.name for field in dataclasses.fields(Item))


def _config_from_json(data: object) -> NodeConfig:
    if not isinstance(data, dict):
        return NodeConfig()
    values = {
        field.name: data[field.name]
        for field in dataclasses.fields(NodeConfig)
        if field.name in data and _valid_setting(field.name, data[field.name])
    }
    return NodeConfig(**values)


def _valid_setting(name: str, value: object) -> bool:
    """Whether a stored value can be `NodeConfig.<name>` (JSON gives tuples back as lists)."""
    if name == "access_model":
        return value in ACCESS_MODELS
    if name == "send_last_published_item":
        return value in SEND_LAST
    if name == "max_items":
        # bool is an int to Python, not a count to us.
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if name == "roster_groups_allowed":
        return isinstance(value, list) and all(isinstance(group, str) for group in value)
    if name == "title":
        return isinstance(value, str)
    return isinstance(value, bool)


def _item_from_json(data: object) -> Item | None:
    if not isinstance(data, dict):
        return None
    item_id, payload, publisher, published = (data.get(key) for key in ("id", "payload", "publisher", "published"))
    if not (isinstance(item_id, str) and isinstance(payload, str) and isinstance(publisher, str)):
        return None
    if isinstance(published, bool) or not isinstance(published, int | float) or not math.isfinite(published):
        return None
    return Item(item_id, payload, publisher, float(published))

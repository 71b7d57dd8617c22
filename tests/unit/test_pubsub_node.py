"""XEP-0060 nodes as data (components.pubsub.node): items in publication order, eviction by
max_items, the last item of a non-persistent node, and the stored JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.pubsub.node import Item, Limits, Node, NodeConfig
from tests.unit.test_sans_io import forbidden_chains, module_file


def item(item_id: str, published: float = 1.0) -> Item:
    return Item(
        item_id,
        f"<tune xmlns='http://jabber.org/protocol/tune'><title>{item_id}</title></tune>",
        "juliet@capulet.lit",
        published,
    )


def node_with(*ids: str, config: NodeConfig | None = None) -> Node:
    node = Node("urn:xmpp:test", config or NodeConfig(max_items=10))
    for item_id in ids:
        node.publish(item(item_id))
    return node


def ids(items: list[Item]) -> list[str]:
    return [i.id for i in items]


# --- publishing and reading -------------------------------------------------------------------------


def test_newest_lists_items_newest_first() -> None:
    node = node_with("a", "b", "c")
    assert ids(node.newest()) == ["c", "b", "a"]
    assert ids(node.newest(2)) == ["c", "b"]
    assert node.newest(0) == [] and node.newest(-1) == []
    assert list(node.items) == ["a", "b", "c"]
    assert node.last() is node.items["c"]
    assert Node("empty", NodeConfig()).last() is None


def test_max_items_evicts_the_oldest() -> None:
    node = node_with("a", "b", config=NodeConfig(max_items=2))
    assert node.publish(item("c")) == ["a"]
    assert ids(node.newest()) == ["c", "b"]


def test_default_node_is_a_singleton() -> None:
    node = Node("http://jabber.org/protocol/tune", NodeConfig())
    node.publish(item("first"))
    assert node.publish(item("second")) == ["first"]
    assert ids(node.newest()) == ["second"]


def test_republishing_an_id_replaces_the_item_and_makes_it_newest() -> None:
    node = node_with("a", "b", config=NodeConfig(max_items=2))
    replacement = Item("a", "<x xmlns='urn:example'/>", "juliet@capulet.lit", 2.0)
    assert node.publish(replacement) == []
    assert node.newest() == [replacement, node.items["b"]]
    assert node.last() is replacement


def test_a_non_persistent_node_keeps_its_last_item_but_does_not_store_it() -> None:
    node = node_with("a", config=NodeConfig(persist_items=False, max_items=10))
    assert node.publish(item("b")) == ["a"]
    assert ids(node.newest()) == ["b"]
    assert node.to_json()["items"] == []


def test_retract_and_purge() -> None:
    node = node_with("a", "b", "c")
    assert node.retract("b") is True
    assert node.retract("b") is False
    assert ids(node.newest()) == ["c", "a"]
    assert node.purge() == ["a", "c"]
    assert node.newest() == []


def test_reconfigure_evicts_what_a_smaller_max_items_leaves_no_room_for() -> None:
    node = node_with("a", "b", "c")
    assert node.reconfigure(NodeConfig(max_items=20)) == []
    assert node.reconfigure(NodeConfig(max_items=1)) == ["a", "b"]
    assert node.config == NodeConfig(max_items=1)
    assert ids(node.newest()) == ["c"]


def test_becoming_non_persistent_keeps_only_the_last_item() -> None:
    node = node_with("a", "b")
    assert node.reconfigure(NodeConfig(max_items=10, persist_items=False)) == ["a"]


# --- configuration ----------------------------------------------------------------------------------


def test_defaults_are_pep_defaults() -> None:
    config = NodeConfig()
    assert config.access_model == "presence"  # XEP-0163 §5
    assert config.send_last_published_item == "on_sub_and_presence"
    assert config.persist_items and config.deliver_payloads and config.notify_retract and config.notify_delete


def test_roster_groups_are_a_set_in_canonical_order() -> None:
    assert NodeConfig(roster_groups_allowed=("b", "a", "b")) == NodeConfig(roster_groups_allowed=("a", "b"))
    assert NodeConfig(roster_groups_allowed=("b", "a")).roster_groups_allowed == ("a", "b")


@pytest.mark.parametrize(
    "changes",
    [{"access_model": "authorize"}, {"send_last_published_item": "always"}, {"max_items": 0}],
)
def test_config_refuses_impossible_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        NodeConfig(**changes)


@pytest.mark.parametrize("field", ["max_items", "max_item_size", "max_nodes"])
def test_limits_must_be_positive(field: str) -> None:
    values = {"max_items": 10, "max_item_size": 1000, "max_nodes": 5, field: 0}
    with pytest.raises(ValueError, match=field):
        Limits(**values)


# --- stored JSON ------------------------------------------------------------------------------------


def test_json_round_trip_through_json_text() -> None:
    config = NodeConfig(
        access_model="roster",
        max_items=5,
        send_last_published_item="never",
        notify_retract=False,
        deliver_payloads=False,
        roster_groups_allowed=("Friends", "Family"),
        title="Musings",
    )
    node = node_with("a", "b", config=config)
    node.affiliations = {"romeo@montague.lit": "member", "tybalt@capulet.lit": "outcast"}
    stored = json.loads(json.dumps(node.to_json()))
    loaded = Node.from_json("urn:xmpp:test", stored)
    assert loaded.name == "urn:xmpp:test"
    assert loaded.config == config
    assert loaded.newest() == node.newest()
    assert loaded.affiliations == node.affiliations


@pytest.mark.parametrize("data", [None, [], "node", 42, {"config": "x", "items": {}, "affiliations": []}])
def test_unusable_data_gives_an_empty_default_node(data: object) -> None:
    node = Node.from_json("n", data)
    assert node.config == NodeConfig()
    assert node.items == {} and node.affiliations == {}


def test_bad_configuration_values_fall_back_one_by_one() -> None:
    stored = {
        "config": {
            "access_model": "authorize",
            "persist_items": "yes",
            "max_items": True,
            "send_last_published_item": "on_sub",
            "notify_retract": 0,
            "roster_groups_allowed": ["ok", 3],
            "title": "kept",
            "unknown": 1,
        }
    }
    assert Node.from_json("n", stored).config == NodeConfig(send_last_published_item="on_sub", title="kept")


@pytest.mark.parametrize("max_items", [0, -3, 2.5, "7"])
def test_bad_max_items_falls_back(max_items: object) -> None:
    assert Node.from_json("n", {"config": {"max_items": max_items}}).config.max_items == 1


def test_bad_items_and_affiliations_are_skipped() -> None:
    payload = "<x xmlns='urn:example'/>"
    good = {"id": "ok", "payload": payload, "publisher": "juliet@capulet.lit", "published": 5}
    stored = {
        "config": {"max_items": 10},
        "items": [
            good,
            "not an item",
            {**good, "id": 1},
            {**good, "payload": None},
            {**good, "publisher": ["x"]},
            {**good, "published": True},
            {**good, "published": float("nan")},
            {**good, "published": "yesterday"},
        ],
        "affiliations": {"romeo@montague.lit": "member", "paris@verona.lit": "king", "nurse@capulet.lit": None},
    }
    node = Node.from_json("n", stored)
    assert node.newest() == [Item("ok", payload, "juliet@capulet.lit", 5.0)]
    assert node.affiliations == {"romeo@montague.lit": "member"}


def test_stored_items_beyond_max_items_lose_the_oldest() -> None:
    stored = node_with("a", "b", "c").to_json()
    stored["config"]["max_items"] = 2
    assert ids(Node.from_json("n", stored).newest()) == ["c", "b"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "config": st.dictionaries(
                st.sampled_from(["access_model", "max_items", "roster_groups_allowed", "title"]), JSON
            )
            | JSON,
            "items": st.lists(st.dictionaries(st.sampled_from(["id", "payload", "publisher", "published"]), JSON))
            | JSON,
            "affiliations": JSON,
        },
    )
    | JSON
)
def test_from_json_never_raises(data: object) -> None:
    node = Node.from_json("n", data)
    assert len(node.items) <= node.config.capacity


# --- no I/O ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["components.pubsub", "components.pubsub.node", "components.pubsub.forms", "components.pubsub.access"]
)
def test_pubsub_logic_never_imports_io(module: str) -> None:
    assert module_file(module) is not None
    assert forbidden_chains(module) == []

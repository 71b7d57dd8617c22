"""Who may read a node (components.pubsub.access): the owner, outcasts, and the access models of
XEP-0060 §4.5 (open, presence, roster, whitelist)."""

from __future__ import annotations

import pytest

from components.pubsub.access import Relation, may_access
from components.pubsub.node import ACCESS_MODELS, Node, NodeConfig

CONTACT = "romeo@montague.lit"
OWNER = Relation(is_owner=True, subscribed=False, groups=frozenset())
STRANGER = Relation(is_owner=False, subscribed=False, groups=frozenset())
SUBSCRIBED = Relation(is_owner=False, subscribed=True, groups=frozenset())
FRIEND = Relation(is_owner=False, subscribed=True, groups=frozenset({"Friends"}))
# In the allowed group without a presence subscription (a contact the owner has not approved).
UNAPPROVED_FRIEND = Relation(is_owner=False, subscribed=False, groups=frozenset({"Friends"}))


def node(access_model: str, affiliation: str | None = None, groups: tuple[str, ...] = ("Friends",)) -> Node:
    result = Node("urn:xmpp:test", NodeConfig(access_model=access_model, roster_groups_allowed=groups))
    if affiliation is not None:
        result.affiliations[CONTACT] = affiliation
    return result


@pytest.mark.parametrize(
    ("model", "relation", "expected"),
    [
        ("open", STRANGER, True),
        ("presence", STRANGER, False),
        ("presence", SUBSCRIBED, True),
        ("roster", SUBSCRIBED, False),
        ("roster", UNAPPROVED_FRIEND, False),
        ("roster", FRIEND, True),
        ("whitelist", FRIEND, False),
    ],
)
def test_access_models(model: str, relation: Relation, expected: bool) -> None:
    assert may_access(node(model), CONTACT, relation) is expected


@pytest.mark.parametrize("model", ACCESS_MODELS)
def test_the_owner_always_may(model: str) -> None:
    assert may_access(node(model, groups=()), "juliet@capulet.lit", OWNER)
    # An owner affiliation counts like the account owner.
    assert may_access(node(model, "owner", groups=()), CONTACT, STRANGER)


@pytest.mark.parametrize("model", ACCESS_MODELS)
def test_an_outcast_never_may(model: str) -> None:
    assert not may_access(node(model, "outcast"), CONTACT, FRIEND)


def test_roster_model_without_groups_allows_nobody_but_the_owner() -> None:
    everyone = Relation(is_owner=False, subscribed=True, groups=frozenset({"Friends", "Family", "Work"}))
    assert not may_access(node("roster", groups=()), CONTACT, everyone)
    assert may_access(node("roster", groups=()), "juliet@capulet.lit", OWNER)


@pytest.mark.parametrize(("affiliation", "expected"), [("publisher", True), ("member", True), (None, False)])
def test_whitelist_admits_affiliations_that_may_retrieve_items(affiliation: str | None, expected: bool) -> None:
    assert may_access(node("whitelist", affiliation), CONTACT, STRANGER) is expected


def test_membership_does_not_widen_the_other_models() -> None:
    assert not may_access(node("presence", "member"), CONTACT, STRANGER)
    # Another JID's affiliation is not the requester's.
    assert not may_access(node("whitelist", "member"), "tybalt@capulet.lit", STRANGER)

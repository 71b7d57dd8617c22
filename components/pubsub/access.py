"""Who may read a node: retrieve its items, be notified of them, subscribe (XEP-0060 §4.1, §4.5).
No I/O: the caller says what the owner's side knows of the requester (`Relation`).

The decision, in order:
- the owner always may, whatever the model (§4.5: the owner is always on the whitelist);
- an outcast never may (§4.1: an outcast can neither subscribe nor retrieve items);
- then the node's access model (§4.5):
  - open: anyone;
  - presence: whoever has a presence subscription to the owner (subscription from or both);
  - roster: the same, and in one of the owner's roster groups the node allows. With no group
    allowed nobody but the owner may: §4.5 grants access to those "in the specified roster
    group(s)", and an access model is a restriction, so an empty list opens nothing;
  - whitelist: the affiliations that may retrieve items (§4.1): owner, publisher, member.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.pubsub.node import Node

# §4.1: the affiliations with the "Retrieve Items" privilege.
_WHITELISTED = ("owner", "publisher", "member")


@dataclass(frozen=True, slots=True)
class Relation:
    """What the owner's side knows of a requester."""

    is_owner: bool
    subscribed: bool  # has a presence subscription to the owner (owner's roster: subscription from/both)
    groups: frozenset[str]  # the owner's roster groups the requester is in


def may_access(node: Node, requester: str, relation: Relation) -> bool:
    """Whether `requester` (a bare JID) may read `node`'s items, be notified and subscribe."""
    affiliation = node.affiliations.get(requester)
    if relation.is_owner or affiliation == "owner":
        return True
    if affiliation == "outcast":
        return False
    model = node.config.access_model
    if model == "open":
        return True
    if model == "presence":
        return relation.subscribed
    if model == "roster":
        return relation.subscribed and not relation.groups.isdisjoint(node.config.roster_groups_allowed)
    return affiliation in _WHITELISTED

"""The roster query written as text (`roster_query`) against the same items built as elements, as
RFC 6121 §2.1.2 shows them."""

from __future__ import annotations

from lxml import etree

from storage.model import RosterItem
from xmppd.elements import element
from xmppd.modules.roster import NS, roster_query

ITEMS = [
    RosterItem(jid="juliet@example.com", subscription="both", name="Juliet", groups=("Friends", "Verona")),
    RosterItem(jid="nurse@example.com", subscription="none", ask=True),
    RosterItem(jid="romeo@example.net", subscription="from", approved=True, name='Rom"eo & <Co>\tx\ny\rz'),
    RosterItem(jid="tybalt@example.net", subscription="to", groups=("Foes & <rivals>", "cr\r", "")),
    RosterItem(jid="benvolio@example.net", subscription="none", pending_in=True, listed=False),
]


def built(version: int, items: list[RosterItem]) -> bytes:
    query = element(f"{{{NS}}}query", {"ver": str(version)})
    for item in items:
        if not item.listed:
            continue
        node = element(f"{{{NS}}}item", {"jid": item.jid}, parent=query)
        if item.name is not None:
            node.set("name", item.name)
        node.set("subscription", item.subscription)
        if item.ask:
            node.set("ask", "subscribe")
        if item.approved:
            node.set("approved", "true")
        for group in item.groups:
            element(f"{{{NS}}}group", parent=node).text = group
    return etree.tostring(query, method="c14n")


def test_the_text_is_the_query_built_as_elements() -> None:
    written = etree.fromstring(roster_query(7, ITEMS).encode())
    assert etree.tostring(written, method="c14n") == built(7, ITEMS)
    # What a reader gets back: the values exactly, whitespace and markup characters included.
    romeo = written.find(f"{{{NS}}}item[@jid='romeo@example.net']")
    assert romeo is not None and romeo.get("name") == 'Rom"eo & <Co>\tx\ny\rz'
    groups = [group.text or "" for group in written.iterfind(f"{{{NS}}}item[@jid='tybalt@example.net']/{{{NS}}}group")]
    assert groups == ["Foes & <rivals>", "cr\r", ""]
    assert written.find(f"{{{NS}}}item[@jid='benvolio@example.net']") is None  # not listed (§3.1.3)


def test_an_empty_roster() -> None:
    assert etree.tostring(etree.fromstring(roster_query(0, []).encode()), method="c14n") == built(0, [])

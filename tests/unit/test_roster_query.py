"""The roster result written as text (`roster_query`) against the same items built as elements."""

from __future__ import annotations

from lxml import etree

from storage.model import RosterItem
from xmppd.elements import element
from xmppd.modules.roster import NS, item_element, roster_query

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
        if item.listed:
            item_element(item, query)
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

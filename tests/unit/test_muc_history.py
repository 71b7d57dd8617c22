"""XEP-0045 §7.2.14-§7.2.15 discussion history (components.muc.history): entries made once and
copied per recipient, what a room keeps, and what a join's `<history/>` selects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lxml import etree

from components.muc.history import (
    DELAY_NS,
    MUC_NS,
    History,
    HistoryEntry,
    HistoryRequest,
    delayed,
    parse_history_request,
)
from xmppd.jid import parse_jid
from xmppd.router import template
from xmppd.stanza import CLIENT_NS

ROOM = "coven@chat.shakespeare.lit"
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def message(body: str, nick: str = "firstwitch", **attributes: str) -> etree._Element:
    """A groupchat message as the room fans it out: from the occupant, no `to`."""
    stanza = etree.Element(f"{{{CLIENT_NS}}}message", nsmap={None: CLIENT_NS})  # type: ignore[dict-item]
    stanza.set("from", f"{ROOM}/{nick}")
    stanza.set("type", "groupchat")
    for name, value in attributes.items():
        stanza.set(name, value)
    etree.SubElement(stanza, f"{{{CLIENT_NS}}}body").text = body
    return stanza


def entry(body: str, at: float) -> HistoryEntry:
    return delayed(template(message(body)), ROOM, at)


def bodies(entries: list[HistoryEntry]) -> list[str]:
    return [
        etree.fromstring(e.template.copy(parse_jid("a@b/c"))).findtext(f"{{{CLIENT_NS}}}body") or "" for e in entries
    ]


def history_of(*items: tuple[str, float], length: int = 20) -> History:
    history = History(length)
    for body, at in items:
        history.add(entry(body, at))
    return history


def request(**attributes: str) -> HistoryRequest:
    x = etree.Element(f"{{{MUC_NS}}}x", nsmap={None: MUC_NS})  # type: ignore[dict-item]
    return parse_history_request(etree.SubElement(x, f"{{{MUC_NS}}}history", attributes))


# --- entries ----------------------------------------------------------------------------------------


def test_entry_is_the_message_with_the_rooms_delay() -> None:
    kept = delayed(template(message("Thrice the brinded cat hath mew'd.", id="m1")), ROOM, T0 + 0.1239)
    assert kept.template.head == b"<message"
    assert kept.timestamp == pytest.approx(T0 + 0.123)
    copied = kept.template.copy(parse_jid("hecate@shakespeare.lit/broom"))
    stanza = etree.fromstring(copied)
    assert stanza.get("to") == "hecate@shakespeare.lit/broom"
    assert stanza.get("from") == f"{ROOM}/firstwitch" and stanza.get("id") == "m1"
    delay = stanza[-1]
    assert delay.tag == f"{{{DELAY_NS}}}delay"
    # §7.2.14: from the room itself, stamped when the room got the message (to the millisecond).
    assert (delay.get("from"), delay.get("stamp")) == (ROOM, "2023-11-14T22:13:20.123Z")
    assert len(delay.attrib) == 2
    assert kept.chars == len(copied) - len(' to="hecate@shakespeare.lit/broom"')


def test_entry_of_a_message_without_children_gets_the_delay_inside() -> None:
    empty = etree.Element(f"{{{CLIENT_NS}}}message", {"from": f"{ROOM}/n", "type": "groupchat"},
                          nsmap={None: CLIENT_NS})  # type: ignore[dict-item]
    kept = delayed(template(empty), ROOM, T0)
    stanza = etree.fromstring(kept.template.copy(parse_jid("a@b/c")))
    assert stanza.get("to") == "a@b/c" and [child.tag for child in stanza] == [f"{{{DELAY_NS}}}delay"]


def test_entry_delay_names_a_room_with_special_characters_safely() -> None:
    room = "o'brien&co@chat.shakespeare.lit"
    kept = delayed(template(message("hi")), room, T0)
    delay = etree.fromstring(kept.template.copy(parse_jid("a@b/c")))[-1]
    assert delay.get("from") == room


def test_copy_escapes_a_to_with_special_characters() -> None:
    kept = entry("hi", T0)
    to = parse_jid("juliet@capulet.lit/a\"b&c<d>'e")
    stanza = etree.fromstring(kept.template.copy(to))
    assert stanza.get("to") == "juliet@capulet.lit/a\"b&c<d>'e"


def test_non_ascii_text_survives_and_counts_as_sent() -> None:
    kept = entry("Œil de triton, 蛙の指", T0)
    data = kept.template.copy(parse_jid("a@b/c"))
    assert etree.fromstring(data).findtext(f"{{{CLIENT_NS}}}body") == "Œil de triton, 蛙の指"
    assert kept.chars == len(kept.template.head) + len(kept.template.tail)


# --- keeping ----------------------------------------------------------------------------------------


def test_history_keeps_the_last_messages_oldest_first() -> None:
    history = history_of(*((f"m{n}", T0 + n) for n in range(5)), length=3)
    assert len(history) == 3 and history.capacity == 3
    assert bodies(history.select(HistoryRequest(), T0 + 10)) == ["m2", "m3", "m4"]


def test_resize_shrinking_drops_the_oldest() -> None:
    history = history_of(*((f"m{n}", T0 + n) for n in range(5)))
    history.resize(2)
    assert history.capacity == 2
    assert bodies(history.select(HistoryRequest(), T0 + 10)) == ["m3", "m4"]
    history.add(entry("m5", T0 + 5))
    assert bodies(history.select(HistoryRequest(), T0 + 10)) == ["m4", "m5"]


def test_resize_growing_keeps_everything() -> None:
    history = history_of(("a", T0), ("b", T0 + 1), length=2)
    history.resize(4)
    history.add(entry("c", T0 + 2))
    history.add(entry("d", T0 + 3))
    assert bodies(history.select(HistoryRequest(), T0 + 10)) == ["a", "b", "c", "d"]


def test_a_room_without_history() -> None:
    history = history_of(("a", T0), length=0)
    assert len(history) == 0 and history.capacity == 0
    history = history_of(("a", T0))
    history.resize(0)
    assert history.select(HistoryRequest(), T0) == []


def test_negative_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        History(-1)
    with pytest.raises(ValueError, match="negative"):
        History(3).resize(-1)


# --- selecting (§7.2.15) ----------------------------------------------------------------------------


FIVE = tuple((f"m{n}", T0 + 10 * n) for n in range(5))  # m0 at T0 ... m4 at T0+40


def test_no_limits_gives_everything_kept() -> None:
    assert bodies(history_of(*FIVE).select(request(), T0 + 100)) == ["m0", "m1", "m2", "m3", "m4"]


def test_maxstanzas() -> None:
    history = history_of(*FIVE)
    assert bodies(history.select(request(maxstanzas="2"), T0 + 100)) == ["m3", "m4"]
    assert history.select(request(maxstanzas="0"), T0 + 100) == []
    assert len(history.select(request(maxstanzas="99"), T0 + 100)) == 5


def test_maxchars_counts_complete_stanzas() -> None:
    history = history_of(*FIVE)
    size = entry("m0", T0).chars  # every entry has the same size here
    assert bodies(history.select(HistoryRequest(maxchars=2 * size), T0 + 100)) == ["m3", "m4"]
    # Never a stanza cut short: one character less and only one fits.
    assert bodies(history.select(HistoryRequest(maxchars=2 * size - 1), T0 + 100)) == ["m4"]
    # §7.2.15: maxchars='0' is how a client asks for no history.
    assert history.select(request(maxchars="0"), T0 + 100) == []


def test_maxchars_counts_the_recipients_to() -> None:
    history = history_of(*FIVE)
    to = parse_jid("hecate@shakespeare.lit/broom")
    size = len(history.select(HistoryRequest(maxstanzas=1), T0)[0].template.copy(to))
    assert bodies(history.select(HistoryRequest(maxchars=2 * size), T0 + 100, to=to)) == ["m3", "m4"]
    assert bodies(history.select(HistoryRequest(maxchars=2 * size - 1), T0 + 100, to=to)) == ["m4"]


def test_maxchars_stops_at_the_first_message_too_long() -> None:
    # An older short message is not sent past a long one that does not fit: no hole in the talk.
    history = history_of(("old", T0), ("x" * 500, T0 + 1), ("new", T0 + 2))
    budget = entry("old", T0).chars * 3
    assert bodies(history.select(HistoryRequest(maxchars=budget), T0 + 10)) == ["new"]


def test_seconds() -> None:
    history = history_of(*FIVE)
    # In the last 15 s at T0+40: m3 (T0+30, 10 s ago) and m4; the bound itself counts.
    assert bodies(history.select(request(seconds="15"), T0 + 45)) == ["m3", "m4"]
    assert bodies(history.select(request(seconds="10"), T0 + 40)) == ["m3", "m4"]
    assert history.select(request(seconds="0"), T0 + 41) == []


def test_since() -> None:
    history = history_of(*FIVE)
    assert bodies(history.select(request(since="2023-11-14T22:13:45Z"), T0 + 100)) == ["m3", "m4"]
    # The same instant written with an offset.
    assert bodies(history.select(request(since="2023-11-14T23:13:45+01:00"), T0 + 100)) == ["m3", "m4"]
    assert len(history.select(request(since="1970-01-01T00:00:00Z"), T0 + 100)) == 5
    assert history.select(request(since="2030-01-01T00:00:00Z"), T0 + 100) == []


def test_since_the_stamp_of_the_last_message_seen_does_not_send_it_again() -> None:
    history = History(10)
    for n, at in enumerate((T0 + 0.25, T0 + 0.5, T0 + 0.75)):
        history.add(entry(f"m{n}", at))
    last_seen = etree.fromstring(history.select(HistoryRequest(), T0 + 1)[1].template.copy(parse_jid("a@b/c")))
    stamp = last_seen.find(f"{{{DELAY_NS}}}delay").get("stamp")  # type: ignore[union-attr]
    assert bodies(history.select(request(since=stamp or ""), T0 + 1)) == ["m2"]


def test_limits_combine_and_the_most_restrictive_wins() -> None:
    history = history_of(*FIVE)
    size = entry("m0", T0).chars
    now = T0 + 45
    # seconds allows m2..m4 (3), maxstanzas 2, maxchars 5 stanzas: maxstanzas wins.
    assert bodies(history.select(request(seconds="25", maxstanzas="2", maxchars=str(5 * size)), now)) == ["m3", "m4"]
    # maxstanzas 4, seconds allows 3, since allows 4: seconds wins.
    chosen = history.select(request(seconds="25", maxstanzas="4", since="2023-11-14T22:13:25Z"), now)
    assert bodies(chosen) == ["m2", "m3", "m4"]
    # maxchars allows 1.
    assert bodies(history.select(request(maxstanzas="4", maxchars=str(size)), now)) == ["m4"]


def test_a_clock_that_went_back_does_not_reorder_history() -> None:
    # m1 was kept with an earlier time than m0; `seconds` stops at it rather than skip it.
    history = history_of(("m0", T0 + 50), ("m1", T0 + 10), ("m2", T0 + 55))
    assert bodies(history.select(request(seconds="20"), T0 + 60)) == ["m2"]
    assert bodies(history.select(request(), T0 + 60)) == ["m0", "m1", "m2"]


# --- parsing <history/> -----------------------------------------------------------------------------


def test_no_history_element() -> None:
    assert parse_history_request(None) == HistoryRequest()


def test_every_attribute() -> None:
    parsed = request(maxchars="65000", maxstanzas="20", seconds="180", since="1970-01-01T00:00:10.5Z")
    assert parsed == HistoryRequest(maxchars=65000, maxstanzas=20, seconds=180, since=10.5)


def test_since_in_any_xep_0082_form() -> None:
    expected = datetime(2002, 10, 13, 23, 58, 37, tzinfo=UTC).timestamp()
    assert request(since="2002-10-13T23:58:37Z").since == expected
    assert request(since="2002-10-14T01:58:37+02:00").since == expected


@pytest.mark.parametrize("value", ["", "ten", "-1", "1.5", "1e3", "١٢", "1_000"])
def test_malformed_counts_are_ignored(value: str) -> None:
    # XEP-0045 names no error: the join goes ahead, that limit is absent, the others apply.
    parsed = request(maxchars=value, maxstanzas=value, seconds=value, since="2002-10-13T23:58:37Z")
    assert (parsed.maxchars, parsed.maxstanzas, parsed.seconds) == (None, None, None)
    assert parsed.since is not None


@pytest.mark.parametrize(
    "value", ["yesterday", "2002-10-13", "2002-10-13T23:58:37", "2002-13-13T23:58:37Z", "0001-01-01T00:00:00+01:00"]
)
def test_malformed_since_is_ignored(value: str) -> None:
    parsed = request(since=value, maxstanzas="3")
    assert parsed == HistoryRequest(maxstanzas=3)


def test_counts_with_sign_or_spaces() -> None:
    assert request(maxstanzas="+5", seconds=" 7 ").maxstanzas == 5
    assert request(seconds=" 7 ").seconds == 7


def test_history_request_of_a_parsed_join() -> None:
    presence = etree.fromstring(
        f"<presence xmlns='{CLIENT_NS}'><x xmlns='{MUC_NS}'><history maxstanzas='2' seconds='60'/></x></presence>"
    )
    history = presence.find(f"{{{MUC_NS}}}x/{{{MUC_NS}}}history")
    assert parse_history_request(history) == HistoryRequest(maxstanzas=2, seconds=60)

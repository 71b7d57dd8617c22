"""XEP-0045 §7.2.14-§7.2.15: a room's discussion history, and the part of it a joining occupant
asked for with `<history/>`. No I/O; the time is passed in.

An entry is kept serialised, as every recipient will get it but for its `to` attribute: a
`Template` (xmppd.router: `head` is b'<message', `tail` all the rest, XEP-0203 `<delay/>`
included), whose `copy(jid)` is the stanza for one recipient. It is made from the bytes the room
fanned out (the delay spliced in before the closing tag), so a message is serialised once, for
the archive, the occupants and the history, however many occupants join later.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from lxml import etree

from xmppd.datetimes import parse_datetime, stamp
from xmppd.jid import JID
from xmppd.router import Template

MUC_NS = "http://jabber.org/protocol/muc"
DELAY_NS = "urn:xmpp:delay"

# xs:int's lexical form (the datatype §7.2.15 gives these attributes) less the '-' no count has.
_NUMBER = re.compile(r"\+?[0-9]+")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    template: Template  # the stanza without `to`; `template.copy(jid)` is one recipient's
    timestamp: float  # seconds since the epoch, to the millisecond of the delay's stamp
    chars: int  # characters of the stanza without its `to` attribute


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The limits of a join's `<history/>` (§7.2.15); None where there is none."""

    maxchars: int | None = None
    maxstanzas: int | None = None
    seconds: int | None = None
    since: float | None = None  # seconds since the epoch


def delayed(message: Template, room: str, now: float) -> HistoryEntry:
    """The history entry of a groupchat message as the room fans it out (`from` the occupant, no
    `to`), made from its serialisation: the `<delay/>` §7.2.14 requires, `from` the room (`room`,
    its bare JID) and stamped `now`, goes before its closing tag."""
    millis = math.floor(now * 1000)
    delay = f'<delay xmlns="{DELAY_NS}" from={quoteattr(room)} stamp="{stamp(millis)}"/>'.encode()
    tail = message.tail
    if tail.endswith(b"/>"):  # no children: <message .../> opens up for the delay
        tail = tail[:-2] + b">" + delay + b"</message>"
    else:
        closing = tail.rindex(b"</")
        tail = tail[:closing] + delay + tail[closing:]
    kept = Template(message.head, tail)
    # The serialisation is ASCII (characters beyond it are references), so bytes are characters.
    return HistoryEntry(kept, millis / 1000, len(kept.head) + len(kept.tail))


def parse_history_request(history: etree._Element | None) -> HistoryRequest:
    """The limits a join asks for with the `<history/>` of its `<x xmlns='…muc'/>` (None: none).

    XEP-0045 names no error for a malformed `<history/>`, and lets a service send history
    whatever was asked (§7.2.15: clients "might not be able to depend on" it): so an attribute
    that is not a count (or, for `since`, an XEP-0082 DateTime) is taken as absent, the join goes
    ahead, and the other attributes still apply.
    """
    if history is None:
        return HistoryRequest()
    since: float | None = None
    since_text = history.get("since")
    if since_text is not None:
        try:
            since = parse_datetime(since_text).timestamp()
        except (ValueError, OverflowError):
            # OverflowError: a valid DateTime whose offset moves it outside datetime's years.
            since = None
    return HistoryRequest(
        maxchars=_count(history.get("maxchars")),
        maxstanzas=_count(history.get("maxstanzas")),
        seconds=_count(history.get("seconds")),
        since=since,
    )


class History:
    """The last `length` messages of a room, oldest first."""

    __slots__ = ("_entries",)

    def __init__(self, length: int) -> None:
        self._entries: deque[HistoryEntry] = deque(maxlen=_length(length))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def capacity(self) -> int:
        """How many messages are kept at most (0: the room keeps no history)."""
        maxlen = self._entries.maxlen
        assert maxlen is not None  # always given, by __init__ and resize
        return maxlen

    def add(self, entry: HistoryEntry) -> None:
        """Keep `entry`, dropping the oldest when the history is full."""
        self._entries.append(entry)

    def resize(self, length: int) -> None:
        """Keep at most `length` messages from now on; shrinking drops the oldest."""
        if length != self._entries.maxlen:
            self._entries = deque(self._entries, maxlen=_length(length))

    def select(self, request: HistoryRequest, now: float, *, to: JID | None = None) -> list[HistoryEntry]:
        """The newest messages that meet every limit of `request` at once, oldest first.

        §7.2.15: "the smallest amount of traffic that meets any combination of the above
        criteria", complete stanzas only. The selection is the newest run of messages, ending
        at the first one a limit excludes: skipping a long message to fit older short ones under
        maxchars would show a conversation with a hole in it. `to` is the recipient whose `to`
        attribute counts towards maxchars (§7.2.15: "the characters of the complete XML
        stanzas"); without it the stanzas are counted without one.
        """
        budget = request.maxchars
        # The ` to="…"` a copy for `to` gets: what Template.copy puts between an empty head and tail.
        extra = len(Template(b"", b"").copy(to).decode()) if to is not None else 0
        oldest = now - request.seconds if request.seconds is not None else -math.inf
        since = request.since if request.since is not None else -math.inf
        chosen: list[HistoryEntry] = []
        # From the newest back, stopping at the first message out of range, also for time:
        # should the clock have gone back, what came before the jump is not sent after it.
        for entry in reversed(self._entries):
            if request.maxstanzas is not None and len(chosen) >= request.maxstanzas:
                break
            # "Since" is after: a client passing the stamp of the last message it got (the
            # timestamps are at the stamps' millisecond) does not get that message again.
            if entry.timestamp < oldest or entry.timestamp <= since:
                break
            if budget is not None:
                budget -= entry.chars + extra
                if budget < 0:
                    break
            chosen.append(entry)
        chosen.reverse()
        return chosen


def _count(text: str | None) -> int | None:
    if text is None or not _NUMBER.fullmatch(text.strip()):
        return None
    return int(text)


def _length(length: int) -> int:
    if length < 0:
        raise ValueError(f"a history length must not be negative, not {length}")
    return length

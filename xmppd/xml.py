"""Sans-IO XML stream parser for RFC 6120 §4 / §11 streams.

Bytes go in with `feed()`, events come out: `StreamOpened` for the stream header, one detached
element per top-level child (a stanza or a negotiation element), `StreamClosed` for the closing tag.
It knows nothing of sockets, so it is tested by feeding bytes, also one byte at a time.

RFC 6120 §11.1 restricts what a stream may contain: no comments, processing instructions, DTDs
or entity declarations. lxml is told never to load DTDs, resolve entities or touch the network,
and a cheap byte scan refuses `<!DOCTYPE`/`<!--` before lxml sees them, so an entity bomb never
reaches the parser. Anything that is not well-formed, or breaks these rules, raises StreamError;
nothing else escapes `feed()`.

Local limits end the stream with policy-violation (RFC 6120 §4.9.3.14; §13.12 resource exhaustion):
the bytes of one top-level element (`max_stanza_size`), and per element the number of attributes
(`max_attributes`; namespace declarations are not attributes: lxml keeps them apart, counting them
would cost an `nsmap` per element, and `max_stanza_size` bounds them, which libxml2 handles in linear
time), the number of child elements of any one element inside a stanza (`max_children`; the stream's
own children, the stanzas, are not limited) and the nesting depth of a stanza (`max_depth`, the
stanza itself being at depth 1). The per-element limits are checked on the parser's "start" events,
after each slice of at most SLICE bytes, so an element is refused as soon as its start tag is complete
and at most one slice after the limit was crossed (an element's attributes are only reported with its
whole start tag: until then the size limit bounds it). libxml2 itself refuses nesting beyond 256
levels, the stream's root included; that too is a policy-violation, so `max_depth` is effectively at
most 255 (LIBXML2_MAX_DEPTH).
As for any error, the stanzas completed before the fault come with the StreamError (`partial`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from lxml import etree

from xmppd.errors import STREAMS_NS, StreamError

STREAM_TAG = f"{{{STREAMS_NS}}}stream"
SLICE = 4096
# The deepest stanza libxml2 builds without XML_PARSE_HUGE (256 levels, one of them the stream's).
LIBXML2_MAX_DEPTH = 255

# A tag that is complete: quotes balanced, then '>' (and only whitespace after it). Applied to the
# bytes from the last '<' of a read, which opens the last tag since '<' never occurs inside one.
_COMPLETE_TAG = re.compile(rb"""<[^'"]*(?:(?:'[^']*'|"[^"]*")[^'"]*)*>\s*""")


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's stream header: its attributes and the stream's default (content) namespace."""

    attributes: dict[str, str]
    content_ns: str | None


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent `</stream:stream>`."""


Event = StreamOpened | StreamClosed | etree._Element


class XmlStream:
    """Incremental parser of one XML stream; `reset()` starts a new one (after STARTTLS or SASL)."""

    def __init__(
        self,
        max_stanza_size: int = 256 * 1024,
        *,
        max_attributes: int = 64,
        max_children: int = 512,
        max_depth: int = 32,
    ) -> None:
        self.max_stanza_size = max_stanza_size
        self.max_attributes = max_attributes
        self.max_children = max_children
        self.max_depth = max_depth
        self._parser: etree.XMLPullParser | None = None
        self._root: etree._Element | None = None
        self.reset()

    def reset(self) -> None:
        if self._parser is not None:
            _discard(self._parser, self._root)
        self._parser = self._new_parser()
        # Depth in the document: the stream's root is 1, a stanza 2 (its depth as a stanza is 1).
        self._depth = 0
        # Child elements started so far under the open element at each document depth (index:
        # the children's depth), for max_children; indices up to max_depth + 2 are used.
        self._children = [0] * (self.max_depth + 3)
        self._deepest = self.max_depth + 1  # as a depth in the document
        self._root = None
        self._resume_header = b""  # the header that brings a released parser back (`release`)
        self._pending_bytes = 0
        self._after_lt_bang = False
        self._last_byte_lt = False
        self.closed = False

    @staticmethod
    def _new_parser() -> etree.XMLPullParser:
        return etree.XMLPullParser(
            events=("start", "end", "comment", "pi"),
            # resolve_entities stays at lxml's default, "internal": no entity can be declared (the
            # byte scan refuses DTDs), so only the predefined ones and character references
            # resolve. With False, libxml2 silently keeps an undefined `&foo;` and then emits no
            # more events for the rest of the stream; with "internal" it is not-well-formed.
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_blank_text=False,
            # RFC 6120 §11.6: streams are UTF-8 whatever a declaration claims.
            encoding="utf-8",
        )

    def release(self) -> bool:
        """Let go of the parser between two stanzas (about 11 KB with its document: most of an
        idle plain session); the next `feed` builds a new one, in the same namespaces. True
        when it let go of one now: the stream is open, the parser held nothing unfinished."""
        if self._parser is None:
            return False  # already let go
        root = self._root
        if root is None or self.closed or self._depth != 1 or self._pending_bytes:
            return False
        if self._after_lt_bang or self._last_byte_lt:
            return False
        # The namespaces in scope are what the stanzas to come may use; the header's other
        # attributes were read once and are not needed again.
        declarations = "".join(
            f" xmlns{':' + prefix if prefix else ''}='{_escape(uri)}'" for prefix, uri in root.nsmap.items()
        )
        name = f"{root.prefix}:stream" if root.prefix else "stream"
        self._resume_header = f"<{name}{declarations}>".encode()
        _discard(self._parser, root)
        self._parser = None
        self._root = None
        return True

    def _resume(self) -> etree.XMLPullParser:
        parser = self._new_parser()
        parser.feed(self._resume_header)
        for _kind, element in cast("Iterator[tuple[str, etree._Element]]", parser.read_events()):
            self._root = element  # the one start event: the stream's root, at depth 1 as before
        self._parser = parser
        return parser

    def feed(self, data: bytes) -> list[Event]:
        if self.closed or not data:
            return []
        if self._parser is None and data.isspace():
            return []  # a keepalive (RFC 6120 §4.6.1) leaves a released parser released
        forbidden = self._forbidden_at(data)
        if forbidden is None:
            return self._feed_all(data)
        # Stanzas completed before the declaration still count, as for a syntax error.
        error = StreamError("restricted-xml", "DTDs, entity declarations and comments are not allowed")
        error.partial[:0] = self._feed_all(data[:forbidden]) if forbidden else []
        raise error

    def _feed_all(self, data: bytes) -> list[Event]:
        # No more than a quarter of the limit either: a slice is counted whole against the stanza
        # it ends in, so small stanzas pipelined into one slice must not add up to a false
        # policy-violation when the limit is small (it may be as low as 1024).
        step = min(SLICE, max(self.max_stanza_size // 4, 1))
        if len(data) <= step:
            return self._feed_slice(data)
        # Large reads are parsed in slices so an oversized stanza is caught within one slice
        # of the limit, whatever the read size (TLS records, 64 KiB socket reads).
        events: list[Event] = []
        try:
            for start in range(0, len(data), step):
                events += self._feed_slice(data[start : start + step])
                if self.closed:
                    break
        except StreamError as error:
            error.partial[:0] = events
            raise
        return events

    def _feed_slice(self, data: bytes) -> list[Event]:
        parser = self._parser if self._parser is not None else self._resume()
        try:
            parser.feed(data)
        except etree.XMLSyntaxError as exc:
            message = str(exc).split(" (")[0]
            if message.startswith("Excessive depth"):  # libxml2's own limit
                deepest = min(self.max_depth, LIBXML2_MAX_DEPTH)
                error = StreamError("policy-violation", f"elements nested deeper than {deepest}")
            else:
                error = StreamError("not-well-formed", message)
            # Stanzas completed before the error still count: the sender loses nothing
            # that was well-formed (RFC 6120 §4.9.1.1 ends the stream, not what preceded).
            try:
                error.partial[:0] = self._collect()
            except etree.XMLSyntaxError:
                pass  # the parser is past saving: the stanzas already returned are all there is
            except StreamError as earlier:
                # A fault in the events before the syntax error came first in the stream (an
                # element over a limit, then libxml2's own depth limit in the same slice).
                raise earlier from None
            raise error from None
        events = self._collect()
        self._account_size(data, completed=bool(events))
        return events

    def _forbidden_at(self, data: bytes) -> int | None:
        """Where a `<!` other than CDATA (`<![`) starts: DOCTYPE, ENTITY and comments are
        refused (RFC 6120 §11.1) before lxml sees them. 0 when it began in an earlier read.

        The scan carries the last byte over so a `<!` split across two reads is still seen.
        """
        if self._last_byte_lt and data[:1] == b"!":
            self._after_lt_bang = True
            data_from = 1
        else:
            data_from = 0
        if self._after_lt_bang:
            if data_from >= len(data):
                self._last_byte_lt = False
                return None
            if data[data_from : data_from + 1] != b"[":
                return 0
            self._after_lt_bang = False
        position = data.find(b"<!", data_from)
        while position != -1:
            following = data[position + 2 : position + 3]
            if not following:
                self._after_lt_bang = True
                break
            if following != b"[":
                return position
            position = data.find(b"<!", position + 2)
        self._last_byte_lt = data.endswith(b"<")
        return None

    def _collect(self) -> list[Event]:
        """The events of what the parser has read, checked against the per-element limits.

        This runs for every element of every stanza, hence the locals and the inlined checks.
        """
        events: list[Event] = []
        depth = self._depth
        children = self._children
        max_attributes, max_children, deepest = self.max_attributes, self.max_children, self._deepest
        try:
            # Only start/end/comment/pi events were asked for: each comes with an element.
            assert self._parser is not None
            for kind, element in cast("Iterator[tuple[str, etree._Element]]", self._parser.read_events()):
                if kind == "start":
                    names = element.keys()  # a plain list; namespace declarations are not in it
                    if len(names) > max_attributes:
                        raise StreamError("policy-violation", f"more than {max_attributes} attributes on an element")
                    _check_prefixes(element.tag, names)
                    depth += 1
                    if depth > 2:  # inside a stanza, which is at depth 2 (the stream's root at 1)
                        if depth > deepest:
                            raise StreamError("policy-violation", f"elements nested deeper than {self.max_depth}")
                        count = children[depth] + 1
                        if count > max_children:
                            raise StreamError(
                                "policy-violation", f"more than {max_children} child elements in an element"
                            )
                        children[depth] = count
                        children[depth + 1] = 0
                    elif depth == 2:
                        children[3] = 0
                    else:
                        events.append(self._open(element))
                elif kind == "end":
                    depth -= 1
                    if depth == 1:
                        events.append(self._detach(element))
                    elif depth == 0:
                        self.closed = True
                        events.append(StreamClosed())
                        break
                else:  # comment or processing instruction
                    raise StreamError("restricted-xml", f"{kind} not allowed in an XMPP stream")
        except StreamError as error:
            # The stanzas completed before the fault in this batch of events go first.
            error.partial[:0] = events
            raise
        self._depth = depth
        return events

    def _open(self, root: etree._Element) -> StreamOpened:
        if root.tag != STREAM_TAG:
            if etree.QName(root).localname == "stream":
                raise StreamError("invalid-namespace", "the stream element must be in " + STREAMS_NS)
            raise StreamError("bad-format", "expected <stream:stream>")
        self._root = root
        return StreamOpened(dict(root.attrib), root.nsmap.get(None))  # type: ignore[arg-type]

    def _detach(self, element: etree._Element) -> etree._Element:
        if self._pending_bytes > self.max_stanza_size:
            raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        # A deep copy detaches the stanza from the stream document with only the namespace
        # declarations it uses: serialising the attached element would repeat the stream's
        # `xmlns:stream` on every stanza, and lxml's remove() renames the default namespace
        # to `ns0:`. It costs about a microsecond and lets the original be dropped at once.
        detached = copy.deepcopy(element)
        # Text after the stanza may already be parsed (when it came in the same read) and would
        # be serialised with it: the stanza's bytes must not depend on how the stream was read.
        detached.tail = None
        assert self._root is not None
        # Emptied first: remove() reconciles the namespaces of every element it moves, which
        # takes time quadratic in their number (0.3 s for 50,000 small children), while clear()
        # frees them outright.
        element.clear()
        # Only the finished stanza goes: the next one may already be half parsed (same read),
        # and clearing the root would move it out of the stream's namespace scope, so that it
        # came out as `<ns1:presence xmlns:ns1="jabber:client">`.
        self._root.remove(element)
        self._pending_bytes = 0
        return detached

    def _account_size(self, data: bytes, *, completed: bool) -> None:
        """Bound the bytes of an unfinished top-level element (policy-violation, RFC 6120 §4.9.3.14).

        A slice that completed stanzas resets the count in `_detach`; this counts whole slices, so
        the limit is exact to within one slice. A start tag counts too, the stream header's as
        well: lxml reports an element only once its start tag is complete, and a start tag with
        endless attributes must not grow without bound.
        """
        if self._depth > 1:
            self._pending_bytes += len(data)
        elif completed:
            # The stream opened or a stanza ended in this slice; after it, at most the start tag
            # of the next element has begun, and it begins at the slice's last '<'.
            cut = data.rfind(b"<")
            tail = data[cut:] if cut != -1 else b""
            self._pending_bytes = 0 if not tail or _COMPLETE_TAG.fullmatch(tail) else len(tail)
        elif self._pending_bytes or not data.isspace():
            # Between elements only whitespace keepalives (RFC 6120 §4.6.1) are free.
            self._pending_bytes += len(data)
        if self._pending_bytes > self.max_stanza_size:
            raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        if self._depth == 1 and self._root is not None and self._root.text:
            # Whitespace keepalives between stanzas pile up as root text: drop them.
            self._root.text = None


def _discard(parser: etree.XMLPullParser, root: etree._Element | None) -> None:
    """End a parser that is no longer needed so that its memory (~10 KB) is freed now.

    lxml's parser, its context and its document refer to one another, and the events not yet
    read hold the document: dropped as it is, a parser waits for Python's cyclic collector,
    which rarely looks at long-lived objects (a session's parser lived as long as the session).
    Closing the document and reading its last events undoes the cycle (measured: 10.3 KB
    freed per parser at once, none without). A parser in the middle of an element cannot be
    closed cleanly: then the collector frees it, later."""
    if root is not None:
        with contextlib.suppress(etree.XMLSyntaxError):
            parser.feed(f"</{root.prefix}:stream>" if root.prefix else "</stream>")
    with contextlib.suppress(etree.XMLSyntaxError):
        collections.deque(parser.read_events(), maxlen=0)  # read, each dropped at once
        parser.close()


def _check_prefixes(tag: str, names: Sequence[str | bytes]) -> None:
    """Refuse undeclared prefixes on an element's `tag` or attribute `names` (XML Namespaces §5.1;
    RFC 6120 §11.4 and §4.9.3.13).

    libxml2 only warns and keeps `foo:bar` as a plain name, which would then be routed to
    another client that cannot parse it. A declared prefix turns into `{uri}name`, so a ':'
    outside braces is an undeclared one.
    """
    if tag[0] != "{" and ":" in tag:
        raise StreamError("not-well-formed", "undeclared namespace prefix")
    for name in names:  # a loop, not any(): this runs for every element
        if name[0] != "{" and ":" in name:
            raise StreamError("not-well-formed", "undeclared namespace prefix")


def stream_header(
    *,
    content_ns: str,
    from_: str | None,
    to: str | None = None,
    stream_id: str | None = None,
    version: str = "1.0",
    lang: str = "en",
) -> bytes:
    """The opening tag of our side of a stream (RFC 6120 §4.7), with the XML declaration."""
    attributes = [f"xmlns='{content_ns}'", f"xmlns:stream='{STREAMS_NS}'"]
    if from_:
        attributes.append(f"from='{_escape(from_)}'")
    if to:
        attributes.append(f"to='{_escape(to)}'")
    if stream_id:
        attributes.append(f"id='{stream_id}'")
    attributes.append(f"version='{version}'")
    attributes.append(f"xml:lang='{lang}'")
    return ("<?xml version='1.0'?><stream:stream " + " ".join(attributes) + ">").encode()


STREAM_CLOSE = b"</stream:stream>"


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;").replace(">", "&gt;")

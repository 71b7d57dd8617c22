"""The DOAP file (XSF convention, https://xmpp.org/extensions/xep-0453.html) listing what
xmppd implements, generated from the `PROTOCOLS` of each module plus the core below.

`python -m xmppd.doap > xmppd.doap`; a test checks the committed file is up to date.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from xml.sax.saxutils import escape, quoteattr

import components
import xmppd.modules

# What the core itself (not a module) implements: (spec, version or section, status, note).
CORE_PROTOCOLS: list[tuple[str, str, str, str]] = [
    ("RFC 6120", "", "complete", "streams, STARTTLS, SASL, binding, stanza and stream errors (xmppd/negotiation.py)"),
    ("RFC 6121", "", "complete", "roster, presence, subscriptions, message and iq routing"),
    ("RFC 7622", "", "complete", "JID preparation with PRECIS (xmppd/jid.py)"),
    ("RFC 5802", "", "complete", "SCRAM-SHA-1; stored keys only (xmppd/sasl.py)"),
    ("RFC 7677", "", "complete", "SCRAM-SHA-256"),
    ("RFC 4616", "", "complete", "PLAIN, inside TLS only"),
    ("RFC 7590", "", "complete", "TLS 1.2+ for XMPP"),
    ("XEP-0368", "1.1.0", "complete", "Direct TLS listener with ALPN xmpp-client and SNI"),
    ("RFC 7395", "", "complete", "XMPP over WebSocket, on the HTTP side (xmppd/websocket.py)"),
    ("XEP-0124", "1.11.2", "partial", "BOSH: no acks, keys, multiple streams or pause (xmppd/bosh.py)"),
    ("XEP-0206", "1.4", "complete", "XMPP over BOSH with restart logic (xmppd/bosh.py)"),
    ("XEP-0156", "1.4.0", "complete", "host-meta and host-meta.json naming WebSocket and BOSH (xmppd/http.py)"),
]


def module_protocols() -> Iterator[tuple[str, str, str, str]]:
    """What the core's modules and the components declare (a component is one package)."""
    named = [(f"xmppd.modules.{m.name}", f"module {m.name}") for m in pkgutil.iter_modules(xmppd.modules.__path__)]
    named += [(f"components.{m.name}", f"component {m.name}") for m in pkgutil.iter_modules(components.__path__)]
    for path, note in sorted(named):
        for entry in getattr(importlib.import_module(path), "PROTOCOLS", []):
            spec, version, *rest = entry
            status = rest[0] if rest else "complete"
            yield spec, version, status, note


def _sort_key(entry: tuple[str, str, str, str]) -> tuple[int, int]:
    spec = entry[0]
    return (0 if spec.startswith("RFC") else 1, int(spec.replace("-", " ").split()[-1]))


def render() -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rdf:RDF xmlns="http://usefulinc.com/ns/doap#"',
        '         xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"',
        '         xmlns:xmpp="https://linkmauve.fr/ns/xmpp-doap#">',
        "  <Project>",
        "    <name>xmppd</name>",
        "    <shortdesc>An asyncio XMPP server for the clients people already use</shortdesc>",
        "    <programming-language>Python</programming-language>",
        '    <category rdf:resource="https://linkmauve.fr/ns/xmpp-doap#category-jabber"/>',
        '    <category rdf:resource="https://linkmauve.fr/ns/xmpp-doap#category-xmpp"/>',
        '    <category rdf:resource="https://linkmauve.fr/ns/xmpp-doap#category-server"/>',
    ]
    seen: set[str] = set()
    for spec, version, status, note in sorted([*CORE_PROTOCOLS, *module_protocols()], key=_sort_key):
        if spec.startswith("RFC "):
            if spec not in seen:
                url = f"https://www.rfc-editor.org/info/rfc{spec.split()[1]}"
                lines.append(f"    <implements rdf:resource={quoteattr(url)}/>")
            seen.add(spec)
            continue
        url = f"https://xmpp.org/extensions/xep-{spec.split('-')[1]}.html"  # XEP-0030 -> xep-0030
        lines += [
            "    <implements>",
            "      <xmpp:SupportedXep>",
            f"        <xmpp:xep rdf:resource={quoteattr(url)}/>",
            f"        <xmpp:status>{escape(status)}</xmpp:status>",
            *([f"        <xmpp:version>{escape(version)}</xmpp:version>"] if version else []),
            f"        <xmpp:note>{escape(note)}</xmpp:note>",
            "      </xmpp:SupportedXep>",
            "    </implements>",
        ]
    lines += ["  </Project>", "</rdf:RDF>"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")

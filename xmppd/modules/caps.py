"""XEP-0115: the server's entity capabilities, announced in the stream features so that a
client learns what the server offers without a disco#info round trip (XEP-0115 §6.3)."""

from __future__ import annotations

from lxml import etree

from xmppd.elements import element
from xmppd.module import ModuleAPI
from xmppd.modules.disco import CAPS_NODE, caps_ver
from xmppd.session import Session

PROTOCOLS = [("XEP-0115", "1.6.0")]
NS = "http://jabber.org/protocol/caps"


def setup(mod: ModuleAPI) -> None:
    host = mod.host

    def feature(_session: Session | None) -> etree._Element:
        return element(f"{{{NS}}}c", {"hash": "sha-1", "node": CAPS_NODE, "ver": caps_ver(host)})

    mod.add_stream_feature(feature)

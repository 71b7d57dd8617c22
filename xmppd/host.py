"""A virtual host: its hooks, its loaded modules and what it announces through disco."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.hooks import Hooks
from xmppd.jid import JID, parse_jid

if TYPE_CHECKING:
    from xmppd.module import ModuleAPI
    from xmppd.session import Session

# Builds a stream feature element for a freshly authenticated stream (None: not offered).
StreamFeature = Callable[["Session | None"], "etree._Element | None"]


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    category: str
    type: str
    name: str | None = None


class Host:
    def __init__(self, name: str) -> None:
        self.name = name
        self.jid: JID = parse_jid(name)
        self.hooks = Hooks()
        self.features: list[str] = []
        # What the server offers on behalf of each account, answered for disco#info to a bare JID.
        self.account_features: list[str] = ["http://jabber.org/protocol/disco#info"]
        self.identities: list[Identity] = []
        # XEP-0128 extended information: data forms added to disco#info.
        self.extensions: list[etree._Element] = []
        # Features of the authenticated stream (before bind): roster versioning, caps, ...
        self.stream_features: list[StreamFeature] = []
        # Features offered before authentication, e.g. XEP-0077's iq-register.
        self.pre_auth_features: list[StreamFeature] = []
        self.modules: dict[str, ModuleAPI] = {}

    def add_feature(self, feature: str) -> None:
        if feature not in self.features:
            self.features.append(feature)

    def remove_feature(self, feature: str) -> None:
        if feature in self.features:
            self.features.remove(feature)

    def __repr__(self) -> str:
        return f"<Host {self.name}>"

"""A host: its hooks, its loaded modules and what it announces through disco.

Two kinds. A user host (`[server] hosts`) has accounts, rosters, presence and the core modules.
A component host (`[components."conference.example.org"]`) is a service with its own domain (a
room service, an upload service): it gets only the modules it lists, and the user host it
belongs to lists it in its disco#items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lxml import etree

from xmppd.hooks import Hooks
from xmppd.jid import JID, parse_jid

if TYPE_CHECKING:
    from xmppd.module import ModuleAPI
    from xmppd.session import Session

# Builds a stream feature element for a freshly authenticated stream (None: not offered).
StreamFeature = Callable[["Session | None"], "etree._Element | None"]


HostKind = Literal["user", "component"]


@dataclass(frozen=True, slots=True, order=True)
class Identity:
    category: str
    type: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """A disco#items entry (XEP-0030 §4.2)."""

    jid: str
    name: str | None = None
    node: str | None = None


class Host:
    def __init__(self, name: str, kind: HostKind = "user", modules: tuple[str, ...] = ()) -> None:
        self.name = name
        self.kind: HostKind = kind
        # The modules to load on this host, in order.
        self.module_names = modules
        self.jid: JID = parse_jid(name)
        self.hooks = Hooks()
        # What modules announce. Each registration is one entry (two modules may offer the same
        # feature, and unloading one must not take it from the other): readers de-duplicate.
        self.features: list[str] = []
        # What the server offers on behalf of each account, answered for disco#info to a bare JID.
        self.account_features: list[str] = ["http://jabber.org/protocol/disco#info"]
        self.account_identities: list[Identity] = [Identity("account", "registered")]
        self.identities: list[Identity] = []
        # disco#items of the host: its components, and what modules add.
        self.items: list[Item] = []
        # XEP-0128 extended information: data forms added to disco#info.
        self.extensions: list[etree._Element] = []
        # Features of the authenticated stream (before bind): roster versioning, caps, ...
        self.stream_features: list[StreamFeature] = []
        # Features offered before authentication, e.g. XEP-0077's iq-register.
        self.pre_auth_features: list[StreamFeature] = []
        self.modules: dict[str, ModuleAPI] = {}

    def __repr__(self) -> str:
        return f"<Host {self.name} ({self.kind})>"

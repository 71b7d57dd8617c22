"""XEP-0092: Software Version of the server; the OS (or the whole answer) can be hidden."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from xmppd.elements import element
from xmppd.module import ModuleAPI, Option, StanzaEvent

PROTOCOLS = [("XEP-0092", "1.1")]
NS = "jabber:iq:version"
OPTIONS = {
    "hide_version": Option(False, "answer with the name only, no version number"),
    "show_os": Option(False, "include the operating system in the answer"),
}


def setup(mod: ModuleAPI) -> None:
    mod.add_feature(NS)
    try:
        number = version("xmppd")
    except PackageNotFoundError:
        number = "dev"

    def answer(ev: StanzaEvent) -> bool:
        reply = ev.stanza.reply()
        query = element(f"{{{NS}}}query", parent=reply.element)
        element(f"{{{NS}}}name", parent=query).text = "xmppd"
        if not mod.options["hide_version"]:
            element(f"{{{NS}}}version", parent=query).text = number
        if mod.options["show_os"]:
            element(f"{{{NS}}}os", parent=query).text = f"{platform.system()} {platform.release()}"
        ev.respond(reply)
        return True

    mod.on_iq("get", NS, "query", answer)

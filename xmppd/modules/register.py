"""XEP-0077: In-Band Registration: new accounts before login (when the admin allows it),
password change and account removal after login."""

from __future__ import annotations

from lxml import etree

from xmppd.accounts import create_account, set_password
from xmppd.elements import element
from xmppd.errors import StanzaError, StreamError
from xmppd.events import PreAuthEvent
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Option, StanzaEvent
from xmppd.stanza import CLIENT_NS

PROTOCOLS = [("XEP-0077", "2.4")]
NS = "jabber:iq:register"
FEATURE_NS = "http://jabber.org/features/iq-register"
OPTIONS = {
    "allow_registration": Option(False, "let anyone create an account from their client, before login"),
    "instructions": Option("Choose a username and password.", "text shown by clients on the sign-up form"),
}


def setup(mod: ModuleAPI) -> None:
    registration = Registration(mod)
    mod.add_feature(NS)
    if registration.open:
        mod.add_stream_feature(lambda _session: element(f"{{{FEATURE_NS}}}register"), before_auth=True)
    mod.on("pre-auth-iq", registration.before_login)
    for type_ in ("get", "set"):
        mod.on_iq(type_, NS, "query", registration.when_logged_in, targets=("self", "host"))


class Registration:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.accounts = mod.accounts
        self.iterations = mod.config.auth.scram_iterations
        self.open = bool(mod.options["allow_registration"])

    # -- before login: sign-up (XEP-0077 §3.1) -------------------------------------------
    async def before_login(self, event: PreAuthEvent) -> bool:
        stanza = event.element
        if not self.open:
            event.reply(_error(stanza, StanzaError("service-unavailable", "registration is closed")))
        elif stanza.get("type") == "get":
            event.reply(_result(stanza, _form(self.mod.options["instructions"])))
        elif stanza.get("type") == "set":
            event.reply(await self._register(event.host.name, stanza, stanza[0]))
        else:
            event.reply(_error(stanza, StanzaError("bad-request")))
        return True

    async def _register(self, domain: str, stanza: etree._Element, query: etree._Element) -> etree._Element:
        username, password = query.findtext(f"{{{NS}}}username"), query.findtext(f"{{{NS}}}password")
        if not username or not password:
            return _error(stanza, StanzaError("not-acceptable", "a username and a password are required"))
        try:
            account = parse_jid(f"{username}@{domain}")
            created = await create_account(self.accounts, account, password, self.iterations)
        except (InvalidJID, ValueError):
            return _error(stanza, StanzaError("not-acceptable", "this username or password is not allowed"))
        if not created:
            return _error(stanza, StanzaError("conflict", "this username is taken"))
        self.mod.log.info("registered %s in-band", account)
        return _result(stanza)

    # -- after login: status, password change, removal (§3.2, §3.3) ---------------------
    async def when_logged_in(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None
        account = ev.origin.bare
        query = ev.stanza.payload()
        assert query is not None
        if ev.stanza.type == "get":
            reply = ev.stanza.reply()
            form = element(f"{{{NS}}}query", parent=reply.element)
            element(f"{{{NS}}}registered", parent=form)
            element(f"{{{NS}}}username", parent=form).text = account.local
            ev.respond(reply)
            return True
        if query.find(f"{{{NS}}}remove") is not None:
            return await self._remove(ev, account)
        return await self._change_password(ev, account, query)

    async def _change_password(self, ev: StanzaEvent, account: JID, query: etree._Element) -> bool:
        # XEP-0077 §3.3: the username must be the account's own.
        username, password = query.findtext(f"{{{NS}}}username"), query.findtext(f"{{{NS}}}password")
        if not password or (username and username.lower() != account.local):
            return ev.error("bad-request", "give your own username and a new password")
        try:
            await set_password(self.accounts, account, password, self.iterations)
        except ValueError:
            return ev.error("not-acceptable", "this password is not allowed")
        self.mod.log.info("password changed for %s", account)
        ev.respond(ev.stanza.reply())
        return True

    async def _remove(self, ev: StanzaEvent, account: JID) -> bool:
        # XEP-0077 §3.2: answer, then end every stream of the account.
        await self.mod.delete_account(account)
        ev.respond(ev.stanza.reply())
        self.mod.log.info("account %s removed in-band", account)
        goodbye = StreamError("not-authorized", "account removed")
        for session in self.mod.sessions.resources(account):
            session.close(goodbye)
        return True


def _form(instructions: str) -> etree._Element:
    query = element(f"{{{NS}}}query")
    element(f"{{{NS}}}instructions", parent=query).text = instructions
    element(f"{{{NS}}}username", parent=query)
    element(f"{{{NS}}}password", parent=query)
    return query


def _result(request: etree._Element, payload: etree._Element | None = None) -> etree._Element:
    reply = element(f"{{{CLIENT_NS}}}iq", {"type": "result", "id": request.get("id", "")})
    if payload is not None:
        reply.append(payload)
    return reply


def _error(request: etree._Element, error: StanzaError) -> etree._Element:
    reply = element(f"{{{CLIENT_NS}}}iq", {"type": "error", "id": request.get("id", "")})
    reply.append(error.to_element(CLIENT_NS))
    return reply

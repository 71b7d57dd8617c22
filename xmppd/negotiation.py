"""Sans-IO client-to-server stream negotiation (RFC 6120 §4-§7).

Theory of operation: the connection adapter feeds parsed events in (`receive`) and carries out
the actions that come back (send bytes, start TLS, look up credentials, bind). Results of
that I/O come back through `tls_established`, `credentials_loaded`, `plain_checked` and
`bound`. The negotiation never touches a socket, storage or the session table, so every
path through it is tested by feeding it events.

States and what moves them on:

    HEADER        --stream header-->         (features sent) TLS | AUTH | BIND
    TLS           --<starttls/>-->           STARTING_TLS   --tls_established-->  HEADER
    AUTH          --<auth/>-->               SASL           --success-->          HEADER
                  --<iq/> (registration)-->  AUTH (PreAuthStanza action)
    SASL          --<response/>|<abort/>-->  SASL | AUTH
    BIND          --<iq><bind/></iq>-->      BINDING        --bound-->            BOUND
                  --other element-->         BIND (StreamElement action: a module may claim it,
                                                   e.g. XEP-0198 <resume/>, then `resumed`)  BOUND
    BOUND         stanzas belong to the router now; `receive` is no longer called
    any           --</stream:stream>, error-->  CLOSED

An unexpected element closes the stream with the RFC's condition: not-authorized for a stanza
before authentication (§6.4), policy-violation when TLS is required (§5.3.1).

The actions speak of the stream, not of bytes on a wire: `Open` our side with these features,
`Send` one element, `Close` with an error. Each transport frames them its own way (TCP: the
`<stream:stream>` header and closing tag, see framing.py; WebSocket: `<open/>` and `<close/>`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from lxml import etree

from storage.model import ScramCredentials
from xmppd.errors import StreamError
from xmppd.framing import Opening
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.sasl import (
    MECHANISM_HASHES,
    SaslFailure,
    ScramServer,
    decode_sasl_data,
    encode_sasl_data,
    parse_plain,
)
from xmppd.xml import Event, StreamClosed, StreamOpened

CLIENT_NS = "jabber:client"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
REGISTER_NS = "jabber:iq:register"


class State(Enum):
    HEADER = auto()
    TLS = auto()
    STARTING_TLS = auto()
    AUTH = auto()
    SASL = auto()
    BIND = auto()
    BINDING = auto()
    BOUND = auto()
    CLOSED = auto()


# -- actions for the adapter ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Open:
    """Open our side of a (restarted) stream and offer `features` (RFC 6120 §4.3.2)."""

    opening: Opening
    features: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """One top-level element, serialised."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Upgrade the transport now (after <proceed/> was sent), then call tls_established()."""


@dataclass(frozen=True, slots=True)
class ResetParser:
    """A new stream begins (RFC 6120 §5.4.3.3, §6.4.6): parse the next bytes afresh."""


@dataclass(frozen=True, slots=True)
class FetchCredentials:
    """Look up the account's SCRAM keys, then call credentials_loaded()."""

    domain: str
    username: str
    hash_name: str


@dataclass(frozen=True, slots=True)
class CheckPlain:
    """Verify a PLAIN password against the stored keys, then call plain_checked()."""

    domain: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """Send `data` (a SASL failure); the adapter may delay it to slow down guessing."""

    username: str | None
    condition: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    jid: JID


@dataclass(frozen=True, slots=True)
class BindResource:
    """Bind `jid` (resource chosen and prepared), then call bound() or bind_refused()."""

    jid: JID
    iq_id: str


@dataclass(frozen=True, slots=True)
class PreAuthStanza:
    """An iq allowed before authentication (XEP-0077 registration) for the host to handle."""

    domain: str
    element: etree._Element


@dataclass(frozen=True, slots=True)
class StreamElement:
    """A top-level element after authentication that negotiation does not know (XEP-0198's
    `<resume/>`): offered to the host's modules; unclaimed, `fail` the stream with
    unsupported-stanza-type."""

    element: etree._Element


@dataclass(frozen=True, slots=True)
class Close:
    """Close the stream, with a stream error or (None) just the closing tag. `opening` is set
    when our side of the stream was never opened: it must be, before the error (§4.9.1.2)."""

    error: StreamError | None
    reason: str
    opening: Opening | None = None


Action = Open | Send | StartTLS | ResetParser | FetchCredentials | CheckPlain | AuthFailed | Authenticated | \
    BindResource | PreAuthStanza | StreamElement | Close


@dataclass(frozen=True, slots=True)
class Policy:
    """What this listener offers."""

    served: Callable[[str], bool]
    tls_available: bool
    require_encryption: bool = True
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
    max_auth_failures: int = 3
    # Makes the fake salt answered for unknown users stable across restarts, like a real one.
    unknown_user_secret: bytes | None = None
    # Extra features per stage ("pre-auth", "post-auth"), e.g. XEP-0077 or caps.
    features: Callable[[str, str], list[bytes]] = lambda stage, domain: []


class C2SNegotiation:
    def __init__(
        self,
        policy: Policy,
        *,
        tls_active: bool = False,
        stream_ids: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.policy = policy
        self.tls_active = tls_active
        self.state = State.HEADER
        self.domain: str | None = None
        self.jid: JID | None = None
        self.auth_failures = 0
        self._stream_ids = stream_ids
        self._stream_id = ""
        self._header_sent = False
        self._scram: ScramServer | None = None
        self._mechanism: str | None = None
        self._pending_user = ""
        self._awaiting_initial = False

    @property
    def authenticated(self) -> bool:
        return self.jid is not None

    # -- input --------------------------------------------------------------------------
    def receive(self, event: Event) -> list[Action]:
        try:
            if isinstance(event, StreamOpened):
                return self._on_header(event)
            if isinstance(event, StreamClosed):
                self.state = State.CLOSED
                return [Close(None, "closed by peer")]
            return self._on_element(event)
        except StreamError as error:
            return [self.fail(error)]

    def fail(self, error: StreamError) -> Close:
        """Close with a stream error, opening our side of the stream first if need be (§4.9.1.2)."""
        self.state = State.CLOSED
        return Close(error, error.condition, None if self._header_sent else self._opening())

    def _on_header(self, opened: StreamOpened) -> list[Action]:
        if self.state is not State.HEADER:
            raise StreamError("invalid-xml", "unexpected stream header")
        self._stream_id = self._stream_ids()
        to = opened.attributes.get("to")
        domain = to.lower().rstrip(".") if to else None
        if self.domain is not None and domain != self.domain:
            # After STARTTLS or SASL the stream restarts for the same host (RFC 6120 §5.4.3.3).
            raise StreamError("host-unknown", "a restarted stream must be for the same host")
        self.domain = domain
        if opened.content_ns != CLIENT_NS:
            raise StreamError("invalid-namespace", f"the content namespace must be {CLIENT_NS}")
        if self.domain is None or not self.policy.served(self.domain):
            raise StreamError("host-unknown", f"{to} is not served here")
        if not opened.attributes.get("version", "").startswith("1."):
            raise StreamError("unsupported-version", "XMPP 1.0 streams only")
        if self.authenticated:
            self.state = State.BIND
            features = self._bind_features()
        elif self.policy.tls_available and not self.tls_active:
            self.state = State.TLS if self.policy.require_encryption else State.AUTH
            features = self._tls_features()
        else:
            if self.policy.require_encryption and not self.tls_active:
                raise StreamError("policy-violation", "encryption is required and not available")
            self.state = State.AUTH
            features = self._auth_features()
        return [Open(self._opening(), features)]

    def _opening(self) -> Opening:
        self._header_sent = True
        self._stream_id = self._stream_id or self._stream_ids()
        return Opening(self.domain, self._stream_id)

    def _on_element(self, element: etree._Element) -> list[Action]:
        tag = element.tag
        assert isinstance(tag, str)
        state = self.state
        if state is State.TLS or (state is State.AUTH and not self.tls_active and self.policy.tls_available):
            if tag == f"{{{TLS_NS}}}starttls":
                self.state = State.STARTING_TLS
                return [Send(f"<proceed xmlns='{TLS_NS}'/>".encode()), StartTLS()]
            if state is State.TLS:
                raise StreamError("policy-violation", "STARTTLS is required before anything else")
        if state is State.AUTH:
            return self._on_auth_stage(element, tag)
        if state is State.SASL:
            return self._on_sasl_step(element, tag)
        if state is State.BIND:
            if tag == f"{{{CLIENT_NS}}}iq":
                return self._on_bind(element)
            if tag not in (f"{{{CLIENT_NS}}}message", f"{{{CLIENT_NS}}}presence"):
                return [StreamElement(element)]
        if tag in (f"{{{CLIENT_NS}}}iq", f"{{{CLIENT_NS}}}message", f"{{{CLIENT_NS}}}presence"):
            raise StreamError("not-authorized", "bind a resource before sending stanzas")
        raise StreamError("unsupported-stanza-type", f"unexpected {etree.QName(element).localname}")

    # -- TLS ----------------------------------------------------------------------------
    def _tls_features(self) -> bytes:
        required = b"<required/>" if self.policy.require_encryption else b""
        tls = f"<starttls xmlns='{TLS_NS}'>".encode() + required + b"</starttls>"
        return tls if self.policy.require_encryption else tls + self._auth_features()

    def tls_established(self) -> list[Action]:
        self.tls_active = True
        self._new_stream()
        return [ResetParser()]

    def _new_stream(self) -> None:
        self.state = State.HEADER
        self._header_sent = False
        self._stream_id = ""

    # -- SASL (RFC 6120 §6) -------------------------------------------------------------
    def _mechanisms(self) -> list[str]:
        # PLAIN sends the password itself: only inside TLS (RFC 6120 §6.4.1 / §13.8).
        return [m for m in self.policy.mechanisms if m != "PLAIN" or self.tls_active]

    def _auth_features(self) -> bytes:
        mechanisms = "".join(f"<mechanism>{m}</mechanism>" for m in self._mechanisms())
        extra = b"".join(self.policy.features("pre-auth", self.domain or ""))
        return f"<mechanisms xmlns='{SASL_NS}'>{mechanisms}</mechanisms>".encode() + extra

    def _on_auth_stage(self, element: etree._Element, tag: str) -> list[Action]:
        if tag == f"{{{SASL_NS}}}auth":
            return self._on_auth(element)
        if tag == f"{{{CLIENT_NS}}}iq" and self._is_registration(element):
            assert self.domain is not None
            return [PreAuthStanza(self.domain, element)]
        if tag in (f"{{{CLIENT_NS}}}iq", f"{{{CLIENT_NS}}}message", f"{{{CLIENT_NS}}}presence"):
            raise StreamError("not-authorized", "authenticate before sending stanzas")
        raise StreamError("unsupported-stanza-type", f"unexpected {etree.QName(element).localname}")

    @staticmethod
    def _is_registration(element: etree._Element) -> bool:
        return len(element) == 1 and element[0].tag == f"{{{REGISTER_NS}}}query"

    def _on_auth(self, element: etree._Element) -> list[Action]:
        mechanism = element.get("mechanism", "")
        if mechanism not in self._mechanisms():
            return self._sasl_failure(None, "invalid-mechanism")
        try:
            initial = decode_sasl_data(element.text or "")
        except SaslFailure as failure:
            return self._sasl_failure(None, failure.condition)
        self._mechanism = mechanism
        self.state = State.SASL
        if not initial:
            # No (or an empty) initial response: an empty challenge asks for it (RFC 6120 §6.4.2);
            # neither PLAIN nor SCRAM has a meaningful empty first message.
            self._awaiting_initial = True
            return [Send(self._sasl("challenge", None))]
        return self._on_initial_response(initial)

    def _on_initial_response(self, initial: bytes) -> list[Action]:
        self._awaiting_initial = False
        if self._mechanism == "PLAIN":
            return self._on_plain(initial)
        return self._on_scram_first(initial)

    def _on_plain(self, message: bytes) -> list[Action]:
        assert self.domain is not None
        try:
            authzid, username, password = parse_plain(message)
            self._check_authzid(authzid, username)
        except SaslFailure as failure:
            return self._sasl_failure(None, failure.condition)
        self._pending_user = username
        return [CheckPlain(self.domain, username, password)]

    def plain_checked(self, ok: bool) -> list[Action]:
        if not ok:
            return self._sasl_failure(self._pending_user, "not-authorized")
        return self._sasl_success(self._pending_user, None)

    def _on_scram_first(self, message: bytes) -> list[Action]:
        assert self.domain is not None and self._mechanism is not None
        scram = ScramServer(MECHANISM_HASHES[self._mechanism], unknown_user_secret=self.policy.unknown_user_secret)
        try:
            username = scram.client_first(message)
            self._check_authzid(scram.authzid, username)
        except SaslFailure as failure:
            return self._sasl_failure(None, failure.condition)
        self._scram = scram
        return [FetchCredentials(self.domain, username, MECHANISM_HASHES[self._mechanism])]

    def refused(self) -> list[Action]:
        """The attempt is refused without checking the password (too many failures: RFC 6120
        §13.12, XEP-0205); temporary-auth-failure tells the client it may try again later (§6.5.12)."""
        username = self._scram.username if self._scram is not None else self._pending_user
        return self._sasl_failure(username or None, "temporary-auth-failure")

    def credentials_loaded(self, credentials: ScramCredentials | None) -> list[Action]:
        assert self._scram is not None
        return [Send(self._sasl("challenge", self._scram.server_first(credentials)))]

    def _on_sasl_step(self, element: etree._Element, tag: str) -> list[Action]:
        if tag == f"{{{SASL_NS}}}abort":
            return self._sasl_failure(None, "aborted")
        expected = self._awaiting_initial or self._scram is not None
        if tag != f"{{{SASL_NS}}}response" or not expected:
            raise StreamError("policy-violation", "SASL negotiation is in progress")
        try:
            response = decode_sasl_data(element.text or "")
        except SaslFailure as failure:
            return self._sasl_failure(None, failure.condition)
        if self._awaiting_initial:
            return self._on_initial_response(response)
        scram = self._scram
        assert scram is not None
        try:
            final = scram.client_final(response)
        except SaslFailure as failure:
            return self._sasl_failure(scram.username, failure.condition)
        return self._sasl_success(scram.username, final)

    def _check_authzid(self, authzid: str | None, username: str) -> None:
        # We act for nobody else: an authzid may only name the authenticating account (§6.3.8).
        if not authzid:
            return
        try:
            requested = parse_jid(authzid)
        except InvalidJID:
            raise SaslFailure("invalid-authzid") from None
        if requested != _account(username, self.domain or ""):
            raise SaslFailure("invalid-authzid")

    def _sasl_success(self, username: str, data: bytes | None) -> list[Action]:
        assert self.domain is not None
        try:
            self.jid = _account(username, self.domain)
        except SaslFailure as failure:
            return self._sasl_failure(username, failure.condition)
        self._new_stream()
        self._scram = None
        return [Send(self._sasl("success", data)), Authenticated(self.jid), ResetParser()]

    def _sasl_failure(self, username: str | None, condition: str) -> list[Action]:
        self.auth_failures += 1
        self._scram = None
        self._mechanism = None
        self._awaiting_initial = False
        self.state = State.AUTH
        failure = f"<failure xmlns='{SASL_NS}'><{condition}/></failure>".encode()
        if self.auth_failures >= self.policy.max_auth_failures:
            # RFC 6120 §6.4.5: past the allowed retries the stream is closed.
            close = self.fail(StreamError("policy-violation", "too many authentication failures"))
            return [AuthFailed(username, condition, failure), close]
        return [AuthFailed(username, condition, failure)]

    @staticmethod
    def _sasl(name: str, data: bytes | None) -> bytes:
        """A challenge or success; None is no data at all (PLAIN's success, SCRAM's first
        empty challenge), b"" is present-but-empty data, sent as '=' (RFC 6120 §6.4.2)."""
        if data is None:
            return f"<{name} xmlns='{SASL_NS}'/>".encode()
        return f"<{name} xmlns='{SASL_NS}'>{encode_sasl_data(data)}</{name}>".encode()

    # -- binding (RFC 6120 §7) ----------------------------------------------------------
    def _bind_features(self) -> bytes:
        extra = b"".join(self.policy.features("post-auth", self.domain or ""))
        return (
            f"<bind xmlns='{BIND_NS}'/><session xmlns='{SESSION_NS}'><optional/></session>".encode() + extra
        )

    def _on_bind(self, element: etree._Element) -> list[Action]:
        iq_id = element.get("id")
        bind = element.find(f"{{{BIND_NS}}}bind")
        if element.get("type") != "set" or bind is None or iq_id is None:
            raise StreamError("not-authorized", "bind a resource before sending stanzas")
        assert self.jid is not None
        requested = bind.findtext(f"{{{BIND_NS}}}resource")
        if not requested:
            self.state = State.BINDING
            return [BindResource(self.jid, iq_id)]
        try:
            full = self.jid.with_resource(requested)
        except InvalidJID:
            return [Send(_iq_error(iq_id, "modify", "bad-request"))]
        self.state = State.BINDING
        return [BindResource(full, iq_id)]

    def bound(self, jid: JID, iq_id: str) -> list[Action]:
        self.state = State.BOUND
        self.jid = jid
        result = (
            f"<iq type='result' id='{_attr(iq_id)}'><bind xmlns='{BIND_NS}'><jid>{_text(str(jid))}</jid>"
            "</bind></iq>"
        )
        return [Send(result.encode())]

    def resumed(self, jid: JID) -> None:
        """A module took over the stream for an existing session (XEP-0198 resumption)."""
        self.state = State.BOUND
        self.jid = jid

    def bind_refused(self, iq_id: str, condition: str) -> list[Action]:
        self.state = State.BIND
        return [Send(_iq_error(iq_id, "cancel", condition))]


def _account(username: str, domain: str) -> JID:
    try:
        return parse_jid(f"{username}@{domain}")
    except InvalidJID:
        raise SaslFailure("not-authorized") from None


def _iq_error(iq_id: str, type_: str, condition: str) -> bytes:
    return (
        f"<iq type='error' id='{_attr(iq_id)}'><error type='{type_}'>"
        f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ).encode()


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;").replace('"', "&quot;")


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

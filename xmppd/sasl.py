"""SASL for XMPP (RFC 6120 §6): SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) and PLAIN
(RFC 4616), server side, sans-IO.

Everything here is a pure function or a small state object fed bytes: no asyncio, no storage
access, no logging. The caller (stream negotiation) looks credentials up and turns a
``SaslFailure`` into ``<failure/>`` with the RFC 6120 §6.5 condition it carries.

Passwords: the server keeps only ``ScramCredentials`` (salt, iteration count, StoredKey,
ServerKey; RFC 5802 §3), never a password. A SCRAM login therefore costs a few HMACs and no
PBKDF2; only PLAIN (``verify_plain``) and account administration (``derive_credentials``) run
PBKDF2. No function here logs a password or puts one into an exception message.

Channel binding (the -PLUS mechanisms) is not offered yet; ``ScramServer`` already enforces the
RFC 5802 §6 rule for the "y" flag when told that it is (``channel_binding_offered=True``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

from precis_i18n import get_profile

from storage.model import ScramCredentials
from xmppd.jid import InvalidJID, prepare_localpart

__all__ = [
    "DEFAULT_ITERATIONS",
    "MECHANISM_HASHES",
    "SASL_CONDITIONS",
    "SaslFailure",
    "ScramServer",
    "decode_sasl_data",
    "derive_credentials",
    "encode_sasl_data",
    "parse_plain",
    "prepare_password",
    "verify_plain",
]

# Mechanism name -> hashlib name, strongest first (the order in which to offer them).
MECHANISM_HASHES: Final[dict[str, str]] = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
_DIGEST_SIZES: Final[dict[str, int]] = {"sha256": 32, "sha1": 20}

# RFC 7677 §4 and RFC 5802 §5.1: the iteration count SHOULD be at least 4096.
DEFAULT_ITERATIONS: Final = 4096
MIN_ITERATIONS: Final = 4096
SALT_BYTES: Final = 16

# RFC 6120 §6.5: the defined SASL failure conditions.
SASL_CONDITIONS: Final = frozenset(
    {
        "aborted",
        "account-disabled",
        "credentials-expired",
        "encryption-required",
        "incorrect-encoding",
        "invalid-authzid",
        "invalid-mechanism",
        "malformed-request",
        "mechanism-too-weak",
        "not-authorized",
        "temporary-auth-failure",
    }
)

_OPAQUE = get_profile("OpaqueString")

# Key for the fake salts of unknown users when the server supplies none. Per process, so fake
# salts change across restarts while real ones do not: a server that cares passes a persistent
# secret to ScramServer.
_PROCESS_SECRET: Final = secrets.token_bytes(32)

# One response text for every authentication failure, so that the <text/> a client sees does not
# tell an unknown user from a wrong password (RFC 6120 §13.9.4 on account enumeration).
_AUTH_FAILED: Final = "authentication failed"


class SaslFailure(Exception):
    """An authentication exchange failed with an RFC 6120 §6.5 condition.

    ``text`` is meant for the client (it goes into <text/>): it never contains secrets, and
    never distinguishes an unknown user from a wrong password.
    """

    condition: str
    text: str | None

    def __init__(self, condition: str, text: str | None = None) -> None:
        if condition not in SASL_CONDITIONS:
            raise ValueError(f"not an RFC 6120 §6.5 condition: {condition!r}")
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text


# --- XMPP transport encoding (RFC 6120 §6.4.2) -------------------------------------------------


def decode_sasl_data(text: str) -> bytes:
    """Decode the character data of <auth/>, <response/> (RFC 6120 §6.4.2).

    A single "=" is a present-but-empty response; the empty string also decodes to b"" (the
    caller knows whether the element was empty). Anything that is not canonical base64
    (RFC 4648 §4, no whitespace, no line breaks) fails with 'incorrect-encoding' (§6.5.2).
    """
    if text == "=":
        return b""
    return _b64decode(text)


def encode_sasl_data(data: bytes) -> str:
    """Encode a challenge or success payload; empty data is sent as "=" (RFC 6120 §6.4.6)."""
    if not data:
        return "="
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: str) -> bytes:
    try:
        decoded = binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeError):
        raise SaslFailure("incorrect-encoding", "invalid base64") from None
    # Only the canonical spelling: no excess padding, no non-zero pad bits (RFC 4648 §3.5).
    if base64.b64encode(decoded).decode("ascii") != value:
        raise SaslFailure("incorrect-encoding", "invalid base64")
    return decoded


# --- passwords and stored keys (RFC 5802 §3, RFC 8265) -----------------------------------------


def prepare_password(password: str) -> str:
    """Enforce the PRECIS OpaqueString profile (RFC 8265 §4.2) on a password.

    Raises ValueError (not SaslFailure: this is also used by administration tools that set a
    password, where the message should explain the problem). The message names the failing
    rule, never the password or the offending character.
    """
    try:
        return _OPAQUE.enforce(password)
    except UnicodeError as exc:
        reason = getattr(exc, "reason", "not allowed")
        # "from None": the original exception carries the password in its .object attribute.
        raise ValueError(f"password rejected by the OpaqueString profile ({reason})") from None


def derive_credentials(
    password: str,
    hash_name: str,
    iterations: int = DEFAULT_ITERATIONS,
    salt: bytes | None = None,
) -> ScramCredentials:
    """Compute what the server stores for ``password`` (RFC 5802 §3): runs PBKDF2 once.

    ``salt`` defaults to 16 random bytes. Raises ValueError for an unknown hash, fewer than 4096
    iterations (RFC 7677 §4), an empty salt, or a password the OpaqueString profile refuses.
    """
    _check_hash(hash_name)
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise ValueError("iterations must be an integer")
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations must be at least {MIN_ITERATIONS} (RFC 7677 §4)")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    elif not salt:
        raise ValueError("salt must not be empty")
    stored_key, server_key = _keys(prepare_password(password), hash_name, salt, iterations)
    return ScramCredentials(hash_name, salt, iterations, stored_key, server_key)


def verify_plain(password: str, credentials: ScramCredentials) -> bool:
    """Check a PLAIN password against stored SCRAM credentials, in constant time.

    Recomputes StoredKey from the credentials' salt and iteration count (one PBKDF2 run). A
    password the OpaqueString profile refuses cannot have been stored, so it is simply False.
    """
    _check_hash(credentials.hash_name)
    try:
        prepared = prepare_password(password)
    except ValueError:
        return False
    stored_key, _ = _keys(prepared, credentials.hash_name, credentials.salt, credentials.iterations)
    return hmac.compare_digest(stored_key, credentials.stored_key)


def _check_hash(hash_name: str) -> None:
    if hash_name not in _DIGEST_SIZES:
        raise ValueError(f"unsupported SCRAM hash {hash_name!r}; expected one of {sorted(_DIGEST_SIZES)}")


def _keys(prepared_password: str, hash_name: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    # RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i), where Hi is PBKDF2 with
    # HMAC-H and an output of one hash length; ClientKey = HMAC(SaltedPassword, "Client Key");
    # StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
    salted = hashlib.pbkdf2_hmac(hash_name, prepared_password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    return stored_key, server_key


def _prepare_username(raw: str) -> str:
    # RFC 6120 §6.3.7: the XMPP authcid is a "simple user name", i.e. the localpart of the
    # account, so it gets the localpart rules of RFC 7622 §3.3: UsernameCaseMapped (RFC 8265
    # §3.3, successor of the SASLprep that RFC 5802 §5.1 names) plus the §3.3.1 exclusions, which
    # also guarantees that "username@domain" parses back to this account. A name that cannot be
    # prepared cannot belong to an account: an ordinary failed login.
    try:
        return prepare_localpart(raw)
    except InvalidJID:
        raise SaslFailure("not-authorized", _AUTH_FAILED) from None


def _decode_utf8(message: bytes) -> str:
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslFailure("incorrect-encoding", "message is not UTF-8") from None
    return text


# --- PLAIN (RFC 4616) ------------------------------------------------------------------------


def parse_plain(message: bytes) -> tuple[str | None, str, str]:
    """Parse a PLAIN message (RFC 4616 §2): ``[authzid] NUL authcid NUL passwd``.

    Returns ``(authzid, username, password)``: authzid is None when absent (the caller checks
    that a present one is the user's own bare JID, or answers 'invalid-authzid', RFC 6120
    §6.3.8); the username
    is the authcid already prepared with UsernameCaseMapped, ready for the credentials lookup;
    the password is as sent (``verify_plain`` prepares it).

    Fails with 'malformed-request' for a wrong number of NULs or an empty authcid or passwd,
    'incorrect-encoding' for invalid UTF-8, 'not-authorized' for an authcid that cannot be a
    username.
    """
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslFailure("malformed-request", "PLAIN needs exactly two NUL separators")
    raw_authzid, raw_authcid, raw_password = parts
    # RFC 4616 §2: authcid and passwd are 1*SAFE; authzid, when present, too.
    if not raw_authcid or not raw_password:
        raise SaslFailure("malformed-request", "empty authentication identity or password")
    authzid = _decode_utf8(raw_authzid) if raw_authzid else None
    authcid = _decode_utf8(raw_authcid)
    password = _decode_utf8(raw_password)
    return authzid, _prepare_username(authcid), password


# --- SCRAM (RFC 5802, RFC 7677) ----------------------------------------------------------------

_START: Final = 0
_GOT_CLIENT_FIRST: Final = 1
_SENT_SERVER_FIRST: Final = 2
_DONE: Final = 3
_FAILED: Final = 4


def _is_printable_nonce(value: str) -> bool:
    # RFC 5802 §7: printable = %x21-2B / %x2D-7E (visible ASCII except ",").
    return bool(value) and value.isascii() and value.isprintable() and " " not in value and "," not in value


def _decode_saslname(value: str) -> str:
    # RFC 5802 §5.1: "," and "=" are sent as "=2C" and "=3D"; "If the server receives a username
    # that contains '=' not followed by either '2C' or '3D', then the server MUST fail". ABNF
    # literals are case-insensitive (RFC 5234 §2.3), so "=2c" is accepted too.
    if not value:
        raise SaslFailure("malformed-request", "empty name")
    if "=" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "=":
            out.append(char)
            i += 1
            continue
        escape = value[i + 1 : i + 3].upper()
        if escape == "2C":
            out.append(",")
        elif escape == "3D":
            out.append("=")
        else:
            raise SaslFailure("malformed-request", "invalid escape in name")
        i += 3
    return "".join(out)


def _check_extension(attribute: str) -> None:
    # RFC 5802 §7: attr-val = ALPHA "=" value. Unknown optional extensions are skipped; only
    # their shape is checked so garbage does not pass silently.
    if len(attribute) < 2 or attribute[1] != "=" or not (attribute[0].isascii() and attribute[0].isalpha()):
        raise SaslFailure("malformed-request", "malformed attribute")


class ScramServer:
    """Sans-IO server side of one SCRAM exchange (RFC 5802 §5, RFC 7677).

    Drive it as: ``username = client_first(msg)``; look up credentials for ``username`` (None
    when there is no such user); ``challenge = server_first(creds)``; then
    ``success_data = client_final(msg)``. Any SaslFailure ends the exchange; later calls fail
    with 'malformed-request'. After ``client_first`` the caller must also check ``authzid``
    (None, or the user's own bare JID: we do not support acting for another user, RFC 6120
    §6.3.8; anything else earns 'invalid-authzid', §6.5.6).

    ``nonce`` is the server's part of the nonce (injectable for tests; random by default).
    ``unknown_user_secret`` keys the fake salts handed out for unknown users; pass a persistent
    server secret so that they stay stable across restarts like real salts do.
    ``unknown_user_iterations`` should match the count used for real accounts.
    """

    hash_name: str
    username: str
    authzid: str | None

    def __init__(
        self,
        hash_name: str,
        nonce: str | None = None,
        *,
        unknown_user_secret: bytes | None = None,
        unknown_user_iterations: int = DEFAULT_ITERATIONS,
        channel_binding_offered: bool = False,
    ) -> None:
        _check_hash(hash_name)
        if nonce is None:
            # RFC 5802 §5.1: the nonce must be unpredictable; 18 random bytes -> 24 characters.
            nonce = secrets.token_urlsafe(18)
        elif not _is_printable_nonce(nonce):
            raise ValueError("nonce must be printable ASCII without ','")
        self.hash_name = hash_name
        self.username = ""
        self.authzid = None
        self._server_nonce = nonce
        self._secret = _PROCESS_SECRET if unknown_user_secret is None else unknown_user_secret
        self._unknown_iterations = unknown_user_iterations
        self._channel_binding_offered = channel_binding_offered
        self._state = _START
        self._gs2_header = b""
        self._client_first_bare = ""
        self._client_nonce = ""
        self._server_first = ""
        self._stored_key = b""
        self._server_key = b""
        self._unknown_user = False

    @property
    def done(self) -> bool:
        """True once client_final has verified the client (the exchange succeeded)."""
        return self._state == _DONE

    def client_first(self, message: bytes) -> str:
        """Parse gs2-header + client-first-message (RFC 5802 §7); returns the prepared username."""
        self._expect(_START)
        try:
            username = self._client_first(message)
        except SaslFailure:
            self._state = _FAILED
            raise
        self._state = _GOT_CLIENT_FIRST
        return username

    def _client_first(self, message: bytes) -> str:
        text = _decode_utf8(message)
        # RFC 5802 §7: no attribute value (value-char, saslname, printable) admits NUL.
        if "\x00" in text:
            raise SaslFailure("malformed-request", "NUL in message")
        # gs2-header = gs2-cbind-flag "," [authzid] ","
        flag, sep, rest = text.partition(",")
        if not sep:
            raise SaslFailure("malformed-request", "missing GS2 header")
        if flag.startswith("p="):
            # RFC 5802 §4/§6: "p" means the client requires channel binding, which is only
            # valid with the -PLUS mechanism names; we offered none, so the request does not fit
            # the mechanism it names.
            raise SaslFailure("malformed-request", "channel binding is not supported")
        if flag not in ("n", "y"):
            raise SaslFailure("malformed-request", "invalid GS2 channel binding flag")
        if flag == "y" and self._channel_binding_offered:
            # RFC 5802 §6: "y" means the client thinks we do not support channel binding; if we
            # do, someone removed -PLUS from our offer, so this MUST fail (downgrade attack).
            raise SaslFailure("not-authorized", "channel binding downgrade detected")
        authz, sep, bare = rest.partition(",")
        if not sep:
            raise SaslFailure("malformed-request", "malformed GS2 header")
        if not authz:
            authzid = None
        elif authz.startswith("a="):
            authzid = _decode_saslname(authz[2:])
        else:
            raise SaslFailure("malformed-request", "malformed GS2 header")

        # client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        attributes = bare.split(",")
        if attributes[0].startswith("m="):
            # RFC 5802 §5.1: "m" is reserved; its presence MUST cause authentication failure.
            raise SaslFailure("malformed-request", "mandatory extensions are not supported")
        if len(attributes) < 2 or not attributes[0].startswith("n=") or not attributes[1].startswith("r="):
            raise SaslFailure("malformed-request", "expected n= and r= attributes")
        for extension in attributes[2:]:
            _check_extension(extension)
        raw_username = _decode_saslname(attributes[0][2:])
        client_nonce = attributes[1][2:]
        if not _is_printable_nonce(client_nonce):
            raise SaslFailure("malformed-request", "invalid nonce")
        username = _prepare_username(raw_username)

        self._gs2_header = text[: len(text) - len(bare)].encode("utf-8")
        self._client_first_bare = bare
        self._client_nonce = client_nonce
        self.username = username
        self.authzid = authzid
        return username

    def server_first(self, credentials: ScramCredentials | None) -> bytes:
        """Build server-first-message for the user's credentials; None for an unknown user.

        For an unknown user the answer looks like a real one: a salt derived from the username
        with a server secret (stable, so probing twice shows nothing) and the usual iteration
        count; ``client_final`` then fails with 'not-authorized' after the same computations.
        Raises RuntimeError when called out of order and ValueError when ``credentials`` are for
        another hash than this exchange's: both are caller bugs, not client errors.
        """
        if self._state != _GOT_CLIENT_FIRST:
            raise RuntimeError("server_first() must follow a successful client_first()")
        if credentials is None:
            # Keyed by mechanism and name; truncated to the length real salts have.
            label = b"xmppd scram unknown-user salt\x00" + self.hash_name.encode() + b"\x00"
            salt = hmac.digest(self._secret, label + self.username.encode("utf-8"), "sha256")
            salt = salt[:SALT_BYTES]
            iterations = self._unknown_iterations
            size = _DIGEST_SIZES[self.hash_name]
            stored_key, server_key = secrets.token_bytes(size), secrets.token_bytes(size)
            self._unknown_user = True
        else:
            if credentials.hash_name != self.hash_name:
                raise ValueError(f"credentials are for {credentials.hash_name}, exchange is {self.hash_name}")
            salt, iterations = credentials.salt, credentials.iterations
            stored_key, server_key = credentials.stored_key, credentials.server_key
        self._stored_key = stored_key
        self._server_key = server_key
        # server-first-message = nonce "," salt "," iteration-count (RFC 5802 §7); the nonce is
        # the client's followed by ours (§5.1 "r").
        encoded_salt = base64.b64encode(salt).decode("ascii")
        self._server_first = f"r={self._client_nonce}{self._server_nonce},s={encoded_salt},i={iterations}"
        self._state = _SENT_SERVER_FIRST
        return self._server_first.encode("ascii")

    def client_final(self, message: bytes) -> bytes:
        """Verify client-final-message (RFC 5802 §5); returns server-final-message ``v=...``."""
        self._expect(_SENT_SERVER_FIRST)
        try:
            reply = self._client_final(message)
        except SaslFailure:
            self._state = _FAILED
            raise
        self._state = _DONE
        return reply

    def _client_final(self, message: bytes) -> bytes:
        text = _decode_utf8(message)
        if "\x00" in text:
            raise SaslFailure("malformed-request", "NUL in message")
        # client-final-message = channel-binding "," nonce ["," extensions] "," proof
        without_proof, sep, proof_attribute = text.rpartition(",")
        if not sep or not proof_attribute.startswith("p="):
            raise SaslFailure("malformed-request", "missing proof")
        attributes = without_proof.split(",")
        if len(attributes) < 2 or not attributes[0].startswith("c=") or not attributes[1].startswith("r="):
            raise SaslFailure("malformed-request", "expected c= and r= attributes")
        for extension in attributes[2:]:
            _check_extension(extension)
        if len(attributes[0]) == 2 or len(proof_attribute) == 2:
            raise SaslFailure("malformed-request", "empty c= or p= attribute")
        channel_binding = _b64decode(attributes[0][2:])
        proof = _b64decode(proof_attribute[2:])

        # RFC 5802 §5.1 "r": the server MUST check that the nonce is the one it sent.
        if attributes[1][2:] != self._client_nonce + self._server_nonce:
            raise SaslFailure("not-authorized", _AUTH_FAILED)
        # RFC 5802 §5.1 "c": without channel binding data this is exactly the GS2 header of the
        # client-first-message, so a flag changed in transit ("y" -> "n") is detected.
        if not hmac.compare_digest(channel_binding, self._gs2_header):
            raise SaslFailure("not-authorized", _AUTH_FAILED)

        # RFC 5802 §3: AuthMessage = client-first-message-bare "," server-first-message ","
        # client-final-message-without-proof, taken exactly as they were sent.
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac.digest(self._stored_key, auth_message, self.hash_name)
        if len(proof) != len(client_signature):
            raise SaslFailure("not-authorized", _AUTH_FAILED)
        # ClientKey = ClientProof XOR ClientSignature; the client knows the password when
        # H(ClientKey) == StoredKey. Compared in constant time.
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        verified = hmac.compare_digest(hashlib.new(self.hash_name, client_key).digest(), self._stored_key)
        if not verified or self._unknown_user:
            raise SaslFailure("not-authorized", _AUTH_FAILED)
        # server-final-message = verifier: "v=" base64(ServerSignature), proving to the client
        # that we hold ServerKey (mutual authentication, RFC 5802 §3).
        server_signature = hmac.digest(self._server_key, auth_message, self.hash_name)
        return b"v=" + base64.b64encode(server_signature)

    def _expect(self, state: int) -> None:
        if self._state != state:
            # A client message out of sequence (or after a failure) ends the exchange.
            self._state = _FAILED
            raise SaslFailure("malformed-request", "unexpected SCRAM message")

"""SASL: SCRAM-SHA-1/-256 (RFC 5802, RFC 7677) and PLAIN (RFC 4616), server side."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.model import ScramCredentials
from xmppd import sasl as sasl_module
from xmppd.sasl import (
    MECHANISM_HASHES,
    SaslFailure,
    ScramServer,
    decode_sasl_data,
    derive_credentials,
    encode_sasl_data,
    parse_plain,
    prepare_password,
    verify_plain,
)


# --- published test vectors -----------------------------------------------------------------------
# RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256): user "user", password "pencil".
class Vector(NamedTuple):
    hash_name: str
    salt: str
    cnonce: str
    snonce: str
    proof: str
    signature: str


RFC_VECTORS = [
    pytest.param(
        Vector(
            "sha1",
            "QSXCR+Q6sek8bf92",
            "fyko+d2lbbFgONRv9qkxdawL",
            "3rfcNHYJY1ZVvWVs7j",
            "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        id="RFC5802-SHA-1",
    ),
    pytest.param(
        Vector(
            "sha256",
            "W22ZaJ0SNY7soEsUEjb6gQ==",
            "rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
        id="RFC7677-SHA-256",
    ),
]


@pytest.mark.parametrize("vector", RFC_VECTORS)
def test_rfc_vector(vector: Vector) -> None:
    hash_name, salt, cnonce, snonce, proof, signature = vector
    credentials = derive_credentials("pencil", hash_name, 4096, base64.b64decode(salt))
    server = ScramServer(hash_name, nonce=snonce)
    assert server.client_first(f"n,,n=user,r={cnonce}".encode()) == "user"
    assert server.authzid is None
    assert server.server_first(credentials) == f"r={cnonce}{snonce},s={salt},i=4096".encode()
    assert not server.done
    final = f"c=biws,r={cnonce}{snonce},p={proof}".encode()
    assert server.client_final(final) == f"v={signature}".encode()
    assert server.done


@pytest.mark.parametrize("vector", RFC_VECTORS)
def test_rfc_vector_stored_keys_match_an_independent_derivation(vector: Vector) -> None:
    hash_name, salt = vector.hash_name, base64.b64decode(vector.salt)
    credentials = derive_credentials("pencil", hash_name, 4096, salt)
    salted = _hi(hash_name, b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    assert credentials.stored_key == hashlib.new(hash_name, client_key).digest()
    assert credentials.server_key == hmac.new(salted, b"Server Key", hash_name).digest()
    assert (credentials.hash_name, credentials.iterations) == (hash_name, 4096)


# --- an independent client ------------------------------------------------------------------------


def _hi(hash_name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 §2.2 Hi(), written out from the definition (deliberately not pbkdf2_hmac)."""
    u = hmac.new(password, salt + b"\x00\x00\x00\x01", hash_name).digest()
    result = int.from_bytes(u, "big")
    for _ in range(iterations - 1):
        u = hmac.new(password, u, hash_name).digest()
        result ^= int.from_bytes(u, "big")
    return result.to_bytes(len(u), "big")


class Client:
    """Just enough of a SCRAM client (RFC 5802 §3, §7) to drive the server."""

    def __init__(self, hash_name: str, username: str, password: str, gs2: str = "n,,") -> None:
        self.hash_name = hash_name
        self.password = password
        self.gs2 = gs2
        self.nonce = secrets.token_urlsafe(16)
        escaped = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={escaped},r={self.nonce}"
        self.expected_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.first_bare).encode()

    def final(self, server_first: bytes, *, tamper: Callable[[str], str] | None = None) -> bytes:
        fields = dict(item.split("=", 1) for item in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce)
        salted = _hi(self.hash_name, self.password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
        without_proof = f"c={base64.b64encode(self.gs2.encode()).decode()},r={fields['r']}"
        if tamper is not None:
            without_proof = tamper(without_proof)
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        client_key = hmac.new(salted, b"Client Key", self.hash_name).digest()
        stored_key = hashlib.new(self.hash_name, client_key).digest()
        signature = hmac.new(stored_key, auth_message, self.hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash_name).digest()
        self.expected_signature = hmac.new(server_key, auth_message, self.hash_name).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        return server_final == b"v=" + base64.b64encode(self.expected_signature)


HASHES = ["sha1", "sha256"]


@pytest.fixture(scope="module")
def credentials() -> dict[str, ScramCredentials]:
    return {name: derive_credentials("correct horse", name) for name in HASHES}


@pytest.mark.parametrize("hash_name", HASHES)
def test_full_exchange(hash_name: str, credentials: dict[str, ScramCredentials]) -> None:
    client = Client(hash_name, "Juliet", "correct horse")
    server = ScramServer(hash_name)
    # The username comes back prepared (UsernameCaseMapped), ready for the credentials lookup.
    assert server.client_first(client.first()) == "juliet"
    assert server.username == "juliet"
    reply = server.client_final(client.final(server.server_first(credentials[hash_name])))
    assert client.verify(reply)  # mutual authentication
    assert server.done


@pytest.mark.parametrize("hash_name", HASHES)
def test_no_pbkdf2_during_a_scram_login(
    hash_name: str, credentials: dict[str, ScramCredentials], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("PBKDF2 ran during a SCRAM login")

    client = Client(hash_name, "juliet", "correct horse")
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", forbidden)
    server = ScramServer(hash_name)
    server.client_first(client.first())
    assert client.verify(server.client_final(client.final(server.server_first(credentials[hash_name]))))


@pytest.mark.parametrize("hash_name", HASHES)
def test_wrong_password(hash_name: str, credentials: dict[str, ScramCredentials]) -> None:
    client = Client(hash_name, "juliet", "wrong horse")
    server = ScramServer(hash_name)
    server.client_first(client.first())
    final = client.final(server.server_first(credentials[hash_name]))
    with pytest.raises(SaslFailure) as failure:
        server.client_final(final)
    assert failure.value.condition == "not-authorized"
    assert not server.done


def test_slixmpp_client_interoperates(credentials: dict[str, ScramCredentials]) -> None:
    # A client we did not write: slixmpp's SCRAM (it sends "y": it supports channel binding but
    # sees no -PLUS offer).
    choose = pytest.importorskip("slixmpp.util.sasl.client").choose

    def creds(required: set[str], optional: set[str]) -> dict[str, bytes]:
        values = {"username": b"juliet", "password": b"correct horse", "authzid": b"", "channel_binding": b""}
        return {key: values[key] for key in required | optional if key in values}

    def security(values: set[str]) -> dict[str, object]:
        return {
            "encrypted": True,
            "unencrypted_scram": False,
            "tls_version": "TLSv1.3",
            "binding_proposed": False,
            "encrypted_plain": True,
            "unencrypted_plain": False,
        }

    for mechanism, hash_name in MECHANISM_HASHES.items():
        client = choose([mechanism], creds, security)
        server = ScramServer(hash_name)
        assert server.client_first(client.process()) == "juliet"
        reply = server.client_final(client.process(server.server_first(credentials[hash_name])))
        assert client.process(reply) == b""  # slixmpp raises if the server signature is wrong


# --- unknown users --------------------------------------------------------------------------------


def _server_first_fields(message: bytes) -> dict[str, str]:
    return dict(item.split("=", 1) for item in message.decode().split(","))


def test_unknown_user_gets_a_stable_plausible_salt(credentials: dict[str, ScramCredentials]) -> None:
    secret = b"server secret"
    answers = []
    for _ in range(2):
        server = ScramServer("sha256", unknown_user_secret=secret)
        server.client_first(b"n,,n=nobody,r=abc")
        answers.append(_server_first_fields(server.server_first(None)))
    assert answers[0]["s"] == answers[1]["s"]  # probing twice shows nothing
    assert answers[0]["i"] == "4096"
    assert len(base64.b64decode(answers[0]["s"])) == len(credentials["sha256"].salt)
    # ... and the salt depends on the name and the secret, like a real per-user salt.
    other = ScramServer("sha256", unknown_user_secret=secret)
    other.client_first(b"n,,n=somebody,r=abc")
    assert _server_first_fields(other.server_first(None))["s"] != answers[0]["s"]
    rekeyed = ScramServer("sha256", unknown_user_secret=b"another secret")
    rekeyed.client_first(b"n,,n=nobody,r=abc")
    assert _server_first_fields(rekeyed.server_first(None))["s"] != answers[0]["s"]
    # Without an explicit secret the process-wide one is used: still stable.
    defaults = []
    for _ in range(2):
        server = ScramServer("sha1")
        server.client_first(b"n,,n=nobody,r=abc")
        defaults.append(_server_first_fields(server.server_first(None))["s"])
    assert defaults[0] == defaults[1]


def test_unknown_user_iterations_follow_the_configuration() -> None:
    server = ScramServer("sha256", unknown_user_iterations=10000)
    server.client_first(b"n,,n=nobody,r=abc")
    assert _server_first_fields(server.server_first(None))["i"] == "10000"


@pytest.mark.parametrize("hash_name", HASHES)
def test_unknown_user_fails_like_a_wrong_password(
    hash_name: str, credentials: dict[str, ScramCredentials]
) -> None:
    client = Client(hash_name, "nobody", "correct horse")
    server = ScramServer(hash_name)
    server.client_first(client.first())
    final = client.final(server.server_first(None))
    with pytest.raises(SaslFailure) as unknown:
        server.client_final(final)

    client = Client(hash_name, "juliet", "wrong horse")
    server = ScramServer(hash_name)
    server.client_first(client.first())
    final = client.final(server.server_first(credentials[hash_name]))
    with pytest.raises(SaslFailure) as wrong:
        server.client_final(final)

    assert (unknown.value.condition, unknown.value.text) == (wrong.value.condition, wrong.value.text)
    assert unknown.value.condition == "not-authorized"


# --- client-first-message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "condition"),
    [
        (b"", "malformed-request"),
        (b"n", "malformed-request"),
        (b"n,", "malformed-request"),
        (b"n,,", "malformed-request"),
        (b"x,,n=user,r=abc", "malformed-request"),  # unknown cbind flag
        (b"F,n,,n=user,r=abc", "malformed-request"),  # RFC 5801 non-standard flag: not SCRAM
        (b"p=tls-exporter,,n=user,r=abc", "malformed-request"),  # channel binding, not offered
        (b"p=tls-unique,,n=user,r=abc", "malformed-request"),
        (b"n,b=user,n=user,r=abc", "malformed-request"),  # authzid without "a="
        (b"n,a=,n=user,r=abc", "malformed-request"),  # empty authzid
        (b"n,,r=abc", "malformed-request"),  # no username
        (b"n,,n=user", "malformed-request"),  # no nonce
        (b"n,,r=abc,n=user", "malformed-request"),  # wrong order (RFC 5802 §5.1: fixed order)
        (b"n,,n=,r=abc", "malformed-request"),  # empty username
        (b"n,,n=user,r=", "malformed-request"),  # empty nonce
        (b"n,,n=user,r=a b", "malformed-request"),  # nonce not printable
        (b"n,,n=user,r=ab\x7f", "malformed-request"),
        (b"n,,n=us=2Xer,r=abc", "malformed-request"),  # '=' not followed by 2C or 3D
        (b"n,,n=user=,r=abc", "malformed-request"),
        (b"n,,n=us\x00er,r=abc", "malformed-request"),
        (b"n,,m=ext,n=user,r=abc", "malformed-request"),  # reserved mandatory extension
        (b"n,,n=user,r=abc,1=x", "malformed-request"),  # extension not ALPHA "=" value
        (b"n,,n=user,r=abc,ext", "malformed-request"),
        ("n,,n=user,r=abc,\N{LATIN CAPITAL LETTER I WITH DOT ABOVE}=x".encode(), "malformed-request"),
        (b"n,,n=\xff\xfe,r=abc", "incorrect-encoding"),  # not UTF-8
        (b"n,,n=\xe2\x99\x9a,r=abc", "not-authorized"),  # U+265A: not a possible username
        (b"n,,n=foo bar,r=abc", "not-authorized"),
        # The authcid is a localpart (RFC 6120 §6.3.7), so RFC 7622 §3.3.1 applies too.
        (b"n,,n=juliet@example.com,r=abc", "not-authorized"),
        (b"n,,n=a/b,r=abc", "not-authorized"),
        (b"n,,n=" + b"a" * 1024 + b",r=abc", "not-authorized"),
    ],
)
def test_malformed_client_first(message: bytes, condition: str) -> None:
    server = ScramServer("sha256")
    with pytest.raises(SaslFailure) as failure:
        server.client_first(message)
    assert failure.value.condition == condition
    # The exchange is over: anything else the client sends fails too.
    with pytest.raises(SaslFailure):
        server.client_first(b"n,,n=user,r=abc")


@pytest.mark.parametrize(
    ("message", "username", "authzid"),
    [
        (b"n,,n=user,r=abc", "user", None),
        (b"y,,n=user,r=abc", "user", None),  # client could bind, sees no -PLUS: fine for us
        (b"n,,n=User,r=abc", "user", None),
        (b"n,,n=a=2Cb=3Dc,r=abc", "a,b=c", None),  # RFC 5802 §5.1 escapes
        (b"n,,n=a=2cb=3dc,r=abc", "a,b=c", None),  # ABNF literals are case-insensitive
        (b"n,a=juliet@example.com,n=juliet,r=abc", "juliet", "juliet@example.com"),
        (b"n,a=odd=2Cname,n=juliet,r=abc", "juliet", "odd,name"),
        (b"n,,n=user,r=abc,x=ignored,y=too", "user", None),  # optional extensions are skipped
        ("n,,n=\N{GREEK CAPITAL LETTER ETA}ra,r=abc".encode(), "\N{GREEK SMALL LETTER ETA}ra", None),
    ],
)
def test_client_first_accepted(message: bytes, username: str, authzid: str | None) -> None:
    server = ScramServer("sha256")
    assert server.client_first(message) == username
    assert server.username == username
    assert server.authzid == authzid


def test_y_flag_fails_when_channel_binding_is_offered() -> None:
    # RFC 5802 §6: "y" while we do offer -PLUS means the offer was tampered with.
    server = ScramServer("sha256", channel_binding_offered=True)
    with pytest.raises(SaslFailure) as failure:
        server.client_first(b"y,,n=user,r=abc")
    assert failure.value.condition == "not-authorized"
    assert ScramServer("sha256", channel_binding_offered=True).client_first(b"n,,n=user,r=abc") == "user"


def test_authzid_and_extensions_survive_into_the_proof(credentials: dict[str, ScramCredentials]) -> None:
    client = Client("sha256", "juliet", "correct horse", gs2="n,a=juliet@example.com,")
    server = ScramServer("sha256")
    server.client_first(client.first())
    assert server.authzid == "juliet@example.com"
    first = server.server_first(credentials["sha256"])
    reply = server.client_final(client.final(first, tamper=lambda text: text + ",x=extension"))
    assert client.verify(reply)


# --- client-final-message -------------------------------------------------------------------------


def _started(hash_name: str = "sha256", password: str = "correct horse") -> tuple[ScramServer, Client, bytes]:
    creds = derive_credentials("correct horse", hash_name, salt=b"0123456789abcdef")
    client = Client(hash_name, "juliet", password)
    server = ScramServer(hash_name, nonce="servernonce")
    server.client_first(client.first())
    return server, client, server.server_first(creds)


def _fail_final(server: ScramServer, message: bytes) -> SaslFailure:
    with pytest.raises(SaslFailure) as failure:
        server.client_final(message)
    assert not server.done
    return failure.value


def test_client_final_proof_from_an_independent_client() -> None:
    server, client, first = _started()
    assert client.verify(server.client_final(client.final(first)))


@pytest.mark.parametrize(
    ("mangle", "condition"),
    [
        (lambda m: m.rsplit(b",p=", 1)[0], "malformed-request"),  # no proof
        (lambda m: m.replace(b"c=biws,", b""), "malformed-request"),  # no channel binding
        (lambda m: m.replace(b",r=", b",x="), "malformed-request"),  # no nonce
        (lambda m: m.replace(b"c=biws", b"c="), "malformed-request"),
        (lambda m: m.rsplit(b",p=", 1)[0] + b",p=", "malformed-request"),
        (lambda m: m + b",x=trailing", "malformed-request"),  # proof must come last
        (lambda m: m.replace(b"c=biws", b"c=bi*s"), "incorrect-encoding"),
        (lambda m: m.replace(b"c=biws", b"c=biw"), "incorrect-encoding"),
        (lambda m: m.replace(b"c=biws", b"c=biws=="), "incorrect-encoding"),
        (lambda m: m.rsplit(b",p=", 1)[0] + b",p=%%%%", "incorrect-encoding"),
        (lambda m: m + b"\xff", "incorrect-encoding"),
        (lambda m: m.replace(b"servernonce", b"servernoncf"), "not-authorized"),  # tampered nonce
        (lambda m: m.replace(b"servernonce", b"servernonce2"), "not-authorized"),
        (lambda m: m.replace(b"c=biws", b"c=eSws"), "not-authorized"),  # "y,," != our "n,,"
        (lambda m: m.rsplit(b",p=", 1)[0] + b",p=AAAA", "not-authorized"),  # proof too short
        (lambda m: m.replace(b"c=biws", b"c=biws\x00"), "malformed-request"),
    ],
)
def test_malformed_client_final(mangle: Callable[[bytes], bytes], condition: str) -> None:
    server, client, first = _started()
    assert _fail_final(server, mangle(client.final(first))).condition == condition


def test_channel_binding_must_echo_the_gs2_header() -> None:
    # The flag is covered by c=: a "y" turned into "n" on the way shows up here.
    creds = derive_credentials("correct horse", "sha256")
    client = Client("sha256", "juliet", "correct horse", gs2="y,,")
    server = ScramServer("sha256")
    server.client_first(client.first())
    first = server.server_first(creds)
    tampered = client.final(first, tamper=lambda text: text.replace("c=eSws", "c=biws"))
    assert _fail_final(server, tampered).condition == "not-authorized"


def test_a_proof_is_bound_to_its_exchange() -> None:
    # Replaying a valid client-final in a new exchange (new server nonce) fails.
    server, client, first = _started()
    final = client.final(first)
    replay = ScramServer("sha256", nonce="othernonce")
    replay.client_first(client.first())
    replay.server_first(derive_credentials("correct horse", "sha256", salt=b"0123456789abcdef"))
    assert _fail_final(replay, final).condition == "not-authorized"
    assert client.verify(server.client_final(final))


def test_a_forged_proof_with_the_right_nonce_fails() -> None:
    server, client, first = _started()
    final = client.final(first)
    forged = final.rsplit(b",p=", 1)[0] + b",p=" + base64.b64encode(bytes(32))
    assert _fail_final(server, forged).condition == "not-authorized"


# --- sequencing -----------------------------------------------------------------------------------


def test_out_of_order_client_messages_fail() -> None:
    server = ScramServer("sha256")
    with pytest.raises(SaslFailure) as failure:
        server.client_final(b"c=biws,r=abc,p=AAAA")
    assert failure.value.condition == "malformed-request"

    server, client, first = _started()
    with pytest.raises(SaslFailure):
        server.client_first(client.first())  # a second client-first
    with pytest.raises(SaslFailure):
        server.client_final(client.final(first))  # the exchange already failed

    server, client, first = _started()
    final = client.final(first)
    server.client_final(final)
    with pytest.raises(SaslFailure):
        server.client_final(final)  # nothing follows success


def test_caller_bugs_raise_programming_errors() -> None:
    with pytest.raises(RuntimeError):
        ScramServer("sha256").server_first(None)
    server = ScramServer("sha256")
    server.client_first(b"n,,n=user,r=abc")
    with pytest.raises(ValueError, match="sha1"):
        server.server_first(derive_credentials("pencil", "sha1"))
    with pytest.raises(ValueError):
        ScramServer("md5")
    with pytest.raises(ValueError):
        ScramServer("sha256", nonce="has,comma")
    with pytest.raises(ValueError):
        ScramServer("sha256", nonce="")


def test_default_nonces_are_fresh() -> None:
    nonces = set()
    for _ in range(3):
        server = ScramServer("sha256")
        server.client_first(b"n,,n=user,r=abc")
        nonces.add(_server_first_fields(server.server_first(None))["r"])
    assert len(nonces) == 3
    assert all(nonce.startswith("abc") and len(nonce) >= 3 + 24 for nonce in nonces)


# --- fuzz: any input parses or raises SaslFailure -------------------------------------------------


@given(st.binary(max_size=80))
def test_client_first_fuzz(message: bytes) -> None:
    server = ScramServer("sha256")
    try:
        server.client_first(message)
    except SaslFailure:
        return
    server.server_first(None)


@given(st.binary(max_size=80) | st.text(alphabet="cpr=,biwsA+/0", max_size=60).map(str.encode))
def test_client_final_fuzz(message: bytes) -> None:
    server = ScramServer("sha1", nonce="s")
    server.client_first(b"n,,n=user,r=c")
    server.server_first(None)
    with pytest.raises(SaslFailure):  # nothing can succeed for an unknown user
        server.client_final(message)


@given(st.binary(max_size=60))
def test_parse_plain_fuzz(message: bytes) -> None:
    try:
        authzid, authcid, password = parse_plain(message)
    except SaslFailure:
        return
    assert authcid
    assert password
    assert authzid is None or authzid


# --- credentials and passwords --------------------------------------------------------------------


def test_derive_credentials() -> None:
    first = derive_credentials("pencil", "sha256")
    second = derive_credentials("pencil", "sha256")
    assert len(first.salt) == 16
    assert first.salt != second.salt  # random salt per call
    assert first.stored_key != second.stored_key
    assert first.iterations == 4096
    assert len(first.stored_key) == len(first.server_key) == 32
    assert len(derive_credentials("pencil", "sha1").stored_key) == 20
    assert derive_credentials("pencil", "sha256", 10000).iterations == 10000
    fixed = derive_credentials("pencil", "sha256", salt=b"salt")
    assert fixed == derive_credentials("pencil", "sha256", salt=b"salt")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hash_name": "md5"},
        {"hash_name": "SCRAM-SHA-256"},
        {"iterations": 4095},
        {"iterations": 0},
        {"salt": b""},
    ],
)
def test_derive_credentials_rejects(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"password": "pencil", "hash_name": "sha256", **kwargs}
    with pytest.raises(ValueError):
        derive_credentials(**arguments)


def test_derive_credentials_prepares_the_password() -> None:
    # RFC 8265 §4.2: OpaqueString maps non-ASCII spaces to U+0020 and normalises to NFC, so both
    # spellings are one password.
    def derive(password: str) -> ScramCredentials:
        return derive_credentials(password, "sha256", salt=b"0123456789abcdef")

    assert derive("a\u00a0b") == derive("a b")
    assert derive("e\u0301") == derive("\u00e9")


def test_prepare_password() -> None:
    assert prepare_password("Correct Horse") == "Correct Horse"  # case kept
    assert prepare_password("pass\u3000word") == "pass word"
    for bad in ("", "secret\x00", "tab\there"):
        with pytest.raises(ValueError) as error:
            prepare_password(bad)
        # The message explains the rule and never echoes the password.
        assert bad not in str(error.value) or not bad
        assert error.value.__cause__ is None
        assert error.value.__suppress_context__


def test_verify_plain() -> None:
    for hash_name in HASHES:
        creds = derive_credentials("correct horse", hash_name)
        assert verify_plain("correct horse", creds)
        assert verify_plain("correct\u00a0horse", creds)  # prepared the same way
        assert not verify_plain("Correct horse", creds)
        assert not verify_plain("correct horse ", creds)
        assert not verify_plain("bad\x00", creds)  # unpreparable: simply wrong


def test_verify_plain_against_the_rfc_vector() -> None:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salted = _hi("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    creds = ScramCredentials("sha256", salt, 4096, stored, b"unused")
    assert verify_plain("pencil", creds)
    assert not verify_plain("pencil2", creds)


# --- PLAIN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # RFC 4616 §4 examples
        (b"\x00tim\x00tanstaaftanstaaf", (None, "tim", "tanstaaftanstaaf")),
        (b"Ursel\x00Kurt\x00xipj3plmq", ("Ursel", "kurt", "xipj3plmq")),  # authcid prepared
        (b"juliet@example.com\x00juliet\x00p", ("juliet@example.com", "juliet", "p")),
        (
            "\x00\N{GREEK CAPITAL LETTER ETA}ra\x00pässwörd".encode(),
            (None, "\N{GREEK SMALL LETTER ETA}ra", "pässwörd"),
        ),
        (b"\x00user\x00pass word ", (None, "user", "pass word ")),  # password untouched
    ],
)
def test_parse_plain(message: bytes, expected: tuple[str | None, str, str]) -> None:
    assert parse_plain(message) == expected


@pytest.mark.parametrize(
    ("message", "condition"),
    [
        (b"", "malformed-request"),
        (b"userpass", "malformed-request"),  # no NUL
        (b"user\x00pass", "malformed-request"),  # one NUL
        (b"\x00user\x00pass\x00", "malformed-request"),  # three NULs
        (b"\x00\x00user\x00pass", "malformed-request"),
        (b"\x00\x00pass", "malformed-request"),  # empty authcid
        (b"\x00user\x00", "malformed-request"),  # empty password
        (b"\x00\x00", "malformed-request"),
        (b"\x00us\xffer\x00pass", "incorrect-encoding"),
        (b"\x00user\x00pa\xc3", "incorrect-encoding"),
        (b"\xff\x00user\x00pass", "incorrect-encoding"),
        (b"\x00foo bar\x00pass", "not-authorized"),  # cannot be a username
        (b"\x00juliet@example.com\x00pass", "not-authorized"),  # a JID is not a localpart
    ],
)
def test_parse_plain_rejects(message: bytes, condition: str) -> None:
    with pytest.raises(SaslFailure) as failure:
        parse_plain(message)
    assert failure.value.condition == condition


# --- transport encoding and failures --------------------------------------------------------------


def test_sasl_data_encoding() -> None:
    # RFC 6120 §6.4.2: "=" is a present but empty payload.
    assert decode_sasl_data("=") == b""
    assert decode_sasl_data("") == b""
    assert decode_sasl_data("biws") == b"n,,"
    assert encode_sasl_data(b"") == "="
    assert encode_sasl_data(b"n,,") == "biws"
    for bad in ("biw", "bi ws", "biws\n", "b!ws", "YR==", "biws==", "é"):
        with pytest.raises(SaslFailure) as failure:
            decode_sasl_data(bad)
        assert failure.value.condition == "incorrect-encoding"


def test_sasl_failure() -> None:
    failure = SaslFailure("not-authorized", "authentication failed")
    assert (failure.condition, failure.text) == ("not-authorized", "authentication failed")
    assert SaslFailure("aborted").text is None
    with pytest.raises(ValueError):
        SaslFailure("no-such-condition")


def test_mechanism_table() -> None:
    assert MECHANISM_HASHES == {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
    assert next(iter(MECHANISM_HASHES)) == "SCRAM-SHA-256"  # strongest first


def test_module_does_no_io() -> None:
    source = Path(sasl_module.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "ssl", "selectors", "os", "io", "logging"}

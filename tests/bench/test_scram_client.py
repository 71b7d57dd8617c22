"""The load generator's SCRAM client against the published test vectors (not timed)."""

import pytest

from bench.scram import KeyCache, ScramClient, ScramError

# RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256).
VECTORS = [
    (
        "SCRAM-SHA-1",
        "fyko+d2lbbFgONRv9qkxdawL",
        "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    ),
    (
        "SCRAM-SHA-256",
        "rOprNGfwEbeRWgbNEkqO",
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    ),
]


@pytest.mark.parametrize(("mech", "cnonce", "server_first", "client_final", "server_final"), VECTORS)
def test_rfc_vectors(mech: str, cnonce: str, server_first: str, client_final: str, server_final: str) -> None:
    client = ScramClient(mech, "user", "pencil", nonce=cnonce)
    assert client.first() == f"n,,n=user,r={cnonce}"
    assert client.final(server_first) == client_final
    client.verify(server_final)


def test_bad_server_signature_is_refused() -> None:
    mech, cnonce, server_first, _, _ = VECTORS[1]
    client = ScramClient(mech, "user", "pencil", nonce=cnonce)
    client.final(server_first)
    with pytest.raises(ScramError):
        client.verify("v=AAAA")


def test_nonce_must_extend_client_nonce() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce="abc")
    with pytest.raises(ScramError):
        client.final("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096")


def test_salted_password_is_computed_once_per_salt() -> None:
    cache = KeyCache()
    _, cnonce, server_first, client_final, _ = VECTORS[1]
    for _ in range(3):
        client = ScramClient("SCRAM-SHA-256", "user", "pencil", cache, cnonce)
        assert client.final(server_first) == client_final
    assert (cache.misses, cache.hits) == (1, 2)

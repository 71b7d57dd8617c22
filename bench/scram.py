"""Client side of SCRAM (RFC 5802; SHA-256 per RFC 7677), pure functions plus a key cache.

The cache matters for a load generator: PBKDF2 with 4096+ iterations costs milliseconds, so a client
that recomputes SaltedPassword for every login would measure itself instead of the server. Keys are
cached per (hash, password, salt, iterations), which is exactly what SaltedPassword depends on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
GS2_HEADER = "n,,"  # no channel binding, no authzid


@dataclass(frozen=True)
class ScramKeys:
    client_key: bytes
    stored_key: bytes
    server_key: bytes


def derive_keys(hash_name: str, password: str, salt: bytes, iterations: int) -> ScramKeys:
    """RFC 5802 §3: SaltedPassword and the three keys derived from it."""
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramKeys(
        client_key=client_key,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


# Where the load generator and the provisioning scripts keep the cache: in the run's output directory
# (bench/lib.sh exports BENCH_OUT; bench/out by default, from the repository root).
DEFAULT_KEY_CACHE = Path(os.environ.get("BENCH_OUT", "bench/out")) / "scram-keys.jsonl"


@dataclass
class KeyCache:
    """Memoises derive_keys; hits/misses are reported so a run can show PBKDF2 stayed off the path."""

    entries: dict[tuple[str, str, bytes, int], ScramKeys] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def get(self, hash_name: str, password: str, salt: bytes, iterations: int) -> ScramKeys:
        key = (hash_name, password, salt, iterations)
        keys = self.entries.get(key)
        if keys is None:
            self.misses += 1
            keys = self.entries[key] = derive_keys(hash_name, password, salt, iterations)
        else:
            self.hits += 1
        return keys

    # Each scenario runs in a new process, so the cache lives in a file between them (and between
    # runs): PBKDF2 for 10,000 accounts is then paid once per machine, never inside a measurement.
    def load(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            h, pw, salt, it, ck, sk, svk = json.loads(line)
            keys = ScramKeys(bytes.fromhex(ck), bytes.fromhex(sk), bytes.fromhex(svk))
            self.entries[(h, pw, bytes.fromhex(salt), it)] = keys

    def save(self, path: Path) -> None:
        lines = [
            json.dumps([h, pw, salt.hex(), it, k.client_key.hex(), k.stored_key.hex(), k.server_key.hex()])
            for (h, pw, salt, it), k in self.entries.items()
        ]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)


class ScramError(Exception):
    pass


def saslname(username: str) -> str:
    """RFC 5802 §5.1: ',' and '=' are escaped in the username."""
    return username.replace("=", "=3D").replace(",", "=2C")


def parse_attributes(message: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part!r}")
        attrs[part[0]] = part[2:]
    return attrs


class ScramClient:
    """One SCRAM exchange: first() -> final(server_first) -> verify(server_final)."""

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        cache: KeyCache | None = None,
        nonce: str | None = None,
    ) -> None:
        if mechanism not in HASHES:
            raise ScramError(f"unsupported mechanism {mechanism}")
        self.hash_name = HASHES[mechanism]
        self.password = password
        self.cache = cache if cache is not None else KeyCache()
        self.nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
        self.client_first_bare = f"n={saslname(username)},r={self.nonce}"
        self._expected_signature = b""

    def first(self) -> str:
        return GS2_HEADER + self.client_first_bare

    def final(self, server_first: str) -> str:
        attrs = parse_attributes(server_first)
        if "m" in attrs:
            raise ScramError("mandatory extension not supported")
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ScramError("server nonce does not extend the client nonce")
        keys = self.cache.get(self.hash_name, self.password, salt, iterations)
        channel = base64.b64encode(GS2_HEADER.encode()).decode()
        without_proof = f"c={channel},r={nonce}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(keys.stored_key, auth_message, self.hash_name)
        proof = bytes(a ^ b for a, b in zip(keys.client_key, signature, strict=True))
        self._expected_signature = hmac.digest(keys.server_key, auth_message, self.hash_name)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final: str) -> None:
        """Mutual authentication: a server that does not know the keys cannot produce v=."""
        attrs = parse_attributes(server_final)
        if "e" in attrs:
            raise ScramError(f"server error {attrs['e']}")
        if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self._expected_signature):
            raise ScramError("server signature mismatch")

"""Records that cross the storage boundary.

They are plain frozen values so that the protocol core can use them without knowing which
backend produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Hash names as used by SCRAM mechanism names and hashlib: SCRAM-SHA-1 -> "sha1", SCRAM-SHA-256 -> "sha256".
SCRAM_HASHES: tuple[str, ...] = ("sha256", "sha1")


@dataclass(frozen=True, slots=True)
class ScramCredentials:
    """What a server keeps of a password (RFC 5802 §3): never the password itself."""

    hash_name: str  # "sha1" | "sha256"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


SUBSCRIPTIONS = ("none", "to", "from", "both")


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One contact in a user's roster, with the subscription state of RFC 6121 Appendix A.

    `ask` is True while our outbound subscription request is pending ("Pending Out"),
    `pending_in` while the contact's request to us awaits an answer ("Pending In"),
    `approved` records a pre-approval (RFC 6121 §3.4). An item that exists only because of a
    pending inbound request is not shown to the client (`listed` is False).
    """

    jid: str  # bare JID of the contact, normalised
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    pending_in: bool = False
    approved: bool = False
    groups: tuple[str, ...] = field(default=())
    listed: bool = True


@dataclass(frozen=True, slots=True)
class OfflineMessage:
    """A message stored for an account with no available resource (XEP-0160).

    `id` grows with arrival order and is never reused; `stanza` is the serialised XML.
    """

    id: int
    stanza: str

"""Account operations shared by the CLI and in-band registration: passwords become SCRAM keys
(one set per supported hash) before they reach storage; the password itself is never kept."""

from __future__ import annotations

import asyncio

from storage import AccountStore
from storage.model import SCRAM_HASHES, ScramCredentials
from xmppd.jid import JID
from xmppd.sasl import derive_credentials, prepare_password


def _derive_all(password: str, iterations: int) -> list[ScramCredentials]:
    prepared = prepare_password(password)
    return [derive_credentials(prepared, hash_name, iterations) for hash_name in SCRAM_HASHES]


async def credentials_for(password: str, iterations: int) -> list[ScramCredentials]:
    """PBKDF2 costs milliseconds per hash: done in a thread, never on the event loop."""
    return await asyncio.to_thread(_derive_all, password, iterations)


async def create_account(accounts: AccountStore, account: JID, password: str, iterations: int = 4096) -> bool:
    """False when the account exists already. ValueError for a password PRECIS refuses."""
    assert account.local is not None
    credentials = await credentials_for(password, iterations)
    return await accounts.create(account.domain, account.local, credentials)


async def set_password(accounts: AccountStore, account: JID, password: str, iterations: int = 4096) -> bool:
    """False when there is no such account."""
    assert account.local is not None
    credentials = await credentials_for(password, iterations)
    return await accounts.set_credentials(account.domain, account.local, credentials)

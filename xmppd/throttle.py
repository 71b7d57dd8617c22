"""The login throttle: slowing down, then refusing, password guessing (RFC 6120 §13.12 and XEP-0205
ask servers to limit authentication attempts; §6.4.5 lets them refuse or close the stream).

Theory of operation
-------------------
Every failed login is recorded under three keys: the account and the address group together, the
address group alone (whatever the account, also when the client never named a valid one), and the
account alone (whatever the address). An address group is an IPv4 address (an IPv4-mapped IPv6
address ``::ffff:a.b.c.d`` is its IPv4 address), or an IPv6 /64 prefix, since one host or site
routinely holds a whole /64; a string that is not an IP address is its own group.

A count is forgotten ``lockout_seconds`` after the last failure it counted, so each failure keeps its
count alive: a slow, steady guesser does not get a fresh count every window. An attempt is refused
outright, its password not even checked, while

(a) the account has ``lockout_after`` failures from this address group (guessing one password);
(b) the address group has ``address_lockout_after`` failures, for any accounts (trying many accounts);
(c) the account has ``account_lockout_after`` failures, from any addresses, and this address group
    has at least one failure of its own on record (a botnet, one guess per address): an address with
    no failure on record may still try, so the account's owner gets in from home while the account
    is under attack, and each attacking address gets at most its one failure before being refused.
    (XEP-0205 §3 warns that a plain per-account limit locks the owner out; this one does not.)

A refusal ends ``lockout_seconds`` after the last failure recorded. Asking :meth:`refused` records
nothing; a driver that also records refused attempts with :meth:`failure` (to delay their answer)
keeps a guesser that goes on knocking locked out, and its knocks count towards (b) and (c).

Failures are also answered ever more slowly, per address group: the first is free (a typo), then
``base_delay``, doubling up to ``max_delay``. A correct password forgets that account's failures
from that address group only (and takes them off the group's and the account's counts), never
the group's failures for other accounts: an attacker logging in to its own account between
guesses resets nothing for the accounts it is guessing.

Each table keeps at most ``max_entries`` keys, the least recently failed dropped first (expired
ones too, as failures come in), so memory is bounded whatever the attacker sends. Pure and sans-IO:
time comes from the injected ``clock``, so the policy is tested without waiting.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def address_group(address: str) -> str:
    """The key failures from `address` are counted under (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Counts(Generic[K]):
    """Failure counts by key, each forgotten `span` seconds after its last failure; at most `limit`
    keys, kept in order of their last failure so the oldest are dropped first."""

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self._entries: OrderedDict[K, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: K, now: float) -> int:
        count, last = self._entries.pop(key, (0, now))
        if now - last > self.span:
            count = 0
        count += 1
        self._entries[key] = (count, now)
        entries = self._entries
        while entries:
            oldest = next(iter(entries))
            if len(entries) <= self.limit and now - entries[oldest][1] <= self.span:
                break
            del entries[oldest]
        return count

    def count(self, key: K, now: float) -> int:
        count, last = self._entries.get(key, (0, now))
        return 0 if now - last > self.span else count

    def subtract(self, key: K, n: int, now: float) -> None:
        """Take `n` failures off `key`'s count; its window (and place in the order) stays."""
        if key not in self._entries:
            return
        count, last = self._entries[key]
        if now - last > self.span or count <= n:
            del self._entries[key]
        else:
            self._entries[key] = (count - n, last)  # an existing key keeps its place


class AuthThrottle:
    def __init__(
        self,
        *,
        max_delay: float = 5.0,
        lockout_after: int = 5,
        address_lockout_after: int = 20,
        account_lockout_after: int = 50,
        lockout_seconds: float = 600.0,
        base_delay: float = 0.25,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_delay = max_delay
        self.lockout_after = lockout_after
        self.address_lockout_after = address_lockout_after
        self.account_lockout_after = account_lockout_after
        self.lockout_seconds = lockout_seconds
        self.base_delay = base_delay
        self.max_entries = max_entries
        self.clock = clock
        self._pairs: _Counts[tuple[str, str]] = _Counts(lockout_seconds, max_entries)  # (account, group)
        self._addresses: _Counts[str] = _Counts(lockout_seconds, max_entries)  # group
        self._accounts: _Counts[str] = _Counts(lockout_seconds, max_entries)  # account

    def refused(self, address: str, account: str) -> bool:
        """Whether an attempt to log in to `account` (a bare JID string, prepared) from `address` (an IP
        address string as asyncio reports it, IPv4 or IPv6, possibly IPv4-mapped IPv6 '::ffff:1.2.3.4')
        is refused outright without checking the password."""
        return self.refusal(address, account) is not None

    def refusal(self, address: str, account: str) -> str | None:
        """Why that attempt is refused (for the log), or None when it may go ahead."""
        now = self.clock()
        group = address_group(address)
        if self._pairs.count((account, group), now) >= self.lockout_after:
            return f"at least {self.lockout_after} failures for this account from {group}"
        group_failures = self._addresses.count(group, now)
        if group_failures >= self.address_lockout_after:
            return f"at least {self.address_lockout_after} failures from {group}"
        if group_failures and self._accounts.count(account, now) >= self.account_lockout_after:
            return f"at least {self.account_lockout_after} failures for this account, and failures from {group}"
        return None

    def failure(self, address: str, account: str | None) -> float:
        """Record a failed attempt (account None when the client never named a valid one); returns the
        delay before answering it (the existing growing per-address delay, first failure free)."""
        now = self.clock()
        group = address_group(address)
        count = self._addresses.add(group, now)
        if account is not None:
            self._pairs.add((account, group), now)
            self._accounts.add(account, now)
        # The first mistake is free (a typo); then 0.25 s, 0.5 s, 1 s, ... up to max_delay.
        if count == 1:
            return 0.0
        # The exponent is capped: past ~1025 failures 2**n no longer fits a float (OverflowError),
        # and a persistent guesser would have turned the throttle off for itself.
        return float(min(self.max_delay, self.base_delay * 2 ** min(count - 2, 64)))

    def success(self, address: str, account: str) -> None:
        """A correct password: forget that account's failures from that address only (NOT the address's
        failures for other accounts: an attacker's own account must not reset the counter for its guesses)."""
        now = self.clock()
        group = address_group(address)
        own = self._pairs.count((account, group), now)
        self._pairs.subtract((account, group), own, now)
        if own:
            self._addresses.subtract(group, own, now)
            self._accounts.subtract(account, own, now)

    def failures(self, address: str, account: str | None = None) -> int:
        """Failures on record from `address`'s group: for any accounts, or for `account` only."""
        now = self.clock()
        group = address_group(address)
        if account is None:
            return self._addresses.count(group, now)
        return self._pairs.count((account, group), now)

    def account_failures(self, account: str) -> int:
        """Failures on record for `account`, from any addresses."""
        return self._accounts.count(account, self.clock())

"""What each account has on the upload service, for its quota; no I/O, time passed in.

An account's usage is the sum of its entries, each a size that counts until a moment (or for
ever): a stored file until it expires (`file_lifetime` after it was stored; never with 0), and a
slot handed out but not yet filled until the slot expires. Counting the slots too means a client
cannot ask for many slots at once and fill them all past its quota; a slot that is filled becomes
its file (the same key), one that is not falls out when it expires.
"""

from __future__ import annotations


class Usage:
    def __init__(self) -> None:
        # account -> key (slot id) -> (bytes, counted until; None: for ever)
        self._entries: dict[str, dict[str, tuple[int, float | None]]] = {}

    def add(self, account: str, key: str, size: int, until: float | None) -> None:
        """Count `size` bytes for `account` under `key` until `until`; replaces what `key` had."""
        self._entries.setdefault(account, {})[key] = (size, until)

    def remove(self, account: str, key: str) -> None:
        entries = self._entries.get(account)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self._entries[account]

    def used(self, account: str, now: float) -> int:
        """Bytes counted for `account` at `now` (what no longer counts is forgotten)."""
        entries = self._entries.get(account)
        if not entries:
            return 0
        for key in [k for k, (_size, until) in entries.items() if until is not None and until <= now]:
            del entries[key]
        if not entries:
            del self._entries[account]
            return 0
        return sum(size for size, _until in entries.values())

    def retry_at(self, account: str, size: int, quota: int, now: float) -> float | None:
        """The first moment from which `size` more bytes fit in `quota`, as things stand (XEP-0363
        §5 <retry/>): when enough of what counts now has expired. None when that never happens
        by itself (files kept for ever), or when `size` alone is over the quota."""
        if size > quota:
            return None
        over = self.used(account, now) + size - quota
        if over <= 0:
            return now
        expiring = sorted(
            (until, entry_size) for entry_size, until in self._entries.get(account, {}).values() if until is not None
        )
        for until, entry_size in expiring:
            over -= entry_size
            if over <= 0:
                return until
        return None

    def accounts(self) -> int:
        return len(self._entries)

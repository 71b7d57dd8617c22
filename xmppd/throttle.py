"""Slowing down password guessing: each failed login from an address is answered later than
the one before (RFC 6120 §13.6 asks servers to limit authentication attempts).

Time is passed in, so the policy is tested without waiting.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class AuthThrottle:
    def __init__(
        self,
        max_delay: float = 5.0,
        *,
        base_delay: float = 0.25,
        forget_after: float = 600.0,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_delay = max_delay
        self.base_delay = base_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.clock = clock
        # address -> (failures, time of the last one); oldest first, so the table stays bounded.
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failure(self, address: str) -> float:
        """Record a failure; returns how long to wait before answering it."""
        now = self.clock()
        count, last = self._failures.pop(address, (0, now))
        if now - last > self.forget_after:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        # The first mistake is free (a typo); then 0.25 s, 0.5 s, 1 s, ... up to max_delay.
        if count == 1:
            return 0.0
        # The exponent is capped: past ~1025 failures 2**n no longer fits a float (OverflowError),
        # and a persistent guesser would have turned the throttle off for itself.
        return float(min(self.max_delay, self.base_delay * 2 ** min(count - 2, 64)))

    def success(self, address: str) -> None:
        self._failures.pop(address, None)

    def failures(self, address: str) -> int:
        count, last = self._failures.get(address, (0, 0.0))
        return 0 if self.clock() - last > self.forget_after else count

"""Per-session rate limits: token buckets for stanzas and bytes, sans-IO (time is passed in).

Each bucket holds up to `burst` tokens and refills at `rate` per second. What a session sends is
charged as it is read; a charge may take the bucket below zero (a debt), and the answer is how
long the session must wait before more of its input is read, which is how the stream driver
slows it down: it does not read, so TCP pushes back on the sender and nobody else waits.

A session that has to wait on every read for `max_throttled` seconds in a row, or whose debt
alone would take longer than that to pay off, is not bursting but flooding: `Shaper.charge` then
says so, and the driver closes the stream with policy-violation (issue 10; Prosody's mod_limits
and ejabberd's shapers slow down but never close, which leaves a flooder connected for ever).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    rate: float  # tokens per second
    burst: float  # most tokens held
    tokens: float
    updated: float  # when `tokens` was last brought up to date

    def take(self, amount: float, now: float) -> float:
        """Charge `amount`; seconds to wait until the bucket is out of debt (0: none)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate) - amount
        self.updated = now
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Flooding(Exception):
    """A session stayed over its limits for longer than allowed."""


class Shaper:
    def __init__(
        self, *, stanza_rate: float, stanza_burst: float, byte_rate: float, byte_burst: float,
        max_throttled: float, now: float,
    ) -> None:
        self.stanzas = Bucket(stanza_rate, stanza_burst, stanza_burst, now)
        self.bytes = Bucket(byte_rate, byte_burst, byte_burst, now)
        self.max_throttled = max_throttled
        self.throttled_since: float | None = None

    def charge(self, stanzas: int, size: int, now: float) -> float:
        """Charge what was just read; seconds to wait before reading more. Raises Flooding when
        every read has had to wait for `max_throttled` seconds in a row, or when this wait is
        longer than that."""
        wait = max(self.stanzas.take(stanzas, now), self.bytes.take(size, now))
        if wait == 0.0:
            self.throttled_since = None
            return 0.0
        if wait > self.max_throttled:
            raise Flooding(f"{wait:.0f} s over the rate limits at once")
        if self.throttled_since is None:
            self.throttled_since = now
        elif now - self.throttled_since >= self.max_throttled:
            raise Flooding(f"over the rate limits for {now - self.throttled_since:.0f} s")
        return wait

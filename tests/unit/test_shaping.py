"""Per-session rate limits (xmppd/shaping.py), with time passed in."""

from __future__ import annotations

import pytest

from xmppd.shaping import Bucket, Flooding, Shaper


def test_a_bucket_lets_a_burst_through_then_charges_a_debt() -> None:
    bucket = Bucket(rate=10.0, burst=5.0, tokens=5.0, updated=0.0)
    assert [bucket.take(1, 0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1, 0.0) == pytest.approx(0.1)  # one token in debt at 10/s
    assert bucket.take(1, 0.0) == pytest.approx(0.2)


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = Bucket(rate=10.0, burst=5.0, tokens=0.0, updated=0.0)
    assert bucket.take(3, 0.3) == 0.0  # 3 tokens came back in 0.3 s
    assert bucket.take(1, 100.0) == 0.0
    assert bucket.tokens == pytest.approx(4.0)  # never more than the burst


def shaper(now: float = 0.0) -> Shaper:
    return Shaper(stanza_rate=10, stanza_burst=20, byte_rate=1000, byte_burst=4000, max_throttled=5.0, now=now)


def test_the_longer_wait_of_stanzas_and_bytes_applies() -> None:
    limits = shaper()
    assert limits.charge(20, 100, 0.0) == 0.0
    assert limits.charge(1, 100, 0.0) == pytest.approx(0.1)  # stanzas in debt
    limits = shaper()
    assert limits.charge(1, 5000, 0.0) == pytest.approx(1.0)  # bytes in debt: 1000 over at 1000/s


def test_bursts_within_the_limits_never_wait() -> None:
    limits = shaper()
    for n in range(100):  # 15 stanzas every 1.5 s: the rate on average, in bursts under the burst size
        assert limits.charge(15, 100, n * 1.5) == 0.0


def test_bursts_over_the_burst_size_wait_but_are_not_flooding_when_they_alternate() -> None:
    limits = shaper()
    now = 0.0
    for n in range(100):  # 25 then 5 stanzas every 3 s: waits after the big ones only
        now += limits.charge(25 if n % 2 == 0 else 5, 100, now) + 3.0
    assert limits.throttled_since is None


def test_waiting_on_every_read_for_too_long_is_flooding() -> None:
    limits = shaper()
    now, waited = 0.0, 0.0
    with pytest.raises(Flooding):
        while True:  # twice the rate, reading again as soon as allowed
            wait = limits.charge(20, 10, now)
            now += wait
            waited += wait
    assert now >= 5.0  # only after max_throttled seconds of it


def test_a_read_without_waiting_ends_a_throttled_spell() -> None:
    limits = shaper()
    limits.charge(30, 10, 0.0)  # over: has to wait 1 s
    assert limits.throttled_since == 0.0
    assert limits.charge(1, 10, 10.0) == 0.0  # it waited well over: back in the clear
    assert limits.throttled_since is None


def test_a_debt_longer_than_allowed_is_flooding_at_once() -> None:
    limits = shaper()  # 10 stanzas/s, burst 20, max_throttled 5 s
    assert limits.charge(60, 10, 0.0) == pytest.approx(4.0)  # 40 in debt: 4 s, allowed
    limits = shaper()
    with pytest.raises(Flooding):
        limits.charge(80, 10, 0.0)  # 60 in debt: 6 s

"""AuthThrottle: ever slower answers to failed logins from one address, with an injected clock."""

from __future__ import annotations

import pytest

from xmppd.throttle import AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_first_failure_is_free_then_delays_double_up_to_the_cap(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, clock=clock)
    delays = [throttle.failure("192.0.2.1") for _ in range(9)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert all(isinstance(d, float) for d in delays)
    assert throttle.failures("192.0.2.1") == 9


def test_base_delay_and_cap_are_configurable(clock: Clock) -> None:
    throttle = AuthThrottle(1.5, base_delay=0.1, clock=clock)
    assert [throttle.failure("a") for _ in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.5]


def test_zero_max_delay_never_delays(clock: Clock) -> None:
    throttle = AuthThrottle(0.0, clock=clock)
    assert {throttle.failure("a") for _ in range(10)} == {0.0}


def test_many_failures_stay_at_the_cap_regression(clock: Clock) -> None:
    """Regression: 2**n overflowed a float after 1025 failures (OverflowError), which turned the
    throttle off exactly for the most persistent guesser."""
    throttle = AuthThrottle(5.0, clock=clock)
    for _ in range(3000):
        delay = throttle.failure("203.0.113.9")
    assert delay == 5.0
    assert throttle.failures("203.0.113.9") == 3000


def test_success_resets(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, clock=clock)
    for _ in range(4):
        throttle.failure("a")
    throttle.success("a")
    assert throttle.failures("a") == 0
    assert throttle.failure("a") == 0.0
    assert throttle.failure("a") == 0.25
    throttle.success("never-failed")  # harmless


def test_addresses_are_independent(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, clock=clock)
    for _ in range(3):
        throttle.failure("a")
    assert throttle.failure("b") == 0.0
    assert throttle.failure("a") == 1.0
    throttle.success("b")
    assert throttle.failures("a") == 4


def test_failures_are_forgotten_after_the_window(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, forget_after=600.0, clock=clock)
    for _ in range(5):
        throttle.failure("a")
    clock.now += 600.0  # exactly the window: still remembered
    assert throttle.failures("a") == 5
    assert throttle.failure("a") == 4.0
    clock.now += 600.5  # the window counts from the last failure
    assert throttle.failures("a") == 0
    assert throttle.failure("a") == 0.0
    assert throttle.failures("a") == 1


def test_each_failure_extends_the_window(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, forget_after=60.0, clock=clock)
    for _ in range(10):
        throttle.failure("a")
        clock.now += 59.0
    assert throttle.failures("a") == 10


def test_table_size_is_bounded_oldest_first(clock: Clock) -> None:
    throttle = AuthThrottle(5.0, max_addresses=3, clock=clock)
    for address in ("a", "b", "c"):
        throttle.failure(address)
        throttle.failure(address)
    throttle.failure("a")  # a is now the most recent
    throttle.failure("d")  # evicts b, the least recently failed
    assert [throttle.failures(x) for x in "abcd"] == [3, 0, 2, 1]
    assert len(throttle._failures) == 3
    for n in range(1000):
        throttle.failure(f"198.51.100.{n}")
    assert len(throttle._failures) == 3


def test_default_clock_is_monotonic() -> None:
    import time

    assert AuthThrottle().clock is time.monotonic

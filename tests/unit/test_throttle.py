"""AuthThrottle: ever slower answers to failed logins from one address, and logins refused outright
past the lockout thresholds (per account and address, per address, per account), with an injected clock."""

from __future__ import annotations

import pytest

from xmppd.throttle import AuthThrottle, address_group

VICTIM = "romeo@example.org"
ATTACKER = "mallory@example.org"
JULIET = "juliet@example.org"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- the growing delay (per address group) ------------------------------------------------------


def test_first_failure_is_free_then_delays_double_up_to_the_cap(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, clock=clock)
    delays = [throttle.failure("192.0.2.1", JULIET) for _ in range(9)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert all(isinstance(d, float) for d in delays)
    assert throttle.failures("192.0.2.1") == 9


def test_base_delay_and_cap_are_configurable(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=1.5, base_delay=0.1, clock=clock)
    assert [throttle.failure("a", None) for _ in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.5]


def test_zero_max_delay_never_delays(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=0.0, clock=clock)
    assert {throttle.failure("a", JULIET) for _ in range(10)} == {0.0}


def test_many_failures_stay_at_the_cap_regression(clock: Clock) -> None:
    """Regression: 2**n overflowed a float after 1025 failures (OverflowError), which turned the
    throttle off exactly for the most persistent guesser."""
    throttle = AuthThrottle(max_delay=5.0, clock=clock)
    for _ in range(3000):
        delay = throttle.failure("203.0.113.9", JULIET)
    assert delay == 5.0
    assert throttle.failures("203.0.113.9") == 3000


def test_success_resets(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, clock=clock)
    for _ in range(4):
        throttle.failure("a", JULIET)
    throttle.success("a", JULIET)
    assert throttle.failures("a") == 0
    assert throttle.failure("a", JULIET) == 0.0
    assert throttle.failure("a", JULIET) == 0.25
    throttle.success("never-failed", JULIET)  # harmless


def test_addresses_are_independent(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, clock=clock)
    for _ in range(3):
        throttle.failure("a", JULIET)
    assert throttle.failure("b", JULIET) == 0.0
    assert throttle.failure("a", JULIET) == 1.0
    throttle.success("b", JULIET)
    assert throttle.failures("a") == 4


def test_failures_without_an_account_count_for_the_address(clock: Clock) -> None:
    throttle = AuthThrottle(clock=clock)
    assert throttle.failure("a", None) == 0.0
    assert throttle.failure("a", JULIET) == 0.25
    assert throttle.failures("a") == 2
    assert throttle.failures("a", JULIET) == 1
    assert throttle.account_failures(JULIET) == 1


def test_failures_are_forgotten_after_the_window(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, lockout_seconds=600.0, clock=clock)
    for _ in range(5):
        throttle.failure("a", JULIET)
    clock.now += 600.0  # exactly the window: still remembered
    assert throttle.failures("a") == 5
    assert throttle.failure("a", JULIET) == 4.0
    clock.now += 600.5  # the window counts from the last failure
    assert throttle.failures("a") == 0
    assert throttle.failure("a", JULIET) == 0.0
    assert throttle.failures("a") == 1


def test_each_failure_extends_the_window(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, lockout_seconds=60.0, clock=clock)
    for _ in range(10):
        throttle.failure("a", JULIET)
        clock.now += 59.0
    assert throttle.failures("a") == 10


def test_the_delay_is_not_reset_by_a_success_for_another_account(clock: Clock) -> None:
    throttle = AuthThrottle(clock=clock)
    for _ in range(4):
        throttle.failure("192.0.2.66", VICTIM)
    throttle.success("192.0.2.66", ATTACKER)  # the attacker's own account
    assert throttle.failures("192.0.2.66") == 4
    assert throttle.failure("192.0.2.66", VICTIM) == 2.0


# -- (a) one account from one address group ------------------------------------------------------


def test_rule_a_refuses_the_account_from_that_address_at_the_threshold(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, clock=clock)
    for _ in range(4):
        throttle.failure("192.0.2.66", VICTIM)
    assert not throttle.refused("192.0.2.66", VICTIM)  # just under
    throttle.failure("192.0.2.66", VICTIM)
    assert throttle.refused("192.0.2.66", VICTIM)
    assert "192.0.2.66" in (throttle.refusal("192.0.2.66", VICTIM) or "")
    # Only that pair: other accounts from that address, and the owner from elsewhere, still try.
    assert not throttle.refused("192.0.2.66", JULIET)
    assert not throttle.refused("198.51.100.7", VICTIM)


def test_rule_a_threshold_is_configurable(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=2, clock=clock)
    throttle.failure("a", VICTIM)
    assert not throttle.refused("a", VICTIM)
    throttle.failure("a", VICTIM)
    assert throttle.refused("a", VICTIM)


# -- (b) one address group, any accounts ----------------------------------------------------------


def test_rule_b_refuses_every_account_from_that_address_at_the_threshold(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, address_lockout_after=20, clock=clock)
    for n in range(19):  # 19 accounts, one guess each: rule (a) never fires
        throttle.failure("192.0.2.66", f"user{n}@example.org")
    assert not throttle.refused("192.0.2.66", VICTIM)  # just under
    assert not throttle.refused("192.0.2.66", "user0@example.org")
    throttle.failure("192.0.2.66", None)  # a failure naming no valid account counts too
    assert throttle.refused("192.0.2.66", VICTIM)
    assert throttle.refused("192.0.2.66", "user0@example.org")
    assert throttle.refused("192.0.2.66", "never-seen@example.org")
    # The owner from another address still gets in.
    assert not throttle.refused("198.51.100.7", VICTIM)
    assert not throttle.refused("198.51.100.7", "user0@example.org")


# -- (c) one account, any addresses ---------------------------------------------------------------


def botnet(throttle: AuthThrottle, bots: int, account: str = VICTIM) -> list[str]:
    addresses = [f"203.0.113.{n}" if n < 256 else f"2001:db8:{n:x}::1" for n in range(bots)]
    for address in addresses:
        throttle.failure(address, account)
    return addresses


def test_rule_c_refuses_the_account_from_addresses_with_failures_at_the_threshold(clock: Clock) -> None:
    throttle = AuthThrottle(account_lockout_after=50, clock=clock)
    bots = botnet(throttle, 49)
    assert throttle.account_failures(VICTIM) == 49
    assert not any(throttle.refused(bot, VICTIM) for bot in bots)  # just under
    throttle.failure("203.0.113.200", VICTIM)
    bots.append("203.0.113.200")
    assert all(throttle.refused(bot, VICTIM) for bot in bots)
    # Only the account: the bots may still try other accounts (up to rules (a) and (b)).
    assert not any(throttle.refused(bot, JULIET) for bot in bots)


def test_rule_c_lets_the_owner_in_from_a_clean_address_only(clock: Clock) -> None:
    throttle = AuthThrottle(account_lockout_after=50, clock=clock)
    botnet(throttle, 50)
    assert not throttle.refused("198.51.100.7", VICTIM)  # no failure on record: the owner gets in
    throttle.success("198.51.100.7", VICTIM)
    assert not throttle.refused("198.51.100.7", VICTIM)
    assert throttle.account_failures(VICTIM) == 50  # the owner's login does not clear the botnet's
    # An address with a failure of its own on record, for any account, is refused for this one.
    throttle.failure("198.51.100.8", JULIET)
    assert throttle.refused("198.51.100.8", VICTIM)
    assert not throttle.refused("198.51.100.8", JULIET)
    # Each new attacking address gets its one guess, then is refused.
    assert not throttle.refused("192.0.2.99", VICTIM)
    throttle.failure("192.0.2.99", VICTIM)
    assert throttle.refused("192.0.2.99", VICTIM)


def test_rule_c_an_address_whose_failures_were_all_forgiven_is_clean_again(clock: Clock) -> None:
    throttle = AuthThrottle(account_lockout_after=50, clock=clock)
    botnet(throttle, 50)
    throttle.failure("198.51.100.7", JULIET)  # juliet's typo
    assert throttle.refused("198.51.100.7", VICTIM)
    throttle.success("198.51.100.7", JULIET)  # then her right password
    assert throttle.failures("198.51.100.7") == 0
    assert not throttle.refused("198.51.100.7", VICTIM)


# -- the lockout expires ----------------------------------------------------------------------------


def test_the_lockout_lasts_lockout_seconds_after_the_last_failure(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_seconds=600.0, clock=clock)
    for _ in range(5):
        throttle.failure("192.0.2.66", VICTIM)
        clock.now += 10.0
    clock.now -= 10.0  # back to the last failure
    assert throttle.refused("192.0.2.66", VICTIM)
    clock.now += 300.0
    assert throttle.refused("192.0.2.66", VICTIM)  # knocking while refused does not extend it
    clock.now += 300.0  # exactly lockout_seconds after the last failure: still refused
    assert throttle.refused("192.0.2.66", VICTIM)
    clock.now += 0.5
    assert not throttle.refused("192.0.2.66", VICTIM)
    assert throttle.failures("192.0.2.66", VICTIM) == 0
    # A fresh count: the next failure is free and one failure does not lock again.
    assert throttle.failure("192.0.2.66", VICTIM) == 0.0
    assert not throttle.refused("192.0.2.66", VICTIM)


def test_address_and_account_lockouts_expire_too(clock: Clock) -> None:
    throttle = AuthThrottle(address_lockout_after=20, account_lockout_after=50, lockout_seconds=60.0, clock=clock)
    for n in range(20):
        throttle.failure("192.0.2.66", f"user{n}@example.org")
    bots = botnet(throttle, 50)
    assert throttle.refused("192.0.2.66", VICTIM)
    assert throttle.refused(bots[0], VICTIM)
    clock.now += 60.5
    assert not throttle.refused("192.0.2.66", VICTIM)
    assert not throttle.refused(bots[0], VICTIM)
    assert throttle.account_failures(VICTIM) == 0


def test_failures_older_than_the_window_do_not_add_up(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, lockout_seconds=600.0, clock=clock)
    for _ in range(10):
        throttle.failure("192.0.2.66", VICTIM)
        clock.now += 601.0  # each one forgotten before the next
    assert not throttle.refused("192.0.2.66", VICTIM)


# -- address groups ---------------------------------------------------------------------------------


def test_ipv6_addresses_in_one_64_count_together(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, address_lockout_after=20, clock=clock)
    same = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:0db8:0001:0002::3"]
    for n in range(4):
        throttle.failure(same[n], VICTIM)
    assert not throttle.refused(same[0], VICTIM)
    throttle.failure("2001:db8:1:2:abcd::9", VICTIM)
    assert all(throttle.refused(address, VICTIM) for address in same)
    assert throttle.failures("2001:db8:1:2::42") == 5
    # Another /64, even next door, is another group.
    assert not throttle.refused("2001:db8:1:3::1", VICTIM)
    assert throttle.failures("2001:db8:1:3::1") == 0
    # The delay is per /64 as well.
    assert throttle.failure("2001:db8:1:2::77", JULIET) == 4.0
    assert throttle.failure("2001:db8:1:3::1", JULIET) == 0.0


def test_ipv6_64_counts_for_the_address_rule(clock: Clock) -> None:
    throttle = AuthThrottle(address_lockout_after=20, clock=clock)
    for n in range(20):
        throttle.failure(f"2001:db8:1:2::{n + 1:x}", f"user{n}@example.org")
    assert throttle.refused("2001:db8:1:2::ffff", VICTIM)
    assert not throttle.refused("2001:db8:1:1::1", VICTIM)


def test_ipv4_mapped_addresses_count_as_their_ipv4_address(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, clock=clock)
    for _ in range(3):
        throttle.failure("::ffff:192.0.2.66", VICTIM)
    for _ in range(2):
        throttle.failure("192.0.2.66", VICTIM)
    assert throttle.refused("192.0.2.66", VICTIM)
    assert throttle.refused("::ffff:192.0.2.66", VICTIM)
    assert throttle.refused("::ffff:c000:242", VICTIM)  # the same, written in hex
    # Not lumped together as one IPv6 /64 (all mapped addresses share ::ffff:0:0/96).
    assert not throttle.refused("::ffff:192.0.2.67", VICTIM)
    assert not throttle.refused("192.0.2.67", VICTIM)


def test_address_groups() -> None:
    assert address_group("192.0.2.1") == "192.0.2.1"
    assert address_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_group("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_group("2001:DB8:1:2::9") == "2001:db8:1:2::/64"
    assert address_group("fe80::1%eth0") == "fe80::/64"
    assert address_group("::1") == "::/64"
    assert address_group("not an address") == "not an address"
    assert address_group("") == ""


def test_an_unparsable_address_counts_as_itself(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, clock=clock)
    for _ in range(5):
        throttle.failure("/run/xmppd.sock", VICTIM)
    assert throttle.refused("/run/xmppd.sock", VICTIM)
    assert not throttle.refused("/run/other.sock", VICTIM)


# -- successes ------------------------------------------------------------------------------------


def test_success_for_the_attackers_own_account_resets_nothing_for_others(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, address_lockout_after=20, clock=clock)
    attacker = "192.0.2.66"
    for _ in range(4):
        throttle.failure(attacker, VICTIM)
    for n in range(15):
        throttle.failure(attacker, f"user{n}@example.org")
    throttle.success(attacker, ATTACKER)
    assert throttle.failures(attacker, VICTIM) == 4
    assert throttle.failures(attacker) == 19
    assert throttle.account_failures(VICTIM) == 4
    throttle.failure(attacker, VICTIM)
    throttle.success(attacker, ATTACKER)
    assert throttle.refused(attacker, VICTIM)  # (a)
    assert throttle.refused(attacker, ATTACKER)  # (b): 20 from the address, its own account too
    # Its own failures it may take back by logging in, but that buys nothing for the others.
    assert throttle.failures(attacker) == 20


def test_success_forgets_that_accounts_failures_from_that_address_only(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, clock=clock)
    for _ in range(3):
        throttle.failure("192.0.2.1", JULIET)  # typos at home
        throttle.failure("198.51.100.7", JULIET)  # someone guessing elsewhere
        throttle.failure("192.0.2.1", VICTIM)
    throttle.success("192.0.2.1", JULIET)
    assert throttle.failures("192.0.2.1", JULIET) == 0
    assert throttle.failures("192.0.2.1", VICTIM) == 3
    assert throttle.failures("192.0.2.1") == 3  # juliet's three typos taken off the address
    assert throttle.failures("198.51.100.7", JULIET) == 3
    assert throttle.account_failures(JULIET) == 3


def test_the_owner_locked_out_by_rule_a_from_her_address_gets_in_from_another(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_after=5, clock=clock)
    for _ in range(5):
        throttle.failure("192.0.2.66", JULIET)
    assert throttle.refused("192.0.2.66", JULIET)
    assert not throttle.refused("2001:db8::1", JULIET)
    throttle.success("2001:db8::1", JULIET)
    assert throttle.refused("192.0.2.66", JULIET)  # a success elsewhere does not lift it


# -- bounded memory --------------------------------------------------------------------------------


def test_table_size_is_bounded_oldest_first(clock: Clock) -> None:
    throttle = AuthThrottle(max_delay=5.0, max_entries=3, clock=clock)
    for address in ("a", "b", "c"):
        throttle.failure(address, JULIET)
        throttle.failure(address, JULIET)
    throttle.failure("a", JULIET)  # a is now the most recent
    throttle.failure("d", JULIET)  # evicts b, the least recently failed
    assert [throttle.failures(x) for x in "abcd"] == [3, 0, 2, 1]
    assert len(throttle._addresses) == 3
    for n in range(1000):
        throttle.failure(f"198.51.100.{n}", JULIET)
    assert len(throttle._addresses) == 3


def test_every_table_is_bounded(clock: Clock) -> None:
    throttle = AuthThrottle(max_entries=10, clock=clock)
    for n in range(5000):
        throttle.failure(f"2001:db8:{n:x}::1", f"user{n}@example.org")
    assert len(throttle._addresses) == 10
    assert len(throttle._pairs) == 10
    assert len(throttle._accounts) == 10
    # The most recent are the ones kept.
    assert throttle.failures("2001:db8:1387::1") == 1
    assert throttle.account_failures("user4999@example.org") == 1
    assert throttle.failures("2001:db8::1") == 0


def test_expired_entries_are_dropped_as_failures_come_in(clock: Clock) -> None:
    throttle = AuthThrottle(lockout_seconds=60.0, clock=clock)
    for n in range(100):
        throttle.failure(f"192.0.2.{n}", f"user{n}@example.org")
    clock.now += 61.0
    throttle.failure("198.51.100.1", JULIET)
    assert (len(throttle._addresses), len(throttle._pairs), len(throttle._accounts)) == (1, 1, 1)


def test_defaults_match_the_configuration() -> None:
    import time

    from xmppd.config import AuthConfig

    throttle = AuthThrottle()
    assert throttle.clock is time.monotonic
    auth = AuthConfig()
    assert throttle.max_delay == auth.max_failure_delay
    assert throttle.lockout_after == auth.lockout_after
    assert throttle.address_lockout_after == auth.address_lockout_after
    assert throttle.account_lockout_after == auth.account_lockout_after
    assert throttle.lockout_seconds == auth.lockout_seconds

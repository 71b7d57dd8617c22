"""The provisioning plan: every roster has 20 contacts and every item has its reverse (not timed)."""

from bench.provision import Plan, prosody_encode


def test_rosters_are_symmetric_with_twenty_contacts() -> None:
    plan = Plan("bench.local", "u", 100, "pw", "SCRAM-SHA-256", roster_pool=50)
    pairs = {(n, c) for n in range(1, 101) for c in plan.contacts(n)}
    assert all((c, n) in pairs for n, c in pairs)
    assert all(len(list(plan.contacts(n))) == 20 for n in range(1, 51))
    assert all(n not in plan.contacts(n) for n in range(1, 51))
    assert not list(plan.contacts(51))  # outside the roster pool


def test_salts_are_per_account_and_stable() -> None:
    plan = Plan("bench.local", "u", 3, "pw", "SCRAM-SHA-1", roster_pool=0)
    assert plan.salt(1) != plan.salt(2)
    assert plan.salt(1) == Plan("bench.local", "u", 9, "x", "SCRAM-SHA-256", 0).salt(1)


def test_prosody_path_encoding() -> None:
    assert prosody_encode("mam.bench.local") == "mam%2ebench%2elocal"

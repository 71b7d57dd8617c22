"""LRU: the mapping behind the modules' per-account caches; what marks an entry used, and what is
dropped when one more than `capacity` is added."""

from __future__ import annotations

from xmppd.lru import LRU


def filled(capacity: int, *keys: str) -> LRU[str, int]:
    lru: LRU[str, int] = LRU(capacity)
    for n, key in enumerate(keys):
        lru.put(key, n)
    return lru


def kept(lru: LRU[str, int], *candidates: str) -> list[str]:
    return [key for key in candidates if key in lru]


def test_the_least_recently_added_goes_first() -> None:
    lru = filled(3, "a", "b", "c")
    lru.put("d", 3)
    assert kept(lru, "a", "b", "c", "d") == ["b", "c", "d"]
    lru.put("e", 4)
    assert kept(lru, "a", "b", "c", "d", "e") == ["c", "d", "e"]
    assert len(lru) == 3


def test_get_marks_used() -> None:
    lru = filled(3, "a", "b", "c")
    assert lru.get("a") == 0
    lru.put("d", 3)
    assert kept(lru, "a", "b", "c", "d") == ["a", "c", "d"]


def test_get_of_an_absent_key_is_none_and_adds_nothing() -> None:
    lru = filled(2, "a")
    assert lru.get("z") is None
    assert len(lru) == 1 and "z" not in lru


def test_peek_and_in_do_not_mark_used() -> None:
    lru = filled(3, "a", "b", "c")
    assert lru.peek("a") == 0
    assert "a" in lru
    assert lru.peek("z") is None
    lru.put("d", 3)
    assert kept(lru, "a", "b", "c", "d") == ["b", "c", "d"]


def test_put_replaces_without_growing_and_marks_used() -> None:
    lru = filled(3, "a", "b", "c")
    lru.put("a", 10)
    assert len(lru) == 3 and lru.peek("a") == 10
    lru.put("d", 3)
    assert kept(lru, "a", "b", "c", "d") == ["a", "c", "d"]


def test_setdefault_keeps_what_is_there_and_marks_it_used() -> None:
    lru = filled(3, "a", "b", "c")
    assert lru.setdefault("a", 10) == 0
    assert lru.peek("a") == 0 and len(lru) == 3
    lru.put("d", 3)
    assert kept(lru, "a", "b", "c", "d") == ["a", "c", "d"]


def test_setdefault_adds_what_is_missing_and_evicts_beyond_capacity() -> None:
    lru = filled(2, "a", "b")
    assert lru.setdefault("c", 2) == 2
    assert kept(lru, "a", "b", "c") == ["b", "c"]


def test_pop_removes_and_returns() -> None:
    lru = filled(3, "a", "b")
    assert lru.pop("a") == 0
    assert "a" not in lru and len(lru) == 1
    assert lru.pop("a") is None
    lru.put("c", 2)
    lru.put("d", 3)  # room for three again: nothing dropped
    assert kept(lru, "b", "c", "d") == ["b", "c", "d"]


def test_capacity_one_keeps_the_last_put() -> None:
    lru = filled(1, "a")
    lru.put("b", 1)
    assert kept(lru, "a", "b") == ["b"] and lru.get("b") == 1
    lru.put("b", 2)
    assert len(lru) == 1 and lru.get("b") == 2


def test_capacity_zero_keeps_nothing_but_setdefault_still_answers() -> None:
    lru: LRU[str, int] = LRU(0)
    lru.put("a", 0)
    assert len(lru) == 0
    assert lru.setdefault("a", 1) == 1
    assert len(lru) == 0


def test_a_changed_capacity_applies_at_the_next_put() -> None:
    lru = filled(4, "a", "b", "c", "d")
    lru.capacity = 2
    assert len(lru) == 4
    lru.put("e", 4)
    assert kept(lru, "a", "b", "c", "d", "e") == ["d", "e"]


def test_falsy_values_are_entries() -> None:
    """An account with no registrations caches an empty dict: present, not absent."""
    lru: LRU[str, dict[str, int]] = LRU(2)
    lru.put("a", {})
    assert lru.get("a") == {} and lru.setdefault("a", {"x": 1}) == {}

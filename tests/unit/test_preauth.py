"""The pre-auth slots (xmppd/preauth.py): oldest first, in all and by address."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from xmppd.preauth import PreAuthSlots

_numbers = count()


@dataclass(eq=False)
class Stream:
    address: str
    number: int = field(default_factory=lambda: next(_numbers))


def test_the_oldest_of_all_makes_room_when_the_slots_are_full() -> None:
    slots: PreAuthSlots[Stream] = PreAuthSlots(total=3, per_address=10)
    first, second, third = Stream("10.0.0.1"), Stream("10.0.0.2"), Stream("10.0.0.3")
    assert [slots.add(s) for s in (first, second, third)] == [None, None, None]
    newcomer = Stream("10.0.0.4")
    assert slots.add(newcomer) is first
    assert list(slots) == [second, third, newcomer] and len(slots) == 3


def test_the_oldest_of_the_same_address_makes_room_first() -> None:
    slots: PreAuthSlots[Stream] = PreAuthSlots(total=10, per_address=2)
    other, a1, a2 = Stream("10.0.0.9"), Stream("10.0.0.1"), Stream("10.0.0.1")
    for stream in (other, a1, a2):
        assert slots.add(stream) is None
    assert slots.add(Stream("10.0.0.1")) is a1  # not `other`, older but from elsewhere
    assert other in list(slots)


def test_a_freed_slot_is_free_again_and_freeing_twice_is_harmless() -> None:
    slots: PreAuthSlots[Stream] = PreAuthSlots(total=2, per_address=1)
    a, b = Stream("10.0.0.1"), Stream("10.0.0.2")
    slots.add(a)
    slots.add(b)
    slots.remove(a)
    slots.remove(a)
    assert len(slots) == 1
    assert slots.add(Stream("10.0.0.1")) is None  # a's address has its slot back


def test_busy_is_more_than_half() -> None:
    slots: PreAuthSlots[Stream] = PreAuthSlots(total=4, per_address=4)
    slots.add(Stream("10.0.0.1"))
    slots.add(Stream("10.0.0.1"))
    assert not slots.busy
    slots.add(Stream("10.0.0.1"))
    assert slots.busy

"""Priority-ordered event hooks (xmppd.hooks): ordering, handling, async handlers, off(), snapshots."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from xmppd.hooks import Hooks, Registration


def recorder(calls: list[str], label: str, result: bool | None = None) -> Callable[[object], bool | None]:
    """A plain handler that records `label` and returns `result`."""

    def handler(event: object) -> bool | None:
        calls.append(label)
        return result

    return handler


def async_recorder(
    calls: list[str], label: str, result: bool | None = None
) -> Callable[[object], Awaitable[bool | None]]:
    """A coroutine handler that records `label` and returns `result`."""

    async def handler(event: object) -> bool | None:
        calls.append(label)
        return result

    return handler


async def test_no_handlers_is_not_handled() -> None:
    assert await Hooks().fire("nothing", object()) is False


async def test_handlers_run_highest_priority_first() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", recorder(calls, "zero"))
    hooks.on("ev", recorder(calls, "ten"), priority=10)
    hooks.on("ev", recorder(calls, "minus-one"), priority=-1)
    hooks.on("ev", recorder(calls, "five"), priority=5)

    assert await hooks.fire("ev", None) is False
    assert calls == ["ten", "five", "zero", "minus-one"]


async def test_equal_priorities_run_in_registration_order() -> None:
    hooks = Hooks()
    calls: list[str] = []
    for label in ("a", "b", "c"):
        hooks.on("ev", recorder(calls, label), priority=3)
    hooks.on("ev", recorder(calls, "high"), priority=4)
    hooks.on("ev", recorder(calls, "d"), priority=3)

    await hooks.fire("ev", None)
    assert calls == ["high", "a", "b", "c", "d"]


async def test_handler_receives_the_event() -> None:
    hooks = Hooks()
    seen: list[object] = []
    event = object()
    hooks.on("ev", seen.append)

    await hooks.fire("ev", event)
    assert seen == [event]
    assert seen[0] is event


async def test_events_are_independent_by_name() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("one", recorder(calls, "one", True))
    hooks.on("two", recorder(calls, "two"))

    assert await hooks.fire("two", None) is False
    assert calls == ["two"]


async def test_first_truthy_result_stops_the_event() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", recorder(calls, "first"), priority=2)
    hooks.on("ev", recorder(calls, "handler", True), priority=1)
    hooks.on("ev", recorder(calls, "never"), priority=0)
    hooks.on("ev", recorder(calls, "never-either", True), priority=-1)

    assert await hooks.fire("ev", None) is True
    assert calls == ["first", "handler"]


@pytest.mark.parametrize("falsy", [None, False])
async def test_falsy_results_continue_and_nobody_handled(falsy: bool | None) -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", recorder(calls, "a", falsy), priority=1)
    hooks.on("ev", recorder(calls, "b", falsy))

    assert await hooks.fire("ev", None) is False
    assert calls == ["a", "b"]


async def test_coroutine_handlers_are_awaited() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", async_recorder(calls, "async-none"), priority=2)
    hooks.on("ev", async_recorder(calls, "async-true", True), priority=1)
    hooks.on("ev", async_recorder(calls, "never"))

    assert await hooks.fire("ev", None) is True
    # A coroutine's truthiness is not its result: the body ran and its True was what stopped the event.
    assert calls == ["async-none", "async-true"]


async def test_coroutine_returning_false_does_not_handle() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", async_recorder(calls, "async-false", False), priority=1)
    hooks.on("ev", async_recorder(calls, "async-none"))

    assert await hooks.fire("ev", None) is False
    assert calls == ["async-false", "async-none"]


async def test_mixed_sync_and_async_handlers_keep_priority_order() -> None:
    hooks = Hooks()
    calls: list[str] = []
    hooks.on("ev", recorder(calls, "sync-3"), priority=3)
    hooks.on("ev", async_recorder(calls, "async-2"), priority=2)
    hooks.on("ev", recorder(calls, "sync-1", False), priority=1)
    hooks.on("ev", async_recorder(calls, "async-0", True), priority=0)
    hooks.on("ev", recorder(calls, "sync-never", True), priority=-1)

    assert await hooks.fire("ev", None) is True
    assert calls == ["sync-3", "async-2", "sync-1", "async-0"]


async def test_on_returns_the_registration() -> None:
    hooks = Hooks()
    handler = recorder([], "x")
    registration = hooks.on("ev", handler, priority=7)
    assert registration == Registration("ev", handler, 7)


async def test_off_removes_exactly_that_registration() -> None:
    hooks = Hooks()
    calls: list[str] = []
    handler = recorder(calls, "shared")
    first = hooks.on("ev", handler, priority=1)
    hooks.on("ev", handler, priority=1)  # the same handler again: an equal but distinct registration
    hooks.on("ev", recorder(calls, "other"))

    hooks.off(first)
    await hooks.fire("ev", None)
    assert calls == ["shared", "other"]


async def test_off_last_registration_removes_the_event_name() -> None:
    hooks = Hooks()
    calls: list[str] = []
    a = hooks.on("ev", recorder(calls, "a"))
    b = hooks.on("ev", recorder(calls, "b"))
    keep = hooks.on("other", recorder(calls, "other"))

    hooks.off(a)
    assert "ev" in hooks._handlers
    hooks.off(b)
    assert "ev" not in hooks._handlers
    assert hooks._handlers == {"other": [keep]}
    assert await hooks.fire("ev", None) is False
    assert calls == []


async def test_off_twice_or_unknown_is_harmless() -> None:
    hooks = Hooks()
    calls: list[str] = []
    registration = hooks.on("ev", recorder(calls, "a"))
    survivor = hooks.on("ev", recorder(calls, "b"))
    hooks.off(registration)
    hooks.off(registration)
    hooks.off(Registration("never-registered", recorder(calls, "c"), 0))

    assert hooks._handlers == {"ev": [survivor]}
    await hooks.fire("ev", None)
    assert calls == ["b"]


async def test_registering_while_firing_does_not_affect_current_firing() -> None:
    hooks = Hooks()
    calls: list[str] = []

    def adder(event: object) -> None:
        calls.append("adder")
        hooks.on("ev", recorder(calls, "added-high"), priority=100)
        hooks.on("ev", recorder(calls, "added-low"), priority=-100)

    adder_registration = hooks.on("ev", adder, priority=1)
    hooks.on("ev", recorder(calls, "base"))

    await hooks.fire("ev", None)
    assert calls == ["adder", "base"]

    # The additions take effect from the next firing on.
    calls.clear()
    hooks.off(adder_registration)  # stop it adding more
    await hooks.fire("ev", None)
    assert calls == ["added-high", "base", "added-low"]


async def test_unregistering_while_firing_does_not_affect_current_firing() -> None:
    hooks = Hooks()
    calls: list[str] = []
    registrations: dict[str, Registration] = {}

    def remover(event: object) -> None:
        calls.append("remover")
        hooks.off(registrations["later"])
        hooks.off(registrations["remover"])

    registrations["remover"] = hooks.on("ev", remover, priority=1)
    registrations["later"] = hooks.on("ev", recorder(calls, "later"))
    hooks.on("ev", recorder(calls, "last"), priority=-1)

    await hooks.fire("ev", None)
    assert calls == ["remover", "later", "last"]

    calls.clear()
    await hooks.fire("ev", None)
    assert calls == ["last"]


async def test_async_handler_unregistering_itself_while_firing() -> None:
    hooks = Hooks()
    calls: list[str] = []
    registrations: list[Registration] = []

    async def once(event: object) -> None:
        calls.append("once")
        hooks.off(registrations[0])

    registrations.append(hooks.on("ev", once, priority=1))
    hooks.on("ev", recorder(calls, "always"))

    await hooks.fire("ev", None)
    await hooks.fire("ev", None)
    assert calls == ["once", "always", "always"]
    assert "ev" in hooks._handlers


async def test_exception_in_sync_handler_propagates_and_stops_the_event() -> None:
    hooks = Hooks()
    calls: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    hooks.on("ev", recorder(calls, "before"), priority=1)
    hooks.on("ev", broken)
    hooks.on("ev", recorder(calls, "after"), priority=-1)

    with pytest.raises(RuntimeError, match="boom"):
        await hooks.fire("ev", None)
    assert calls == ["before"]


async def test_exception_in_async_handler_propagates() -> None:
    hooks = Hooks()
    calls: list[str] = []

    async def broken(event: object) -> None:
        raise LookupError("async boom")

    broken_registration = hooks.on("ev", broken, priority=1)
    hooks.on("ev", recorder(calls, "after"))

    with pytest.raises(LookupError, match="async boom"):
        await hooks.fire("ev", None)
    assert calls == []
    # The hooks are still usable afterwards.
    hooks.off(broken_registration)
    assert await hooks.fire("ev", None) is False
    assert calls == ["after"]

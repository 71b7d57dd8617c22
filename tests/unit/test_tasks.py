"""Background work the server owns (xmppd/tasks.py): tracked, drained before stopping."""

from __future__ import annotations

import asyncio
import logging

import pytest

from xmppd.tasks import Background


async def test_drain_waits_for_tasks_and_the_tasks_they_start() -> None:
    background = Background()
    done: list[str] = []
    release, started = asyncio.Event(), asyncio.Event()

    async def child() -> None:
        started.set()
        await release.wait()
        done.append("child")

    async def parent() -> None:
        background.spawn(child())
        done.append("parent")

    background.spawn(parent())
    draining = asyncio.ensure_future(background.drain())
    await started.wait()
    assert done == ["parent"] and not draining.done()
    release.set()
    assert await draining is True
    assert done == ["parent", "child"] and len(background) == 0


async def test_drain_gives_up_after_its_patience() -> None:
    background = Background()
    never = asyncio.Event()
    task = background.spawn(never.wait())
    assert await background.drain(patience=0.01) is False
    assert not task.done()
    await background.cancel()
    assert task.cancelled()


async def test_daemons_are_not_waited_for_but_cancelled() -> None:
    background = Background()
    loop_forever = background.spawn(asyncio.Event().wait(), daemon=True)
    assert await background.drain(patience=1) is True
    await background.cancel()
    assert loop_forever.cancelled()


async def test_a_failed_task_is_logged_and_costs_nothing_else(caplog: pytest.LogCaptureFixture) -> None:
    background = Background()

    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> str:
        return "ok"

    failing, working = background.spawn(broken()), background.spawn(fine())
    with caplog.at_level(logging.ERROR, logger="xmppd.tasks"):
        assert await background.drain() is True
    assert isinstance(failing.exception(), RuntimeError) and working.result() == "ok"
    assert "background task failed" in caplog.text

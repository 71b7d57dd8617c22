"""CPU per call of the SQLite connection's thread (storage.sqlite.connection.Worker) against a
ThreadPoolExecutor of one worker, which it replaced: 20 concurrent callers, each awaiting a
trivial call in turn, as a login's storage calls do. Run pinned to one core, as bench/run.sh pins
the server: `taskset -c 0 .venv/bin/python -m bench.sqlite_worker`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from storage.sqlite.connection import Worker

CALLERS = 20
CALLS = 20_000


def _nothing() -> int:
    return 1


async def _cpu_per_call(call: Callable[[], Awaitable[int]]) -> float:
    async def caller() -> None:
        for _ in range(CALLS // CALLERS):
            await call()

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return (time.process_time() - started) / CALLS * 1e6


async def main() -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    worker = Worker("bench-worker")
    candidates: dict[str, Callable[[], Awaitable[int]]] = {
        "ThreadPoolExecutor(1) + run_in_executor": lambda: loop.run_in_executor(executor, _nothing),
        "Worker.submit": lambda: worker.submit(_nothing),
    }
    for name, call in candidates.items():
        runs = [await _cpu_per_call(call) for _ in range(3)]
        print(f"{name}: {min(runs):.1f} us of CPU per call (best of 3: {', '.join(f'{r:.1f}' for r in runs)})")
    worker.stop()
    executor.shutdown()


if __name__ == "__main__":
    asyncio.run(main())

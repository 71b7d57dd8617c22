"""The SQLite connection and its worker thread, and the transaction helper every store uses.

One sqlite3 connection lives in one dedicated worker thread (`Worker`); every operation is a plain
function run there, so the event loop never blocks on disk and there is no locking to think
about: operations run one after another, in the order they were issued. Each
write operation is a whole transaction inside one such function, which also means that cancelling
the awaiting task cannot leave a transaction half done (the function completes or rolls back).

WAL lets readers in other processes (`xmppd users` while the server runs) proceed during writes;
synchronous=NORMAL is durable against process crashes and only risks the last transactions on power
loss, the usual trade for WAL. Transactions are explicit (the connection is in autocommit mode and
we issue BEGIN IMMEDIATE ourselves), so a write never has to upgrade a read lock.

Checkpoints (copying the WAL back into the database file, with its fsyncs) run in a thread of
their own (`Checkpointer`), on a second connection, every CHECKPOINT_INTERVAL seconds, never in
a commit: by default SQLite runs one inside whichever commit takes the WAL past 1,000 pages, and
the messages waiting for that commit waited for the checkpoint too (the archive's p99 at 500
msg/s: 12.7 ms with them, 3.3 ms without; bench/RESULTS.md). PASSIVE checkpoints never wait for
the writer nor make it wait; the WAL is reused from its start once wholly copied, and
journal_size_limit bounds what its file keeps on disk after that.

A damaged file, or one that is not a database at all, is never reported as a bare "database disk
image is malformed": whichever operation meets it (opening, the quick_check at server start in
backend.py, any query) raises DamagedDatabaseError naming the file and how to restore or salvage it.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

from storage.errors import DamagedDatabaseError, StorageError

__all__ = ["BUSY_TIMEOUT", "Connection", "damaged", "is_damage", "transaction"]

T = TypeVar("T")

BUSY_TIMEOUT = 5.0  # seconds to wait for another process's write lock
CHECKPOINT_INTERVAL = 1.0  # seconds between two checkpoints of the WAL (Checkpointer)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps on disk once reset (journal_size_limit)

log = logging.getLogger("xmppd.storage")

# Primary result codes (https://sqlite.org/rescode.html) of a damaged file and of one that is no database.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the file is damaged (SQLITE_CORRUPT and its extended codes) or
    is not a database (SQLITE_NOTADB), rather than busy, full, read-only..."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def damaged(path: str, detail: str, *, not_a_database: bool = False) -> DamagedDatabaseError:
    """The refusal of a damaged database file: which file, what SQLite found, and what to do."""
    file, recovered = shlex.quote(path), shlex.quote(f"{path}.recovered")
    if not_a_database:
        found = (
            f"{path} is not an SQLite database ({detail}); xmppd will not use it. "
            "If storage.sqlite_path names the wrong file, correct it; otherwise, with xmppd stopped,"
        )
    else:
        found = f"the SQLite database {path} is damaged ({detail}); xmppd will not use it. With xmppd stopped,"
    return DamagedDatabaseError(
        f"{found} restore it from a backup, or salvage what is readable with: "
        f'sqlite3 {file} ".recover" | sqlite3 {recovered}, '
        "then move the damaged file (and its -wal and -shm files) aside and put the recovered one in its place"
    )


def _translate(path: str, exc: sqlite3.Error) -> StorageError:
    if is_damage(exc):
        code = getattr(exc, "sqlite_errorcode", 0)
        return damaged(path, str(exc), not_a_database=(code & 0xFF) == SQLITE_NOTADB)
    return StorageError(f"sqlite: {exc}")


Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Worker:
    """One thread that runs functions in the order they were given, each answering an asyncio
    future. What a ThreadPoolExecutor of one worker does, for a quarter of the cost per call (3
    us against 12, both threads' CPU on one core): no pool lock, no thread-safe future chained to
    the asyncio one. A login makes several calls (credentials, roster, ...)."""

    def __init__(self, name: str) -> None:
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        # A daemon: a server that never closed its storage can still exit (a write is a whole
        # transaction in one call, which SQLite rolls back if the process dies inside it).
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return future

    def stop(self) -> None:
        """After the calls already submitted; returns at once."""
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            error: BaseException | None = None
            result = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting side
                error = exc
            with suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # its awaiter was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Connection:
    """The connection and its thread. Everything touching `_db` runs in that thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._worker = Worker("xmppd-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        self._checkpointer: Checkpointer | None = None

    def _connect(self) -> None:
        on_disk = self._path != ":memory:"
        if on_disk:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions, we BEGIN and COMMIT ourselves.
        db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if on_disk:
                db.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's work, not a commit's
                db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        except BaseException:
            db.close()
            raise
        self._db = db
        if on_disk:
            self._checkpointer = Checkpointer(self._path)

    async def open(self) -> None:
        try:
            await self._worker.submit(self._connect)
        except (sqlite3.Error, OSError) as exc:
            self._worker.stop()
            self._closed = True
            if isinstance(exc, sqlite3.Error) and is_damage(exc):
                raise _translate(self._path, exc) from exc
            raise StorageError(f"sqlite: cannot open {self._path}: {exc}") from exc

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:  # closed while this call was queued
            raise StorageError("storage is closed")
        return fn(self._db)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) in the worker thread; sqlite3 errors become StorageError."""
        if self._closed:
            raise StorageError("storage is closed")
        try:
            return await self._worker.submit(lambda: self._call(fn))
        except sqlite3.Error as exc:
            raise _translate(self._path, exc) from exc

    def _close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()  # the last connection to close copies the WAL back and removes it
            self._db = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Queued after any call already submitted, so those finish first.
        try:
            await self._worker.submit(self._close)
        finally:
            self._worker.stop()


class Checkpointer:
    """Copies the WAL back into the database file every `interval` seconds, in a thread of its
    own with a connection of its own, so that no commit waits for it (see the module docstring)."""

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self.checkpointed = threading.Event()  # set by each checkpoint done (tests wait for it)
        self._thread = threading.Thread(target=self._run, name="xmppd-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.wait(self._interval):
                self.checkpoint(db)
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            # The next one tries again; the WAL only grows meanwhile. A damaged file is found
            # and reported by the operations themselves.
            log.warning("checkpoint of %s failed: %s", self._path, exc)
            return
        self.checkpointed.set()

    def stop(self) -> None:
        """End the thread (its connection closes): no checkpoint runs after this returns."""
        self._stopping.set()
        self._thread.join()


@contextmanager
def transaction(db: sqlite3.Connection, kind: str = "IMMEDIATE") -> Iterator[None]:
    """BEGIN (IMMEDIATE: take the write lock first) ... COMMIT, or ROLLBACK on any exception.
    Only inside a function run by Connection.run."""
    db.execute(f"BEGIN {kind}")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # some errors make SQLite roll back by itself
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")

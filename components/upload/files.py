"""The uploaded files on disk: one directory per slot under `<data_dir>/upload/`, written by
streaming, made visible by a rename, deleted when they expire.

    <data_dir>/upload/<slot id>/data          the file, under a fixed name
    <data_dir>/upload/<slot id>/meta.json     its metadata: original name, type, size, account, when
    <data_dir>/upload/<slot id>/data.part     an upload in progress

No part of a path comes from a client but the slot id, and only once `slots.SLOT_ID` (32
base64url characters, which the service made itself) matched it: a file name never touches
the file system, so there is nothing to traverse with. The directories are 0700.

An upload is written to `data.part` (opened exclusively: a second writer of the same slot fails),
flushed and fsynced, its metadata is written beside it (`meta.json.part`, renamed), and only then
is `data.part` renamed to `data`: a slot is complete exactly when `data` exists, so a crash at any
point leaves either a complete file or a directory without `data`, which the scan at start
deletes. The blocking calls run in worker threads (`asyncio.to_thread`) so that the event loop
never waits for the disk; writes go in pieces of at most `WRITE_SIZE` bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from components.upload.slots import SLOT_ID

log = logging.getLogger("xmppd.upload")

DATA = "data"
META = "meta.json"
PART = "data.part"
# Bytes gathered from the request before one write to disk (one thread hand-off each).
WRITE_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredFile:
    slot_id: str
    filename: str
    size: int
    content_type: str
    account: str
    stored: float  # seconds since the epoch, by the server's clock

    @classmethod
    def from_json(cls, slot_id: str, data: object) -> StoredFile:
        if not isinstance(data, dict):
            raise ValueError("metadata is not an object")
        filename, size, content_type = data.get("filename"), data.get("size"), data.get("content_type")
        account, stored = data.get("account"), data.get("stored")
        if not (
            isinstance(filename, str) and isinstance(size, int) and isinstance(content_type, str)
            and isinstance(account, str) and isinstance(stored, int | float)
        ):
            raise ValueError("metadata fields missing or of the wrong type")
        return cls(slot_id, filename, size, content_type, account, float(stored))


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, slot_id: str) -> Path:
        if not SLOT_ID.fullmatch(slot_id):  # never a path from anything else
            raise ValueError(f"not a slot id: {slot_id!r}")
        return self.root / slot_id

    def data_path(self, slot_id: str) -> Path:
        return self.directory(slot_id) / DATA

    # -- blocking: call from a worker thread ---------------------------------------------------
    def scan(self) -> list[StoredFile]:
        """Every complete file (creating the root if need be). Directories without `data` (an
        upload cut by a crash or a stop) are deleted; a complete file whose metadata cannot be
        read is deleted too, since it could be served with no name or type. Entries that are not
        slot directories are left alone (and logged): this never deletes what it did not make."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not (SLOT_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
                    log.warning("upload directory: ignoring %s, which is not an upload", entry.path)
                    continue
                path = Path(entry.path)
                if not (path / DATA).is_file():
                    self.remove(entry.name)
                    continue
                try:
                    found.append(StoredFile.from_json(entry.name, json.loads((path / META).read_bytes())))
                except (OSError, ValueError) as exc:
                    log.warning("upload %s: unreadable metadata (%s), deleting it", entry.name, exc)
                    self.remove(entry.name)
        return found

    def remove(self, slot_id: str) -> None:
        """Delete a slot's directory and what is in it (gone already is fine)."""
        shutil.rmtree(self.directory(slot_id), ignore_errors=True)

    def exists(self, slot_id: str) -> bool:
        return self.data_path(slot_id).is_file()

    def _open_part(self, slot_id: str) -> BinaryIO:
        directory = self.directory(slot_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        return open(directory / PART, "xb")  # closed by Upload

    # -- async -----------------------------------------------------------------------------------
    async def begin(self, slot_id: str) -> Upload:
        """Start writing a slot's file; FileExistsError when another upload of it is under way."""
        return Upload(self, slot_id, await asyncio.to_thread(self._open_part, slot_id))

    async def delete(self, slot_id: str) -> None:
        await asyncio.to_thread(self.remove, slot_id)


class Upload:
    """One file being written: `write` the body as it comes, then `commit` or `abort`."""

    def __init__(self, store: FileStore, slot_id: str, file: BinaryIO) -> None:
        self.store = store
        self.slot_id = slot_id
        self.directory = store.directory(slot_id)
        self._file = file
        self._buffer = bytearray()
        self.received = 0

    async def write(self, data: bytes) -> None:
        self.received += len(data)
        self._buffer += data
        if len(self._buffer) >= WRITE_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        if self._buffer:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            await asyncio.to_thread(self._file.write, chunk)

    async def commit(self, stored: StoredFile) -> None:
        """Make the file visible, durable first: data, then metadata, then the rename."""
        await self._flush()
        await asyncio.to_thread(self._commit, stored)

    def _commit(self, stored: StoredFile) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        meta = self.directory / f"{META}.part"
        fields = asdict(stored)
        del fields["slot_id"]  # the directory's name
        with open(meta, "wb") as file:
            file.write(json.dumps(fields, ensure_ascii=False).encode())
            file.flush()
            os.fsync(file.fileno())
        os.replace(meta, self.directory / META)
        os.replace(self.directory / PART, self.directory / DATA)
        _fsync_directory(self.directory)

    def abort(self) -> None:
        """Drop what was written; the slot may be used again. Synchronous on purpose (closing and
        unlinking one file is quick), so that it also runs when the handler is being cancelled."""
        self._buffer.clear()
        with contextlib.suppress(OSError):
            self._file.close()
        if not (self.directory / DATA).exists():  # never a complete upload
            shutil.rmtree(self.directory, ignore_errors=True)


def _fsync_directory(path: Path) -> None:
    """The renames themselves durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # a file system that cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)

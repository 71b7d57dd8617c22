"""Freed parsers go back to the operating system (xmppd/memory.py)."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from xmppd.memory import give_back_free_memory
from xmppd.xml import XmlStream

HEADER = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>"
STREAMS = 5000


def resident_kb() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_released_parsers_leave_the_resident_set() -> None:
    streams = []
    for _ in range(STREAMS):
        stream = XmlStream()
        stream.feed(HEADER + b"<presence/>")
        streams.append(stream)
    assert all(stream.release() for stream in streams)
    gc.collect()
    before = resident_kb()
    assert give_back_free_memory()
    # ~11 KB per parser was freed: most of it leaves the process now.
    assert before - resident_kb() > STREAMS * 4

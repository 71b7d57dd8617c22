"""The one process-wide tweak of asyncio (xmppd/tls.py): TLS connections get a receive buffer of
one TLS record instead of 256 KiB. asyncio has no public knob for it, so this checks that the
Python in use still has the attribute the tweak sets, and that the tweak sets it."""

from __future__ import annotations

import asyncio.sslproto

from xmppd.tls import TLS_READ_BUFFER, limit_tls_read_buffers


def test_this_python_still_has_the_attribute() -> None:
    # If this fails after a Python upgrade, idle TLS sessions cost 256 KiB more each: find the
    # new way before upgrading.
    assert isinstance(asyncio.sslproto.SSLProtocol.max_size, int)


def test_the_server_start_lowers_it_to_one_tls_record() -> None:
    original = asyncio.sslproto.SSLProtocol.max_size
    try:
        limit_tls_read_buffers()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 17 * 1024
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original

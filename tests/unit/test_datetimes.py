"""XEP-0082 stamps: written in UTC to the millisecond, read back in the forms the XEP allows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from xmppd.datetimes import parse_datetime, stamp


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_034_553_517_007, "2002-10-13T23:58:37.007Z"),  # XEP-0082's example
        (951_782_400_999, "2000-02-29T00:00:00.999Z"),  # a leap day, the last millisecond of a second
        (4_102_444_799_500, "2099-12-31T23:59:59.500Z"),
    ],
)
def test_stamp_writes_utc_to_the_millisecond(ms: int, text: str) -> None:
    assert stamp(ms) == text


@pytest.mark.parametrize("ms", [0, 1, 999, 1_000, 1_764_288_000_123, 4_102_444_799_999])
def test_a_stamp_reads_back_as_the_same_moment(ms: int) -> None:
    assert round(parse_datetime(stamp(ms)).timestamp() * 1000) == ms


def test_offsets_and_missing_fractions_are_read_as_utc() -> None:
    expected = datetime(2002, 10, 13, 23, 58, 37, tzinfo=UTC)
    assert parse_datetime("2002-10-13T17:58:37-06:00") == expected
    assert parse_datetime("2002-10-13T23:58:37Z") == expected
    with pytest.raises(ValueError, match="not an XEP-0082 DateTime"):
        parse_datetime("13/10/2002 23:58")

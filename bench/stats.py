"""Latency summaries. Latencies are kept raw (as integer microseconds): windows are bounded in time,
so even 30k/s over 15 s is under four MB, and exact percentiles beat a histogram's buckets."""

from __future__ import annotations

from array import array


def percentile(sorted_values: list[int] | array[int], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[rank])


def summarize_us(values: array[int] | list[int]) -> dict[str, float | int]:
    """p50/p90/p99/p99.9/max in milliseconds from microsecond samples."""
    ordered = sorted(values)
    out: dict[str, float | int] = {"samples": len(ordered)}
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        out[name] = round(percentile(ordered, q) / 1000.0, 3)
    out["max_ms"] = round(ordered[-1] / 1000.0, 3) if ordered else float("nan")
    return out

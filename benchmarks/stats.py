"""Small numeric helpers for the benchmark (no numpy needed)."""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(latencies_ns: Sequence[int]) -> dict[str, float | int | None]:
    """count, p50, p99, p99.9 and max of nanosecond latencies, in milliseconds."""
    ms = [value / 1e6 for value in latencies_ns]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "count": len(ms),
        "p50_ms": rounded(percentile(ms, 50)),
        "p99_ms": rounded(percentile(ms, 99)),
        "p99_9_ms": rounded(percentile(ms, 99.9)),
        "max_ms": rounded(max(ms) if ms else None),
        "mean_ms": rounded(sum(ms) / len(ms) if ms else None),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all threads, in nanosecond resolution (/proc/<pid>/task/*/schedstat).

    Falls back to user + system time from /proc/<pid>/stat (10 ms ticks).
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/schedstat"
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as handle:
                total += int(handle.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


_BUCKET = re.compile(r'^liqmon_tick_evaluation_seconds_bucket\{le="([^"]+)"\} (\S+)$')
_SUM = re.compile(r"^liqmon_tick_evaluation_seconds_(sum|count) (\S+)$")


@dataclass(frozen=True)
class Histogram:
    """A snapshot of a cumulative Prometheus histogram: (upper bound, count) buckets."""

    buckets: list[tuple[float, float]]
    sum: float
    count: float


def tick_histogram(metrics_text: str) -> Histogram:
    """The monitor's ``liqmon_tick_evaluation_seconds`` histogram: buckets, sum, count."""
    buckets: list[tuple[float, float]] = []
    totals: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if match := _BUCKET.match(line):
            buckets.append((float(match.group(1)), float(match.group(2))))
        elif match := _SUM.match(line):
            totals[match.group(1)] = float(match.group(2))
    return Histogram(buckets, totals.get("sum", 0.0), totals.get("count", 0.0))


def histogram_delta(before: Histogram, after: Histogram) -> dict[str, object]:
    """What was observed between two snapshots, with bucket-bound percentiles (upper bounds)."""
    b_buckets = dict(before.buckets)
    buckets = [(le, count - b_buckets.get(le, 0.0)) for le, count in after.buckets]
    count = after.count - before.count
    total = after.sum - before.sum

    def bound(q: float) -> float | None:
        if count <= 0:
            return None
        for le, cumulative in buckets:
            if cumulative >= count * q / 100:
                return le * 1000
        return None

    return {
        "count": int(count),
        "mean_ms": round(total / count * 1000, 3) if count > 0 else None,
        "p50_le_ms": bound(50),
        "p99_le_ms": bound(99),
        "p99_9_le_ms": bound(99.9),
        "sum_s": round(total, 4),
    }


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties ranked by position); None for fewer than 3 points."""
    n = len(xs)
    if n < 3:
        return None

    def ranks(values: Sequence[float]) -> list[int]:
        order = sorted(range(n), key=lambda i: values[i])
        out = [0] * n
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    rx, ry = ranks(xs), ranks(ys)
    d2 = sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True))
    return round(1 - 6 * d2 / (n * (n * n - 1)), 4)

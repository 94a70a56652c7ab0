"""Timing helpers and the one table ``make bench`` prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timing:
    """Latencies of one path, in seconds."""

    samples: list[float] = field(default_factory=list)

    def measure(self, func: Callable[[], object]) -> None:
        start = time.perf_counter()
        func()
        self.samples.append(time.perf_counter() - start)

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    @property
    def ops_per_s(self) -> float:
        return len(self.samples) / sum(self.samples)


@dataclass
class Row:
    benchmark: str
    path: str
    figure: str
    ratio: str = ""
    target: str = ""


ROWS: list[Row] = []


def add(benchmark: str, path: str, figure: str, ratio: str = "", target: str = "") -> None:
    ROWS.append(Row(benchmark, path, figure, ratio, target))


def add_timing(benchmark: str, path: str, timing: Timing, ratio: float | None = None, target: str = "") -> None:
    figure = f"{timing.ops_per_s:8.0f} ops/s  p50 {timing.p50_ms:6.2f} ms  p99 {timing.p99_ms:6.2f} ms"
    add(benchmark, path, figure, "" if ratio is None else f"{ratio:.2f}x", target)


def verdict(value: float, limit: float) -> str:
    return f"<= {limit}x: {'met' if value <= limit else 'MISSED'}"


def print_table() -> None:
    headers = ("benchmark", "path", "figure", "ratio", "target")
    rows = [headers] + [(r.benchmark, r.path, r.figure, r.ratio, r.target) for r in ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    line = "-+-".join("-" * w for w in widths)
    for index, row in enumerate(rows):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print(line)

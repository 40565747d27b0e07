"""One JSON line per measurement, stamped with the machine, the commit and the date."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    """The CPU model from /proc/cpuinfo when it can be read, else ``platform.processor()``."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Processor", "cpu model", "Hardware"):
            return value.strip()
    return platform.processor() or "unknown"


@cache
def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
    }


@cache
def git_commit() -> str:
    """The short commit of the checkout this file is in, or ``unknown``."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else "unknown"


def emit(name: str, params: dict[str, Any], figures: dict[str, Any]) -> None:
    """Print one JSON object on one line of stdout and flush it."""
    record = {
        "name": name,
        "params": params,
        "figures": figures,
        "machine": machine(),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    sys.stdout.write(json.dumps(record, sort_keys=False) + "\n")
    sys.stdout.flush()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of non-empty ``values`` (no interpolation): with fewer than
    100 values, p99 is the maximum."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not in [0, 1]")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def seconds_stats(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """``{prefix}min_s`` ... ``{prefix}max_s`` (min, median, mean, p90, p99, max) of
    ``values`` in seconds, rounded to 0.1 ms; every figure None when there is none."""
    keys = ("min", "median", "mean", "p90", "p99", "max")
    if not values:
        return {f"{prefix}{k}_s": None for k in keys}
    ordered = sorted(values)
    figures = (
        ordered[0],
        statistics.median(ordered),
        statistics.fmean(ordered),
        percentile(ordered, 0.90),
        percentile(ordered, 0.99),
        ordered[-1],
    )
    return {f"{prefix}{k}_s": round(v, 4) for k, v in zip(keys, figures, strict=True)}

"""The machine a benchmark ran on, printed with every figure (numbers mean little without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> str:
    """'2 cores, Intel(R) Xeon(R) ..., x86_64'."""
    return f"{os.cpu_count()} cores, {cpu_model()}, {platform.machine()}"

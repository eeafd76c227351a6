"""The machine a benchmark ran on, for its conditions line: the figures depend on it (the object fit's chaotic
fits land differently on another CPU's floating point, and the times differ more; docs/fit_recovery.md)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine() -> str:
    """e.g. 'AMD EPYC 7B13 (x86_64), 2 CPUs, load 0.31': the load average when the benchmark started (a
    busy machine inflates every time)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs, load {load:.2f}"

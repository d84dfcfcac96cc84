"""What the machine offers that a recipe depends on: the CPU's name, cores and bf16 units.

Read from /proc/cpuinfo (Linux); elsewhere the CPU is named by `platform` and no bf16 unit is
assumed. No TensorFlow here: the GPU count comes from the caller.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU flags whose units multiply bf16 natively


@functools.cache
def _cpuinfo() -> str:
    """The text of /proc/cpuinfo, or '' where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (e.g. 'AMD EPYC 9B14')."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_units(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The bf16 flags of `BF16_FLAGS` the CPU has (empty when it has none).

    Args:
        cpuinfo: A /proc/cpuinfo text; this machine's when None.
    """
    flags: set[str] = set()
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break  # every core lists the same flags
    return tuple(f for f in BF16_FLAGS if f in flags)


def describe_machine() -> str:
    """One line for benchmark records: CPU model, cores, bf16 units."""
    units = " ".join(cpu_bf16_units()) or "no bf16 units"
    return f"{cpu_model()}, {os.cpu_count()} cores, {units}"


def auto_precision(*, gpus: int) -> str:
    """The Keras policy `train.precision: auto` stands for on this machine.

    mixed_bfloat16 on a CPU with bf16 units: at base.yaml's shape it trains ~23% more steps in
    600 s on one core (1.17x in the plain step on two) and reached 0.02-0.05 lower val bpc on
    every sweep corpus (docs/benchmarks.md, "part 3"). float32 elsewhere: without the units bf16
    is emulated and slower, and no GPU was measured.
    """
    return "mixed_bfloat16" if gpus == 0 and cpu_bf16_units() else "float32"

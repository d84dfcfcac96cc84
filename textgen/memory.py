"""Process memory as /proc/<pid>/status reports it: what benchmarks and metrics quote."""

from __future__ import annotations


def proc_status_mb(field: str, pid: int | str = "self") -> float:
    """Returns a `/proc/<pid>/status` field (VmRSS, VmHWM, RssAnon, RssFile) in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6  # the kernel reports kB
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    return proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size (VmHWM) of this process, MB."""
    return proc_status_mb("VmHWM")

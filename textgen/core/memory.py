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


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def pin_mmap_threshold(threshold_bytes: int = 256 << 10) -> bool:
    """Keeps buffers above `threshold_bytes` in their own mmaps, returned to the OS when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
    which multi-MB chunk buffers come from the heap, fragment it and pin RSS that grows with
    the corpus. Setting the threshold explicitly turns that adjustment off. Returns False where
    glibc is not the allocator.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False


def available_memory_bytes() -> int | None:
    """Bytes a new allocation can get: MemAvailable, or less under a cgroup limit; None: unknown."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            used = int(f.read().strip())
        if limit.isdigit() and available is not None:
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available

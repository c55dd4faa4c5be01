"""Keep freed host memory in the process for reuse (glibc malloc), for CPU training and sampling.

A CPU training step allocates and frees the same large activation tensors (tens to hundreds of MB
each: Winograd tiles, saved activations) every step. glibc serves blocks above 32 MB with mmap and
returns them on free, so every step pays the kernel's page faults again on fresh memory; in
benchmarks/train_step.py that was ~4% of a 64 px step and up to a third of a Winograd forward.
Turning mmap off and trimming rarely makes freed blocks reusable, as jemalloc or tcmalloc would,
for a higher but stable resident size. ``FEWSHOT_KEEP_FREED=0`` leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import platform
import sys

from . import settings

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the malloc settings once per process; True when they are in effect (glibc only)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not settings.keep_freed_memory() or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok = ok and libc.mallopt(_M_TOP_PAD, 64 << 20) == 1
    _applied = ok
    return ok


def available_bytes() -> int | None:
    """Memory the kernel says a new allocation can use without swapping (Linux MemAvailable); None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None

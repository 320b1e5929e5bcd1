"""Keep freed memory in the process for reuse instead of handing it back to the OS at once.

Why: glibc returns large freed blocks to the OS and maps fresh, zero-filled pages at the next
request, so a loop that allocates the same activations batch after batch page-faults on every
batch. On the two-core reference machine that was 40% of feature extraction's CPU time
(``bench/bench_malloc.py`` measures it). Raising glibc's mmap and trim thresholds keeps those
blocks in the heap. Numbers are unchanged, bit for bit; the cost is a resident size that stays
near its peak. ``SEMCOV_KEEP_FREED_MEMORY=0`` leaves the C library's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Requests below this come from the heap, not a fresh mapping, and a free heap top below it stays.
KEEP_BYTES = 1 << 30  # mallopt takes a C int
#: Environment variable that turns the setting off when it is "0".
SWITCH = "SEMCOV_KEEP_FREED_MEMORY"


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process (once); False where they are unchanged: the
    switch is off, or the C library has no ``mallopt`` (macOS) or refuses the values."""
    if os.environ.get(SWITCH, "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))

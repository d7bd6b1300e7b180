"""Give big payloads' memory back to the system (glibc only; elsewhere a no-op).

glibc serves an allocation above `M_MMAP_THRESHOLD` with its own mapping, unmapped when freed.
By default that threshold is dynamic: each time such a block is freed, the threshold rises to
its size (up to 32 MB). After one 4 MB resume payload, every later 4 MB string, JSON buffer and
checkpoint comes from the heap instead, and freed heap pages mostly stay with the process: the
soak bench held 420 MB after 100 resumes of 4 MB each, with 70 MB of live data. Setting the
threshold pins it (glibc stops adjusting it), so blocks of 1 MB or more always go back when
freed; an mmap/munmap pair is nothing next to encoding, hashing and writing a megabyte.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("abstractruntime.daemon")

M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
THRESHOLD = 1 << 20


def tune() -> bool:
    """Pin glibc's mmap threshold at 1 MB; True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; big payloads may stay resident after use")
    return ok

"""The C heap of a u2a process: keep torch's activation buffers in the heap (glibc only).

torch's CPU allocator takes every tensor from ``malloc``. glibc serves a request above its *mmap
threshold* with a fresh ``mmap`` and unmaps it on ``free``, and gives the free top of its heap
back to the system above its *trim threshold*; either way, the next tensor of that size
page-faults its memory in again, page by page, on first touch. Both thresholds start low (128 KiB)
and rise on their own with the blocks freed so far, so how often a step pays for page faults
depends on the order of the process's first allocations. On the bench's step of the demo model
(DINOv2-S 84 px + MiniLM-L6, batch 16, 2 threads; three processes each) a bf16 training step took
420-489 ms with glibc's defaults and 384-398 ms tuned in one round, but 376-439 against 378-449 ms
in a later one (the machine's drift between processes is as large as the effect). An ``exp`` over
4 MiB took 5 ms with fresh pages and 0.8 ms without. One epoch of the demo recipe trained at 50-51
samples/s tuned against 44.5-46.5 with the defaults, at the same peak resident memory (1.22 GB;
docs/benchmarks.md, "The C heap"); two 1-thread trainings side by side (``u2a demo``) gained
nothing measurable.

:func:`tune_allocator` sets the mmap threshold to 32 MiB (glibc's largest allowed value on 64-bit
systems) and the trim threshold to 64 MiB (twice that, glibc's own rule when it raises them) with
``mallopt``. Cost: up to 64 MiB of freed memory stays with the process, and blocks up to 32 MiB
come from the heap, which returns memory to the system only from its top. The numbers computed
do not change (the same kernels on the same data; tests/test_allocator.py trains twice and
compares the weights bit for bit).

The ``u2a`` command calls it once at start (and each worker of ``u2a experiment --jobs``). It does
nothing where glibc is not the C library, when ``$U2A_MALLOC`` is ``default``, or when the user set
the mmap threshold themselves (``$MALLOC_MMAP_THRESHOLD_`` or ``glibc.malloc.mmap_threshold`` in
``$GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: the request size (bytes) above which glibc's malloc maps fresh pages once tuned
MMAP_THRESHOLD = 32 * 1024 * 1024
#: the free heap top (bytes) above which glibc gives memory back to the system once tuned
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
#: set to ``default`` to leave glibc's malloc as it is
ENV = "U2A_MALLOC"
# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state: str | None = None


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and other C libraries
    return libc


def _user_setting() -> str | None:
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return "MALLOC_MMAP_THRESHOLD_"
    if "malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def tune_allocator() -> str:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) once
    per process; a line saying what was done (also returned by later calls, see
    :func:`allocator_state`)."""
    global _state
    if _state is not None:
        return _state
    if os.environ.get(ENV, "").strip().lower() == "default":
        _state = f"default (${ENV}=default)"
        return _state
    user = _user_setting()
    if user:
        _state = f"default (the threshold is set by ${user})"
        return _state
    libc = _glibc()
    if libc is None:
        _state = "default (not glibc)"
        return _state
    if libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        _state = "default (mallopt refused the mmap threshold)"
        return _state
    if libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:  # pragma: no cover - glibc accepts any size
        _state = f"glibc mmap_threshold={MMAP_THRESHOLD >> 20} MiB (trim threshold refused)"
        return _state
    _state = f"glibc mmap_threshold={MMAP_THRESHOLD >> 20} MiB, trim_threshold={TRIM_THRESHOLD >> 20} MiB"
    return _state


def allocator_state() -> str:
    """What :func:`tune_allocator` did in this process (``default (not tuned)`` before any call)."""
    return _state if _state is not None else "default (not tuned)"

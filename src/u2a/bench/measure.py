"""Timing and memory measurement for ``u2a bench``: variants interleaved round-robin in one process.

Every variant of a comparison is a callable that does one unit of work (a training step, an
inference pass). :func:`interleave` warms each up, then times them in rounds, one call of each per
round in a rotating order, so that whatever else the machine does at the time (other processes,
frequency changes) falls on all of them alike; the figure reported is the median over the rounds.

Peak memory of one call is measured apart from the timed calls:

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before the call (the call's own working memory: activations, gradients, temporaries).
- CPU (Linux): the rise of the process's peak resident set size (``VmHWM`` in
  ``/proc/self/status``) over the call, after resetting that peak to the current size (writing
  ``5`` to ``/proc/self/clear_refs``) and handing freed heap pages back to the system
  (``malloc_trim(0)``, which also releases whole free pages inside glibc's arenas), so that memory
  an earlier variant used and freed does not hide this call's use. The allocator itself is left
  as it is: the timed calls run as training does. Where ``clear_refs`` is not available the rise
  of ``ru_maxrss`` is reported, which counts only new process-wide peaks (the ``"method"`` field
  says which).
"""

from __future__ import annotations

import ctypes
import gc
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Seconds per call of one variant over the timed rounds."""

    seconds: list[float] = field(default_factory=list)
    #: work items per call (samples), to turn seconds into throughput
    items: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    def as_dict(self) -> dict[str, Any]:
        med = self.median
        spread = (min(self.seconds), max(self.seconds)) if self.seconds else (float("nan"), float("nan"))
        return {
            "median_s": med,
            "min_s": spread[0],
            "max_s": spread[1],
            "repeats": len(self.seconds),
            "samples_per_s": self.items / med if med > 0 else None,
            "ms_per_sample": 1000.0 * med / self.items if self.items else None,
            "times_s": list(self.seconds),
        }


def interleave(variants: Mapping[str, Callable[[], Any]], warmup: int, repeats: int,
               device: torch.device | str, items: Mapping[str, int] | int = 1) -> dict[str, Timing]:
    """Warm every variant up ``warmup`` times, then time ``repeats`` rounds of one call each, the
    order rotated by one every round. Returns a :class:`Timing` per variant."""
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            variants[n]()
    sync(device)
    out = {n: Timing(items=(items[n] if isinstance(items, Mapping) else items)) for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            sync(device)
            t0 = time.perf_counter()
            variants[n]()
            sync(device)
            out[n].seconds.append(time.perf_counter() - t0)
    return out


def ratio(a: Timing, b: Timing) -> float | None:
    """time(a) / time(b) of the medians (> 1: b is faster)."""
    if not a.seconds or not b.seconds or b.median <= 0:
        return None
    return a.median / b.median


# ---- memory ------------------------------------------------------------------------------------

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    return _LIBC or None


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _hwm_resettable() -> bool:
    p = Path("/proc/self/clear_refs")
    if not p.exists() or _status_kib("VmHWM") is None:
        return False
    try:
        p.write_text("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> dict[str, Any]:
    """The peak memory of one call of ``fn`` above what was in use before it, in MiB."""
    dev = torch.device(device)
    gc.collect()
    if dev.type == "cuda":
        sync(dev)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        sync(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        return {"peak_mib": (peak - before) / 2 ** 20, "method": "cuda.max_memory_allocated"}
    libc = _libc()
    if _hwm_resettable():
        if libc is not None:
            libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kib("VmRSS") or 0
        fn()
        hwm = _status_kib("VmHWM") or 0
        return {"peak_mib": max(hwm - base, 0) / 1024, "method": "VmHWM rise (clear_refs reset)"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mib": (after - before) / 1024, "method": "ru_maxrss rise (new process peaks only)"}


def saved_for_backward(fn: Callable[[], Any], exclude: set[int] | None = None) -> dict[str, Any]:
    """The bytes autograd keeps from the forward pass for the backward pass during one call of
    ``fn`` (a training step): every tensor it saves, each storage counted once, parameters (given
    by ``exclude``, their storages' data pointers) left out. A deterministic measure of activation
    memory, free of allocator effects, on any device."""
    exclude = exclude or set()
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr and ptr not in exclude:
                seen[ptr] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # pragma: no cover - tensors without storage
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return {"saved_mib": sum(seen.values()) / 2 ** 20, "tensors": len(seen)}

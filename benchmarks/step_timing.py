"""What the one-thread training-step scripts share (``ablation_step.py``, ``placeholder_step.py``):
their options, the set-up (the tuned C heap, the thread count), timing the variants interleaved
step by step after warm-up, and the JSON they write."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping


def parse_and_set_up(doc: str, argv=None) -> argparse.Namespace:
    """The scripts' options (``--out``, ``--repeats``, ``--warmup``, ``--threads``); tunes the C heap
    as the ``u2a`` command does and sets torch's thread count."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the timings as JSON here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    from u2a.allocator import tune_allocator

    tune_allocator()
    import torch

    torch.set_num_threads(args.threads)
    return args


def time_interleaved(steps: Mapping[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each step per round: ``warmup`` untimed calls each, then ``repeats`` rounds
    of one call of every step in turn."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(1e3 * (time.perf_counter() - t0))
    return times


def report(script: str, args: argparse.Namespace, batch: int, times: Mapping[str, list[float]],
           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Print the medians and write the JSON (``--out``)."""
    from u2a.allocator import allocator_state

    result = {
        "command": f"python benchmarks/{script}" + (f" --out {args.out}" if args.out else ""),
        "threads": args.threads, "batch_size": batch, "precision": "bf16 autocast", "allocator": allocator_state(),
        **(extra or {}),
        "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
        "ms": {k: [round(x, 1) for x in v] for k, v in times.items()},
    }
    for k, v in result["median_ms"].items():
        print(f"{k}: median {v:.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result

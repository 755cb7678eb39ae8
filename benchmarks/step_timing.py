"""What the one-thread training-step scripts share (``ablation_step.py``, ``placeholder_step.py``,
``cases_step.py``): their options, the set-up (the tuned C heap, the thread count), the demo
model's training step (:class:`DemoStep`), timing the variants interleaved step by step after
warm-up, and the JSON they write."""

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


#: the two models the step scripts compare: U2A and its ablation without mask tokens (overrides)
DEMO_MODELS = (("u2a", ()), ("ablation", ("model.u2a.mask_tokens=false",)))


class DemoStep:
    """The demo recipe's model (``bf16_step.build``, with config ``overrides``) in bf16, its batch
    of ``batch`` samples with both modalities (skip path, eta 0), AdamW on the trainable
    parameters, and :meth:`step`: one bf16 training step as u2a trains."""

    def __init__(self, overrides=(), batch: int = 16):
        import torch
        from bf16_step import build

        self.batch_size = batch
        self.bench = build(batch, list(overrides))
        self.model = self.bench.model_for("bf16")
        self.inputs, self.present, _ = self.bench.batch("eta0", "skip")
        self.params = [q for q in self.model.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-6)
        self.labels = self.bench.labels[:batch]

    def drop_pattern(self):
        """Modality dropout as in training: the image of 5 samples and the text of 5 others dropped."""
        import torch

        drop = torch.zeros(self.batch_size, 2, dtype=torch.bool)
        drop[:5, 0] = True
        drop[5:10, 1] = True
        return drop

    def step(self, inputs=None, present=None, **forward_kwargs) -> None:
        """Forward (the batch, or ``inputs``/``present``; ``forward_kwargs`` such as ``drop`` or
        ``cases``) under bf16 autocast, the method's loss, backward, AdamW."""
        import torch

        model = self.model
        model.train()
        x = self.inputs if inputs is None else inputs
        p = self.present if present is None else present
        with torch.autocast("cpu", torch.bfloat16):
            loss = self.bench.loss(model, model(x, p, **forward_kwargs), self.labels)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

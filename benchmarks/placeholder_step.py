"""A training step of the ablation without mask tokens (the demo recipe's model, one thread, bf16
autocast, batch 16) on batches that lack a modality entirely: every sample with both, no sample
with an image (text only), no sample with text (image only). For the text-only batch also the
placeholder image at the DINOv2 config's native 518 px, which is what such a batch got before the
placeholder took the modality's input shape (the recipe's 84 px; docs/benchmarks.md, "A
placeholder of the modality's shape").

    python benchmarks/placeholder_step.py --out docs/results/placeholder_step.json

The variants run interleaved, step by step, after warm-up; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the timings as JSON here")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    from u2a.allocator import allocator_state, tune_allocator

    tune_allocator()
    import torch

    torch.set_num_threads(args.threads)
    from bf16_step import build

    batch = 16
    bench = build(batch, ["model.u2a.mask_tokens=false"])
    model = bench.model_for("bf16")
    inputs, _, _ = bench.batch("eta0", "skip")
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6)
    labels = bench.labels[:batch]
    image = model.encoders["image"]
    shape = tuple(image.input_shape)
    native = (int(image.config.num_channels), int(image.config.image_size), int(image.config.image_size))

    def workload(has_image: bool, has_text: bool):
        present = torch.tensor([[has_image, has_text]] * batch)
        return {m: inputs[m] for m, keep in (("image", has_image), ("text", has_text)) if keep}, present

    variants = {
        "both modalities": (workload(True, True), shape),
        "no image in the batch": (workload(False, True), shape),
        f"no image in the batch, placeholder at {native[-1]} px (before)": (workload(False, True), native),
        "no text in the batch": (workload(True, False), shape),
    }

    def step(work, placeholder_shape):
        image.input_shape = placeholder_shape
        x, present = work
        model.train()
        with torch.autocast("cpu", torch.bfloat16):
            loss = bench.loss(model, model(x, present), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for v in variants.values():
        for _ in range(args.warmup):
            step(*v)
    times = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, v in variants.items():
            t0 = time.perf_counter()
            step(*v)
            times[k].append(1e3 * (time.perf_counter() - t0))
    image.input_shape = shape
    result = {
        "command": "python benchmarks/placeholder_step.py" + (f" --out {args.out}" if args.out else ""),
        "threads": args.threads, "batch_size": batch, "precision": "bf16 autocast", "allocator": allocator_state(),
        "image_input_shape": list(shape), "image_native_shape": list(native),
        "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
        "ms": {k: [round(x, 1) for x in v] for k, v in times.items()},
    }
    for k, v in result["median_ms"].items():
        print(f"{k}: median {v:.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

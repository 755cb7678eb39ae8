"""Where a bf16 training step of the demo model spends its time (docs/benchmarks.md, "Why bf16
training is ... and not 1.8x").

1. ``profile``: ``torch.profiler`` over a few bf16 autocast training steps of the demo recipe's
   model (DINOv2-S 84 px + MiniLM-L6, batch 16, text of 40 tokens, the ``u2a bench`` workload),
   the ops sorted by their own CPU time, and the share of the matrix products;
2. ``pure``: the two encoders alone (forward of their CLS and mask-token outputs, backward into
   LoRA and the tokens, AdamW) in fp32, under bf16 autocast (u2a's way: the residual stream,
   LayerNorm and softmax stay fp32) and in pure bf16 (every tensor bf16), timed interleaved: what
   running the frozen encoders in pure bf16 could gain over autocast.

    python benchmarks/bf16_step.py --out docs/results/bf16_step.json

Run it as the ``u2a`` command runs (the C heap tuned, see ``u2a.allocator``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from importlib import resources
from pathlib import Path


def build(batch_size: int, overrides=()):
    """The ``u2a bench`` workload of the demo recipe (with config ``overrides``), seeded."""
    import torch

    from u2a.bench import Bench, BenchOptions
    from u2a.config import load_run_config
    from u2a.methods import method_of

    torch.manual_seed(0)
    cfg = load_run_config(str(resources.files("u2a.recipes") / "emoji.yaml"), list(overrides), warn=False)
    model = method_of(cfg.model).build_model(cfg.model, pretrained=True)
    return Bench(model, BenchOptions(batch_size=batch_size), text_tokens={"text": 40}, image_sizes={"image": 84})


def profile(bench, steps: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step = bench.train_step(bench.model_for("bf16"), bench.batch("eta0", "skip"), "bf16")
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages()]
    total = sum(r[1] for r in rows)
    rows.sort(key=lambda r: -r[1])
    matmul = sum(t for k, t, _ in rows if k in ("aten::mm", "aten::addmm", "aten::bmm"))
    return {"steps": steps, "ms_per_step": total / 1e3 / steps, "matmul_share": matmul / total,
            "ops": [{"op": k, "share": t / total, "ms_per_step": t / 1e3 / steps, "calls_per_step": c / steps}
                    for k, t, c in rows[:15]]}


def pure(bench, repeats: int) -> dict:
    import torch

    from u2a.bench.measure import interleave, ratio
    from u2a.bench.runner import copy_model

    inputs, _, _ = bench.batch("eta0", "skip")
    bf16 = torch.bfloat16

    def cast(x):
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        return x.to(bf16) if torch.is_tensor(x) and x.is_floating_point() else x

    def encoders_step(model, x, autocast: bool):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-6)

        def step():
            model.train()
            ctx = torch.autocast("cpu", dtype=bf16) if autocast else contextlib.nullcontext()
            with ctx:
                loss = 0
                for m in model.modalities:
                    c, mt = model.run_encoder(m, x[m], model.cls_tokens[m].unsqueeze(0), model.mask_tokens[m])
                    loss = loss + c.float().pow(2).mean() + mt.float().pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    pure_model = copy_model(bench.model).to(bf16)
    variants = {"fp32": encoders_step(bench.model, inputs, False),
                "autocast": encoders_step(bench.model_for("bf16"), inputs, True),
                "pure_bf16": encoders_step(pure_model, cast(inputs), False)}
    t = interleave(variants, 2, repeats, bench.device, bench.opts.batch_size)
    return {"median_ms": {k: v.as_dict()["median_s"] * 1e3 for k, v in t.items()},
            "fp32/autocast": ratio(t["fp32"], t["autocast"]), "autocast/pure_bf16": ratio(t["autocast"], t["pure_bf16"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3, help="profiled steps")
    ap.add_argument("--repeats", type=int, default=9, help="timed rounds of the pure-bf16 comparison")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    from u2a.allocator import allocator_state, tune_allocator

    tune_allocator()
    import torch

    bench = build(args.batch_size)
    out = {"threads": torch.get_num_threads(), "torch": torch.__version__, "allocator": allocator_state(),
           "profile": profile(bench, args.steps), "pure": pure(bench, args.repeats)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    p = out["profile"]
    print(f"bf16 step under the profiler: {p['ms_per_step']:.0f} ms, matrix products {100 * p['matmul_share']:.1f}%")
    for r in p["ops"]:
        print(f"  {r['op']:<40} {100 * r['share']:5.1f}%  {r['ms_per_step']:7.1f} ms  {r['calls_per_step']:6.0f} calls")
    q = out["pure"]
    print("encoders only, ms per step:", {k: round(v, 1) for k, v in q["median_ms"].items()},
          f"fp32/autocast {q['fp32/autocast']:.2f}x, autocast/pure_bf16 {q['autocast/pure_bf16']:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

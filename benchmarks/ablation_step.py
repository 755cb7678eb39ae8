"""One training step of the demo recipe, U2A against the ablation without mask tokens, one thread
(as ``u2a demo`` trains each of them), bf16 autocast, modality dropout as in training (batch 16,
5 images and 5 other samples' texts dropped, text of 40 tokens: the ``u2a bench`` workload).
Also times the ablation's placeholder inputs encoded in a forward and backward pass of their own
(how the ablation encoded them until they became one more row of the batch).

    python benchmarks/ablation_step.py --out docs/results/ablation_step.json

The variants run interleaved, step by step, after warm-up; medians are reported
(docs/benchmarks.md, "How `u2a demo` got under 5 minutes").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    from step_timing import DEMO_MODELS, DemoStep, parse_and_set_up, report, time_interleaved

    args = parse_and_set_up(__doc__, argv)
    import torch

    steps = {}
    for name, over in DEMO_MODELS:
        demo = DemoStep(over)
        steps[name] = lambda demo=demo, drop=demo.drop_pattern(): demo.step(drop=drop)
        if name == "ablation":
            def separate(model=demo.model, inputs=demo.inputs, params=demo.params):
                model.train()
                with torch.autocast("cpu", torch.bfloat16):
                    total = sum(model._placeholder_cls(m, inputs[m]).float().sum() for m in model.modalities)
                total.backward()
                for q in params:
                    q.grad = None

            steps["ablation placeholders, separate pass"] = separate
    report("ablation_step.py", args, 16, time_interleaved(steps, args.warmup, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

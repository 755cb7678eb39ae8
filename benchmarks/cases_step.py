"""What training every dropout case in every step costs: one training step of the demo recipe with
the paper's random draw (one case per complete sample: 5 images and 5 other samples' texts
dropped of 16) against every case of every sample (``model.u2a.modality_dropout.cases: all``:
keep-both, drop the image, drop the text, from one encoder pass), for U2A and for the ablation
without mask tokens; one thread (as ``u2a demo`` trains), bf16 autocast, batch 16.

    python benchmarks/cases_step.py --out docs/results/cases_step.json

The variants run interleaved, step by step, after warm-up; medians are reported
(docs/estimators.md, "Every dropout case in every step").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    from step_timing import parse_and_set_up, report, time_interleaved

    args = parse_and_set_up(__doc__, argv)
    import torch
    from bf16_step import build

    from u2a.methods.u2a.dropout import every_case

    batch = 16
    drop = torch.zeros(batch, 2, dtype=torch.bool)
    drop[:5, 0] = True
    drop[5:10, 1] = True
    steps = {}
    for name, over in (("u2a", []), ("ablation", ["model.u2a.mask_tokens=false"])):
        bench = build(batch, over)
        model = bench.model_for("bf16")
        inputs, present, _ = bench.batch("eta0", "skip")
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-6)
        labels = bench.labels[:batch]
        cases = every_case(present)

        for mode, kwargs in (("one random case", {"drop": drop}), ("every case", {"cases": cases})):
            def step(model=model, inputs=inputs, present=present, opt=opt, labels=labels, bench=bench, kwargs=kwargs):
                model.train()
                with torch.autocast("cpu", torch.bfloat16):
                    loss = bench.loss(model, model(inputs, present, **kwargs), labels)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            steps[f"{name}, {mode}"] = step
    report("cases_step.py", args, batch, time_interleaved(steps, args.warmup, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
    from step_timing import DEMO_MODELS, DemoStep, parse_and_set_up, report, time_interleaved

    args = parse_and_set_up(__doc__, argv)
    from u2a.methods.u2a.dropout import every_case

    steps = {}
    for name, over in DEMO_MODELS:
        demo = DemoStep(over)
        for mode, kwargs in (("one random case", {"drop": demo.drop_pattern()}),
                             ("every case", {"cases": every_case(demo.present)})):
            steps[f"{name}, {mode}"] = lambda demo=demo, kwargs=kwargs: demo.step(**kwargs)
    report("cases_step.py", args, 16, time_interleaved(steps, args.warmup, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

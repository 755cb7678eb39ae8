"""How often a comparison on three seeds passes, given twelve (docs/estimators.md, "What is met
and what is not").

Issue-style targets are judged on the mean over three seeds (U2A >= the ablation on every missing
scenario and sweep point, >= +1 point on the mean of the missing scenarios, ...). This script takes
the per-seed test accuracies of two methods from a results file of ``u2a experiment`` runs (the
``per_seed`` layout of ``docs/results/allcases_12seeds.json``) and, over every subset of three of
its seeds, counts how often each target and all of them at once hold. It also reports, per
target, the twelve-seed mean and standard deviation of the difference. If a method that is ahead
on every twelve-seed mean passes the three-seed protocol in a minority of the subsets, a single
failing three-seed target is what seed noise predicts, not evidence against the method.

    python benchmarks/seed_subsets.py docs/results/allcases_12seeds.json \\
        --method allnodet --baseline abl_all --out docs/results/seed_subsets.json

No model is run: it reads accuracies only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics as st
import sys
from pathlib import Path

MISSING = ["image only", "text only", "missing both 70%", "missing text 70%", "missing image 70%"]
SWEEP = [f"{m} {p}%" for m in ("text", "image") for p in (10, 30, 50, 70, 90)]


def targets(acc: dict, base: dict, mse: dict) -> dict[str, bool]:
    """The targets for one set of seeds. ``acc``/``base``: scenario -> mean accuracy in % over the
    seeds; ``mse``: True when every seed's estimate beat the constant in both directions."""
    out = {f"{s} >= baseline": acc[s] - base[s] >= -1e-9
           for s in ["image only", "text only", "missing both 70%", *SWEEP]}
    gain = st.mean(acc[s] - base[s] for s in MISSING)
    out["missing mean >= baseline + 1"] = gain >= 1 - 1e-9
    out["complete >= baseline - 1"] = acc["complete"] - base["complete"] >= -1 - 1e-9
    out["image only >= 72"] = acc["image only"] >= 72 - 1e-9
    out["text only >= 83"] = acc["text only"] >= 83 - 1e-9
    out["estimate MSE < constant"] = mse
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results JSON with per_seed -> seed -> label -> scenario")
    p.add_argument("--method", required=True, help="label of the method in per_seed")
    p.add_argument("--baseline", required=True, help="label of the baseline in per_seed")
    p.add_argument("--size", type=int, default=3, help="seeds per subset (default 3)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    per_seed = json.loads(args.results.read_text())["per_seed"]
    seeds = sorted(per_seed, key=int)
    for seed in seeds:
        for label in (args.method, args.baseline):
            if label not in per_seed[seed]:
                sys.exit(f"{args.results}: seed {seed} has no method {label!r} "
                         f"(it has {sorted(per_seed[seed])})")
    scenarios = ["complete", *MISSING, *SWEEP]

    def accuracy(seed: str, label: str, scenario: str) -> float:
        try:
            return 100 * per_seed[seed][label][scenario]["accuracy"]
        except KeyError:
            sys.exit(f"{args.results}: seed {seed}, method {label!r} has no scenario {scenario!r}")

    def mse_ok(seed: str) -> bool:
        m = per_seed[seed][args.method].get("mse")
        if not m:
            sys.exit(f"{args.results}: seed {seed}, method {args.method!r} has no 'mse' entry")
        return all(v["estimate"] < v["constant"] for v in m.values())

    diffs = {s: [accuracy(k, args.method, s) - accuracy(k, args.baseline, s) for k in seeds]
             for s in scenarios}
    diffs["mean of the missing scenarios"] = [st.mean(diffs[s][i] for s in MISSING)
                                              for i in range(len(seeds))]
    all_seeds = {s: {"mean": st.mean(v), "std": st.stdev(v), "ahead": sum(x > 1e-9 for x in v),
                     "level": sum(abs(x) <= 1e-9 for x in v), "behind": sum(x < -1e-9 for x in v)}
                 for s, v in diffs.items()}

    subsets = list(itertools.combinations(seeds, args.size))
    passes: dict[str, int] = {}
    every = 0
    for sub in subsets:
        acc = {s: st.mean(accuracy(k, args.method, s) for k in sub) for s in scenarios}
        base = {s: st.mean(accuracy(k, args.baseline, s) for k in sub) for s in scenarios}
        result = targets(acc, base, all(mse_ok(k) for k in sub))
        for name, ok in result.items():
            passes[name] = passes.get(name, 0) + ok
        every += all(result.values())

    first = tuple(seeds[: args.size])
    acc = {s: st.mean(accuracy(k, args.method, s) for k in first) for s in scenarios}
    base = {s: st.mean(accuracy(k, args.baseline, s) for k in first) for s in scenarios}
    first_result = targets(acc, base, all(mse_ok(k) for k in first))

    report = {
        "command": "python benchmarks/seed_subsets.py " + " ".join(
            [str(args.results), "--method", args.method, "--baseline", args.baseline,
             "--size", str(args.size)] + (["--out", str(args.out)] if args.out else [])),
        "seeds": seeds,
        "subsets": len(subsets),
        "subset_size": args.size,
        "difference_over_all_seeds": all_seeds,
        "subsets_passing": passes,
        "subsets_passing_every_target": every,
        f"seeds {','.join(first)}": first_result,
    }
    print(f"{len(subsets)} subsets of {args.size} of the seeds {','.join(seeds)}: "
          f"{args.method} against {args.baseline}")
    print(f"{'target':40s} {'all-seed diff':>16s} {'subsets passing':>16s}")
    for name, n in passes.items():
        scenario = name.split(" >=")[0]
        d = all_seeds.get("mean of the missing scenarios" if scenario == "missing mean" else scenario)
        ds = f"{d['mean']:+.2f} ± {d['std']:.2f}" if d and "baseline" in name else ""
        print(f"{name:40s} {ds:>16s} {n:>7d} ({100 * n / len(subsets):5.1f}%)")
    print(f"every target at once: {every} of {len(subsets)} ({100 * every / len(subsets):.1f}%); "
          f"seeds {','.join(first)} fail: "
          f"{[k for k, ok in first_result.items() if not ok] or 'none'}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

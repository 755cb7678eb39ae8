"""A sweep point's accuracy on its one missing-modality table, and its expectation over all tables
(docs/estimators.md, "Which samples lose a modality").

A sweep point "image x%" keeps the image for x% of the test samples: the MAP algorithm
(u2a.data.missing) draws the k = int(N * (100 - x) / 100) samples that lose it uniformly at random,
once, with a fixed seed, so every method and every training seed is scored on the same table. Each
sample's prediction depends only on its own inputs, so on any table

    accuracy = (1/N) * (sum over the k samples of their text-only correctness
                        + sum over the others of their complete correctness)

and over the uniform choice of the k samples its expectation is exactly

    E[accuracy] = (k/N) * accuracy(text only) + (1 - k/N) * accuracy(complete).

The difference between the two is the table's own noise: which k samples happen to lose the
modality. This script reads the per-seed test accuracies of two methods from a results file of
``u2a experiment`` runs (the ``per_seed`` layout of ``docs/results/allcases_12seeds.json``) and
writes, for every sweep point, the difference between the methods as measured on the protocol's
table and as expected over tables, seed by seed.

    python benchmarks/sweep_expectation.py docs/results/allcases_12seeds.json \\
        --method allnodet --baseline abl_all --n-test 382 --seeds 0,1,2 \\
        --out docs/results/sweep_expectation.json

No model is run: it reads accuracies only (accuracy is a per-sample mean; macro-F1 is not, so it
is left out).
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
from pathlib import Path

PERCENTS = (10, 30, 50, 70, 90)


def expected_accuracy(acc: dict[str, float], swept: str, other: str, percent: int, n: int) -> float:
    """E[accuracy] of the sweep point "``swept`` ``percent``%" over the uniform choice of which
    samples lose ``swept``, from the accuracies of the scenarios "complete" and "``other`` only"."""
    k = int(n * (100 - percent) / 100)
    return (k / n) * acc[f"{other} only"] + (1 - k / n) * acc["complete"]


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": st.mean(values), "std": st.stdev(values) if len(values) > 1 else 0.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="a results JSON with per_seed -> seed -> label -> scenario")
    p.add_argument("--method", required=True, help="label of the method in per_seed")
    p.add_argument("--baseline", required=True, help="label of the baseline in per_seed")
    p.add_argument("--n-test", type=int, required=True, help="number of test samples the accuracies are over")
    p.add_argument("--seeds", help="comma-separated seeds (default: all in the file)")
    p.add_argument("--modalities", default="text,image", help="the modality pair (default text,image)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    per_seed = json.loads(args.results.read_text())["per_seed"]
    seeds = args.seeds.split(",") if args.seeds else sorted(per_seed, key=int)
    pair = args.modalities.split(",")
    if len(pair) != 2:
        sys.exit("--modalities: give two names, e.g. text,image")
    accs: dict[str, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        for label in (args.method, args.baseline):
            try:
                scen = per_seed[seed][label]
            except KeyError:
                sys.exit(f"{args.results}: no results for seed {seed}, method {label!r}")
            acc = {k: 100 * v["accuracy"] for k, v in scen.items() if "accuracy" in v}  # not "mse"
            for swept, other in (pair, pair[::-1]):
                # the ends of a sweep are the plain scenarios: a check that the names line up
                ends = ((f"{swept} 0%", f"{other} only"), (f"{swept} 100%", "complete"))
                for a, b in ends:
                    if a in acc and abs(acc[a] - acc[b]) > 1e-9:
                        sys.exit(f"seed {seed}, {label}: {a!r} ({acc[a]:.4f}) differs from {b!r} ({acc[b]:.4f})")
            accs.setdefault(seed, {})[label] = acc

    points = {}
    for swept, other in (pair[::-1], pair):
        for x in PERCENTS:
            name = f"{swept} {x}%"
            obs = [accs[s][args.method][name] - accs[s][args.baseline][name] for s in seeds]
            exp = [expected_accuracy(accs[s][args.method], swept, other, x, args.n_test)
                   - expected_accuracy(accs[s][args.baseline], swept, other, x, args.n_test) for s in seeds]
            points[name] = {"on_the_table": {**_stats(obs), "per_seed": dict(zip(seeds, obs))},
                            "expected_over_tables": {**_stats(exp), "per_seed": dict(zip(seeds, exp))},
                            "samples_losing": int(args.n_test * (100 - x) / 100)}
    out = {
        "command": "python benchmarks/sweep_expectation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "results": str(args.results), "method": args.method, "baseline": args.baseline, "seeds": seeds,
        "n_test": args.n_test, "unit": "accuracy points (method - baseline)",
        "points": points,
    }
    width = max(len(k) for k in points)
    print(f"{args.method} - {args.baseline}, accuracy points, seeds {','.join(seeds)} (mean ± std)")
    print(f"{'point':{width}}  {'on the table':>15}  {'expected over tables':>20}")
    for name, r in points.items():
        a, b = r["on_the_table"], r["expected_over_tables"]
        print(f"{name:{width}}  {a['mean']:+6.2f} ± {a['std']:5.2f}  {b['mean']:+11.2f} ± {b['std']:5.2f}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

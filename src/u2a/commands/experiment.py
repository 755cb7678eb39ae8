"""``u2a experiment CONFIG --seeds 0,1,2 [--protocol all] [--ablation] [key=value ...]``."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from u2a.evaluation.experiment import parse_seeds, run_experiment

    data = run_experiment(
        args.config, parse_seeds(args.seeds), args.overrides, protocol=args.protocol, ablation=args.ablation,
        split=args.split, eta=args.eta, overwrite=args.overwrite, batch_size=args.batch_size,
        progress=not args.quiet,
    )
    root = data["out_dir"]
    report = open(f"{root}/report.md").read()
    print("\n" + "\n".join(line for line in report.splitlines() if not line.startswith("![")))
    print(f"\nwrote {root}/results.json, report.md, CSV tables and figures ({data['time_s']:.0f} s)")
    return 0


def register(sub, formatter_class) -> None:
    from u2a.evaluation.protocols import PROTOCOLS

    p = sub.add_parser(
        "experiment",
        help="train a config with several seeds, evaluate a protocol on each, report mean ± std",
        description="For each seed k: trains CONFIG with train.seed=k and data.missing.seed=k into "
        "<output_dir>/<name>/seed<k> (with --ablation also the variant without mask tokens into "
        "<output_dir>/<name>/no_mask_tokens/seed<k>), evaluates the protocol (as `u2a evaluate`), and "
        "aggregates mean and standard deviation over the seeds into <output_dir>/<name>/{results.json,"
        "report.md,*.csv,*.png}. A finished seed run of the same config is reused. See docs/evaluation.md.",
        formatter_class=formatter_class,
    )
    p.add_argument("config", help="a run config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=1")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--protocol", default="all", choices=PROTOCOLS, help="which scenarios (docs/evaluation.md)")
    p.add_argument("--ablation", action="store_true", help="also train the ablation without mask tokens (Figure 3)")
    p.add_argument("--split", default="test", help="the split to evaluate")
    p.add_argument("--eta", type=float, default=None,
                   help="missing rate of the missing protocol; none: data.missing.test.ratio, or 0.7 if that is 0")
    p.add_argument("--overwrite", action="store_true", help="retrain seed runs whose folders already exist")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

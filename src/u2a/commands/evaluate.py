"""``u2a evaluate RUN --protocol NAME [--split test] [--compare RUN2 ...] [--out DIR]``."""

from __future__ import annotations

import argparse

from u2a.commands import positive_int


def run(args: argparse.Namespace) -> int:
    from u2a.pipelines.evaluate import evaluate_run

    payload, out_dir = evaluate_run(
        args.run, protocol=args.protocol, split=args.split, compare=args.compare, out=args.out,
        eta=args.eta, batch_size=args.batch_size, progress=not args.quiet,
    )
    report = (out_dir / "report.md").read_text()
    # print the tables (the report without its figure links)
    print("\n".join(line for line in report.splitlines() if not line.startswith("![")))
    print(f"\nwrote {out_dir}/results.json, report.md, CSV tables and figures")
    return 0


def register(sub, formatter_class) -> None:
    from u2a.evaluation.protocols import PROTOCOLS

    p = sub.add_parser(
        "evaluate",
        help="evaluate trained runs under the paper's missing-modality protocols",
        description="Loads RUN/config.yaml and the model selected on validation (RUN/best; any method), encodes "
        "the split once and evaluates every scenario of the protocol: complete (Table 1), missing (Tables 3/6: eta "
        "of the samples lose text, image or either, MAP tables), absent (Table 4: one modality absent for all), "
        "sweep (Figure 2: 100% of one modality, x% of the other), all. Writes results.json, CSV tables, "
        "figures (sweep, per-class by available modality, mask-token MSE next to the constant's, and with "
        "--compare per-class side by side) and report.md. See docs/evaluation.md.",
        formatter_class=formatter_class,
    )
    p.add_argument("run", help="a run folder (config.yaml + best/)")
    p.add_argument("--protocol", default="all", choices=PROTOCOLS, help="which scenarios (docs/evaluation.md)")
    p.add_argument("--split", default="test", help="the split to evaluate")
    p.add_argument("--compare", action="append", default=None, metavar="RUN2",
                   help="another run evaluated on the same scenarios (repeatable; e.g. the ablation without mask tokens)")
    p.add_argument("--out", default=None, help="output folder; none: RUN/eval/PROTOCOL")
    p.add_argument("--eta", type=float, default=None,
                   help="missing rate of the missing protocol; none: the run's data.missing.test.ratio, or 0.7 if that is 0")
    p.add_argument("--batch-size", type=positive_int, default=32, help="evaluation batch size")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

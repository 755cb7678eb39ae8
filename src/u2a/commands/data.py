"""``u2a data``: check a dataset manifest, prepare the built-in datasets, import the paper's datasets."""

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
        split=args.split,
    )
    print(format_report(report, max_problems=args.max_problems or None))
    return 0 if report.ok else 1


def _prepare_emoji(args: argparse.Namespace) -> int:
    from u2a.data.emoji import prepare_emoji

    from u2a.data.emoji import default_folder
    from u2a.io import oserror_names

    t0 = time.monotonic()
    text_fields = [f.strip() for f in args.text_fields.split(",") if f.strip()]
    target = args.out or default_folder(args.version, args.label_field, text_fields, args.seed)
    with oserror_names(target):  # a write on a full disk names no file: name the dataset folder
        folder = prepare_emoji(
            version=args.version,
            label_field=args.label_field,
            text_fields=text_fields,
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


def _prepare_builtin(args: argparse.Namespace) -> int:
    from u2a.data.builtin import prepare_builtin
    from u2a.data.icons import default_folder
    from u2a.io import oserror_names

    t0 = time.monotonic()
    target = args.out or default_folder(args.dataset, args.seed)
    with oserror_names(target):
        folder = prepare_builtin(args.dataset, seed=args.seed, out=args.out,
                                 progress=not args.quiet and sys.stderr.isatty(), force=args.force)
    info = json.loads((folder / "dataset.json").read_text())
    counts = info["counts"]
    splits = ", ".join(f"{s} {n}" for s, n in counts["per_split"].items())
    print(f"{args.dataset} dataset: {counts['total']} samples ({splits}), {len(info['classes'])} classes, "
          f"modalities {', '.join(info['modalities'])} [{time.monotonic() - t0:.1f}s]")
    print(folder)
    return 0


IMPORT_DATASETS = ("food101", "mmimdb", "cremad", "kinetics_sounds", "ave")
AUDIOVISUAL = ("cremad", "kinetics_sounds", "ave")


def _import(args: argparse.Namespace) -> int:
    from u2a.data.importers import import_dataset
    from u2a.errors import DataError

    name = args.dataset
    opts: dict = {"skip_missing": args.skip_missing, "progress": not args.quiet and sys.stderr.isatty()}
    av_only = {"--audio-dir": args.audio_dir, "--frames-dir": args.frames_dir, "--video-dir": args.video_dir,
               "--list": args.lists}
    if name not in AUDIOVISUAL:
        given = [k for k, v in av_only.items() if v]
        if given:
            raise DataError(f"{', '.join(given)}: only for the audio-video datasets ({', '.join(AUDIOVISUAL)})")
    if name == "mmimdb":
        opts["plots"] = args.plots
        if args.val_fraction is not None:
            raise DataError("--val-fraction: MM-IMDb has its own dev split (read as val); nothing to split")
        if args.classes:
            raise DataError("--classes: MM-IMDb's 23 genres and their order are fixed (MAP's order)")
    else:
        opts["seed"] = args.seed
        if args.val_fraction is not None:
            opts["val_fraction"] = args.val_fraction
        if args.classes:
            opts["classes"] = args.classes
    if name in AUDIOVISUAL:
        opts.update(audio_dir=args.audio_dir, frames_dir=args.frames_dir, video_dir=args.video_dir, fps=args.fps)
        if args.lists:
            if len(args.lists) == 1 and "=" not in args.lists[0]:
                opts["lists"] = args.lists[0]
            else:
                pairs = {}
                for item in args.lists:
                    split, sep, path = item.partition("=")
                    if not sep or not split.strip() or not path.strip():
                        raise DataError(f"--list {item!r}: expected SPLIT=FILE (or one CSV file with a split column)")
                    pairs[split.strip()] = path.strip()
                opts["lists"] = pairs
    from u2a.io import oserror_names

    t0 = time.monotonic()
    with oserror_names(args.out):  # a write on a full disk names no file: name the output folder
        folder = import_dataset(name, args.root, args.out, args.layout, **opts)
    info = json.loads((folder / "dataset.json").read_text())
    counts = info["counts"]
    splits = ", ".join(f"{s} {n}" for s, n in counts["per_split"].items())
    print(f"{name}: {counts['total']} samples ({splits}), {len(info['classes'])} classes, "
          f"layout {info['source']['layout']} [{time.monotonic() - t0:.1f}s]")
    val = info.get("splits", {}).get("val", {})
    if val.get("source") == "train":
        print(f"  val split made from train: fraction {val['fraction']:.4g}, seed {val['seed']}")
    skipped = counts.get("skipped") or {}
    if skipped:
        print("  skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    for key in ("audio_only", "video_only"):
        if counts.get(key):
            print(f"  {key.replace('_', ' ')}: " + ", ".join(f"{s} {n}" for s, n in counts[key].items()))
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
        description="Read a manifest (.jsonl or .csv), or a folder with train/val/test manifests, as `u2a train` "
                    "reads it, and report the counts per class, split and missing-modality pattern, and every "
                    "bad line (a file that does not decode, an invalid text, an unknown label, a missing split, "
                    "...) with its line and sample id. Every image and frame is decoded and every audio file "
                    "read in full, as training loads them. Exit code 1 if there are problems.",
    )
    c.add_argument("manifest", metavar="MANIFEST", help="a .jsonl or .csv manifest, or a folder of split manifests")
    c.add_argument("--classes", metavar="FILE_OR_LIST",
                   help="the class list: a file (JSON list or one name per line) or a comma-separated list; "
                        "labels not in it are problems")
    c.add_argument("--modalities", metavar="NAME=KIND,...",
                   help="modality fields and their kinds (image, text, audio, video), e.g. "
                        "image=image,caption=text; default: the fields named image, text, audio, video")
    c.add_argument("--split", metavar="NAME", default=None,
                   help="the file holds this one split (train, val or test), as a file of a split folder does: "
                        "its lines need no split field; without it a single file needs a split on every line, "
                        "as `u2a train` does")
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
    from u2a.data.builtin import BUILTIN

    for name, b in BUILTIN.items():
        if name == "emoji":
            continue
        q = psub.add_parser(
            name, formatter_class=formatter_class, help=b.summary,
            description=f"Build the {name} dataset ({b.summary}; modalities: {', '.join(b.modalities)}) with a "
                        "seeded, stratified 60/20/20 train/val/test split that keeps the variants of an icon "
                        "together. Needs npm the first time, and the PyPI package espeakng-loader "
                        "(pip install 'u2a[panel]'). Prints the dataset folder. See docs/datasets.md.",
        )
        q.add_argument("--seed", type=int, default=0, help="seed of the class draw, the split, the voices and the noise")
        q.add_argument("--out", metavar="DIR", default=None,
                       help=f"build the dataset in DIR instead of <cache>/data/{name}-<version>-seed<seed>")
        q.add_argument("--force", action="store_true", help="rebuild even if a complete dataset is there")
        q.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        q.set_defaults(func=_prepare_builtin, dataset=name)

    im = dsub.add_parser(
        "import", formatter_class=formatter_class,
        help="import Food-101, MM-IMDb, CREMA-D, Kinetics-Sounds or AVE from its on-disk layout",
        description="Read a dataset in one of the layouts its users have (MAP arrow files, MMBT jsonl, the raw "
                    "release, MLA-style split lists, ...) and write a u2a manifest folder: train/val/test.jsonl, "
                    "classes.json and dataset.json (source, options, seeds of the splits made, counts). "
                    "See docs/datasets.md. Prints the folder.",
    )
    im.add_argument("dataset", metavar="DATASET", choices=IMPORT_DATASETS,
                    help=f"the dataset: {', '.join(IMPORT_DATASETS)}")
    im.add_argument("root", metavar="ROOT", help="the folder that holds the dataset as downloaded")
    im.add_argument("--out", metavar="DIR", required=True,
                    help="the manifest folder to write (a folder that exists and is not an import is never overwritten)")
    im.add_argument("--layout", default="auto", choices=["auto", "arrow", "mmbt", "raw", "lists", "csv"],
                    help="the source layout: food101: arrow|mmbt|raw; mmimdb: raw|arrow; audio-video: lists|csv; "
                         "auto: the one found in ROOT")
    im.add_argument("--seed", type=int, default=0, help="seed of the val split made from train (when there is no val split)")
    im.add_argument("--val-fraction", type=float, default=None, metavar="F",
                    help="share of each class moved from train to val when the layout has no val split; "
                         "None: 6846/67988 (~0.1007, MAP's proportions) for food101, 0.1 for the audio-video sets; "
                         "0: no val split")
    im.add_argument("--plots", default="first", choices=["first", "longest", "join"],
                    help="mmimdb: the text of a movie (one sample per movie): its first plot, its longest, or all joined")
    im.add_argument("--skip-missing", action="store_true",
                    help="leave out (and count) samples whose files are missing instead of stopping with an error")
    im.add_argument("--classes", metavar="FILE_OR_LIST", default=None,
                    help="fix the class list and order (a JSON list file, one name per line, or a comma list); "
                         "default: from the dataset (class_idx.json, class folders, or the train labels)")
    im.add_argument("--audio-dir", metavar="DIR_OR_TEMPLATE", default=None,
                    help="audio-video: folder of <clip>.wav, or a template with {root}, {split}, {clip}; "
                         "None: {root}/audio")
    im.add_argument("--frames-dir", metavar="DIR_OR_TEMPLATE", default=None,
                    help="audio-video: folder of <clip>/frame_XXXX.jpg folders, or a template with {root}, {split}, "
                         "{clip}; None: {root}/{split}_imgs")
    im.add_argument("--video-dir", metavar="DIR_OR_TEMPLATE", default=None,
                    help="audio-video: folder of <clip>.mp4 files, decoded into frames (needs PyAV: pip install av) "
                         "for the clips without a frame folder")
    im.add_argument("--fps", type=float, default=1.0, help="audio-video: frames per second taken from video files")
    im.add_argument("--list", dest="lists", metavar="SPLIT=FILE", action="append", default=None,
                    help="audio-video: a split's list file (repeat for each split), or one CSV with a split column; "
                         "default: train.txt / val.txt / test.txt (and similar names) in ROOT")
    im.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    im.set_defaults(func=_import)

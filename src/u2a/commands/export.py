"""``u2a export RUN --out DIR``: a trained U2A model as ONNX graphs (one per modality encoder, one for
token selection and the head), merged weights and a manifest (docs/export.md)."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from u2a.export.exporter import export_model

    def log(line: str) -> None:
        print(f"u2a export: {line}", file=sys.stderr, flush=True)

    manifest = export_model(args.run, args.out, log=log, check=not args.no_check, overwrite=args.overwrite)
    print(f"exported {manifest['source']} to {args.out}")
    for m, g in manifest["graphs"]["encoders"].items():
        ins = ", ".join(f"{i['name']}{i['shape']}" for i in g["inputs"])
        outs = ", ".join(o["name"] for o in g["outputs"])
        print(f"  {g['file']:<24} {ins} -> {outs}")
    h = manifest["graphs"]["head"]
    print(f"  {h['file']:<24} {', '.join(i['name'] for i in h['inputs'])} -> logits")
    if manifest.get("check"):
        diffs = manifest["check"]["max_abs_diff_vs_pytorch"]
        print("  onnxruntime vs PyTorch, max |diff|: " + ", ".join(
            f"{k} {v:.2g}" if v is not None else f"{k} (onnxruntime not installed)" for k, v in diffs.items()))
    missing = [m for m, p in manifest["preprocessing"].items() if not p.get("available")]
    if missing:
        print(f"  no preprocessing saved for {missing} (their encoder folders hold none): feed arrays to "
              "ExportedModel.run()")
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained U2A model to ONNX (any subset of modalities at inference)",
        description="Write an ONNX graph per modality encoder (its own inputs -> its CLS feature and its "
        "mask-token estimates of the other modalities), a graph for token selection and the head (every "
        "modality's features plus an availability mask -> logits), the encoders with LoRA merged in their own "
        "Hugging Face format, U2A's own weights, the preprocessing and manifest.json. Serve with "
        "u2a.export.ExportedModel (onnxruntime): a request runs only the encoders of the modalities it has. "
        "Needs the export extra: pip install 'u2a[export]'. See docs/export.md.",
        formatter_class=formatter_class,
    )
    p.add_argument("run", help="a run folder (its best/ model) or a saved model folder")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check at export time")
    p.set_defaults(func=run)

"""``u2a train CONFIG [key=value ...]``, ``u2a train --resume RUN_DIR`` and ``u2a predict RUN ...``.

Both work under ``accelerate launch`` and ``torchrun`` (one process per device; files are written
by the main process). See ``docs/training.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from u2a.commands import positive_int
from u2a.errors import ConfigError, DataError, ModelError


def run_train(args: argparse.Namespace) -> int:
    from u2a.config import load_run_config, load_saved_run_config
    from u2a.pipelines.train import train_run
    from u2a.train.trainer import make_accelerator

    overrides = list(args.overrides or [])
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    if args.resume:
        run_dir = Path(args.resume)
        if args.config is not None:
            overrides.insert(0, args.config)  # `u2a train --resume RUN key=value`: all are overrides
        cfg_file = run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there (is it a u2a run folder?)")
        cfg = load_saved_run_config(cfg_file, overrides)
    else:
        if args.config is None:
            raise ConfigError("give a CONFIG file, or --resume RUN_DIR")
        cfg = load_run_config(args.config, overrides)
        run_dir = cfg.run_dir
    if args.no_progress:
        cfg.train.progress = False
    if args.skip_bad:
        cfg.data.skip_bad = True

    accelerator = make_accelerator(cfg)
    # the run folder is locked while training; --overwrite replaces the old run only once the new
    # one has read its data and built its model (see u2a.pipelines.train.train_run)
    result = train_run(cfg, run_dir, accelerator=accelerator, resume=bool(args.resume), overwrite=args.overwrite)
    if accelerator.is_main_process:
        print(json.dumps(result.summary, indent=2))
    return 0


# ---- predict -------------------------------------------------------------------------------

def _model_dir(run: Path) -> Path:
    from u2a.methods.base import CONFIG_NAME

    if (run / CONFIG_NAME).is_file():
        return run
    if (run / "best" / CONFIG_NAME).is_file():
        return run / "best"
    raise ModelError(f"{run}: neither a run folder with best/ nor a saved model ({CONFIG_NAME} missing)")


def _given_fields(args: argparse.Namespace, config) -> dict[str, str]:
    """Map --image/--text/--audio/--video and --field NAME=VALUE onto the model's modalities."""
    given: dict[str, str] = {}
    for spec in args.field or []:
        if "=" not in spec:
            raise ConfigError(f"--field {spec!r}: expected NAME=VALUE")
        name, value = spec.split("=", 1)
        if name not in config.modality_names:
            raise ConfigError(f"--field {name}: the model's modalities are {config.modality_names}")
        if name in given:
            raise ConfigError(f"--field {name} is given twice; give each modality once")
        given[name] = value
    for kind in ("image", "text", "audio", "video"):
        value = getattr(args, kind)
        if value is None:
            continue
        names = [m.name for m in config.modalities if m.name == kind] or [m.name for m in config.modalities if m.kind == kind]
        if len(names) != 1:
            raise ConfigError(f"--{kind}: the model has {len(names)} {kind} modalities {names}; use --field NAME=VALUE")
        if names[0] in given:
            raise ConfigError(f"--{kind} and --field {names[0]}=... name the same modality; give it once")
        given[names[0]] = value
    for m in config.modalities:
        if m.name in given and m.kind != "text":
            p = Path(given[m.name]).expanduser()
            if not p.exists():
                raise DataError(f"--{m.kind} {given[m.name]}: no such file")
            given[m.name] = str(p.resolve())
    return given


def _probs(logits, task: str):
    import torch

    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=-1)


def run_predict(args: argparse.Namespace) -> int:
    import torch

    from u2a.data.processing import build_collator
    from u2a.methods.base import load_model

    model_dir = _model_dir(Path(args.run))
    model = load_model(model_dir)
    model.eval()
    config = model.config
    classes = config.classes or [str(i) for i in range(config.num_classes)]
    if args.manifest:
        inline = [f"--{k}" for k in ("image", "text", "audio", "video") if getattr(args, k) is not None]
        inline += ["--field"] if args.field else []
        if inline:
            raise ConfigError(f"--manifest predicts the samples of a file; {', '.join(inline)} would be ignored: "
                              "give one sample's inputs or a manifest, not both")
        return _predict_manifest(args, model, classes)
    collate = build_collator(config, train=False)
    k = max(1, min(args.top_k, config.num_classes))

    fields = _given_fields(args, config)
    if not fields:
        raise ConfigError(f"give at least one modality (--image/--text/--audio/--video or --field); "
                          f"the model has {config.modality_names}")
    item = {"id": "input", "label": None, "fields": {m: fields.get(m) for m in config.modality_names}}
    batch = collate([item])
    with torch.no_grad():
        out = model(batch["inputs"], batch["present"], ids=batch["ids"])
    probs = _probs(out.logits.float(), config.task)[0]
    top = torch.topk(probs, k)
    print(f"model: {model_dir}")
    print("given: " + ", ".join(fields))
    missing = [m for m in config.modality_names if m not in fields]
    if missing:
        if config.method != "u2a":
            how = f"nothing ({config.method}: the missing branch takes no part)"
        else:
            how = "mask tokens" if config.u2a.mask_tokens else "placeholder inputs (no mask tokens)"
        print(f"estimated by {how}: {', '.join(missing)}")
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"  {classes[i]:<24} {p:.4f}")
    return 0


def _predict_manifest(args: argparse.Namespace, model, classes: list[str]) -> int:
    """Predict every line of a manifest, labelled or not: one output line per manifest line (per
    record: blank lines are none), in the manifest's order, ``"status": "ok"`` with the prediction
    or ``"status": "skipped"`` with the reason (a bad line, an input that does not load). Returns 1
    when lines were skipped (0 with --allow-skipped)."""
    import torch

    from u2a.data.manifest import load_manifest
    from u2a.data.processing import build_collator
    from u2a.evaluation.metrics import compute_metrics
    from u2a.io import atomic_write_text

    config = model.config
    kinds = {m.name: m.kind for m in config.modalities}
    man = load_manifest(args.manifest, modalities=kinds, classes=config.classes, skip_bad=True, require_labels=False)
    rows: dict[int, dict[str, Any]] = {}

    def skip(line: int, sid: str | None, reason: str) -> None:
        row = rows.setdefault(line, {"line": line, "id": sid, "status": "skipped", "reason": reason})
        if row["reason"] != reason and reason not in row["reason"]:
            row["reason"] += "; " + reason

    for prob in man.problems:  # bad lines, left out when the manifest was read
        skip(prob.line, prob.sample, f"field '{prob.field}': {prob.message}" if prob.field else prob.message)
    line_of = {s.id: s.line for s in man.samples}
    label_of = {s.id: s.label for s in man.samples}
    multilabel_model = config.task == "multilabel"
    items = []
    for s in man.samples:
        # the label in the model's format: a manifest may write single labels as one-name lists,
        # or a multi-label model's labels as plain names
        label = man.label_index(s)
        if label is not None and multilabel_model and not isinstance(label, list):
            label = [label]
        elif isinstance(label, list) and not multilabel_model:
            if len(label) != 1:
                skip(s.line, s.id, f"label {s.labels} names {len(label)} classes; the model predicts one class "
                                   "per sample (a single-label model)")
                continue
            label = label[0]
        items.append({"id": s.id, "label": label, "where": f"{s.source}:{s.line}",
                      "fields": {m: (str(v) if (v := man.resolve(s, m)) is not None else None) for m in kinds}})
    collate = build_collator(config, train=False, skip_bad=True, allow_empty=True)
    k = max(1, min(args.top_k, config.num_classes))
    logits, labels, labelled = [], [], True
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), args.batch_size):
            batch = collate(items[start:start + args.batch_size])
            for rec in batch.get("skipped") or []:  # inputs that fail to load
                reason = f"field '{rec['modality']}': {rec['reason']}"
                skip(line_of[rec["id"]], rec["id"], reason)
            if not batch["ids"]:
                continue
            out = model(batch["inputs"], batch["present"], ids=batch["ids"])
            lg = out.logits.float()
            logits.append(lg)
            if batch.get("labels") is None:
                labelled = False
            else:
                labels.append(batch["labels"])
            probs = _probs(lg, config.task)
            for n, sid in enumerate(batch["ids"]):
                top = torch.topk(probs[n], k)
                row: dict[str, Any] = {"line": line_of[sid], "id": sid, "status": "ok"}
                if config.task == "multilabel":
                    row["pred"] = [classes[i] for i in (probs[n] >= 0.5).nonzero().flatten().tolist()]
                else:
                    row["pred"] = classes[int(probs[n].argmax())]
                row["top"] = [{"class": classes[i], "prob": round(p, 6)}
                              for p, i in zip(top.values.tolist(), top.indices.tolist())]
                row["estimated"] = [m for j, m in enumerate(config.modality_names) if not bool(batch["present"][n, j])]
                if label_of[sid] is not None:
                    row["label"] = label_of[sid]
                rows[row["line"]] = row
    ordered = [rows[line] for line in sorted(rows)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
    n_skipped = sum(r["status"] == "skipped" for r in ordered)
    n_ok = len(ordered) - n_skipped
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {len(ordered)} lines to {args.out}: {n_ok} predicted, {n_skipped} skipped", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if logits and labelled:
        m = compute_metrics(torch.cat(logits), torch.cat(labels), config.task, classes, per_class=False)
        shown = {k2: round(v, 4) if isinstance(v, float) else v for k2, v in m.items()}
        print(f"metrics ({n_ok} labelled lines" + (f"; {n_skipped} skipped lines not counted" if n_skipped else "")
              + "): " + json.dumps(shown), file=sys.stderr)
    if n_skipped:
        where = f"in {args.out}" if args.out else "in the output"
        print(f"u2a: skipped {n_skipped} of {len(ordered)} lines of {args.manifest} (status \"skipped\" and the "
              f"reason {where})", file=sys.stderr)
        if not args.allow_skipped:
            return 1
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (U2A, MLA, UME-MMA) from a run config",
        description="Train the method a run config names (model.method; see docs/training.md). Dotted key=value "
        "overrides change any config key (train.lr=5e-5 model.lora.rank=2). Multi-process: "
        "`accelerate launch -m u2a.cli train CONFIG` or `torchrun --nproc_per_node N -m u2a.cli train CONFIG`.",
        formatter_class=formatter_class,
    )
    p.add_argument("config", nargs="?", default=None, help="run config YAML (not needed with --resume)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its newest checkpoint (uses RUN_DIR/config.yaml)")
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that already holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad manifest lines (counted and listed in RUN_DIR/data.json) instead of stopping")
    p.set_defaults(func=run_train)

    q = sub.add_parser(
        "predict",
        help="classify one sample (or a manifest) with a trained model",
        description="Load RUN/best (or a saved model folder), build a sample from the given modalities "
        "and print the top classes; modalities not given are estimated by the mask tokens.",
        formatter_class=formatter_class,
    )
    q.add_argument("run", help="a run folder (its best/ model is used) or a saved model folder")
    q.add_argument("--image", default=None, help="image file for the image modality")
    q.add_argument("--text", default=None, help="the text for the text modality")
    q.add_argument("--audio", default=None, help="audio file for the audio modality")
    q.add_argument("--video", default=None, help="video file or frame folder for the video modality")
    q.add_argument("--field", action="append", default=None, metavar="NAME=VALUE",
                   help="a modality by name (repeatable), for models with custom modality names")
    q.add_argument("--top-k", type=positive_int, default=5, help="how many classes to print")
    q.add_argument("--manifest", default=None, help="predict every sample of a manifest file instead")
    q.add_argument("--out", default=None, help="with --manifest: write predictions here (JSON Lines)")
    q.add_argument("--batch-size", type=positive_int, default=16, help="with --manifest: batch size")
    q.add_argument("--allow-skipped", action="store_true",
                   help="with --manifest: exit 0 even when lines were skipped (bad lines and inputs that do not "
                   "load get a \"skipped\" output line with the reason; without this option the exit code is 1)")
    q.add_argument("--skip-bad", action="store_true",
                   help="with --manifest: accepted for compatibility; bad lines are always skipped and reported")
    q.set_defaults(func=run_predict)

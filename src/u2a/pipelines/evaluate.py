"""Evaluate trained models under the paper's missing-modality protocols (``u2a evaluate``).

- :func:`evaluate_models` encodes a split once per model and runs every scenario of a protocol
  (:mod:`u2a.evaluation.protocols`) plus the method's feature diagnostics (U2A: the mask-token MSE
  of Figure 4 next to the constant's); the result is a *payload* (a JSON-able dict).
- :func:`evaluate_run` loads a run folder (``config.yaml`` + ``best/``) and writes results.json, CSV
  tables, figures and report.md (:func:`u2a.evaluation.report.write_outputs`).

The test split is only evaluated here: models are selected on validation by the trainer.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from u2a.config import RunConfig, load_saved_run_config
from u2a.errors import ConfigError, ModelError
from u2a.evaluation.protocols import TableContext, mask_token_mse, protocol_eta, run_protocol, scenarios_for
from u2a.evaluation.report import write_outputs


@dataclass
class Entry:
    """A model to evaluate, with where it came from."""

    model: Any
    run_dir: Path | None = None
    label: str | None = None
    #: the run's summary.json (parameter counts, training time, selection)
    summary: dict[str, Any] = field(default_factory=dict)


def _entries(models: Sequence[Any]) -> list[Entry]:
    out = []
    for e in models:
        if isinstance(e, Entry):
            out.append(e)
        else:
            out.append(Entry(*e))
    return out


def _unique_labels(entries: Sequence[Entry]) -> list[str]:
    from u2a.methods import method_of

    labels = [e.label or method_of(e.model.config).display_name(e.model.config) for e in entries]
    if len(set(labels)) < len(labels):
        labels = [e.run_dir.name if (e.label is None and e.run_dir is not None) else lab
                  for e, lab in zip(entries, labels)]
    out: list[str] = []
    for lab in labels:
        base, i = lab, 2
        while lab in out:
            lab, i = f"{base} ({i})", i + 1
        out.append(lab)
    return out


def test_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The run's datasets as the data is: the run's own missing tables are not applied (protocol
    scenarios apply theirs on top of the data)."""
    from u2a.data.datasets import build_datasets

    cfg = copy.deepcopy(cfg)
    for s in ("train", "val", "test"):
        getattr(cfg.data.missing, s).ratio = 0.0
    return build_datasets(cfg, None, write_tables=False)


def evaluate_models(
    models: Sequence[Any],
    cfg: RunConfig,
    protocol: str = "all",
    split: str = "test",
    eta: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
    datasets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every scenario of ``protocol`` for each model (an :class:`Entry` or a ``(model, run_dir)``
    pair) on ``split`` of ``cfg``'s data.

    The first model's config defines the scenarios; the availability masks (MAP tables keyed by
    ``cfg``'s missing seed) are the same for every model. ``cfg.train.mixed_precision=bf16``
    encodes under bf16 autocast."""
    from u2a.data.datasets import missing_pair
    from u2a.data.processing import build_collator
    from u2a.evaluation.scenarios import encode_split

    entries = _entries(models)
    first = entries[0].model
    names = first.modalities
    for e in entries[1:]:
        m = e.model
        if m.modalities != names or list(m.config.classes or []) != list(first.config.classes or []):
            raise ModelError(
                f"{e.run_dir}: cannot compare: its modalities {m.modalities} / classes differ from {names} / the first run's"
            )
        if m.config.task != first.config.task:
            raise ModelError(f"{e.run_dir}: cannot compare a {m.config.task} model with a {first.config.task} one")
    datasets = datasets if datasets is not None else test_datasets(cfg)
    if split not in datasets:
        raise ConfigError(f"--split {split}: the data has splits {sorted(datasets)}")
    # two modalities: MAP's pair names the table codes; three or more: drop tables (protocols.py)
    pair = missing_pair(names) if len(names) == 2 else tuple(names[:2])
    eta_v = protocol_eta(cfg, eta)
    scenarios = scenarios_for(protocol, names, eta_v)
    sizes = {s: len(d) for s, d in datasets.items()}
    context = TableContext.from_config(cfg, sizes, split)
    seed = int(cfg.data.missing.seed)
    labels = _unique_labels(entries)
    autocast = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
    results: dict[str, Any] = {}
    mse: dict[str, Any] = {}
    info: dict[str, Any] = {}
    timing: dict[str, float] = {}
    for e, label in zip(entries, labels):
        model = e.model
        t0 = time.time()
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(dev)
        from u2a.model.runtime import configure

        configure(model, cfg.train.attention, cfg.train.mixed_precision, dev)
        collate = build_collator(model.config, train=False)
        enc = encode_split(model, datasets[split], collate, batch_size=batch_size, device=dev,
                           desc=f"{split} {label}", progress=progress, autocast_dtype=autocast)
        results[label] = run_protocol(model, enc, scenarios, pair, seed=seed, context=context)
        mse[label] = mask_token_mse(enc.features, enc.labels, model.modalities, model.config.classes, model.config.task)
        total, learnable = model.count_parameters()
        s = e.summary or {}
        info[label] = {
            "run": str(e.run_dir) if e.run_dir else None,
            "method": model.config.method,
            "mask_tokens": bool(model.config.u2a.mask_tokens) if model.config.method == "u2a" else None,
            "learnable": learnable,
            "total": total,
            "train_time_s": s.get("train_time_s"),
            "best_val": s.get("best_metric"),
            "best_epoch": s.get("best_epoch"),
        }
        timing[label] = round(time.time() - t0, 2)
    return {
        "split": split,
        "protocol": protocol,
        "n": len(datasets[split]),
        "pair": list(pair),
        "modalities": list(names),
        "task": first.config.task,
        "classes": list(first.config.classes),
        "eta": eta_v,
        "missing_seed": seed,
        "both_ratio": float(cfg.data.missing.both_ratio),
        "scenarios": [sc.describe() for sc in scenarios],
        "models": info,
        "results": results,
        "mse": mse,
        "eval_time_s": timing,
    }


def load_run(run: str | Path) -> tuple[RunConfig, Entry]:
    """A run folder's config and its selected model (``best/``)."""
    from u2a.methods.base import load_model

    run = Path(run)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"{run}: no config.yaml there (is it a u2a run folder?)")
    cfg = load_saved_run_config(cfg_file)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return cfg, Entry(load_model(run / "best"), run, None, summary)


def evaluate_run(
    run: str | Path,
    protocol: str = "all",
    split: str = "test",
    compare: str | Path | Sequence[str | Path] | None = None,
    out: str | Path | None = None,
    eta: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """``u2a evaluate``: load RUN (and the runs to compare) from their ``best/`` models, evaluate,
    write the outputs (default ``RUN/eval/PROTOCOL``)."""
    run = Path(run)
    cfg, entry = load_run(run)
    entries = [entry]
    others = [compare] if isinstance(compare, (str, Path)) else list(compare or [])
    for c in others:
        entries.append(load_run(c)[1])
    # the saved config may predate the class names the data filled in: take the model's
    cfg.model.classes = list(entry.model.config.classes or []) or None
    payload = evaluate_models(entries, cfg, protocol, split, eta, batch_size, progress)
    payload["run"] = str(run)
    if entry.summary:
        s = entry.summary
        payload["selection"] = {k: s.get(k) for k in ("select_metric", "select_on", "best_epoch", "best_metric", "selected_on")}
    out_dir = Path(out) if out else run / "eval" / (protocol if split == "test" else f"{protocol}-{split}")
    title = f"u2a evaluate: {run.name} ({protocol} protocol, {split} split)"
    write_outputs(out_dir, [payload], title, results_json={**payload})
    return payload, out_dir

"""``u2a demo``: U2A with real pretrained encoders on real data, and how it holds up when a
modality goes missing.

Trains U2A and the ablation without mask tokens (a missing modality's slot filled by the CLS
output of the placeholder input) with the same recipe, selects each on validation, and evaluates
both on the test split: complete, image only, text only, eta = 70% missing-both, and a sweep with
100% image and x% text. Writes ``results.json``, the adapters, figures and ``report.md`` under
``runs/<name>/``.
"""

from __future__ import annotations

import copy
import json
import platform
import random
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from u2a.config import RunConfig, load_run_config, save_run_config
from u2a.data.datasets import build_datasets, missing_pair, write_data_report
from u2a.data.processing import build_collator
from u2a.evaluation.report import plot_per_class, plot_sweep, scenario_table, write_report
from u2a.evaluation.scenarios import encode_split, run_scenarios, standard_scenarios
from u2a.io import atomic_write_json
from u2a.model import U2AModel

VARIANTS = {"U2A": "u2a", "no mask tokens": "no_mask_tokens"}


def recipe_path(name: str = "emoji") -> Path:
    return Path(str(resources.files("u2a.recipes") / f"{name}.yaml"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_variant(cfg: RunConfig, run_dir: Path, progress: bool = True) -> tuple[U2AModel, dict[str, Any], Any]:
    """Train one model; return it with its best (validation) weights, the summary, the datasets."""
    from u2a.train.trainer import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.train.seed)
    model = U2AModel.from_config(cfg.model)
    datasets = build_datasets(cfg, run_dir)
    write_data_report(datasets, run_dir)
    trainer = Trainer(
        cfg, model, {k: v for k, v in datasets.items() if k in ("train", "val")},
        collate_fn=build_collator(cfg.model, train=True), run_dir=run_dir,
        eval_collate_fn=build_collator(cfg.model, train=False),
    )
    summary = trainer.train()
    best = run_dir / "best" / "adapter.safetensors"
    model = trainer.unwrapped
    if best.is_file():
        model.load_trainable(best)
    return model, summary, datasets


def run_demo(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, Any]:
    t_start = time.time()
    base = load_run_config(config or recipe_path("emoji"), overrides)
    base.train.progress = progress and base.train.progress
    root = base.run_dir
    names = base.model.modality_names
    pair = missing_pair(names)
    scenarios = standard_scenarios(pair, sweep_modality=pair[0])

    results: dict[str, dict[str, Any]] = {}
    summaries: dict[str, Any] = {}
    timing: dict[str, float] = {}
    for label, folder in VARIANTS.items():
        cfg = copy.deepcopy(base)
        cfg.model.mask_tokens = folder == "u2a"
        print(f"\n== training {label} ({root / folder}) ==")
        t0 = time.time()
        model, summary, datasets = train_variant(cfg, root / folder, progress)
        timing[f"train {label} (s)"] = round(time.time() - t0, 1)
        t0 = time.time()
        collate = build_collator(cfg.model, train=False)
        encoded = encode_split(model, datasets["test"], collate, batch_size=32, desc=f"test {label}", progress=progress)
        results[label] = run_scenarios(model, encoded, scenarios, pair, seed=cfg.data.missing.seed)
        timing[f"evaluate {label} (s)"] = round(time.time() - t0, 1)
        summaries[label] = summary

    n_test = next(iter(results["U2A"].values()))["n"]
    names_order = [s.name for s in scenarios]
    table = scenario_table(results, ["accuracy", "f1_macro"], names_order)
    sweep_png = plot_sweep(results, "accuracy", pair[0], root / "sweep.png", f"% of test samples with {pair[0]} (100% {pair[1]})")
    main = ["complete", f"{pair[1]} only", f"{pair[0]} only", "missing both 70%"]
    per_class_png = plot_per_class(results, main, root / "per_class.png")
    timing["total (s)"] = round(time.time() - t_start, 1)

    out = {
        "dataset": base.data.dataset or base.data.manifest,
        "test_samples": n_test,
        "scenarios": names_order,
        "results": results,
        "train": summaries,
        "timing": timing,
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "config": base.to_dict(),
    }
    atomic_write_json(root / "results.json", out)
    recipe = (
        f"encoders: {', '.join(f'{m.name}={m.encoder}' for m in base.model.modalities)}; "
        f"LoRA rank {base.model.lora.rank}; epochs {base.train.epochs} (warm-up {base.train.warmup_epochs:g}); "
        f"batch {base.train.batch_size}; lr {base.train.lr:g}; lambda {base.model.align_weight:g}; "
        f"modality dropout {'on' if base.train.modality_dropout.enabled else 'off'}"
    )
    best_lines = "\n".join(
        f"- {label}: best epoch {s.get('best_epoch')}, validation {base.train.select_metric} "
        f"{_fmt(s.get('best_metric'))}" for label, s in summaries.items()
    )
    write_report(
        root / "report.md",
        f"u2a demo: {out['dataset']} ({n_test} test samples)",
        [
            ("Setup", recipe + "\n\n" + best_lines),
            ("Test results (%)", table + f"\n\nOne standard error of an accuracy near 85% on {n_test} samples is "
             f"about {100 * (0.85 * 0.15 / max(n_test, 1)) ** 0.5:.1f} points."),
            ("Robustness sweep", f"![sweep]({sweep_png.name})"),
            ("Per-class accuracy", f"![per class]({per_class_png.name})"),
            ("Timing", "\n".join(f"- {k}: {v}" for k, v in timing.items())),
        ],
    )
    print("\n" + table)
    print(f"\nwrote {root / 'results.json'}, {root / 'report.md'}, {sweep_png.name}, {per_class_png.name}")
    print(f"total time {timing['total (s)']:.0f} s")
    return out


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}%"


def load_results(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

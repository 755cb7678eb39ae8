"""One function that trains a run from its config: :func:`train_run`.

Builds the datasets (filling the class names), writes the resolved config and the data report,
builds the method's model with the run's seed, trains with the :class:`~u2a.train.trainer.Trainer`
(selection on validation) and hands back the model with its best weights loaded. Works in one
process or under ``accelerate launch`` / ``torchrun`` (files written by the main process).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from u2a.config import RunConfig, save_run_config
from u2a.methods import method_of
from u2a.methods.base import MethodModel


@dataclass
class TrainResult:
    model: MethodModel
    summary: dict[str, Any]
    datasets: dict[str, Any]
    run_dir: Path


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_run(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    accelerator=None,
    resume: bool | str | Path = False,
    score_test: bool = True,
    verbose: bool = True,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``cfg.run_dir``); the returned model holds the weights
    selected on validation (or the last epoch's without a validation split).

    ``score_test``: the Trainer scores the test split once with the selected model (summary.json);
    callers that evaluate the test split themselves (experiments, the demo) turn it off."""
    from u2a.data.datasets import build_datasets, write_data_report
    from u2a.data.processing import build_collator
    from u2a.train.trainer import BEST_DIR, Trainer, make_accelerator

    run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
    accelerator = accelerator or make_accelerator(cfg)
    is_main = accelerator.is_main_process
    method = method_of(cfg.model)
    datasets = build_datasets(cfg, run_dir, write_tables=is_main)  # fills model.classes from the data
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(cfg, run_dir / "config.yaml")
        write_data_report(datasets, run_dir)
        if verbose:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in datasets.items())
            print(f"run folder: {run_dir}\nmethod: {method.display_name(cfg.model)}\ndata: {sizes}", file=sys.stderr)
    accelerator.wait_for_everyone()
    seed_everything(cfg.train.seed)  # the same initial weights in every process and every run
    model = method.build_model(cfg.model)
    splits = datasets if score_test else {k: v for k, v in datasets.items() if k != "test"}
    trainer = Trainer(
        cfg, model, splits,
        collate_fn=build_collator(cfg.model, train=True, skip_bad=cfg.data.skip_bad),
        eval_collate_fn=build_collator(cfg.model, train=False, skip_bad=cfg.data.skip_bad),
        run_dir=run_dir, accelerator=accelerator,
    )
    summary = trainer.train(resume=resume)
    model = trainer.unwrapped
    best = run_dir / BEST_DIR / "adapter.safetensors"
    if best.is_file():
        model.load_trainable(best)
    return TrainResult(model=model, summary=summary, datasets=datasets, run_dir=run_dir)

"""One function that trains a run from its config: :func:`train_run`.

Builds the datasets (filling the class names), writes the resolved config and the data report,
builds the method's model with the run's seed, trains with the :class:`~u2a.train.trainer.Trainer`
(selection on validation) and hands back the model with its best weights loaded. Works in one
process or under ``accelerate launch`` / ``torchrun`` (files written by the main process).
"""

from __future__ import annotations

import contextlib
import os
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


#: what a run folder holds that ``--overwrite`` replaces (the lock file and anything else stay)
RUN_OUTPUTS = ("checkpoints", "best", "tb", "missing", "eval", "summary.json", "metrics.jsonl", "data.json",
               "config.yaml")


def holds_run(run_dir: Path) -> list[str]:
    """What of a trained run is in ``run_dir``: checkpoints, ``best/``, ``summary.json``."""
    from u2a.train import checkpoint as ck

    held = ["checkpoints"] if ck.list_checkpoints(run_dir) else []
    return held + [n for n in ("best", "summary.json") if (run_dir / n).exists()]


def clear_run(run_dir: Path) -> None:
    """Remove a run's outputs (:data:`RUN_OUTPUTS`) and leftovers of interrupted writes (hidden
    ``.NAME.*.partial`` / ``.old`` / ``.tmp``): each is renamed into one hidden trash folder first
    (atomic steps), which is then deleted."""
    import shutil
    import tempfile

    from u2a.train.lock import LOCK_NAME

    if not run_dir.is_dir():
        return
    victims = [run_dir / n for n in RUN_OUTPUTS if (run_dir / n).exists()]
    victims += [p for p in run_dir.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME
                and p.name.endswith((".partial", ".old", ".tmp"))]
    if not victims:
        return
    trash = Path(tempfile.mkdtemp(prefix=".u2a-replaced.", suffix=".old", dir=run_dir))
    for p in victims:
        os.replace(p, trash / p.name)
    shutil.rmtree(trash, ignore_errors=True)


def _one_answer(accelerator, error: str | None) -> str | None:
    """The main process's error (or None), handed to every process of a distributed run."""
    if accelerator.num_processes == 1:
        return error
    from accelerate.utils import broadcast_object_list

    box = [error]
    broadcast_object_list(box, from_process=0)
    return box[0]


def train_run(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    accelerator=None,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    score_test: bool = True,
    verbose: bool = True,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``cfg.run_dir``); the returned model holds the weights
    selected on validation (or the last epoch's without a validation split).

    The run folder is locked while this trains into it (:mod:`u2a.train.lock`; the main process
    holds the lock). A folder that holds a trained run (checkpoints, ``best/``, ``summary.json``)
    is continued with ``resume`` or replaced with ``overwrite``; anything else is an error.
    ``overwrite`` replaces the old run only once the new one has read its data (every split, the
    missing-modality tables) and built its model and trainer (encoders loaded): a bad manifest
    line or a wrong encoder path leaves the old run as it was.

    ``score_test``: the Trainer scores the test split once with the selected model (summary.json);
    callers that evaluate the test split themselves (experiments, the demo) turn it off."""
    from u2a.errors import ConfigError
    from u2a.train.lock import acquire
    from u2a.train.trainer import make_accelerator

    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    run_dir = Path(run_dir) if run_dir is not None else cfg.run_dir
    accelerator = accelerator or make_accelerator(cfg)
    check_precision(cfg, accelerator)
    is_main = accelerator.is_main_process
    existed = run_dir.exists()
    lock, error = None, None
    if is_main:
        try:
            lock = acquire(run_dir)
        except ConfigError as e:
            error = str(e)
    error = _one_answer(accelerator, error)
    if error:
        raise ConfigError(error)
    try:
        return _train_locked(cfg, run_dir, accelerator, resume, overwrite, score_test, verbose)
    finally:
        if lock is not None:
            lock.release()
            if not existed:  # a run that failed before writing anything leaves no empty folder
                with contextlib.suppress(OSError):
                    run_dir.rmdir()


def check_resume_config(cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run continues the optimisation its ``config.yaml`` records: only what
    :data:`~u2a.config.RESUME_MAY_CHANGE` names may differ (e.g. ``train.epochs`` to train longer).
    Another batch layout, seed, learning rate or model would train the rest of the run with
    settings the record does not show (a changed ``train.grad_accum`` even leaves the LR schedule
    finished early, at 0)."""
    from u2a.config import RESUME_MAY_CHANGE, load_saved_run_config, resume_changes
    from u2a.errors import ConfigError

    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    changes = resume_changes(load_saved_run_config(saved_file), cfg)
    if changes:
        lines = "\n".join(f"  {k}: {old!r} in the run, {new!r} now" for k, old, new in changes)
        may = ", ".join(sorted(k for k in RESUME_MAY_CHANGE if "." in k))
        raise ConfigError(f"--resume {run_dir}: the run was trained with other settings than these "
                          f"({saved_file}):\n{lines}\na resumed run may change only {may}; "
                          "start a new run (another name=, or --overwrite) to train with other settings")


def check_precision(cfg: RunConfig, accelerator) -> None:
    """The precision the run config names is the one the accelerator runs (the saved config must
    never say fp16 for a run that ran in fp32 on a CPU)."""
    from u2a.errors import ConfigError

    want = str(cfg.train.mixed_precision)
    runs = str(getattr(accelerator, "mixed_precision", want))
    if want == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("train.mixed_precision: fp16 needs a GPU (CPU autocast has no fp16 loss scaling); "
                          "use bf16 on CPU")
    if runs != want:
        raise ConfigError(f"train.mixed_precision: the config says {want!r}, but the accelerator runs {runs!r}; "
                          "make them agree (or let u2a create the accelerator)")


def _train_locked(cfg, run_dir: Path, accelerator, resume, overwrite: bool, score_test: bool,
                  verbose: bool) -> TrainResult:
    from u2a.data.datasets import build_datasets, write_data_report, write_missing_tables
    from u2a.data.processing import build_collator
    from u2a.errors import ConfigError
    from u2a.methods.base import verify_saved_model
    from u2a.train.trainer import BEST_DIR, Trainer

    is_main = accelerator.is_main_process
    held = holds_run(run_dir)
    if held and not resume and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(held)}); continue it with `u2a train --resume {run_dir}`, "
            "start over with --overwrite, or pick another name (name=...)"
        )
    method = method_of(cfg.model)
    # everything that can fail on the new run's inputs comes before anything in run_dir changes:
    # the data (every split read and checked, missing tables built), the encoders, the trainer
    datasets = build_datasets(cfg, run_dir, write_tables=False)  # fills model.classes from the data
    if resume:
        check_resume_config(cfg, run_dir)
    seed_everything(cfg.train.seed)  # the same initial weights in every process and every run
    model = method.build_model(cfg.model)
    splits = datasets if score_test else {k: v for k, v in datasets.items() if k != "test"}
    trainer = Trainer(
        cfg, model, splits,
        collate_fn=build_collator(cfg.model, train=True, skip_bad=cfg.data.skip_bad, allow_empty=cfg.data.skip_bad),
        eval_collate_fn=build_collator(cfg.model, train=False, skip_bad=cfg.data.skip_bad,
                                       allow_empty=cfg.data.skip_bad),
        run_dir=run_dir, accelerator=accelerator,
    )
    if is_main:
        if overwrite and held:
            clear_run(run_dir)
            if verbose:
                print(f"u2a: replaced the run in {run_dir} ({', '.join(held)})", file=sys.stderr)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_missing_tables(cfg, datasets, run_dir)
        save_run_config(cfg, run_dir / "config.yaml")
        write_data_report(datasets, run_dir, keep_samples=bool(resume))
        if verbose:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in datasets.items())
            print(f"run folder: {run_dir}\nmethod: {method.display_name(cfg.model)}\ndata: {sizes}", file=sys.stderr)
    accelerator.wait_for_everyone()
    summary = trainer.train(resume=resume)
    model = trainer.unwrapped
    best = run_dir / BEST_DIR
    if (best / "adapter.safetensors").is_file():
        verify_saved_model(best)
        model.load_trainable(best / "adapter.safetensors")
    return TrainResult(model=model, summary=summary, datasets=datasets, run_dir=run_dir)

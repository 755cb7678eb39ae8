"""The training loop (paper, Section 4.2) on top of :mod:`accelerate`.

The Trainer is the shell every method shares (:mod:`u2a.methods`): one process or many
(``accelerate launch`` / ``torchrun``; CPU -> gloo, GPU -> NCCL), seeded shuffling per epoch,
gradient accumulation and clipping, mixed precision, validation with distributed-correct metrics
(each sample counted once; scenarios with modalities missing from one encoding pass), best-epoch
selection on validation only, atomic checkpoints with exact resume (mid-epoch too), JSON Lines /
TensorBoard logs of the method's named losses and a final ``summary.json``. What a training step
does is the method's (:meth:`u2a.methods.base.Method.train_step`). Files are written by the main
process only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from u2a.config import RunConfig
from u2a.errors import ConfigError, DataError, ModelError
from u2a.evaluation.metrics import compute_metrics, is_better, scalar_metrics
from u2a.evaluation.predict import check_counted_once, predict_scenarios, validation_scenarios
from u2a.io import atomic_dir, atomic_write_json, oserror_names, remove_dir
from u2a.methods import method_of
from u2a.methods.base import StepContext
from u2a.train import checkpoint as ckpt_lib
from u2a.train.optim import build_optimizer, build_scheduler, schedule_lengths

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
BEST_DIR = "best"


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch from ``seed + epoch``: reproducible and resumable.

    (It has no ``set_epoch`` on purpose, so that accelerate's own epoch counter, which restarts at 0
    for a resumed loader, cannot change the order; the trainer sets :attr:`epoch`.)
    """

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    return ((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 1_009 + rank


def enable_determinism() -> None:
    """Deterministic kernels where PyTorch has them (warn, not fail, where it does not)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def make_accelerator(cfg: RunConfig):
    """An Accelerator for this run: NCCL on GPUs, gloo on CPUs (``torchrun`` / ``accelerate launch``
    with several processes and no GPU), mixed precision from the config."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # a batch without some modality leaves that modality's LoRA without gradient
    handlers: list[Any] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = multi and not torch.cuda.is_available()
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision: fp16 needs a GPU (CPU autocast has no fp16 loss scaling); "
                          "use bf16 on CPU")
    if cpu:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    _forget_other_precision(cfg.train.mixed_precision, multi)
    return Accelerator(mixed_precision=cfg.train.mixed_precision, kwargs_handlers=handlers,
                       step_scheduler_with_optimizer=False, cpu=cpu)


def _forget_other_precision(mixed_precision: str, multi: bool) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another
    ``mixed_precision``. In a single process (a notebook, ``u2a experiment`` running several
    configs, a test session) a new run may ask for another precision: drop the old state so the
    new run gets what its config says. Under torchrun the state belongs to the launch; leave it."""
    from accelerate.state import AcceleratorState

    if multi or not AcceleratorState._shared_state:
        return
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


class Trainer:
    """Train a method's model (``cfg.model.method``) on ``datasets["train"]``, select on ``datasets["val"]``.

    ``collate_fn`` turns a list of dataset items into a batch (``ids``, ``inputs``, ``present``,
    ``labels``), e.g. :func:`u2a.data.processing.build_collator`. ``eval_collate_fn`` (default:
    ``collate_fn``) is used for val/test (no training-time augmentation).
    """

    def __init__(
        self,
        cfg: RunConfig,
        model: torch.nn.Module,
        datasets: Mapping[str, Dataset],
        collate_fn: Callable,
        run_dir: str | Path,
        eval_collate_fn: Callable | None = None,
        accelerator=None,
    ):
        if "train" not in datasets or datasets["train"] is None:
            raise DataError("training needs a 'train' split")
        if len(datasets["train"]) == 0:
            raise DataError("the train split is empty")
        enable_determinism()
        self.cfg = cfg
        self.tc = cfg.train
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator or make_accelerator(cfg)
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self.datasets = {k: v for k, v in datasets.items() if v is not None and len(v) > 0}
        self.modalities = list(cfg.model.modality_names)
        tc = self.tc
        self.method = method_of(cfg.model)
        self.method.check_run(cfg)
        self.prepare_lines: list[str] = []
        # how the encoders run: attention kernel, bf16 frozen matrices (train.attention, mixed_precision)
        from u2a.model.runtime import configure

        model.to(self.accelerator.device)
        self.runtime = configure(model, tc.attention, tc.mixed_precision, self.accelerator.device)
        self.skipped_samples: list[dict[str, Any]] = []  # data.skip_bad: samples that failed to decode
        self.skipped_batches = 0  # training batches skipped: every sample failed on some process
        # before the optimizer exists: statistics the method needs (deterministic, also on resume)
        with torch.no_grad(), self.accelerator.autocast():
            self.prepared = self.method.prepare(model, self.datasets["train"], eval_collate_fn or collate_fn, cfg,
                                                self._say) or {}

        self.sampler = EpochShuffleSampler(len(self.datasets["train"]), tc.seed)
        self.loader_generator = torch.Generator()
        self.loader_generator.manual_seed(tc.seed)
        common = dict(num_workers=tc.num_workers, worker_init_fn=_seed_worker if tc.num_workers else None)
        train_loader = DataLoader(self.datasets["train"], batch_size=tc.batch_size, sampler=self.sampler,
                                  collate_fn=collate_fn, generator=self.loader_generator, **common)
        eval_collate = eval_collate_fn or collate_fn
        eval_loaders = {
            split: DataLoader(self.datasets[split], batch_size=tc.batch_size, shuffle=False,
                              collate_fn=eval_collate, **common)
            for split in ("val", "test") if split in self.datasets
        }
        optimizer = build_optimizer(self.method.param_groups(model, cfg), tc)
        prepared = acc.prepare(model, optimizer, train_loader, *eval_loaders.values())
        self.model, self.optimizer, self.train_loader = prepared[:3]
        self.eval_loaders = dict(zip(eval_loaders, prepared[3:]))
        for dl in self.eval_loaders.values():
            # no padding of the last round with repeated samples: evaluation gathers each split once
            # (predict_scenarios), so processes may end with batches of any size, or one fewer
            sampler = getattr(dl, "batch_sampler", None)
            if hasattr(sampler, "even_batches"):
                sampler.even_batches = False
        self.batches_per_epoch = len(self.train_loader)
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        self.scheduler = build_scheduler(inner, tc, self.batches_per_epoch)
        self.warmup_steps, self.total_steps = schedule_lengths(tc, self.batches_per_epoch)
        if self.total_steps and self.warmup_steps >= self.total_steps and tc.warmup_factor != 1:
            import warnings

            from u2a.errors import U2AWarning

            warnings.warn(f"train.warmup_epochs={tc.warmup_epochs} covers the whole run ({self.total_steps} optimizer "
                          f"steps): it trains at warmup_factor x lr = {tc.warmup_factor * tc.lr:g} throughout and the "
                          "polynomial decay never starts; lower train.warmup_epochs or train longer",
                          U2AWarning, stacklevel=2)

        # position and bookkeeping (restored by resume)
        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.global_step = 0  # optimizer steps
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.best_val: dict[str, Any] | None = None
        self.epoch_loss_sum = 0.0
        self.epoch_loss_count = 0
        self.epoch_sums: dict[str, float] = {}  # this process's sums of every named loss this epoch
        self.log_window: dict[str, float] = {}  # sums of the named losses since the last step log
        self.log_window_n = 0
        self.val_scenarios = validation_scenarios(self.modalities, tc.select_on)
        self.resumed_from: str | None = None
        # training samples and seconds of the earlier sessions of a resumed run (from its checkpoint)
        self.samples_before, self.time_before = 0, 0.0
        self._t0, self._samples_seen = time.time(), 0
        self._tb = None

    # ---- small helpers ------------------------------------------------------------------
    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with oserror_names(self.metrics_path), open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tb is not None:
            step = record.get("global_step", self.global_step)
            kind = record.get("type", "")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("global_step", "epoch"):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
                elif isinstance(v, dict):
                    for k2, v2 in scalar_metrics(v).items():
                        self._tb.add_scalar(f"{k}/{k2}", v2, step)

    def _open_tensorboard(self, purge_step: int | None) -> None:
        if self.is_main and self.tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge_step)

    def _lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def _say(self, line: str) -> None:
        self.prepare_lines.append(line)
        if self.is_main:
            import sys

            print(f"u2a: {line}", file=sys.stderr)

    # ---- evaluation ---------------------------------------------------------------------
    def evaluate(self, split: str = "val", scenarios: dict[str, Any] | None = None) -> dict[str, Any]:
        """Metrics on a split, over all processes, each sample counted exactly once: complete, and
        (``train.select_on`` missing/all) each modality alone, from one encoding pass; the
        selection value; and the method's estimate diagnostics (U2A: mask-token MSE next to the
        MSE of the constant mean)."""
        scenarios = scenarios or self.val_scenarios
        inner = self.unwrapped
        # settings the model chooses on validation (U2A's gate: validation), each time it is validated
        calib = inner.calibration_scenarios() if split == "val" else {}
        result = predict_scenarios(self.model, self.eval_loaders[split], self.accelerator,
                                   {**scenarios, **calib}, diagnostics=True)
        check_counted_once(result, self.datasets[split])
        task, classes = self.cfg.model.task, self.cfg.model.classes
        chosen = None
        if calib:
            sel_metric = self.tc.select_metric

            def score(logits: torch.Tensor) -> float:
                return float(compute_metrics(logits, result["labels"], task, classes, per_class=False)[sel_metric])

            chosen = inner.calibrate({k: result["logits"].pop(k) for k in calib}, score)
            for k, v in chosen.pop("logits", {}).items():
                if k in result["logits"]:
                    result["logits"][k] = v
        metrics = compute_metrics(result["logits"]["complete"], result["labels"], task, classes)
        metrics["n_distinct"] = len(set(result["ids"]))
        if result["skipped"]:
            # data.skip_bad: the metrics are over the samples that loaded; the others are listed
            # in RUN/data.json with the training split's (one record per sample and modality)
            metrics["skipped"] = len({r["id"] for r in result["skipped"]})
            self.skipped_samples.extend({**r, "split": split} for r in result["skipped"])
        sel = self.tc.select_metric
        if len(scenarios) > 1:
            metrics["scenarios"] = {
                k: scalar_metrics(compute_metrics(v, result["labels"], task, classes, per_class=False))
                for k, v in result["logits"].items() if k != "complete"
            }
            pick = [k for k in scenarios if k != "complete"] if self.tc.select_on == "missing" else list(scenarios)
            vals = [metrics[sel] if k == "complete" else metrics["scenarios"][k][sel] for k in pick]
            metrics["select_value"] = float(np.mean(vals))
        else:
            metrics["select_value"] = metrics.get(sel)
        if chosen:
            metrics["calibration"] = chosen
        if result["sums"] and hasattr(inner, "estimate_errors"):
            metrics["estimates"] = inner.estimate_errors(result["sums"])
        return metrics

    # ---- checkpoints --------------------------------------------------------------------
    def _state(self, kind: str) -> dict[str, Any]:
        size = self.metrics_path.stat().st_size if self.metrics_path.exists() else 0
        return {
            "kind": kind,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "batches_per_epoch": self.batches_per_epoch,
            "num_processes": self.accelerator.num_processes,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "select_metric": self.tc.select_metric,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "log_window": self.log_window,
            "log_window_n": self.log_window_n,
            "method": self.cfg.model.method,
            "metrics_bytes": size,
            "samples_seen": self.samples_before + self._samples_seen,
            "skipped_batches": self.skipped_batches,
            "train_time_s": self.time_before + (time.time() - self._t0),
            "time": time.time(),
        }

    def save_checkpoint(self, kind: str) -> Path:
        """Every process must call this (RNG states are gathered); the main process writes."""
        acc = self.accelerator
        from accelerate.utils import gather_object

        rng = ckpt_lib.collect_rng_state()
        # this process's own running sums (the other processes have their own)
        rng["local"] = {"epoch_loss_sum": self.epoch_loss_sum, "epoch_loss_count": self.epoch_loss_count,
                        "epoch_sums": self.epoch_sums}
        rngs = gather_object([rng]) if acc.num_processes > 1 else [rng]
        number = self.epoch if kind == "epoch" else self.global_step
        folder = self.run_dir / ckpt_lib.CKPT_DIR / ckpt_lib.checkpoint_name(kind, number)
        if self.is_main:
            ckpt_lib.save_checkpoint(
                folder,
                trainable=self.unwrapped.saved_state_dict(),
                optimizer_state=self.optimizer.state_dict(),
                scheduler_state=self.scheduler.state_dict(),
                rng_states=rngs,
                state=self._state(kind),
            )
            keep = []
            if self.best_epoch is not None:
                keep.append(ckpt_lib.checkpoint_name("epoch", self.best_epoch))
            ckpt_lib.prune_checkpoints(self.run_dir, self.tc.keep_last, keep)
        acc.wait_for_everyone()
        return folder

    def resume(self, run_dir: str | Path | None = None) -> Path | None:
        """Load the newest complete checkpoint of ``run_dir`` (default: this run's folder).

        Returns its path, or None when the run has none. A damaged newest checkpoint raises a
        ModelError naming it and the newest intact one (:func:`~u2a.train.checkpoint.resume_checkpoint`).
        """
        run_dir = Path(run_dir) if run_dir is not None else self.run_dir
        path = ckpt_lib.resume_checkpoint(run_dir)
        if path is None:
            return None
        self.load_checkpoint(path)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        ck = ckpt_lib.load_checkpoint(path)
        st = ck.state
        if st.get("batches_per_epoch") != self.batches_per_epoch:
            raise ModelError(
                f"checkpoint {path} was taken with {st.get('batches_per_epoch')} batches per epoch and "
                f"{st.get('num_processes')} processes; this run has {self.batches_per_epoch} batches per epoch "
                f"and {self.accelerator.num_processes} processes (keep batch size, data and process count)"
            )
        # the tensors the checkpoint's hashes were verified on, not a second read of the file
        self.unwrapped.load_trainable(ck.trainable, where=str(path / "trainable.safetensors"))
        try:
            self.optimizer.load_state_dict(ck.optimizer_state)
            sched = dict(ck.scheduler_state)
            sched.setdefault("lr_lambdas", [None] * len(self.scheduler.lr_lambdas))
            self.scheduler.load_state_dict(sched)
        except (KeyError, ValueError, RuntimeError) as e:
            raise ModelError(f"checkpoint {path}: optimizer/scheduler state does not fit this run ({e})") from e
        self.epoch = int(st["epoch"])
        self.step_in_epoch = int(st["step_in_epoch"])
        self.global_step = int(st["global_step"])
        self.best_metric = st.get("best_metric")
        self.best_epoch = st.get("best_epoch")
        self.best_val = st.get("best_val")
        self.epoch_loss_sum = float(st.get("epoch_loss_sum", 0.0))
        self.epoch_loss_count = int(st.get("epoch_loss_count", 0))
        window = st.get("log_window") or {}
        if isinstance(window, list):  # checkpoints of u2a 0.1: (loss, task, align)
            window = dict(zip(("loss", "task", "align"), window))
        self.log_window = {k: float(v) for k, v in window.items()}
        self.log_window_n = int(st.get("log_window_n", 0))
        if self.is_main and self.metrics_path.exists():
            # drop log lines written after the checkpoint (they will be written again)
            with open(self.metrics_path, "r+b") as f:
                f.truncate(int(st.get("metrics_bytes", 0)))
        rank = self.accelerator.process_index
        if rank < len(ck.rng_states):
            local = ck.rng_states[rank].get("local", {})
            self.epoch_loss_sum = float(local.get("epoch_loss_sum", self.epoch_loss_sum))
            self.epoch_loss_count = int(local.get("epoch_loss_count", self.epoch_loss_count))
            self.epoch_sums = {k: float(v) for k, v in (local.get("epoch_sums") or {}).items()}
            ckpt_lib.restore_rng_state(ck.rng_states[rank])
        else:
            log.warning("checkpoint %s has no RNG state for process %d; continuing with fresh RNG", path, rank)
        self.samples_before = int(st.get("samples_seen", 0))
        self.skipped_batches = int(st.get("skipped_batches", 0))
        self.time_before = float(st.get("train_time_s", 0.0))
        self.resumed_from = str(path)
        self.accelerator.wait_for_everyone()

    def _save_best(self) -> None:
        if self.is_main:
            with atomic_dir(self.run_dir / BEST_DIR) as tmp:
                self.unwrapped.save_pretrained(tmp, extra={"epoch": self.best_epoch, "select_metric": self.tc.select_metric,
                                                           "metric": self.best_metric})
        self.accelerator.wait_for_everyone()

    # ---- the loop -----------------------------------------------------------------------
    def _optimizer_step(self) -> None:
        if self.tc.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self._params, self.tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _loaded_samples(self, batch: dict[str, Any], epoch: int, i: int) -> int | None:
        """The number of samples of this batch over all processes, or None when the batch is
        skipped: every sample of it failed to load (data.skip_bad) on this or, with several
        processes, on another process - all processes then skip it together, since each training
        step needs every process (gradient sync, the methods' collectives)."""
        acc = self.accelerator
        local = len(batch["ids"])
        if acc.num_processes == 1:
            counts = [local]
        else:
            counts = acc.gather(torch.tensor([local], device=acc.device)).cpu().tolist()
        if all(counts):
            return int(sum(counts))
        empty = [r for r, c in enumerate(counts) if c == 0]
        not_trained = int(sum(counts))
        self.skipped_batches += 1
        if self.is_main:
            where = f" on process{'es' if len(empty) > 1 else ''} {', '.join(map(str, empty))}" \
                if acc.num_processes > 1 else ""
            rest = (f"; every process skips it, so the {not_trained} samples that loaded on the others are not "
                    "trained on in this epoch") if acc.num_processes > 1 else ""
            log.warning("epoch %d, batch %d: every sample failed to load%s (listed in data.json)%s",
                        epoch + 1, i + 1, where, rest)
        self._log({"type": "skipped_batch", "epoch": epoch + 1, "batch": i + 1, "global_step": self.global_step,
                   "processes": empty, "not_trained": not_trained})
        return None

    def _average_gradients(self) -> None:
        """Average the accumulated gradients over the processes (what DDP does in the backward of
        a group's last batch, when that batch was skipped); a parameter without a gradient on one
        process counts as zero there."""
        params, acc = self._params, self.accelerator
        has = acc.reduce(torch.tensor([float(p.grad is not None) for p in params], device=acc.device),
                         reduction="sum").cpu()
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float()
                          for p in params])
        flat = acc.reduce(flat, reduction="mean")
        i = 0
        for p, h in zip(params, has.tolist()):
            n = p.numel()
            if h:  # a parameter that no process has a gradient for keeps none (the optimizer skips it)
                p.grad = flat[i:i + n].view_as(p).to(p.dtype)
            i += n

    def _train_step(self, batch: dict[str, Any], epoch: int, i: int, group: int) -> dict[str, torch.Tensor]:
        tc = self.tc
        g = torch.Generator()
        g.manual_seed(_step_seed(tc.seed, epoch, i, self.accelerator.process_index))
        ctx = StepContext(
            model=self.model, unwrapped=self.unwrapped, accelerator=self.accelerator, cfg=self.cfg, epoch=epoch,
            batch_index=i, group=group, generator=g,
            progress=self.global_step / max(self.total_steps, 1),
            optimizer_step_fn=self._optimizer_step if self.method.steps_optimizer else None,
        )
        losses = self.method.train_step(ctx, batch)
        if "loss" not in losses:
            raise ModelError(f"method {self.method.name!r}: train_step must return a 'loss' entry")
        return {k: v.detach().float().reshape(()) for k, v in losses.items()}

    def train(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train; ``resume=True`` continues from this run's newest checkpoint (or a given one)."""
        from accelerate.utils import set_seed
        from tqdm.auto import tqdm

        acc, tc = self.accelerator, self.tc
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt_lib.remove_leftovers(self.run_dir)  # of writes a kill interrupted
        acc.wait_for_everyone()
        set_seed(tc.seed, device_specific=True)  # dropout RNG: one stream per process
        if resume:
            if isinstance(resume, (str, Path)):
                self.load_checkpoint(resume)
            elif self.resume() is None:
                ckpt_lib.check_fresh_start(self.run_dir)  # refuses when it would replace a trained model
                if self.is_main:
                    import warnings

                    from u2a.errors import U2AWarning

                    warnings.warn(f"no checkpoint in {self.run_dir} (the run stopped before its first one): "
                                  "starting from the beginning", U2AWarning, stacklevel=2)
        if not self.resumed_from and self.is_main:
            # a fresh start: the logs of an earlier attempt are not continued (no duplicate records)
            self.metrics_path.unlink(missing_ok=True)
            remove_dir(self.run_dir / "tb")
        self._open_tensorboard(self.global_step if self.resumed_from else None)
        if not self.resumed_from and self.prepared:
            self._log({"type": "prepare", "method": self.cfg.model.method, "global_step": 0, **self.prepared})

        n_batches = self.batches_per_epoch
        ga = tc.grad_accum
        params = [p for p in self.model.parameters() if p.requires_grad]
        self._params = params
        self._t0, self._samples_seen = time.time(), 0
        stop = tc.max_steps is not None and self.global_step >= tc.max_steps
        if self.is_main:
            log.info("training %d epochs x %d batches (%d processes), %d optimizer steps, warm-up %d",
                     tc.epochs, n_batches, acc.num_processes, self.total_steps, self.warmup_steps)

        while self.epoch < tc.epochs and not stop:
            epoch = self.epoch
            self.method.on_epoch_start(self.unwrapped, epoch, self.cfg)
            self.sampler.use_epoch(epoch)
            self.loader_generator.manual_seed(tc.seed + epoch)
            skip = self.step_in_epoch
            if skip == 0:
                self.epoch_loss_sum, self.epoch_loss_count, self.epoch_sums = 0.0, 0, {}
            loader = acc.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            self.model.train()
            bar = tqdm(total=n_batches, initial=skip, desc=f"epoch {epoch + 1}/{tc.epochs}", dynamic_ncols=True,
                       disable=not (self.is_main and tc.progress), leave=False)
            step_losses: dict[str, torch.Tensor] = {}
            step_n = 0
            t_window = time.time()
            window_samples = 0
            i = skip
            for i, batch in enumerate(loader, start=skip):
                if batch.get("skipped"):
                    # data.skip_bad: the samples of this batch that failed to load
                    self.skipped_samples.extend({**r, "split": "train"} for r in batch["skipped"])
                group_start = (i // ga) * ga
                group = min(ga, n_batches - group_start)
                sync = (i + 1 - group_start) == group
                n = self._loaded_samples(batch, epoch, i)
                if n is not None:
                    ctx = contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(self.model)
                    with ctx:
                        losses = self._train_step(batch, epoch, i, group)
                    for k, v in losses.items():
                        step_losses[k] = step_losses.get(k, 0.0) + v.cpu()
                    step_n += 1
                    self.epoch_loss_sum += float(losses["loss"])
                    self.epoch_loss_count += 1
                    for k, v in losses.items():
                        self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + float(v)
                    self._samples_seen += n
                    window_samples += n
                elif sync and step_n and acc.num_processes > 1 and not self.method.steps_optimizer:
                    # the group's earlier batches ran without gradient sync (no_sync): sync here
                    self._average_gradients()
                self.step_in_epoch = i + 1
                bar.update(1)
                if not sync:
                    continue
                lr = self._lr()
                if not self.method.steps_optimizer:
                    self._optimizer_step()
                self.scheduler.step()
                self.global_step += 1
                # the step's losses over all processes; the log window is part of the checkpoint state
                # (no losses when every batch of the step was skipped - on every process alike)
                if step_n:
                    keys = sorted(step_losses)
                    vec = torch.stack([torch.as_tensor(step_losses[k], dtype=torch.float32) for k in keys]) / step_n
                    step_mean = acc.reduce(vec.to(acc.device), reduction="mean").cpu()
                    for k, v in zip(keys, step_mean.tolist()):
                        self.log_window[k] = self.log_window.get(k, 0.0) + v
                    self.log_window_n += 1
                step_losses = {}
                step_n = 0
                if self.global_step % tc.log_every_steps == 0 and self.log_window_n:
                    mean = {k: v / max(self.log_window_n, 1) for k, v in self.log_window.items()}
                    rate = window_samples / max(time.time() - t_window, 1e-9)
                    self._log({"type": "step", "epoch": epoch + 1, "global_step": self.global_step,
                               "total_steps": self.total_steps,
                               **{("loss" if k == "loss" else f"{k}_loss" if "/" not in k else k): v
                                  for k, v in mean.items()},
                               "lr": lr, "samples_per_s": rate})
                    bar.set_postfix(loss=f"{mean['loss']:.4f}", samples_s=f"{rate:.1f}")
                    self.log_window, self.log_window_n = {}, 0
                    window_samples, t_window = 0, time.time()
                if tc.max_steps is not None and self.global_step >= tc.max_steps:
                    stop = True
                if tc.checkpoint_every_steps and self.global_step % tc.checkpoint_every_steps == 0 and not stop:
                    self.save_checkpoint("step")
                if stop:
                    break
            bar.close()
            self._end_epoch(epoch, last=stop or epoch + 1 == tc.epochs)

        elapsed = self.time_before + (time.time() - self._t0)
        return self._finish(elapsed, self.samples_before + self._samples_seen)

    def _end_epoch(self, epoch: int, last: bool) -> None:
        acc, tc = self.accelerator, self.tc
        totals = acc.reduce(torch.tensor([self.epoch_loss_sum, float(self.epoch_loss_count)], device=acc.device),
                            reduction="sum").cpu()
        train_loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
        keys = sorted(self.epoch_sums)
        per_name = {}
        if keys:
            sums = acc.reduce(torch.tensor([self.epoch_sums[k] for k in keys], device=acc.device, dtype=torch.float64),
                              reduction="sum").cpu()
            per_name = {k: float(v / totals[1]) for k, v in zip(keys, sums)} if totals[1] > 0 else {}
        record: dict[str, Any] = {"type": "epoch", "epoch": epoch + 1, "global_step": self.global_step,
                                  "total_steps": self.total_steps,
                                  "train_loss": train_loss, "train_losses": per_name, "lr": self._lr()}
        self.epoch = epoch + 1
        self.step_in_epoch = 0
        selectable = self.method.selectable(epoch + 1, self.cfg)
        if "val" in self.eval_loaders and selectable and ((epoch + 1) % tc.eval_every_epochs == 0 or last):
            val = self.evaluate("val")
            record["val"] = val
            value = val.get("select_value")
            if value is None:
                raise ModelError(f"train.select_metric {tc.select_metric!r} is not a metric of this task")
            if is_better(value, self.best_metric, tc.select_metric):
                self.best_metric, self.best_epoch = float(value), epoch + 1
                self.best_val = scalar_metrics(val)
                self._save_best()
            record["best_epoch"] = self.best_epoch
            record["best_metric"] = self.best_metric
        elif "val" not in self.eval_loaders and selectable:
            # no validation split: the last epoch is the one kept
            self.best_epoch, self.best_metric, self.best_val = epoch + 1, None, None
            self._save_best()
        self._log(record)
        if self.is_main:
            val = record.get("val", {})
            log.info("epoch %d: train loss %.4f%s", epoch + 1, train_loss,
                     f", val {tc.select_metric} {val.get(tc.select_metric):.4f}" if val else "")
        self.save_checkpoint("epoch")

    def _report_skipped(self, summary: dict[str, Any]) -> None:
        """Samples dropped because they failed to decode (data.skip_bad), from every process: counted
        in summary.json and listed in RUN/data.json."""
        acc = self.accelerator
        records = self.skipped_samples
        if acc.num_processes > 1:
            from accelerate.utils import gather_object

            records = [r for part in gather_object([records]) for r in part]
        if not records:
            return
        from u2a.data.datasets import merge_skipped

        path = self.run_dir / "data.json"
        if self.is_main:
            report = json.loads(path.read_text()) if path.is_file() else {}
            report = merge_skipped(report, records)
            atomic_write_json(path, report)
            summary["skipped_samples"] = report.get("skipped_samples_count", len(records))
            import sys

            print(f"u2a: skipped {summary['skipped_samples']} samples that failed to load (data.skip_bad); "
                  f"listed in {path}", file=sys.stderr)

    def _finish(self, elapsed: float, samples_seen: int) -> dict[str, Any]:
        acc = self.accelerator
        total, learnable = self.unwrapped.count_parameters()
        summary: dict[str, Any] = {
            "run_dir": str(self.run_dir),
            "method": self.cfg.model.method,
            "method_label": self.method.display_name(self.cfg.model),
            "parameters": {"total": total, "learnable": learnable},
            "epochs": self.epoch,
            "global_steps": self.global_step,
            "select_metric": self.tc.select_metric,
            "select_on": self.tc.select_on,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "best_val": self.best_val,
            "selected_on": "val" if "val" in self.eval_loaders else "last epoch (no val split)",
            "num_processes": acc.num_processes,
            "train_time_s": elapsed,
            "train_samples": samples_seen,
            "samples_per_s": samples_seen / elapsed if elapsed > 0 else None,
            "resumed_from": self.resumed_from,
            "skipped_batches": self.skipped_batches,
            "mixed_precision": self.tc.mixed_precision,
        }
        summary["runtime"] = self.runtime
        if self.prepared:
            summary["prepare"] = self.prepared
        if "test" in self.eval_loaders and (self.run_dir / BEST_DIR).is_dir():
            # the test split is scored once, with the model selected on validation
            acc.wait_for_everyone()
            self.unwrapped.load_trainable(self.run_dir / BEST_DIR / "adapter.safetensors")
            test = self.evaluate("test", {"complete": lambda present: present})
            summary["test"] = scalar_metrics(test)
            self._log({"type": "test", "epoch": self.best_epoch, "global_step": self.global_step, "test": test})
        self._report_skipped(summary)  # after the test split, whose skipped samples it lists too
        if self.is_main:
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        acc.wait_for_everyone()
        return summary


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


__all__ = ["EpochShuffleSampler", "Trainer", "enable_determinism", "load_summary", "make_accelerator", "read_metrics"]


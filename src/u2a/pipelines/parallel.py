"""The trainings of an experiment in parallel worker processes (``u2a experiment --jobs N``).

On a CPU a small-batch training step does not use two cores twice as well as one: on the demo
recipe (2 cores, bf16, batch 16) one step takes 372 ms with 2 threads and ~550 ms with 1 thread,
also when a second 1-thread process runs beside it. ``u2a demo`` trains its two models side by
side in ~246 s (266 s with the test evaluation; 347-364 s one after the other with 2 threads,
measured before the ablation's placeholder moved into its batch; docs/benchmarks.md). Each job is one (method, seed) run trained by :func:`u2a.pipelines.experiment.train_or_reuse` in a fresh process
(``spawn``) with ``threads // jobs`` threads; its output goes to ``<run folder>.log``; the parent
shows one progress bar per job from the run's ``metrics.jsonl`` and evaluates the runs afterwards.

The result of a run depends on its own seed and config only, not on the jobs beside it; the
number of threads can change the last bits of floating-point sums (as it does for any torch
program), so a run trained with ``--jobs 2`` on 2 cores matches a sequential 1-thread run, not
necessarily a 2-thread one.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from u2a.errors import ConfigError, U2AError


@dataclass(frozen=True)
class Job:
    """One training: the resolved run config and where it goes."""

    label: str
    cfg: Any  # u2a.config.RunConfig
    run_dir: Path
    overwrite: bool
    threads: int

    @property
    def log_path(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".log")


def auto_jobs(n_trainings: int, device_count: int | None = None) -> int:
    """``--jobs auto``: one job per training up to one per core, on a CPU; 1 with a GPU (the
    trainings would share it) or a single core."""
    import torch

    gpus = torch.cuda.device_count() if device_count is None else device_count
    if gpus > 0:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_trainings, cores, torch.get_num_threads()))


def parse_jobs(value: str | int | None, n_trainings: int) -> int:
    if value is None or str(value) == "auto":
        return auto_jobs(n_trainings)
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"--jobs: expected a positive integer or 'auto', got {value!r}") from None
    if n < 1:
        raise ConfigError(f"--jobs: expected a positive integer or 'auto', got {value!r}")
    return min(n, max(n_trainings, 1))


def prefetch(cfg: Any) -> None:
    """Fetch what a run would fetch on first use (the dataset, converted encoders) in this process,
    so that parallel workers only read them."""
    from u2a.data.datasets import resolve_manifest_path
    from u2a.encoders.registry import resolve_encoder_path

    resolve_manifest_path(cfg.data)
    for m in cfg.model.modalities:
        if m.pretrained:
            resolve_encoder_path(m.encoder)


_LOG = None  # the worker's current log file


def _work(job: Job) -> dict[str, Any]:
    """In the worker: output to the job's log file, ``job.threads`` threads, train (or reuse);
    the run's summary and the seconds it took."""
    global _LOG
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if _LOG is not None:  # a worker process runs several jobs one after the other
        _LOG.close()
    _LOG = open(job.log_path, "w", buffering=1)
    os.dup2(_LOG.fileno(), 1)
    os.dup2(_LOG.fileno(), 2)
    from u2a.allocator import tune_allocator

    tune_allocator()
    import torch

    torch.set_num_threads(job.threads)
    from u2a.pipelines.experiment import train_or_reuse

    job.cfg.train.progress = False
    t0 = time.time()
    _, summary = train_or_reuse(job.cfg, job.run_dir, job.overwrite)
    sys.stdout.flush()
    sys.stderr.flush()
    return {"summary": summary, "seconds": round(time.time() - t0, 1)}


def _progress(run_dir: Path) -> tuple[int, int | None]:
    """(global step, total steps) from the last step or epoch record of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0, None
    for line in reversed(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if rec.get("type") in ("step", "epoch"):
            return int(rec.get("global_step", 0)), rec.get("total_steps")
    return 0, None


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def train_parallel(jobs: Sequence[Job], n_jobs: int, progress: bool = True, poll_s: float = 1.0) -> list[dict[str, Any]]:
    """Train ``jobs`` in ``n_jobs`` worker processes; ``{"summary", "seconds"}`` of each, in the
    order of ``jobs``.

    A job that fails stops the others from starting (running ones finish) and raises its error,
    naming the run and the log that holds its output."""
    ctx = multiprocessing.get_context("spawn")
    results: dict[int, dict[str, Any]] = {}
    bars: dict[int, Any] = {}
    closed: set[int] = set()
    failure: tuple[Job, BaseException] | None = None
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        futures: dict[Future, int] = {pool.submit(_work, job): i for i, job in enumerate(jobs)}
        for job in jobs:
            print(f"u2a: queued {job.label} ({job.run_dir}, {job.threads} thread{'s' if job.threads > 1 else ''}; "
                  f"output in {job.log_path})", flush=True)
        pending = set(futures)
        started = time.time()
        while pending:
            done, pending = wait(pending, timeout=poll_s, return_when=FIRST_COMPLETED)
            for fut in done:
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below with the run named
                    if failure is None:
                        failure = (jobs[i], e)
                        for other in pending:
                            other.cancel()
                else:
                    print(f"u2a: finished {jobs[i].label} after {time.time() - started:.0f} s", flush=True)
            if progress:
                for i, job in enumerate(jobs):
                    if i in results and i in bars and i not in closed:
                        bars[i].n = bars[i].total or bars[i].n
                        bars[i].refresh()
                        closed.add(i)
                    if i in results or not job.run_dir.exists():
                        continue
                    step, total = _progress(job.run_dir)
                    if i not in bars:
                        bars[i] = tqdm(total=total, desc=job.label, unit="step", position=len(bars), leave=False,
                                       dynamic_ncols=True)
                    if (total and bars[i].total != total) or step != bars[i].n:  # redraw on news only
                        bars[i].total = total or bars[i].total
                        bars[i].n = step
                        bars[i].refresh()
        for bar in bars.values():
            bar.close()
    if failure is not None:
        job, err = failure
        detail = f"{type(err).__name__}: {err}"
        msg = f"training {job.label} ({job.run_dir}) failed: {detail}\nlast lines of {job.log_path}:\n{_tail(job.log_path)}"
        if isinstance(err, U2AError):
            raise type(err)(msg) from err
        raise RuntimeError(msg) from err
    return [results[i] for i in range(len(jobs))]

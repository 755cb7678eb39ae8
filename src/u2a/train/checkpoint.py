"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``run_dir/checkpoints/epoch-XXXX`` (end of an epoch; XXXX = epochs done)
or ``step-XXXXXX`` (every ``train.checkpoint_every_steps`` optimizer steps) holding:

* ``trainable.safetensors`` - the trainable weights (LoRA, tokens, projections, head)
* ``optimizer.safetensors`` + ``optimizer.json`` - AdamW's state tensors, flattened as
  ``state.<param index>.<name>``, and the rest (param groups, scalar state)
* ``scheduler.json`` - the LR scheduler's state
* ``rng.safetensors`` + ``rng.json`` - per process: torch CPU/CUDA RNG states (uint8 tensors),
  python ``random`` and numpy states
* ``state.json`` - the data position (epoch, step in epoch, global step), the best metric so far,
  the length of ``metrics.jsonl`` at that point, and the size and SHA-256 of every other file

Folders are built under a temporary name and renamed when complete (:func:`u2a.io.atomic_dir`),
so a killed run never leaves a half-written checkpoint that looks finished. A damaged file is
reported as a :class:`~u2a.errors.ModelError` naming it.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from u2a.errors import ModelError
from u2a.io import atomic_dir, atomic_write_json, atomic_write_safetensors, is_complete_dir, remove_dir, sha256_file

FORMAT = 1
CKPT_DIR = "checkpoints"
_NAME_RE = re.compile(r"^(epoch|step)-(\d+)$")


# ---- RNG states ----------------------------------------------------------------------------

def collect_rng_state() -> dict[str, Any]:
    """This process's RNG states: torch tensors (uint8) and JSON-able python/numpy states."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    return {
        "tensors": tensors,
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    t = state["tensors"]
    torch.set_rng_state(t["torch_cpu"])
    cuda = [t[k] for k in sorted((k for k in t if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


# ---- optimizer state flattening -------------------------------------------------------------

def flatten_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars, "tensor_params": sorted({int(k.split(".")[1]) for k in tensors})}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


# ---- writing -------------------------------------------------------------------------------

def checkpoint_name(kind: str, number: int) -> str:
    return f"epoch-{number:04d}" if kind == "epoch" else f"step-{number:06d}"


def save_checkpoint(
    folder: str | Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    rng_states: Sequence[dict[str, Any]],
    state: dict[str, Any],
) -> Path:
    """Write one checkpoint folder atomically (call on the main process only).

    ``rng_states`` holds one :func:`collect_rng_state` result per process, in rank order (extra
    JSON-able keys, such as a process's own counters, are kept in ``rng.json``).
    """
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        atomic_write_safetensors(tmp / "trainable.safetensors", trainable)
        opt_t, opt_meta = flatten_optimizer_state(optimizer_state)
        atomic_write_safetensors(tmp / "optimizer.safetensors", opt_t)
        atomic_write_json(tmp / "optimizer.json", opt_meta)
        atomic_write_json(tmp / "scheduler.json", _json_safe(scheduler_state))
        rng_t = {f"rank{r}.{k}": v.cpu().contiguous() for r, s in enumerate(rng_states) for k, v in s["tensors"].items()}
        atomic_write_safetensors(tmp / "rng.safetensors", rng_t)
        atomic_write_json(tmp / "rng.json", [{k: v for k, v in s.items() if k != "tensors"} for s in rng_states])
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / "state.json", {"format": FORMAT, **state, "num_rng_states": len(rng_states), "files": files})
    return folder


# ---- reading -------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    rng_states: list[dict[str, Any]]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"checkpoint file {path} is corrupt or truncated (not valid JSON: {e})") from e


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise ModelError(f"checkpoint file {path} is corrupt or truncated ({e})") from e


def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Check a checkpoint's files against the sizes and hashes in its ``state.json``; return the state."""
    folder = Path(folder)
    if not is_complete_dir(folder):
        raise ModelError(f"checkpoint {folder} is incomplete (no completion marker)")
    state = _read_json(folder / "state.json")
    if not isinstance(state, dict) or state.get("format") != FORMAT or "files" not in state:
        raise ModelError(f"checkpoint file {folder / 'state.json'} is not a u2a checkpoint state (format {FORMAT})")
    for name, info in state["files"].items():
        p = folder / name
        if not p.is_file():
            raise ModelError(f"checkpoint file {p} is missing")
        size = p.stat().st_size
        if size != info["size"]:
            raise ModelError(f"checkpoint file {p} is corrupt or truncated: {size} bytes, expected {info['size']}")
        if sha256_file(p) != info["sha256"]:
            raise ModelError(f"checkpoint file {p} is corrupt: its SHA-256 does not match state.json")
    return state


def load_checkpoint(folder: str | Path) -> Checkpoint:
    folder = Path(folder)
    state = verify_checkpoint(folder)
    trainable = _read_tensors(folder / "trainable.safetensors")
    opt = unflatten_optimizer_state(_read_tensors(folder / "optimizer.safetensors"), _read_json(folder / "optimizer.json"))
    sched = _read_json(folder / "scheduler.json")
    rng_t = _read_tensors(folder / "rng.safetensors")
    rng_meta = _read_json(folder / "rng.json")
    rng_states = []
    for r, meta in enumerate(rng_meta):
        prefix = f"rank{r}."
        tensors = {k[len(prefix):]: v for k, v in rng_t.items() if k.startswith(prefix)}
        rng_states.append({"tensors": tensors, **meta})
    return Checkpoint(folder, state, trainable, opt, sched, rng_states)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (by global step, epoch after step)."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME_RE.match(p.name)
        if m and p.is_dir() and is_complete_dir(p):
            found.append(p)

    def key(p: Path) -> tuple[int, int]:
        try:
            st = json.loads((p / "state.json").read_text())
            return int(st.get("global_step", 0)), 1 if p.name.startswith("epoch") else 0
        except (OSError, ValueError):
            return -1, 0

    return sorted(found, key=key)


def _damage(folder: Path) -> str | None:
    """None for a checkpoint whose files all match its state.json, else what is wrong."""
    try:
        verify_checkpoint(folder)
    except ModelError as e:
        return str(e)
    return None


def _is_older(name: str, than: dict[str, Any], than_name: str) -> bool:
    """Whether the checkpoint named ``name`` (whose own state cannot be read) was written before
    the one whose state is ``than``: its name says where it was (``step-N``: after N optimizer
    steps; ``epoch-E``: after E epochs)."""
    m = _NAME_RE.match(name)
    if not m:
        return True
    kind, number = m.group(1), int(m.group(2))
    if kind == "step":
        step = int(than.get("global_step", 0))
        return number < step or (number == step and than_name.startswith("epoch"))
    return number <= int(than.get("epoch", 0))


def resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``run_dir`` from: the newest one, checked against the sizes and
    SHA-256 in its ``state.json``. None when the run has no complete checkpoint.

    A damaged newest checkpoint is never skipped silently: a ModelError names it, what is wrong
    and the newest intact one (delete the damaged folder to resume from that one). A damaged
    checkpoint older than the one used is ignored with a warning."""
    import warnings

    from u2a.errors import U2AWarning

    ckpts = list_checkpoints(run_dir)  # complete ones, oldest first
    if not ckpts:
        return None
    readable: list[Path] = []
    unreadable: list[tuple[Path, str]] = []  # no usable state.json: placed by their names
    for p in ckpts:
        try:
            st = json.loads((p / "state.json").read_text())
            if not isinstance(st, dict):
                raise ValueError("not a JSON object")
            readable.append(p)
        except (OSError, ValueError) as e:
            unreadable.append((p, f"checkpoint file {p / 'state.json'} is missing, corrupt or truncated ({e})"))
    chosen: Path | None = None
    newer: list[tuple[Path, str]] = []
    for p in reversed(readable):
        why = _damage(p)
        if why is None:
            chosen = p
            break
        newer.append((p, why))
    state = json.loads((chosen / "state.json").read_text()) if chosen is not None else {}
    older: list[tuple[Path, str]] = []
    for p, why in unreadable:
        (older if chosen is not None and _is_older(p.name, state, chosen.name) else newer).append((p, why))
    if chosen is None:
        _, why = newer[0]
        raise ModelError(f"no intact checkpoint in {Path(run_dir) / CKPT_DIR} to resume from: {why} "
                         f"(delete the damaged checkpoint folders to start over, or train anew with --overwrite)")
    if newer:
        p, why = newer[0]
        raise ModelError(f"the newest checkpoint {p} is damaged: {why}; delete {p} to resume from "
                         f"{chosen} (epoch {state.get('epoch')}, step {state.get('global_step')}), "
                         "the newest intact one")
    for p, why in older:
        warnings.warn(f"ignoring the damaged older checkpoint {p}: {why}; resuming from {chosen}",
                      U2AWarning, stacklevel=2)
    return chosen


def check_fresh_start(run_dir: str | Path) -> None:
    """Refuse to start a run from the beginning on ``--resume`` when its folder holds a trained
    model or a summary (they would be replaced); a run that stopped before its first checkpoint
    has neither and starts again."""
    from u2a.errors import ConfigError

    run_dir = Path(run_dir)
    held = [n for n in ("best", "summary.json") if (run_dir / n).exists()]
    if held:
        raise ConfigError(
            f"--resume {run_dir}: there is no checkpoint to resume from, but the folder holds "
            f"{' and '.join(held)} of a trained run that starting again would replace; keep it, or train anew "
            f"with `u2a train {run_dir / 'config.yaml'} --overwrite`"
        )


def remove_leftovers(run_dir: str | Path) -> None:
    """Delete what interrupted writes of a run leave behind (call on the main process, with the run
    locked): hidden ``.best.*.partial`` / ``.old`` folders, ``.*.tmp`` files, and in
    ``checkpoints/`` hidden ``.partial`` / ``.old`` folders. None of them is ever loaded."""
    run_dir = Path(run_dir)
    for root in (run_dir, run_dir / CKPT_DIR):
        if not root.is_dir():
            continue
        for p in root.iterdir():
            if not p.name.startswith(".") or not p.name.endswith((".partial", ".old", ".tmp")):
                continue
            if root == run_dir and p.is_dir() and not p.name.startswith((".best.", ".u2a-replaced.")):
                continue  # only u2a's own folders in the run folder
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep: Sequence[str | Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and those in ``keep``; also leftovers of
    interrupted writes. Returns the deleted folders."""
    root = Path(run_dir) / CKPT_DIR
    ckpts = list_checkpoints(run_dir)
    protect = {Path(k).name for k in keep} | {p.name for p in ckpts[-keep_last:]}
    removed = []
    for p in ckpts:
        if p.name not in protect:
            remove_dir(p)  # renamed aside first: never seen half-deleted under its name
            removed.append(p)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".partial") or p.name.endswith(".old")):
                shutil.rmtree(p, ignore_errors=True)
    return removed

"""Shared helpers for the training tests: a tiny random BERT saved offline, a synthetic two-modality
dataset with a learnable signal (label-dependent tokens), its collate function, and a runnable
training script (used by the resume, distributed and fault-injection tests in subprocesses)::

    python tests/_synthetic.py CONFIG.yaml [--resume] [--n-train 48] [--n-val 7] [--missing 0.3]

Environment: ``U2A_TEST_BATCH_DELAY=S`` makes each batch take S seconds longer (to kill a run at
a chosen point); ``U2A_TEST_FAIL_IDS=ID,ID`` makes those samples fail to load and
``U2A_TEST_FAIL_BATCH=RANK:N`` every sample of the N-th training batch (1-based, counted over the
run) of process RANK (as the Collator with ``skip_bad`` reports them: dropped, listed in
``batch["skipped"]``); ``U2A_TEST_WRITE_DELAY=S`` makes each file and folder rename wait S seconds (only
those whose destination contains ``U2A_TEST_WRITE_DELAY_MATCH``, when that is set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

SEQ_LEN = 8
VOCAB = 100


def make_tiny_bert(folder: str | Path, dropout: float = 0.0, seed: int = 0) -> Path:
    """Save a tiny random BertModel (hidden 32, 2 layers, 2 heads, vocab 100) into ``folder``."""
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    BertModel(cfg).save_pretrained(folder)
    return folder


def model_section(encoder: str | Path, num_classes: int = 3, lora_dropout: float = 0.0) -> dict[str, Any]:
    return {
        "modalities": [
            {"name": "a", "encoder": str(encoder), "kind": "text"},
            {"name": "b", "encoder": str(encoder), "kind": "text"},
        ],
        "num_classes": num_classes,
        "lora": {"rank": 1, "alpha": 1.0, "dropout": lora_dropout},
    }


class SyntheticDataset(Dataset):
    """Items ``{"id", "label", "fields": {"a": token ids | None, "b": token ids | None}}``.

    Modality a carries token ``10 + label``, b carries ``40 + label`` among random tokens; a share
    ``missing`` of the samples lacks a or b (alternating)."""

    def __init__(self, n: int, num_classes: int = 3, missing: float = 0.3, seed: int = 0, prefix: str = "s"):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        n_missing = int(round(missing * n))
        for i in range(n):
            y = int(torch.randint(0, num_classes, (1,), generator=g))
            fields = {}
            for m, base in (("a", 10), ("b", 40)):
                toks = torch.randint(60, VOCAB, (SEQ_LEN - 1,), generator=g)
                k = int(torch.randint(0, 3, (1,), generator=g))
                toks[k : k + 3] = base + y
                fields[m] = [1] + toks.tolist()  # position 0: the [CLS] slot (replaced by U2A's)
            if i < n_missing:
                fields["a" if i % 2 == 0 else "b"] = None
            self.items.append({"id": f"{prefix}{i:04d}", "label": y, "fields": fields})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


MODALITIES = ("a", "b")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch contract: inputs only for the samples that have each modality."""
    delay = float(os.environ.get("U2A_TEST_BATCH_DELAY", "0") or 0)
    if delay:
        time.sleep(delay)
    present = torch.tensor([[it["fields"][m] is not None for m in MODALITIES] for it in items],
                           dtype=torch.bool).reshape(len(items), len(MODALITIES))
    inputs = {}
    for m in MODALITIES:
        rows = [it["fields"][m] for it in items if it["fields"][m] is not None]
        if rows:
            ids = torch.tensor(rows, dtype=torch.long)
            inputs[m] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {
        "ids": [it["id"] for it in items],
        "inputs": inputs,
        "present": present,
        "labels": torch.tensor([it["label"] for it in items], dtype=torch.long),
    }


def failing_collate(items: list[dict[str, Any]], fail_ids=(), fail_batch: tuple[int, int] | None = None,
                    _count: list[int] = [0]) -> dict[str, Any]:
    """:func:`collate` with samples that fail to load, dropped and recorded as the Collator with
    ``skip_bad`` does: ``fail_ids``, and every sample of the ``fail_batch = (rank, n)``-th training
    batch of process ``rank`` (training batches hold ids starting with "t")."""
    bad = [it for it in items if it["id"] in fail_ids]
    if items and str(items[0]["id"]).startswith("t"):
        _count[0] += 1
        rank = int(os.environ.get("RANK", "0"))
        if fail_batch is not None and (rank, _count[0]) == tuple(fail_batch):
            bad = list(items)
    batch = collate([it for it in items if it not in bad])
    batch["skipped"] = [{"id": it["id"], "modality": "a", "file": f"/data/{it['id']}.png",
                         "reason": "injected" if it["id"] in fail_ids else "injected (whole batch)"} for it in bad]
    return batch


def _env_collate():
    """The collate of the test scripts: :func:`collate`, or :func:`failing_collate` as the
    environment asks (``U2A_TEST_FAIL_IDS``, ``U2A_TEST_FAIL_BATCH``)."""
    ids = tuple(x for x in os.environ.get("U2A_TEST_FAIL_IDS", "").split(",") if x)
    batch = os.environ.get("U2A_TEST_FAIL_BATCH", "")
    if not ids and not batch:
        return collate
    import functools

    fb = tuple(int(x) for x in batch.split(":")) if batch else None
    return functools.partial(failing_collate, fail_ids=ids, fail_batch=fb)


def build_config(tmp: Path, encoder: Path, overrides: list[str] = (), name: str = "run", lora_dropout: float = 0.0):
    from u2a.config import build_run_config

    data = {
        "name": name,
        "output_dir": str(tmp),
        "model": model_section(encoder, lora_dropout=lora_dropout),
        "train": {"epochs": 4, "batch_size": 4, "lr": 5e-2, "warmup_epochs": 0.5, "log_every_steps": 2,
                  "tensorboard": False, "progress": False, "seed": 0},
    }
    return build_run_config(data, list(overrides))


def run_training(cfg, n_train: int = 48, n_val: int = 7, n_test: int = 0, missing: float = 0.3, resume: bool = False):
    """Build model + data from ``cfg`` and train; returns the summary."""
    from u2a.methods import method_of
    from u2a.train.trainer import Trainer

    torch.manual_seed(cfg.train.seed)
    model = method_of(cfg.model).build_model(cfg.model)
    datasets = {"train": SyntheticDataset(n_train, missing=missing, seed=1, prefix="t"),
                "val": SyntheticDataset(n_val, missing=missing, seed=2, prefix="v")}
    if n_test:
        datasets["test"] = SyntheticDataset(n_test, missing=missing, seed=3, prefix="x")
    fn = _env_collate()
    trainer = Trainer(cfg, model, datasets, fn, cfg.run_dir)
    global LAST_TRAINER
    LAST_TRAINER = trainer
    return trainer.train(resume=resume)


LAST_TRAINER = None  # the Trainer of the last run_training (for --check-replicas)


def check_replicas() -> float:
    """Largest difference between the trainable weights of this process and of process 0 (all
    processes call it after training); 0.0 when they are identical."""
    import torch.distributed as dist

    vec = torch.cat([p.detach().float().flatten().cpu() for p in LAST_TRAINER.unwrapped.parameters()
                     if p.requires_grad])
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    parts = [torch.empty_like(vec) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, vec)
    return max(float((v - parts[0]).abs().max()) for v in parts)


class LocalAccelerator:
    """What a method's training step uses of an Accelerator, for one process without accelerate
    (unit tests of ``Method.train_step`` outside the Trainer)."""

    num_processes = 1
    process_index = 0
    device = torch.device("cpu")

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor.clone()


def step_context(model, cfg, optimizer=None, epoch: int = 0, batch_index: int = 0, progress: float = 0.0,
                 seed: int = 0, on_step=None):
    """A :class:`~u2a.methods.base.StepContext` for ``model`` in one process. With ``optimizer``,
    ``ctx.optimizer_step()`` calls ``on_step(model)`` (if given, before stepping), steps it and zeroes
    the gradients."""
    from u2a.methods.base import StepContext

    def step() -> None:
        if on_step is not None:
            on_step(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    g = torch.Generator().manual_seed(seed)
    return StepContext(model=model, unwrapped=model, accelerator=LocalAccelerator(), cfg=cfg, epoch=epoch,
                       batch_index=batch_index, group=1, generator=g, progress=progress,
                       optimizer_step_fn=step if optimizer is not None else None)


def cut_run_at(src: str | Path, dst: str | Path, checkpoint: str) -> Path:
    """A copy of the run folder ``src`` as it would be had the run been killed right after writing
    ``checkpoints/<checkpoint>``: later checkpoints and the summary are gone (the Trainer truncates
    metrics.jsonl to the checkpoint's length when it resumes)."""
    import shutil

    from u2a.train import checkpoint as ck

    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst)
    names = [p.name for p in ck.list_checkpoints(dst)]
    if checkpoint not in names:
        raise FileNotFoundError(f"{src} has no checkpoint {checkpoint}; it has {names}")
    cut = ck.list_checkpoints(dst)
    order = [p.name for p in cut]
    for p in cut[order.index(checkpoint) + 1:]:
        shutil.rmtree(p)
    (dst / "summary.json").unlink(missing_ok=True)
    return dst


def slow_renames(delay: float, match: str = "") -> None:
    """Make every ``os.replace`` of this process (whose destination path contains ``match``) wait
    ``delay`` seconds first (``U2A_TEST_WRITE_DELAY``, ``U2A_TEST_WRITE_DELAY_MATCH``): u2a's atomic
    writes finish each file and folder with one, so a kill in that time lands between a complete
    temporary file and its rename, or between moving an old folder aside and moving the new one
    in (the fault-injection tests kill runs there)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if match in os.fspath(dst):
            time.sleep(delay)
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def main(argv: list[str] | None = None) -> int:
    from u2a.config import load_run_config

    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--n-train", type=int, default=48)
    p.add_argument("--n-val", type=int, default=7)
    p.add_argument("--missing", type=float, default=0.3)
    p.add_argument("--check-replicas", action="store_true",
                   help="after training, print whether every process holds the same trainable weights")
    args = p.parse_args(argv)
    delay = float(os.environ.get("U2A_TEST_WRITE_DELAY", "0") or 0)
    if delay:
        slow_renames(delay, os.environ.get("U2A_TEST_WRITE_DELAY_MATCH", ""))
    cfg = load_run_config(args.config, args.overrides)
    summary = run_training(cfg, args.n_train, args.n_val, missing=args.missing, resume=args.resume)
    diff = check_replicas() if args.check_replicas else None
    if int(os.environ.get("RANK", "0")) == 0:
        print("SUMMARY " + json.dumps(summary))
        if diff is not None:
            print("replicas identical" if diff == 0.0 else f"replicas differ by {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())


def make_tiny_tokenizer(folder: str | Path) -> Path:
    """A word-level BERT tokenizer over ``w0 .. w89`` (ids 10..99), saved next to the tiny BERT."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    vocab = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"] + [f"r{i}" for i in range(5)] + [f"w{i}" for i in range(VOCAB - 10)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


def write_text_manifests(folder: str | Path, sizes=(("train", 48), ("val", 7), ("test", 6)), missing: float = 0.3) -> Path:
    """train/val/test JSONL manifests with two text modalities ``a`` and ``b`` (words ``w<id-10>``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["red", "green", "blue"]
    for seed, (split, n) in enumerate(sizes, start=1):
        ds = SyntheticDataset(n, missing=missing, seed=seed, prefix=split[:2])
        lines = []
        for it in ds.items:
            rec = {"id": it["id"], "label": names[it["label"]]}
            for m in MODALITIES:
                toks = it["fields"][m]
                rec[m] = None if toks is None else " ".join(f"w{t - 10}" for t in toks[1:])
            lines.append(json.dumps(rec))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def write_cli_config(tmp: str | Path, name: str = "cli", epochs: int = 1, sizes=None, missing: float = 0.3,
                     data: dict[str, Any] | None = None, max_length: int = 8, **train: Any) -> Path:
    """A tiny BERT with its tokenizer, train/val/test text manifests and a run config YAML for the
    ``u2a`` command (`u2a train CONFIG`), all under ``tmp``; the run folder is ``tmp/runs/NAME``.
    ``sizes`` and ``missing``: of the manifests (:func:`write_text_manifests`); ``data``: more keys
    of the config's data section (e.g. ``missing``); ``train``: keys of its train section."""
    import yaml

    tmp = Path(tmp)
    enc = make_tiny_bert(tmp / "bert")
    make_tiny_tokenizer(tmp / "bert")
    manifests = write_text_manifests(tmp / "data", **({"sizes": sizes} if sizes else {}), missing=missing)
    cfg = {"name": name, "output_dir": str(tmp / "runs"), "model": model_section(enc),
           "data": {"manifest": str(manifests), **(data or {})},
           "train": {"epochs": epochs, "batch_size": 8, "lr": 5e-2, "warmup_epochs": 0.5, "tensorboard": False,
                     "progress": False, **train}}
    for m in cfg["model"]["modalities"]:
        m["max_length"] = max_length
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path

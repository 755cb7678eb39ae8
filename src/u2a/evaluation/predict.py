"""Run a model over a DataLoader and collect logits, labels and modality presence - across
processes without duplicates (the distributed sampler's padding never reaches the result), with
batches whose samples failed to load (``data.skip_bad``) smaller or empty on any process."""

from __future__ import annotations

from typing import Any

import torch

from u2a.errors import DataError


@torch.no_grad()
def predict(model: torch.nn.Module, loader, accelerator=None) -> dict[str, Any]:
    """Returns ``{"ids": list[str], "logits": (N, C), "labels": (N,) or (N, C) or None (unlabelled),
    "present": (N, M)}``
    on CPU; with an ``accelerator`` every process gets the gathered result of all processes.

    Batches follow the batch contract (``ids``, ``inputs``, ``present``, ``labels``); an empty
    batch (every sample failed to load) is passed over. Each sample id appears once: the padding
    that a distributed sampler adds to even out the last batch is dropped by id.
    """
    was_training = model.training
    model.eval()
    chunks: list[dict[str, Any]] = []
    try:
        for batch in loader:
            if not batch["ids"]:
                continue  # every sample of the batch failed to load (a collator with allow_empty)
            out = model(batch["inputs"], batch["present"], ids=batch["ids"])
            lb = batch.get("labels")
            chunks.append({"ids": [str(i) for i in batch["ids"]], "logits": out.logits.float().cpu(),
                           "labels": lb.cpu() if lb is not None else None,
                           "present": batch["present"].to(torch.bool).cpu()})
    finally:
        model.train(was_training)
    chunks = _drop_repeats(gather_batches(chunks, accelerator))
    if not chunks:
        return {"ids": [], "logits": torch.empty(0, 0), "labels": torch.empty(0), "present": torch.empty(0, 0)}
    labelled = all(c["labels"] is not None for c in chunks)
    result = {
        "ids": [i for c in chunks for i in c["ids"]],
        "logits": torch.cat([c["logits"] for c in chunks]),
        "labels": torch.cat([c["labels"] for c in chunks]) if labelled else None,
        "present": torch.cat([c["present"] for c in chunks]),
    }
    return result


def gather_batches(chunks: list[Any], accelerator=None) -> list[Any]:
    """Every process's per-batch results (``chunks``: one entry per batch of its loader, CPU
    tensors), on every process, in the order one process would have seen them: batch k of process 0,
    batch k of process 1, ... (how accelerate shards an evaluation loader). One collective for the
    whole split, so batches of different sizes or numbers - samples skipped on one process, an
    empty batch, a loader without padding (``even_batches`` off, as the Trainer's) - need no
    matching shapes; a padding loader's repeats (of the first samples, at the end) are for the
    caller to drop by id. The results of a whole split go through each process's memory."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(chunks)
    from accelerate.utils import gather_object

    per_process = gather_object([list(chunks)])
    out = []
    for k in range(max(len(c) for c in per_process)):
        out.extend(c[k] for c in per_process if k < len(c))
    return out


def _drop_repeats(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-batch results without every sample id after its first occurrence (a padding
    loader's wrap-around repeats earlier samples) and without empty batches."""
    seen: set[str] = set()
    out = []
    for c in chunks:
        keep = [i for i, sid in enumerate(c["ids"]) if not (sid in seen or seen.add(sid))]
        if len(keep) < len(c["ids"]):
            c = _take(c, keep)
        if keep:
            out.append(c)
    return out


def _take(value: Any, keep: list[int]) -> Any:
    """``value`` (a tensor, list, dict of them or None) at the rows ``keep``."""
    if isinstance(value, dict):
        return {k: _take(v, keep) for k, v in value.items()}
    if isinstance(value, list):
        return [value[i] for i in keep]
    if isinstance(value, torch.Tensor):
        return value[torch.tensor(keep, dtype=torch.long)]
    return value


def check_counted_once(result: dict[str, Any], dataset) -> None:
    """Every sample of ``dataset`` is in ``result`` exactly once (needs unique ids), or among the
    samples that failed to load and were skipped (``result["skipped"]``, ``data.skip_bad``)."""
    n = len(dataset)
    got = len(result["ids"])
    skipped = {str(r["id"]) for r in result.get("skipped") or []}
    both = skipped & set(result["ids"])
    if got + len(skipped) != n or len(set(result["ids"])) != got or both:
        extra = f" and {len(skipped)} skipped samples" if skipped else ""
        raise DataError(f"evaluation counted {got} predictions ({len(set(result['ids']))} distinct ids){extra} "
                        f"for {n} samples; sample ids must be unique"
                        + (f" (predicted and skipped: {sorted(both)[:5]})" if both else ""))


# ---- several availability scenarios from one encoding pass -------------------------------------

def only_modality(j: int):
    """Availability function of the scenario "modality j alone": every sample keeps only modality
    j; a sample without it keeps what it has (no sample loses every modality)."""

    def fn(present: torch.Tensor) -> torch.Tensor:
        avail = torch.zeros_like(present)
        avail[:, j] = present[:, j]
        empty = ~avail.any(dim=1)
        avail[empty] = present[empty]
        return avail

    return fn


def validation_scenarios(modalities, select_on: str = "complete") -> dict[str, Any]:
    """The per-batch scenarios of validation: always complete, plus each modality alone when the
    selection uses them (``select_on`` missing or all)."""
    out: dict[str, Any] = {"complete": lambda present: present}
    if select_on in ("missing", "all"):
        for j, m in enumerate(modalities):
            out[f"{m} only"] = only_modality(j)
    return out


@torch.no_grad()
def predict_scenarios(model: torch.nn.Module, loader, accelerator=None, scenarios: dict[str, Any] | None = None,
                      diagnostics: bool = False) -> dict[str, Any]:
    """Like :func:`predict`, but every batch is encoded once (``model.encode``) and predicted under
    each availability scenario (``model.select``): ``{"ids", "labels", "present",
    "logits": {scenario: (N, C)}, "sums": {name: tensor}}``. ``sums`` (with ``diagnostics``) are
    the model's additive estimate statistics (``estimate_sums``), summed over processes.
    ``"skipped"``: the records of samples that failed to load (a collator with ``skip_bad``), from
    every process, one per sample id and modality."""
    scenarios = scenarios or {"complete": lambda present: present}
    inner = accelerator.unwrap_model(model) if accelerator is not None else model
    was_training = inner.training
    inner.eval()
    chunks: list[dict[str, Any]] = []
    sums: dict[str, torch.Tensor] = {}
    skipped: list[dict[str, Any]] = []
    autocast = accelerator.autocast if accelerator is not None else _null
    try:
        for batch in loader:
            skipped.extend(batch.get("skipped") or [])
            if not batch["ids"]:
                continue  # every sample of the batch failed to load (a collator with allow_empty)
            with autocast():
                feats = inner.encode(batch["inputs"], batch["present"], ids=batch["ids"])
                pr = feats.present
                outs = {}
                for k, spec in scenarios.items():  # fn(present) -> available, or (fn, select kwargs)
                    fn, kw = spec if isinstance(spec, tuple) else (spec, {})
                    outs[k] = inner.select(feats, fn(pr), **kw).logits.float().cpu()
            if diagnostics and hasattr(inner, "estimate_sums"):
                for k, v in inner.estimate_sums(feats).items():
                    sums[k] = sums[k] + v.cpu() if k in sums else v.cpu()
            lb = batch.get("labels")
            chunks.append({"ids": [str(i) for i in batch["ids"]], "logits": outs, "present": pr.cpu(),
                           "labels": lb.cpu() if lb is not None else None})
    finally:
        inner.train(was_training)
    chunks = _drop_repeats(gather_batches(chunks, accelerator))
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(sums, skipped)])
        sums = {}
        for part, _ in parts:  # a loader that pads (even_batches) would count its repeats here again
            for k, v in part.items():
                sums[k] = sums[k] + v.double() if k in sums else v.double()
        skipped = [r for _, records in parts for r in records]
    once: dict[tuple[str, str], dict[str, Any]] = {}
    for r in skipped:  # one record per sample and modality (padding repeats samples)
        once.setdefault((str(r["id"]), str(r.get("modality"))), r)
    skipped = list(once.values())
    ids = [i for c in chunks for i in c["ids"]]
    labelled = bool(chunks) and all(c["labels"] is not None for c in chunks)
    result = {
        "ids": ids,
        "skipped": skipped,
        "logits": {k: torch.cat([c["logits"][k] for c in chunks]) if chunks else torch.empty(0, 0)
                   for k in scenarios},
        "labels": torch.cat([c["labels"] for c in chunks]) if labelled else None,
        "present": torch.cat([c["present"] for c in chunks]) if chunks else torch.empty(0, 0),
        "sums": sums,
    }
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

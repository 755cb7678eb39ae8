"""Run a model over a DataLoader and collect logits, labels and modality presence - across
processes without duplicates (the distributed sampler's padding never reaches the result)."""

from __future__ import annotations

from typing import Any

import torch

from u2a.errors import DataError


@torch.no_grad()
def predict(model: torch.nn.Module, loader, accelerator=None) -> dict[str, Any]:
    """Returns ``{"ids": list[str], "logits": (N, C), "labels": (N,) or (N, C) or None (unlabelled),
    "present": (N, M)}``
    on CPU; with an ``accelerator`` every process gets the gathered result of all processes.

    Batches follow the batch contract (``ids``, ``inputs``, ``present``, ``labels``). Each sample id
    appears once: the padding that a distributed sampler adds to even out the last batch is
    dropped (by ``gather_for_metrics`` and, as a check, by id).
    """
    was_training = model.training
    model.eval()
    ids: list[str] = []
    logits, labels, present = [], [], []
    try:
        for batch in loader:
            out = model(batch["inputs"], batch["present"], ids=batch["ids"])
            lg = out.logits.float()
            lb = batch.get("labels")
            pr = batch["present"].to(torch.bool)
            bid = list(batch["ids"])
            if accelerator is not None:
                if lb is not None:
                    lg, lb, pr = accelerator.gather_for_metrics((lg.contiguous(), lb.contiguous(), pr.contiguous()))
                else:
                    lg, pr = accelerator.gather_for_metrics((lg.contiguous(), pr.contiguous()))
                bid = accelerator.gather_for_metrics(bid, use_gather_object=True)
            ids.extend(str(i) for i in bid)
            logits.append(lg.cpu())
            if lb is not None:
                labels.append(lb.cpu())
            present.append(pr.cpu())
    finally:
        model.train(was_training)
    if not logits:
        return {"ids": [], "logits": torch.empty(0, 0), "labels": torch.empty(0), "present": torch.empty(0, 0)}
    result = {
        "ids": ids,
        "logits": torch.cat(logits),
        "labels": torch.cat(labels) if len(labels) == len(logits) else None,
        "present": torch.cat(present),
    }
    if len(set(ids)) != len(ids):
        result = _dedup(result)
    return result


def _dedup(result: dict[str, Any]) -> dict[str, Any]:
    """Keep the first occurrence of each id (the wrap-around padding repeats earlier samples)."""
    seen: set[str] = set()
    keep = []
    for i, sid in enumerate(result["ids"]):
        if sid not in seen:
            seen.add(sid)
            keep.append(i)
    idx = torch.tensor(keep, dtype=torch.long)
    return {
        "ids": [result["ids"][i] for i in keep],
        "logits": result["logits"][idx],
        "labels": result["labels"][idx] if result["labels"] is not None else None,
        "present": result["present"][idx],
    }


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
    ids: list[str] = []
    labels, present = [], []
    logits: dict[str, list[torch.Tensor]] = {k: [] for k in scenarios}
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
                outs = {k: inner.select(feats, fn(pr)).logits.float() for k, fn in scenarios.items()}
            if diagnostics and hasattr(inner, "estimate_sums"):
                for k, v in inner.estimate_sums(feats).items():
                    sums[k] = sums[k] + v.cpu() if k in sums else v.cpu()
            lb = batch.get("labels")
            bid = list(batch["ids"])
            names = list(outs)
            if accelerator is not None:
                parts = [outs[k].contiguous() for k in names] + [pr.contiguous()]
                if lb is not None:
                    parts.append(lb.contiguous())
                gathered = accelerator.gather_for_metrics(tuple(parts))
                outs = dict(zip(names, gathered[: len(names)]))
                pr = gathered[len(names)]
                lb = gathered[len(names) + 1] if lb is not None else None
                bid = accelerator.gather_for_metrics(bid, use_gather_object=True)
            ids.extend(str(i) for i in bid)
            for k in names:
                logits[k].append(outs[k].cpu())
            if lb is not None:
                labels.append(lb.cpu())
            present.append(pr.cpu())
    finally:
        inner.train(was_training)
    if accelerator is not None and accelerator.num_processes > 1 and sums:
        keys = sorted(sums)
        flat = torch.cat([sums[k].double().flatten() for k in keys]).to(accelerator.device)
        flat = accelerator.reduce(flat, reduction="sum").cpu()
        out, i = {}, 0
        for k in keys:
            n = sums[k].numel()
            out[k] = flat[i:i + n].view_as(sums[k])
            i += n
        sums = out
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        skipped = [r for part in gather_object([skipped]) for r in part]
    once: dict[tuple[str, str], dict[str, Any]] = {}
    for r in skipped:  # one record per sample and modality (padding repeats samples)
        once.setdefault((str(r["id"]), str(r.get("modality"))), r)
    skipped = list(once.values())
    result = {
        "ids": ids,
        "skipped": skipped,
        "logits": {k: torch.cat(v) if v else torch.empty(0, 0) for k, v in logits.items()},
        "labels": torch.cat(labels) if labels and len(labels) == len(present) else None,
        "present": torch.cat(present) if present else torch.empty(0, 0),
        "sums": sums,
    }
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        keep = [i for i, sid in enumerate(ids) if not (sid in seen or seen.add(sid))]
        idx = torch.tensor(keep, dtype=torch.long)
        result["ids"] = [ids[i] for i in keep]
        result["logits"] = {k: v[idx] for k, v in result["logits"].items()}
        result["present"] = result["present"][idx]
        if result["labels"] is not None:
            result["labels"] = result["labels"][idx]
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

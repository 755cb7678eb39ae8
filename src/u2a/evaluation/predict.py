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
    """Every sample of ``dataset`` is in ``result`` exactly once (needs unique ids)."""
    n = len(dataset)
    got = len(result["ids"])
    if got != n or len(set(result["ids"])) != got:
        raise DataError(f"evaluation counted {got} predictions ({len(set(result['ids']))} distinct ids) "
                        f"for {n} samples; sample ids must be unique")

"""Missing-modality scenarios at test time, evaluated from one encoding pass.

The encoder outputs of a modality do not depend on which other modalities a sample has (token
selection happens after the encoders), so a split is encoded once with every modality it has, and
each scenario only re-runs selection and the head on a different availability mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from u2a.data.missing import MissingSpec, build_tables
from u2a.data.processing import move_batch
from u2a.evaluation.metrics import compute_metrics


@dataclass(frozen=True)
class Scenario:
    """A test-time availability pattern: ``spec`` applied with the MAP algorithm (None: as the
    data is); ``drop_all`` removes one modality from every sample."""

    name: str
    spec: MissingSpec | None = None
    drop_all: str | None = None


def standard_scenarios(pair: Sequence[str], sweep_modality: str | None = None, sweep=(0, 10, 30, 50, 70, 90, 100)) -> list[Scenario]:
    """complete; each modality alone; eta = 70% missing-both; and a sweep keeping 100% of the
    first modality of ``pair``'s partner and x% of ``sweep_modality`` (default: the first of
    ``pair``, i.e. text for image-text)."""
    a, b = pair
    sweep_modality = sweep_modality or a
    out = [
        Scenario("complete"),
        Scenario(f"{b} only", drop_all=a),
        Scenario(f"{a} only", drop_all=b),
        Scenario("missing both 70%", MissingSpec(0.7, "both")),
    ]
    for x in sweep:
        out.append(Scenario(f"{sweep_modality} {x}%", MissingSpec((100 - x) / 100, sweep_modality)))
    return out


@dataclass
class EncodedSplit:
    #: the model's :class:`~u2a.methods.base.BatchFeatures` of every sample of the split
    features: Any
    labels: torch.Tensor
    ids: list[str]


@torch.no_grad()
def encode_split(
    model: Any,
    dataset: Dataset,
    collate: Callable,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    desc: str = "encode",
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> EncodedSplit:
    """Encode a split once (``model.encode``, every modality each sample has); features on CPU.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``): run the encoders under autocast."""
    import contextlib

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    parts = []
    labels, ids = [], []
    dev_type = torch.device(device).type
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = move_batch(batch, device)
        ctx = torch.autocast(dev_type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            parts.append(model.encode(batch["inputs"], batch["present"], ids=batch["ids"]).to("cpu"))
        labels.append(batch["labels"].cpu())
        ids.extend(batch["ids"])
    feats = type(parts[0]).concat(parts)
    return EncodedSplit(feats, torch.cat(labels), ids)


def scenario_available(sc: Scenario, present: torch.Tensor, modalities: Sequence[str], pair: Sequence[str], seed: int) -> torch.Tensor:
    avail = present.clone()
    if sc.drop_all is not None:
        avail[:, list(modalities).index(sc.drop_all)] = False
    if sc.spec is not None:
        table = build_tables({"test": len(present)}, {"test": sc.spec}, pair, seed=seed)["test"]
        for i, code in enumerate(table):
            if code:
                avail[i, list(modalities).index(pair[code - 1])] = False
    # a sample whose only modality a scenario removes keeps it (it cannot lose everything)
    empty = ~avail.any(dim=1)
    avail[empty] = present[empty]
    return avail


@torch.no_grad()
def run_scenarios(
    model: Any,
    encoded: EncodedSplit,
    scenarios: Sequence[Scenario],
    pair: Sequence[str],
    seed: int = 0,
    availability: Callable[[Scenario, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics (with per-class scores and the share of samples keeping each modality) of every
    scenario. ``availability(scenario, present)`` gives a scenario's (N, M) mask; default:
    :func:`scenario_available` (tables built for the split alone)."""
    model.eval()
    if availability is None:
        def availability(sc: Scenario, present: torch.Tensor) -> torch.Tensor:
            return scenario_available(sc, present, model.modalities, pair, seed)
    head_dev = model.device
    feats = encoded.features
    feats_dev = feats.to(head_dev)
    results: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        avail = availability(sc, feats.present)
        out = model.select(feats_dev, avail.to(head_dev))
        metrics = compute_metrics(out.logits.cpu(), encoded.labels, model.config.task, model.config.classes)
        metrics["available"] = {m: float(avail[:, i].float().mean()) for i, m in enumerate(model.modalities)}
        results[sc.name] = metrics
    return results

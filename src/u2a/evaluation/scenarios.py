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
from u2a.model import Features, U2AModel


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
    features: Features
    labels: torch.Tensor
    ids: list[str]


@torch.no_grad()
def encode_split(
    model: U2AModel,
    dataset: Dataset,
    collate: Callable,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    desc: str = "encode",
    progress: bool = True,
) -> EncodedSplit:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    parts: list[Features] = []
    labels, ids = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        batch = move_batch(batch, device)
        parts.append(model.encode(batch["inputs"], batch["present"], ids=batch["ids"]))
        labels.append(batch["labels"].cpu())
        ids.extend(batch["ids"])
    feats = Features(
        cls={m: torch.cat([p.cls[m] for p in parts]).cpu() for m in model.modalities},
        mt={k: torch.cat([p.mt[k] for p in parts]).cpu() for k in parts[0].mt},
        present=torch.cat([p.present for p in parts]).cpu(),
        placeholder_cls={m: v.cpu() for m, v in parts[0].placeholder_cls.items()},
    )
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
    model: U2AModel,
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
    head_dev = model.head.weight.device
    feats = encoded.features
    feats_dev = Features(
        cls={k: v.to(head_dev) for k, v in feats.cls.items()},
        mt={k: v.to(head_dev) for k, v in feats.mt.items()},
        present=feats.present.to(head_dev),
        placeholder_cls={k: v.to(head_dev) for k, v in feats.placeholder_cls.items()},
    )
    results: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        avail = availability(sc, feats.present)
        out = model.select(feats_dev, avail.to(head_dev))
        metrics = compute_metrics(out.logits.cpu(), encoded.labels, model.config.task, model.config.classes)
        metrics["available"] = {m: float(avail[:, i].float().mean()) for i, m in enumerate(model.modalities)}
        results[sc.name] = metrics
    return results

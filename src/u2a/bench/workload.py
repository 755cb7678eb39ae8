"""What ``u2a bench`` feeds the model: synthetic inputs of the config's shapes, the missing-
modality patterns (MAP tables), and the two ways of handing a batch with absent modalities to the
model (the paper's placeholders through every encoder, or only the rows that are there)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from u2a.data.missing import MissingSpec, build_tables
from u2a.errors import ConfigError

#: the missing-modality scenarios of the skip-absent comparison: name -> (eta, type)
SCENARIOS = {
    "eta0": (0.0, "both"),
    "both70": (0.7, "both"),
    "text70": (0.7, "text"),
}
SCENARIO_LABELS = {
    "eta0": "complete (eta 0)",
    "both70": "70% missing-both",
    "text70": "70% text missing",
}


@dataclass
class Scenario:
    name: str
    label: str
    #: (B, M) bool: which modalities each sample has
    present: torch.Tensor
    note: str = ""

    def counts(self, modalities: list[str]) -> dict[str, int]:
        return {m: int(self.present[:, i].sum()) for i, m in enumerate(modalities)}


def _pair(modalities: list[str], kinds: Mapping[str, str]) -> tuple[str, str]:
    """MAP's pair (text, image): the text modality first (code 1), the other second."""
    text = [m for m in modalities if kinds.get(m) == "text" or m == "text"]
    first = text[0] if text else modalities[0]
    second = next(m for m in modalities if m != first)
    return first, second


def build_scenarios(modalities: list[str], kinds: Mapping[str, str], batch: int,
                    names: list[str] | None = None, seed: int = 0) -> list[Scenario]:
    """The ``present`` masks of a batch of ``batch`` samples for each scenario, from the MAP
    algorithm (:func:`u2a.data.missing.build_tables` on a split of ``batch`` samples)."""
    out = []
    for name in names or list(SCENARIOS):
        if name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {name!r}; known: {list(SCENARIOS)}")
        eta, kind = SCENARIOS[name]
        m = len(modalities)
        present = torch.ones(batch, m, dtype=torch.bool)
        note = ""
        if eta > 0:
            if m != 2:
                out.append(Scenario(name, SCENARIO_LABELS[name], present,
                                    note=f"skipped: MAP tables need 2 modalities, the model has {m}"))
                continue
            pair = _pair(modalities, kinds)
            mtype = "both" if kind == "both" else pair[0]
            if kind == "text" and not (kinds.get(pair[0]) == "text" or pair[0] == "text"):
                note = f"no text modality: {pair[0]!r} goes missing instead"
            table = build_tables({"train": batch}, {"train": MissingSpec(eta, mtype)}, pair=pair, seed=seed)["train"]
            for i, code in enumerate(table):
                if code:
                    present[i, modalities.index(pair[code - 1])] = False
        out.append(Scenario(name, SCENARIO_LABELS[name], present, note))
    return out


# ---- inputs ------------------------------------------------------------------------------------

def single_sample_patterns(modalities: list[str]) -> dict[str, torch.Tensor]:
    """The availability patterns of a per-sample latency measurement: ``all`` modalities, and
    ``only_<m>`` for each modality alone; each a (1, M) bool mask."""
    n = len(modalities)
    patterns = {"all": torch.ones(1, n, dtype=torch.bool)}
    for i, m in enumerate(modalities):
        p = torch.zeros(1, n, dtype=torch.bool)
        p[0, i] = True
        patterns[f"only_{m}"] = p
    return patterns


def synthetic_inputs(model, n: int, text_tokens: Mapping[str, int] | None = None,
                     image_sizes: Mapping[str, int] | None = None, frames: Mapping[str, int] | None = None,
                     seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Random inputs of the right shapes for every modality, one row per sample: text of
    ``text_tokens[m]`` tokens (no padding: the longest a batch can be), images of
    ``image_sizes[m]`` pixels (default: the size the model's modality config gives them), video
    clips of ``frames[m]`` frames, audio of the length the model takes (the modality's
    ``max_length``, else the encoder's own). The values do not matter for speed; they are seeded
    all the same."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for m in model.modalities:
        enc = model.encoders[m]
        if enc.kind == "text":
            length = int((text_tokens or {}).get(m) or 32)
            vocab = int(getattr(enc.config, "vocab_size", 1000))
            ids = torch.randint(min(5, vocab - 1), vocab, (n, length), generator=g)
            cls_id = getattr(enc, "cls_token_id", None)
            if cls_id is not None:
                ids[:, 0] = int(cls_id)
            out[m] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            continue
        ph = enc.placeholder_inputs(n)
        x = {}
        for k, v in ph.items():
            if not v.is_floating_point():
                x[k] = v
                continue
            shape = list(v.shape)
            size = (image_sizes or {}).get(m)
            if k == "pixel_values" and size:
                shape[-2:] = [int(size), int(size)]
            if k == "pixel_values" and (frames or {}).get(m, 1) > 1:
                if len(shape) == 5:  # the model's placeholder is already a clip: set its length
                    shape = [shape[0], *shape[2:]]
                shape = [shape[0], int(frames[m]), *shape[1:]]
            x[k] = torch.randn(shape, generator=g)
        out[m] = x
    return out


def compact_inputs(full: Mapping[str, Mapping[str, torch.Tensor]], present: torch.Tensor,
                   modalities: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Only the rows of the samples that have each modality (the skip-absent path's input)."""
    out = {}
    for i, m in enumerate(modalities):
        rows = present[:, i]
        if rows.any():
            out[m] = {k: v[rows] for k, v in full[m].items()}
    return out


def placeholder_inputs(model, full: Mapping[str, Mapping[str, torch.Tensor]], present: torch.Tensor
                       ) -> dict[str, dict[str, torch.Tensor]]:
    """One row per sample, the encoder's placeholder (empty text, zero image or audio) where the
    sample lacks the modality: the paper's input (fed with ``encode_all=True``)."""
    out = {}
    for i, m in enumerate(model.modalities):
        x = {k: v.clone() for k, v in full[m].items()}
        ph = model.encoders[m].placeholder_inputs(present.shape[0], like=x)
        absent = ~present[:, i]
        for k in x:
            if k in ph:
                x[k][absent] = ph[k].to(x[k].dtype)[absent]
        out[m] = x
    return out


def to_device(inputs: Any, device: torch.device | str) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    return inputs


def sequence_tokens(model, m: str, inputs: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(tokens per sequence the encoder of ``m`` runs on, frames per sample): its embedded tokens
    plus the method's front tokens (one CLS) and back tokens (U2A's mask tokens)."""
    one = {k: v[:1] for k, v in inputs.items()}
    frames = 1
    if "pixel_values" in one and one["pixel_values"].dim() == 5:
        frames = int(one["pixel_values"].shape[1])
        one["pixel_values"] = one["pixel_values"].flatten(0, 1)[:1]
    with torch.no_grad():
        tok, _ = model.encoders[m].embed(one)
    back = 0
    mt = getattr(model, "mask_tokens", None)
    if mt is not None and m in mt:
        back = int(mt[m].shape[0])
    return int(tok.shape[1]) + 1 + back, frames

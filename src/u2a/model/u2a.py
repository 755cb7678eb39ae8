"""The U2A model (paper, Section 3) for N >= 2 modalities.

Per modality m: a frozen encoder with LoRA, a learnable CLS token and mask tokens MT(m->t), one per
other modality t, appended to the token sequence (eq. 2: [CLS, tokens, MT...]). Token selection
(eq. 4, generalised): the slot of modality t is its own CLS output when t is available, else the
mean of the MT(s->t) outputs of the available modalities s. With N = 2 this is exactly the paper.
The slots are projected to a common width (identity when the encoders agree), summed, and fed to a
linear head (eq. 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from u2a.config import ModelConfig
from u2a.encoders import EncoderAdapter, build_encoder
from u2a.errors import ModelError
from u2a.io import atomic_write_json
from u2a.model.lora import inject_lora, is_merged, merge_lora, unmerge_lora

CONFIG_NAME = "u2a_config.json"
WEIGHTS_NAME = "adapter.safetensors"
FORMAT_VERSION = 1


@dataclass
class Features:
    """Encoder outputs of a batch, before token selection."""

    #: projected CLS output per modality, (B, D); zero in rows without the modality
    cls: dict[str, torch.Tensor]
    #: projected MT(s->t) output per (source, target), (B, D); zero in rows without the source
    mt: dict[tuple[str, str], torch.Tensor]
    present: torch.Tensor
    #: ablation without mask tokens: CLS output of each modality's placeholder input, (1, D)
    placeholder_cls: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class U2AOutput:
    logits: torch.Tensor
    #: projected CLS output per modality, (B, D); rows without the modality are zero
    cls: dict[str, torch.Tensor]
    #: projected MT(s->t) output per (source, target), (B, D); rows without the source are zero
    mt: dict[tuple[str, str], torch.Tensor]
    present: torch.Tensor
    available: torch.Tensor
    fused: torch.Tensor
    #: per modality, True where its slot was filled by an estimate (mask tokens or placeholder)
    estimated: torch.Tensor = field(default=None)  # type: ignore[assignment]


class U2AModel(nn.Module):
    def __init__(self, config: ModelConfig, encoders: Mapping[str, EncoderAdapter]):
        super().__init__()
        self.config = config
        self.modalities: list[str] = config.modality_names
        missing = [m for m in self.modalities if m not in encoders]
        if missing:
            raise ModelError(f"no encoder given for modalities {missing}")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        for m in self.modalities:
            inject_lora(self.encoders[m], config.lora, m)

        widths = {m: self.encoders[m].hidden_size for m in self.modalities}
        self.dim = config.common_dim or max(widths.values())
        self.proj = nn.ModuleDict(
            {m: nn.Identity() if w == self.dim else nn.Linear(w, self.dim) for m, w in widths.items()}
        )

        n_mod = len(self.modalities)
        self.cls_tokens = nn.ParameterDict()
        self.mask_tokens = nn.ParameterDict()
        for m in self.modalities:
            init = self.encoders[m].default_cls()
            if init is None:
                init = torch.randn(widths[m]) * 0.02
            init = init.detach().float().clone()
            self.cls_tokens[m] = nn.Parameter(init.clone())
            if config.mask_tokens:
                # MT(m -> t) for every other modality t, in config order
                self.mask_tokens[m] = nn.Parameter(init.clone().unsqueeze(0).repeat(n_mod - 1, 1))
        self.head = nn.Linear(self.dim, config.num_classes)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, pretrained: bool | None = None) -> "U2AModel":
        """Build the encoders named in the config. ``pretrained`` overrides each modality's flag."""
        encoders = {
            m.name: build_encoder(m.encoder, pretrained=m.pretrained if pretrained is None else pretrained)
            for m in config.modalities
        }
        return cls(config, encoders)

    def targets_of(self, source: str) -> list[str]:
        return [t for t in self.modalities if t != source]

    # ---- parameters ---------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def count_parameters(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        learnable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total, learnable

    # ---- forward ------------------------------------------------------------------------
    def _encode(self, m: str, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CLS output (n, d) and MT outputs (n, M-1, d) of modality m's encoder.

        Video (``pixel_values`` of shape n x frames x 3 x H x W): every frame is its own sequence with
        the modality's CLS and mask tokens, and the frames' CLS and MT outputs are averaged. The
        mean keeps the encoder's per-image features on their scale (a sum would grow with the frame
        count) and makes the result independent of the frames' order.
        """
        first = inputs.get("pixel_values")
        if first is not None and first.dim() == 5:
            n, f = first.shape[:2]
            flat = {k: (v.flatten(0, 1) if k == "pixel_values" else v) for k, v in inputs.items()}
            c, mt = self._encode(m, flat)
            c = c.view(n, f, -1).mean(dim=1)
            if mt is not None:
                mt = mt.view(n, f, *mt.shape[1:]).mean(dim=1)
            return c, mt
        enc = self.encoders[m]
        with torch.no_grad():  # the embedding layer is frozen
            tokens, mask = enc.embed(inputs)
        n, _, d = tokens.shape
        cls = self.cls_tokens[m].to(tokens.dtype).expand(n, 1, d)
        parts = [cls, tokens]
        k = 0
        if self.config.mask_tokens:
            mt = self.mask_tokens[m].to(tokens.dtype)
            k = mt.shape[0]
            parts.append(mt.unsqueeze(0).expand(n, k, d))
        seq = torch.cat(parts, dim=1)
        if mask is not None:
            ones = mask.new_ones
            mask = torch.cat([ones((n, 1)), mask, ones((n, k))], dim=1)
        hidden = enc.encode(seq, mask)
        return hidden[:, 0], (hidden[:, hidden.shape[1] - k :] if k else None)

    def _rows_to_encode(
        self, m: str, inputs: Mapping[str, torch.Tensor], present: torch.Tensor, encode_all: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        enc = self.encoders[m]
        enc.check_inputs(inputs, m)
        b = present.shape[0]
        rows = present.nonzero().squeeze(1)
        n_in = enc.batch_size(inputs)
        if n_in == b:
            if encode_all or rows.numel() == b:
                return dict(inputs), torch.arange(b, device=present.device)
            return enc.subset(inputs, rows), rows
        if n_in == rows.numel():
            if encode_all:
                raise ModelError(f"modality {m!r}: encode_all needs one input row per sample ({b}), got {n_in}")
            return dict(inputs), rows
        raise ModelError(
            f"modality {m!r}: inputs have {n_in} rows, but the batch has {b} samples of which "
            f"{rows.numel()} have this modality (give one row per sample or one per present sample)"
        )

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        drop: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
    ) -> U2AOutput:
        """Logits for a batch.

        ``inputs[m]`` holds modality m's encoder inputs either for every sample (placeholders in the
        rows without it; they are skipped unless ``encode_all``) or only for the samples that have it.
        ``present`` (B, M) says which samples really have which modality (config order); ``drop``
        (B, M) hides modalities from the selection only (modality dropout).
        """
        present = present.to(torch.bool)
        available = present & ~drop.to(torch.bool) if drop is not None else present
        feats = self.encode(inputs, present, ids=ids, encode_all=encode_all, need_placeholder=~available)
        return self.select(feats, available)

    def encode(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
        need_placeholder: torch.Tensor | None = None,
    ) -> Features:
        """Run each encoder on the samples that have its modality: CLS and MT outputs, projected.

        The outputs of a modality do not depend on which other modalities a sample has, so one
        ``encode`` serves every missing-modality scenario (see :meth:`select`)."""
        present = present.to(torch.bool)
        b, n_mod = present.shape
        if n_mod != len(self.modalities):
            raise ModelError(f"present has {n_mod} columns, the model has modalities {self.modalities}")
        empty = (~present.any(dim=1)).nonzero().squeeze(1).tolist()
        if empty:
            names = [str(ids[i]) if ids is not None else f"#{i}" for i in empty]
            raise ModelError(f"sample(s) {names} have no modality at all; U2A needs at least one")
        dev = self.head.weight.device
        dtype = self.head.weight.dtype
        cls_out: dict[str, torch.Tensor] = {}
        mt_out: dict[tuple[str, str], torch.Tensor] = {}
        placeholder_cls: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            x = inputs.get(m)
            has = present[:, i]
            keep = has.unsqueeze(1).to(dtype)
            full_cls = torch.zeros(b, self.dim, device=dev, dtype=dtype)
            if x is None or (not has.any() and not encode_all):
                if has.any():
                    raise ModelError(f"modality {m!r}: {int(has.sum())} samples have it but no inputs were given")
            else:
                sub, rows = self._rows_to_encode(m, x, has, encode_all)
                c, mt = self._encode(m, sub)
                # rows encoded but not present (encode_all) are not real features: zero them
                cls_out[m] = full_cls.index_put((rows,), self.proj[m](c).to(dtype)) * keep
                if mt is not None:
                    for j, t in enumerate(self.targets_of(m)):
                        full_mt = torch.zeros(b, self.dim, device=dev, dtype=dtype)
                        mt_out[(m, t)] = full_mt.index_put((rows,), self.proj[m](mt[:, j]).to(dtype)) * keep
            cls_out.setdefault(m, full_cls)
            if not self.config.mask_tokens:
                if need_placeholder is None or need_placeholder[:, i].any():
                    placeholder_cls[m] = self._placeholder_cls(m, x)
        return Features(cls=cls_out, mt=mt_out, present=present, placeholder_cls=placeholder_cls)

    def select(self, feats: Features, available: torch.Tensor) -> U2AOutput:
        """Token selection (eq. 4), sum fusion and the head (eq. 5) for one availability pattern.

        ``available`` (B, M) must be a subset of ``feats.present``."""
        available = available.to(torch.bool)
        if (available & ~feats.present).any():
            raise ModelError("available marks a modality that the sample does not have")
        if not available.any(dim=1).all():
            raise ModelError("a sample has no available modality (all missing or all dropped)")
        b = available.shape[0]
        slots = []
        for ti, t in enumerate(self.modalities):
            avail_t = available[:, ti].unsqueeze(1)
            cls_t = feats.cls[t]
            if self.config.mask_tokens:
                est = torch.zeros_like(cls_t)
                count = torch.zeros_like(cls_t[:, :1])
                for si, s in enumerate(self.modalities):
                    if s == t or (s, t) not in feats.mt:
                        continue
                    w = available[:, si].unsqueeze(1).to(cls_t.dtype)
                    est = est + w * feats.mt[(s, t)]
                    count = count + w
                est = est / count.clamp(min=1)
            elif t in feats.placeholder_cls:
                est = feats.placeholder_cls[t].expand(b, -1)
            else:
                est = torch.zeros_like(cls_t)
            slots.append(torch.where(avail_t, cls_t, est))
        fused = torch.stack(slots, dim=0).sum(dim=0)
        logits = self.head(fused)
        return U2AOutput(
            logits=logits, cls=feats.cls, mt=feats.mt, present=feats.present, available=available,
            fused=fused, estimated=~available,
        )

    def _placeholder_cls(self, m: str, like: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """CLS output of the placeholder input (ablation without mask tokens)."""
        enc = self.encoders[m]
        ph = enc.placeholder_inputs(1, like=like)
        dev = self.head.weight.device
        ph = {k: v.to(dev) for k, v in ph.items()}
        c, _ = self._encode(m, ph)
        return self.proj[m](c).to(self.head.weight.dtype)

    # ---- LoRA merge ---------------------------------------------------------------------
    def merge_lora(self) -> None:
        merge_lora(self.encoders)

    def unmerge_lora(self) -> None:
        unmerge_lora(self.encoders)

    # ---- saving and loading -------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write only what was trained (LoRA, tokens, projections, head) as safetensors, plus a JSON
        config naming the encoders. The frozen encoder weights are re-loaded from their own ids."""
        if is_merged(self.encoders):
            raise ModelError("cannot save a model whose LoRA is merged: call unmerge_lora() first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous().cpu() for k, v in self.trainable_state_dict().items()}
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file(state, str(tmp), metadata={"format": "pt", "u2a_format": str(FORMAT_VERSION)})
        tmp.replace(directory / WEIGHTS_NAME)
        meta = {"u2a_format": FORMAT_VERSION, "model": self.config.to_dict()}
        if extra:
            meta.update(extra)
        atomic_write_json(directory / CONFIG_NAME, meta)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, pretrained: bool | None = None) -> "U2AModel":
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise ModelError(f"{directory} is not a saved u2a model: {p.name} is missing")
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{cfg_path}: not valid JSON ({e})") from e
        if meta.get("u2a_format") != FORMAT_VERSION:
            raise ModelError(f"{cfg_path}: u2a_format {meta.get('u2a_format')!r} is not {FORMAT_VERSION}")
        config = ModelConfig.from_dict(meta["model"])
        model = cls.from_config(config, pretrained=pretrained)
        model.load_trainable(w_path)
        return model

    def load_trainable(self, path: str | Path) -> None:
        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise ModelError(f"{path}: cannot read the weights ({e}); the file is corrupt or truncated") from e
        own = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ModelError(
                f"{path}: weights do not fit this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        for n, p in own.items():
            if p.shape != state[n].shape:
                raise ModelError(f"{path}: {n} has shape {tuple(state[n].shape)}, the model {tuple(p.shape)}")
            with torch.no_grad():
                p.copy_(state[n])

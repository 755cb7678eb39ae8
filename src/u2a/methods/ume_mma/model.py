"""The UME-MMA model (Li et al., arXiv 2310.06383) on u2a's encoders.

Per modality m: the pretrained encoder with LoRA, a learnable CLS token prepended to its token
sequence (as U2A's), and its own linear head on the CLS output (the uni-modal model of stage 1).
Late fusion (stage 2, ``model.ume_mma.fusion``):

``linear``
    one linear layer on the concatenated CLS outputs ``[f_1, ..., f_M]``; a modality that is not
    available enters as zeros, i.e. its branch contributes nothing (``W [f_1; 0] = W_1 f_1``).
    With ``init_fusion_from_heads`` the layer starts as the sum of the stage-1 heads.
``logit_mean``
    the mean of the available branches' head logits.

A modality's features do not depend on the others, so one :meth:`~UMEMMAModel.encode` serves every
availability pattern (:meth:`~UMEMMAModel.select`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from u2a.config import ModelConfig
from u2a.encoders import EncoderAdapter
from u2a.errors import ModelError
from u2a.methods.base import BatchFeatures, MethodModel, ModelOutput


@dataclass
class UMEFeatures(BatchFeatures):
    """One encoding pass of a batch: each modality's CLS output (rows without it are zero)."""

    present: torch.Tensor
    #: per modality, (B, width of its encoder)
    cls: dict[str, torch.Tensor]


@dataclass
class UMEOutput(ModelOutput):
    #: per modality, its stage-1 head's logits (B, C); zero where the modality is absent
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)
    features: UMEFeatures | None = None


@dataclass
class BranchOutput:
    """One modality's uni-modal prediction (stage 1) on the samples that have it."""

    #: (n, C)
    logits: torch.Tensor
    #: (n,) their rows in the batch
    rows: torch.Tensor


class UMEMMAModel(MethodModel):
    method_name = "ume_mma"

    def __init__(self, config: ModelConfig, encoders: Mapping[str, EncoderAdapter]):
        super().__init__(config, encoders)
        c = config.ume_mma
        self.widths = {m: self.encoders[m].hidden_size for m in self.modalities}
        self.cls_tokens = nn.ParameterDict()
        for m in self.modalities:
            init = self.encoders[m].default_cls()
            if init is None:
                init = torch.randn(self.widths[m]) * 0.02
            self.cls_tokens[m] = nn.Parameter(init.detach().float().clone())
        self.heads = nn.ModuleDict({m: nn.Linear(w, config.num_classes) for m, w in self.widths.items()})
        self.fusion: nn.Linear | None = None
        if c.fusion == "linear":
            self.fusion = nn.Linear(sum(self.widths.values()), config.num_classes)
            #: 1 once the fusion was initialised from the stage-1 heads (kept by checkpoints, so that
            #: a run resumed inside stage 2 does not initialise it again)
            self.register_buffer("fusion_initialised", torch.zeros((), dtype=torch.float32))

    # ---- encoders -------------------------------------------------------------------------
    def _cls(self, m: str, inputs: Mapping[str, torch.Tensor], has: torch.Tensor,
             encode_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, CLS outputs (n, width)) of modality m's encoder on the samples that have it."""
        sub, rows = self.rows_to_encode(m, inputs, has, encode_all)
        c, _ = self.run_encoder(m, sub, self.cls_tokens[m].unsqueeze(0))
        return rows, c[:, 0]

    def branches(self, inputs: Mapping[str, Mapping[str, torch.Tensor]], present: torch.Tensor) -> dict[str, BranchOutput]:
        """Stage 1: each modality's head on its own encoder's CLS output, for the modalities that
        some sample of the batch has (on the samples that have it). A modality absent from this
        process's batch is simply not run (DDP, which looks for unused parameters, then adds
        nothing from this process to its gradients)."""
        present = present.to(torch.bool)
        out: dict[str, BranchOutput] = {}
        for j, m in enumerate(self.modalities):
            has = present[:, j]
            if not has.any():
                continue
            x = inputs.get(m)
            if x is None:
                raise ModelError(f"modality {m!r}: {int(has.sum())} samples have it but no inputs were given")
            rows, feats = self._cls(m, x, has)
            out[m] = BranchOutput(logits=self.heads[m](feats), rows=rows)
        return out

    # ---- the prediction contract ----------------------------------------------------------
    def encode(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
    ) -> UMEFeatures:
        present = self.check_present(present, ids)
        b = present.shape[0]
        ref = self.heads[self.modalities[0]].weight
        cls: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            has = present[:, i]
            x = inputs.get(m)
            full = torch.zeros(b, self.widths[m], device=ref.device, dtype=ref.dtype)
            if has.any() or (encode_all and x is not None):
                if x is None:
                    raise ModelError(f"modality {m!r}: {int(has.sum())} samples have it but no inputs were given")
                rows, feats = self._cls(m, x, has, encode_all)
                full = full.index_put((rows,), feats.to(full.dtype))
                full = full * has.unsqueeze(1).to(full.dtype)  # encode_all: rows without m are not real
            cls[m] = full
        return UMEFeatures(present=present, cls=cls)

    def _unimodal(self, feats: UMEFeatures) -> dict[str, torch.Tensor]:
        """Each stage-1 head on its modality's features, zero where the sample lacks the modality."""
        return {m: self.heads[m](feats.cls[m]) * feats.present[:, j:j + 1].to(feats.cls[m].dtype)
                for j, m in enumerate(self.modalities)}

    def select(self, feats: UMEFeatures, available: torch.Tensor) -> UMEOutput:
        """Late fusion of the ``available`` branches (B, M; a subset of the present ones); the
        branch of a modality that is not available is left out."""
        available = self.check_available(feats, available)
        if self.fusion is not None:
            # for reference only (no gradient: under DDP every output tensor must reach the loss)
            with torch.no_grad():
                unimodal = self._unimodal(feats)
            parts = [feats.cls[m] * available[:, j:j + 1].to(feats.cls[m].dtype) for j, m in enumerate(self.modalities)]
            logits = self.fusion(torch.cat(parts, dim=1))
        else:
            unimodal = self._unimodal(feats)
            w = available.to(torch.float32)
            w = w / w.sum(1, keepdim=True)
            logits = sum(w[:, j:j + 1] * unimodal[m].float() for j, m in enumerate(self.modalities))
        return UMEOutput(logits=logits, available=available, unimodal=unimodal, features=feats)

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        drop: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
        stage: int = 2,
        frozen_encoders: bool = False,
    ):
        """``stage=2`` (default, prediction): the late fusion of every modality a sample has (minus
        ``drop``); ``frozen_encoders`` runs the encoders without gradient. ``stage=1``: the
        uni-modal branches (:meth:`branches`)."""
        if stage == 1:
            return self.branches(inputs, present)
        present = present.to(torch.bool)
        available = present & ~drop.to(torch.bool) if drop is not None else present
        if frozen_encoders:
            with torch.no_grad():
                feats = self.encode(inputs, present, ids=ids, encode_all=encode_all)
        else:
            feats = self.encode(inputs, present, ids=ids, encode_all=encode_all)
        return self.select(feats, available)

    # ---- stage 2 ----------------------------------------------------------------------------
    @torch.no_grad()
    def init_fusion_from_heads(self) -> bool:
        """Set the linear fusion to the sum of the stage-1 heads (once; returns whether it did):
        ``W = [W_1, ..., W_M]``, ``b = sum_m b_m``, so the fused logits start as the sum of the
        uni-modal logits, and with one branch left out as the other branches' sum."""
        if self.fusion is None or bool(self.fusion_initialised):
            return False
        off = 0
        for m in self.modalities:
            w = self.widths[m]
            self.fusion.weight[:, off:off + w].copy_(self.heads[m].weight)
            off += w
        self.fusion.bias.copy_(sum(self.heads[m].bias for m in self.modalities))
        self.fusion_initialised.fill_(1.0)
        return True

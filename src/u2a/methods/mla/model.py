"""The MLA model (Zhang et al., CVPR 2024, arXiv 2311.10707) on u2a's encoders.

Per modality m: the pretrained encoder (LoRA by default; ``model.mla.finetune=full`` trains every
encoder weight after the embedding layer), a learnable CLS token prepended to its token sequence
(as U2A's), and a projection to the common width where encoder widths differ. ONE linear head is
shared by every modality: modality m's prediction is ``head(proj_m(CLS_m))``.

Training (:mod:`u2a.methods.mla.method`) alternates unimodal steps through the shared head; the
head's weight gradient is multiplied by a recursive projector ``P`` (:meth:`MLAModel.project_head_grad`,
:meth:`MLAModel.update_projector`), a persistent buffer so that checkpoints and saved models keep it.

Prediction (:meth:`MLAModel.select`): each available modality's head logits, weighted per *sample*
by its prediction entropy (``softmax`` over the available modalities of ``-H``; lower entropy,
higher weight), or averaged (``model.mla.fusion=mean``); a missing modality takes no part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from u2a.config import ModelConfig
from u2a.encoders import EncoderAdapter
from u2a.errors import ModelError
from u2a.methods.base import BatchFeatures, MethodModel, ModelOutput


def prediction_entropy(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Entropy (nats) of the predictive distribution of each row of ``logits`` (..., C): of the
    softmax for multiclass; for multilabel the sum over classes of each class's Bernoulli entropy
    (the entropy of the joint prediction when the classes are predicted independently)."""
    x = logits.float()
    if task == "multilabel":
        p = torch.sigmoid(x)
        # -p log p - (1-p) log(1-p), written with log-sigmoids so that it stays finite
        h = -(p * F.logsigmoid(x) + (1 - p) * F.logsigmoid(-x))
        return h.sum(-1)
    logp = F.log_softmax(x, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def fusion_weights(logits: torch.Tensor, available: torch.Tensor, task: str, fusion: str) -> torch.Tensor:
    """Per-sample weights (B, M) of the modalities' predictions ``logits`` (B, M, C).

    ``entropy``: ``softmax_m(-H_m)`` over the available modalities of each sample (H the
    prediction entropy of modality m for that sample); ``mean``: ``1 / #available``. A modality
    that is not available gets weight 0. Nothing is shared between samples, so a sample's
    prediction does not depend on the batch it is in."""
    if fusion == "mean":
        score = torch.zeros(available.shape, dtype=torch.float32, device=logits.device)
    else:
        score = -prediction_entropy(logits, task)
    score = score.masked_fill(~available, float("-inf"))
    return torch.softmax(score, dim=1)


@dataclass
class MLAFeatures(BatchFeatures):
    """One encoding pass of a batch: each modality's head logits (rows without it are zero)."""

    present: torch.Tensor
    #: per modality, the shared head's logits on its CLS output, (B, C)
    logits: dict[str, torch.Tensor]


@dataclass
class MLAOutput(ModelOutput):
    #: per modality, its own head logits (B, C); zero where the modality is absent
    unimodal: dict[str, torch.Tensor] = field(default_factory=dict)
    #: (B, M) the fusion weights of each sample (0 for modalities not available)
    weights: torch.Tensor | None = None
    features: MLAFeatures | None = None


@dataclass
class UnimodalOutput:
    """One modality's pass through its encoder and the shared head (training)."""

    #: (n, C) head logits of the n samples that have the modality
    logits: torch.Tensor
    #: (n, D) the head's inputs (projected CLS outputs)
    features: torch.Tensor
    #: (n,) their rows in the batch
    rows: torch.Tensor


def encoder_block_parameters(adapter: EncoderAdapter) -> set[str]:
    """Names of the encoder parameters that :meth:`EncoderAdapter.encode` uses (the blocks and the
    final norm) - everything that runs after the embedding layer. Found by a backward pass on a
    short random sequence, so it holds for every family whatever its module names."""
    params = dict(adapter.model.named_parameters())
    was = {n: p.requires_grad for n, p in params.items()}
    training = adapter.training
    adapter.eval()
    try:
        for p in params.values():
            p.requires_grad_(True)
        with torch.enable_grad():
            p0 = next(iter(params.values()))
            tokens = torch.randn(1, 3, adapter.hidden_size, device=p0.device, dtype=p0.dtype)
            out = adapter.encode(tokens, None)
            names = list(params)
            grads = torch.autograd.grad(out.float().square().sum(), [params[n] for n in names], allow_unused=True)
        return {n for n, g in zip(names, grads) if g is not None}
    finally:
        for n, p in params.items():
            p.requires_grad_(was[n])
        adapter.train(training)


class MLAModel(MethodModel):
    method_name = "mla"

    def __init__(self, config: ModelConfig, encoders: Mapping[str, EncoderAdapter]):
        super().__init__(config, encoders)
        widths = {m: self.encoders[m].hidden_size for m in self.modalities}
        self.widths = widths
        self.dim = config.common_dim or max(widths.values())
        self.proj = nn.ModuleDict(
            {m: nn.Identity() if w == self.dim else nn.Linear(w, self.dim) for m, w in widths.items()}
        )
        self.cls_tokens = nn.ParameterDict()
        for m in self.modalities:
            init = self.encoders[m].default_cls()
            if init is None:
                init = torch.randn(widths[m]) * 0.02
            self.cls_tokens[m] = nn.Parameter(init.detach().float().clone())
        self.head = nn.Linear(self.dim, config.num_classes)
        #: the recursive projector of the head-gradient modification (identity: nothing stored yet)
        self.register_buffer("projector", torch.eye(self.dim))

    def adapt_encoders(self) -> None:
        """``finetune: lora``: freeze the encoders and add LoRA (the shared recipe). ``full``: train
        every encoder weight that runs after the embedding layer (the embedding layer stays frozen,
        as :meth:`MethodModel.run_encoder` runs it without gradient)."""
        if self.config.mla.finetune == "lora":
            super().adapt_encoders()
            return
        for m in self.modalities:
            enc = self.encoders[m]
            train = encoder_block_parameters(enc)
            for n, p in enc.model.named_parameters():
                p.requires_grad_(n in train)

    # ---- encoders -------------------------------------------------------------------------
    def _cls(self, m: str, inputs: Mapping[str, torch.Tensor], has: torch.Tensor,
             encode_all: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, projected CLS outputs (n, D)) of modality m's encoder on the samples that have it."""
        sub, rows = self.rows_to_encode(m, inputs, has, encode_all)
        c, _ = self.run_encoder(m, sub, self.cls_tokens[m].unsqueeze(0))
        return rows, self.proj[m](c[:, 0])

    def unimodal(self, inputs: Mapping[str, Mapping[str, torch.Tensor]], present: torch.Tensor,
                 modality: str) -> UnimodalOutput:
        """Modality ``modality`` alone through its encoder and the shared head, on the samples that
        have it. With none (possible on one process of several) the head still runs on an empty
        batch, so that the backward pass reaches the shared parameters on every process."""
        present = present.to(torch.bool)
        j = self.modalities.index(modality)
        has = present[:, j]
        x = inputs.get(modality)
        if has.any():
            if x is None:
                raise ModelError(f"modality {modality!r}: {int(has.sum())} samples have it but no inputs were given")
            rows, feats = self._cls(modality, x, has)
        else:
            rows = has.nonzero().squeeze(1)
            feats = self.head.weight.new_zeros((0, self.dim))
        return UnimodalOutput(logits=self.head(feats), features=feats, rows=rows)

    # ---- the prediction contract ----------------------------------------------------------
    def encode(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
    ) -> MLAFeatures:
        """Each modality's head logits on the samples that have it (one pass serves every
        availability pattern: a modality's logits do not depend on the others)."""
        present = self.check_present(present, ids)
        b = present.shape[0]
        dev = self.head.weight.device
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.modalities):
            has = present[:, i]
            x = inputs.get(m)
            full = torch.zeros(b, self.config.num_classes, device=dev, dtype=torch.float32)
            if has.any() or (encode_all and x is not None):
                if x is None:
                    raise ModelError(f"modality {m!r}: {int(has.sum())} samples have it but no inputs were given")
                rows, feats = self._cls(m, x, has, encode_all)
                full = full.index_put((rows,), self.head(feats).float())
                full = full * has.unsqueeze(1).to(full.dtype)  # encode_all: rows without m are not real
            out[m] = full
        return MLAFeatures(present=present, logits=out)

    def select(self, feats: MLAFeatures, available: torch.Tensor) -> MLAOutput:
        """The fused prediction from the ``available`` modalities (B, M; a subset of the present ones)."""
        available = self.check_available(feats, available)
        stacked = torch.stack([feats.logits[m] for m in self.modalities], dim=1).float()  # (B, M, C)
        w = fusion_weights(stacked, available, self.config.task, self.config.mla.fusion)
        fused = (w.unsqueeze(-1) * stacked.masked_fill(~available.unsqueeze(-1), 0.0)).sum(1)
        return MLAOutput(logits=fused, available=available, unimodal=feats.logits, weights=w, features=feats)

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        drop: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
        modality: str | None = None,
    ):
        """The fused prediction (as every method's ``forward``), or with ``modality`` the unimodal
        training pass (:meth:`unimodal`; through the DDP wrapper, so gradients synchronise)."""
        if modality is not None:
            return self.unimodal(inputs, present, modality)
        return super().forward(inputs, present, drop=drop, ids=ids, encode_all=encode_all)

    # ---- the head-gradient modification -----------------------------------------------------
    @torch.no_grad()
    def update_projector(self, r: torch.Tensor, alpha: float) -> None:
        """Store the feature ``r`` (D,) in the projector: ``P <- P - (P r)(P r)^T / (alpha + r^T P r)``
        (``P`` stays symmetric, so ``(P r)^T = r^T P``). Computed in float64.

        In closed form ``P = (I + sum_k r_k r_k^T / alpha_k)^-1``: a direction that the stored
        features span with energy ``e`` (``sum_k (r_k . v)^2 / alpha_k``) is scaled by about
        ``1 / (1 + e)``; directions orthogonal to every stored ``r`` are left as they are."""
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        P = self.projector.double()
        r = r.detach().double().reshape(-1, 1).to(P.device)
        pr = P @ r
        denom = float(alpha) + float((r.T @ pr).item())
        P = P - (pr @ pr.T) / denom
        self.projector.copy_(((P + P.T) / 2).to(self.projector.dtype))

    @torch.no_grad()
    def project_head_grad(self) -> None:
        """Multiply the shared head's weight gradient by the projector: for ``y = W x`` the
        modified gradient is ``grad_W @ P``, so the update changes ``W x`` little for inputs ``x``
        in the stored directions. The bias gradient is left as it is."""
        g = self.head.weight.grad
        if g is None:
            return
        g.copy_((g.double() @ self.projector.double().to(g.device)).to(g.dtype))

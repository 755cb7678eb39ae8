"""The UME-MMA baseline's config (``model.ume_mma`` in a run config).

UME-MMA (Li et al., "What Makes for Robust Multi-Modal Models in the Face of Missing
Modalities?", arXiv 2310.06383): a uni-modal ensemble (stage 1: each modality's encoder adapted
on its own modality with its own head) combined by late fusion that is trained with
missing-modality augmentation (stage 2). See docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from u2a.validation import check

FUSIONS = ("linear", "logit_mean")


@dataclass
class UMEMMAConfig:
    """``model.ume_mma``."""

    #: share of train.epochs spent in stage 1 (uni-modal adaptation); the rest is stage 2
    stage1_fraction: float = 0.5
    #: stage-2 fusion: "linear" (a linear layer on the concatenated per-modality CLS features; a
    #: missing branch's features are zero, i.e. it contributes nothing) or "logit_mean" (the mean of
    #: the available branches' stage-1 head logits; stage 2 then trains those heads on the mean)
    fusion: str = "linear"
    #: "linear": start stage 2 from the sum of the stage-1 heads (weight blocks and biases), so that
    #: the fusion starts as the uni-modal ensemble; False: the layer's random initialisation
    init_fusion_from_heads: bool = True
    #: stage 2, per complete training sample: probability of dropping one modality (uniformly chosen)
    drop_prob: float = 0.5
    #: also adapt the encoders (their LoRA and CLS tokens) in stage 2; False freezes them after stage 1
    train_encoders_in_stage2: bool = False

    def __post_init__(self) -> None:
        check(0 < self.stage1_fraction < 1, "model.ume_mma.stage1_fraction",
              f"must be in (0, 1), got {self.stage1_fraction}")
        check(self.fusion in FUSIONS, "model.ume_mma.fusion", f"must be one of {FUSIONS}, got {self.fusion!r}")
        check(0 <= self.drop_prob <= 1, "model.ume_mma.drop_prob", f"must be in [0, 1], got {self.drop_prob}")

    def stage1_epochs(self, epochs: int) -> int:
        """Epochs of stage 1 out of ``epochs``: ``stage1_fraction x epochs`` rounded half up, at
        least 1 and at most ``epochs - 1`` (0 when ``epochs < 2``: there is no room for two stages)."""
        if epochs < 2:
            return 0
        return min(max(int(self.stage1_fraction * epochs + 0.5), 1), epochs - 1)

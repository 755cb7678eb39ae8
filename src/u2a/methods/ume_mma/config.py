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
    #: stage-2 fusion: "linear" (a linear layer on the concatenated per-modality features, a missing
    #: branch contributes nothing) or "logit_mean" (the mean of the available branches' logits,
    #: nothing learned in stage 2)
    fusion: str = "linear"
    #: stage 2, per complete training sample: probability of dropping one modality (uniformly chosen)
    drop_prob: float = 0.5
    #: also adapt the encoders (their LoRA) in stage 2; False freezes them after stage 1
    train_encoders_in_stage2: bool = False

    def __post_init__(self) -> None:
        check(0 < self.stage1_fraction < 1, "model.ume_mma.stage1_fraction",
              f"must be in (0, 1), got {self.stage1_fraction}")
        check(self.fusion in FUSIONS, "model.ume_mma.fusion", f"must be one of {FUSIONS}, got {self.fusion!r}")
        check(0 <= self.drop_prob <= 1, "model.ume_mma.drop_prob", f"must be in [0, 1], got {self.drop_prob}")

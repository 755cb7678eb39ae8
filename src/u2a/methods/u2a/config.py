"""The U2A method's config (``model.u2a`` in a run config).

How a missing modality's slot is filled is chosen by ``estimator`` (a preset) and eight switches
that override the preset one by one, so that an ablation can turn each component on or off:

``output``
    ``source`` (the paper, eq. 4): the mask token's output as the source encoder gives it, i.e. on
    the affine manifold of the *source* encoder's final LayerNorm. ``target_norm``: a
    parameter-free LayerNorm of that output, then the *target* encoder's frozen final-norm scale
    and shift (the output lives where the target's CLS outputs live). ``residual``:
    ``mean_t + b_t + std_t * a * LN(h_MT)`` with ``mean_t`` and ``std_t`` the mean and spread per
    dimension of CLS(t) (running averages over the training batches, so they follow the target as
    training moves it; stored with the model), ``b_t`` a learnable offset and ``a`` a learnable
    per-dimension gain, both starting at 0: at step 0 the estimate *is* the mean placeholder, and
    training moves it only where the loss says it helps.
    ``linear``: ``mean_t + b_t + std_t * (U V^T z)`` with ``z`` the MT output standardised per dimension
    over samples (running statistics, stored with the model) and ``U V^T`` a learnable map of rank
    ``estimator_rank`` from the source's width to the target's, ``U`` starting at 0: as
    ``residual`` it starts at the mean placeholder, but it is a regression of CLS(t) on the MT
    output - any source coordinate can inform any target coordinate, which an elementwise gain
    cannot do across two different encoders.
``stop_grad_target``
    no gradient through CLS(t) in the alignment loss (the paper's eq. 6 moves both sides).
``normalize_align``
    each alignment direction's MSE divided by its target's variance per dimension (a running
    average over the training batches, summed over processes): 1.0 is what the constant mean scores.
    The paper sums raw MSEs; encoders differ ~30x in output spread, so one direction dominates.
``one_way_attention``
    mask tokens read every token of their sequence, but no token reads them: the CLS path of an
    available modality is the same with or without mask tokens.
``detach_estimate``
    the task loss does not train the estimator (its mask tokens, gain, anchor and the LoRA path
    it runs through); only the alignment loss does, so the estimate stays a regression estimate of
    CLS(t) while the head still learns to use it. The paper trains the estimate with both losses.
``align_encoder``
    the alignment loss trains the mask tokens and the encoder (its LoRA) through the MT output, as
    the paper does; false: it trains only the estimate map (``residual``/``linear``), which then is
    a regression probe on the MT output and cannot feed back into the encoder's representations.
    (Without an estimate map, ``output: source``, it has no effect.)
``token_lr``
    the CLS and mask tokens get their own learning rate, ``token_lr x RMS(embedded tokens)`` of their
    encoder (a relative step per Adam update); ``0`` keeps them at the base learning rate as the
    paper does. A model without mask tokens applies it to its CLS tokens (the ``u2a_no_mt``
    variant of ``u2a experiment`` pins it to 0: on validation a token learning rate lowered the
    ablation).
``source_align_weight``
    weight of the paper's eq. 6 on the *raw* MT outputs (against CLS(t)), kept next to an estimate
    map's own alignment loss: the paper's cross-modal training signal for the encoders, while the
    slot itself is filled by the map. With ``output: source`` eq. 6 is the alignment loss itself
    and this weight has no effect.

``estimator: paper`` is the paper's exact method (eq. 4 and eq. 6). ``estimator: task_probe`` is
u2a's default, chosen on validation together with ``modality_dropout.cases: all`` (every dropout
case of a sample in every step; docs/estimators.md has the measurements and the ablation):
``output: linear``, ``stop_grad_target``, ``normalize_align``, ``align_encoder: false`` and
``source_align_weight: 0.2``, the estimate trained by the task loss too; two-way attention, no
token learning rate. ``estimator: probe`` is the same with ``detach_estimate`` (the estimate
trained by its alignment loss only), the default before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from u2a.validation import check

OUTPUTS = ("source", "target_norm", "residual", "linear")
GATES = ("none", "validation", "learned")
#: the shrinkages of ``gate: validation``
GATE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
SLOT_NORMS = ("none", "rms")


@dataclass(frozen=True)
class EstimatorSettings:
    output: str
    stop_grad_target: bool
    normalize_align: bool
    one_way_attention: bool
    token_lr: float  # 0: the base learning rate
    detach_estimate: bool = False
    align_encoder: bool = True
    #: weight of the paper's eq. 6 on the raw MT outputs next to an estimate map's own alignment
    source_align: float = 0.0


#: the named presets of ``model.u2a.estimator``
ESTIMATOR_PRESETS: dict[str, EstimatorSettings] = {
    # the paper's eq. 4 and eq. 6 exactly
    "paper": EstimatorSettings(output="source", stop_grad_target=False, normalize_align=False,
                               one_way_attention=False, token_lr=0.0),
    # the default before the every-case training (docs/estimators.md): the mask tokens stay in
    # the sequence and keep the paper's alignment (which trains the encoders across modalities),
    # and a missing slot is filled by a regression probe on the mask token's output, anchored at
    # the target's running mean, trained by its own alignment loss only
    "probe": EstimatorSettings(output="linear", stop_grad_target=True, normalize_align=True,
                               one_way_attention=False, token_lr=0.0, detach_estimate=True,
                               align_encoder=False, source_align=0.2),
    # u2a's default since the every-case training (docs/estimators.md, "Every dropout case in
    # every step"): the probe's map, trained by the task loss as well as by its alignment loss
    "task_probe": EstimatorSettings(output="linear", stop_grad_target=True, normalize_align=True,
                                    one_way_attention=False, token_lr=0.0, detach_estimate=False,
                                    align_encoder=False, source_align=0.2),
    # an earlier candidate (docs/estimators.md): residual estimate, one-way mask tokens
    "anchored": EstimatorSettings(output="residual", stop_grad_target=True, normalize_align=True,
                                  one_way_attention=True, token_lr=0.01),
}
DEFAULT_ESTIMATOR = "task_probe"


@dataclass
class ModalityDropoutConfig:
    """Random modality dropout on complete training samples (paper, end of Section 3)."""

    enabled: bool = True
    #: probability of keeping every modality; null: uniform over keep-all / drop-one outcomes
    keep_prob: Optional[float] = None
    #: ``sample`` (the paper): each complete sample gets one outcome drawn at random per step.
    #: ``all`` (u2a's default, chosen on validation: docs/estimators.md): each complete sample
    #: gets every outcome in every step - the task loss of keep-all and of each drop-one case,
    #: weighted by their probabilities (``keep_prob``), from one encoder pass (the encoders'
    #: outputs do not depend on what is dropped). The same objective as ``sample`` in
    #: expectation, without the draw.
    cases: str = "all"

    def __post_init__(self) -> None:
        if self.keep_prob is not None:
            check(0.0 <= self.keep_prob <= 1.0, "model.u2a.modality_dropout.keep_prob",
                  f"must be in [0, 1], got {self.keep_prob}")
        check(self.cases in ("sample", "all"), "model.u2a.modality_dropout.cases",
              f"must be 'sample' or 'all', got {self.cases!r}")


@dataclass
class U2AConfig:
    """``model.u2a``: mask tokens, their estimator and alignment loss, modality dropout."""

    #: False: the ablation without mask tokens (a missing modality's slot is the CLS output of the
    #: placeholder input: empty text, zero image/audio)
    mask_tokens: bool = True
    #: lambda of the alignment loss (paper: 0.2)
    align_weight: float = 0.2
    modality_dropout: ModalityDropoutConfig = field(default_factory=ModalityDropoutConfig)
    #: preset of the switches below: "paper" (eq. 4/6 exactly), "task_probe" (u2a's default), "probe"
    #: (the default before it) or "anchored"
    estimator: str = DEFAULT_ESTIMATOR
    #: null: the preset's value (see the module docstring for each switch)
    output: Optional[str] = None
    stop_grad_target: Optional[bool] = None
    normalize_align: Optional[bool] = None
    one_way_attention: Optional[bool] = None
    token_lr: Optional[float] = None
    detach_estimate: Optional[bool] = None
    align_encoder: Optional[bool] = None
    #: weight of the paper's alignment term (eq. 6: MSE between the raw MT(s->t) output and
    #: CLS(t), both sides trained) added to the loss of an estimator with its own map
    #: (``residual``/``linear``): keeps the paper's cross-modal training of the encoders while the
    #: slot is filled by the map's estimate. 0: off. (With ``output: source`` it is eq. 6 itself.)
    #: null: the preset's value
    source_align_weight: Optional[float] = None
    #: rank of the ``linear`` output's map from the MT output to the target space
    estimator_rank: int = 16
    #: how far a missing modality's estimate is trusted (the slot is ``c_t + g_t (estimate - c_t)``,
    #: ``c_t`` the constant fill: the estimate with its map switched off, i.e. the target's running
    #: mean and learned anchor): ``none`` (g = 1, the estimate as it is), ``validation`` (each
    #: epoch, g_t in GATE_GRID per target modality, chosen on the validation split's
    #: single-/multi-modality scenarios; ties go to the larger g), ``learned`` (g_t = sigmoid(theta_t),
    #: trained by the task loss)
    gate: str = "none"
    #: with ``modality_dropout.cases: all``: every drop-one case is trained twice, half of its weight
    #: with the estimate and half with the constant fill (g = 0), so that the head also learns each
    #: modality without the estimate (the ablation's and MLA's unimodal training)
    fallback_cases: bool = False
    #: ``none``, or ``rms``: every slot (CLS output, estimate, constant, placeholder) divided by the
    #: RMS of its modality's CLS output over the statistics samples (measured before training), so
    #: that encoders of different output scale enter the sum at the same scale
    slot_norm: str = "none"
    #: training samples encoded before training for the target statistics and the floor check
    stats_samples: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.modality_dropout, dict):
            self.modality_dropout = ModalityDropoutConfig(**self.modality_dropout)
        check(self.align_weight >= 0, "model.u2a.align_weight", f"must be >= 0, got {self.align_weight}")
        check(self.estimator in ESTIMATOR_PRESETS, "model.u2a.estimator",
              f"must be one of {sorted(ESTIMATOR_PRESETS)}, got {self.estimator!r}")
        if self.output is not None:
            check(self.output in OUTPUTS, "model.u2a.output", f"must be one of {OUTPUTS} or null, got {self.output!r}")
        if self.token_lr is not None:
            check(self.token_lr >= 0, "model.u2a.token_lr", f"must be >= 0 or null, got {self.token_lr}")
        if self.source_align_weight is not None:
            check(self.source_align_weight >= 0, "model.u2a.source_align_weight",
                  f"must be >= 0 or null, got {self.source_align_weight}")
        check(self.estimator_rank >= 1, "model.u2a.estimator_rank", f"must be >= 1, got {self.estimator_rank}")
        check(self.gate in GATES, "model.u2a.gate", f"must be one of {GATES}, got {self.gate!r}")
        check(self.slot_norm in SLOT_NORMS, "model.u2a.slot_norm", f"must be one of {SLOT_NORMS}, got {self.slot_norm!r}")
        check(not self.fallback_cases or self.modality_dropout.cases == "all", "model.u2a.fallback_cases",
              "needs model.u2a.modality_dropout.cases: all (the constant-fill cases are trained next to every case)")
        check(self.stats_samples >= 2, "model.u2a.stats_samples", f"must be >= 2, got {self.stats_samples}")

    def settings(self) -> EstimatorSettings:
        """The preset with the switches that are set (not null) applied."""
        base = ESTIMATOR_PRESETS[self.estimator]
        pick = lambda own, preset: preset if own is None else own  # noqa: E731
        return EstimatorSettings(
            output=pick(self.output, base.output),
            stop_grad_target=bool(pick(self.stop_grad_target, base.stop_grad_target)),
            normalize_align=bool(pick(self.normalize_align, base.normalize_align)),
            one_way_attention=bool(pick(self.one_way_attention, base.one_way_attention)),
            token_lr=float(pick(self.token_lr, base.token_lr)),
            detach_estimate=bool(pick(self.detach_estimate, base.detach_estimate)),
            align_encoder=bool(pick(self.align_encoder, base.align_encoder)),
            source_align=float(pick(self.source_align_weight, base.source_align)),
        )

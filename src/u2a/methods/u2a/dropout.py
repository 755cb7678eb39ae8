"""Random modality dropout (paper, end of Section 3) for complete training samples."""

from __future__ import annotations

import torch


def sample_modality_dropout(
    present: torch.Tensor, generator: torch.Generator | None = None, keep_prob: float | None = None
) -> torch.Tensor:
    """Per sample, keep every modality or drop one; only samples that have all modalities.

    ``keep_prob=None`` chooses uniformly among the M + 1 outcomes (keep all, drop modality 1, ...,
    drop modality M); otherwise "keep all" has probability ``keep_prob`` and the dropped modality
    is uniform. Returns a bool mask ``(B, M)``: True where the modality is dropped for selection.
    A dropped modality is still encoded: its real CLS output stays the alignment target.
    """
    b, m = present.shape
    complete = present.all(dim=1)
    if keep_prob is None:
        choice = torch.randint(0, m + 1, (b,), generator=generator)
    else:
        keep = torch.rand(b, generator=generator) < keep_prob
        which = torch.randint(1, m + 1, (b,), generator=generator)
        choice = torch.where(keep, torch.zeros_like(which), which)
    choice = torch.where(complete.cpu(), choice, torch.zeros_like(choice))
    drop = torch.zeros((b, m), dtype=torch.bool)
    rows = (choice > 0).nonzero().squeeze(1)
    drop[rows, choice[rows] - 1] = True
    return drop.to(present.device)


def every_case(present: torch.Tensor, keep_prob: float | None = None) -> list[tuple[float, torch.Tensor]]:
    """The outcomes of :func:`sample_modality_dropout` with their probabilities: ``(weight, drop)``
    for keep-all and for dropping each modality in turn (only on samples that have all
    modalities; the others keep what they have in every case). The weights sum to 1."""
    b, m = present.shape
    complete = present.all(dim=1)
    keep = 1.0 / (m + 1) if keep_prob is None else float(keep_prob)
    cases = [(keep, torch.zeros((b, m), dtype=torch.bool, device=present.device))]
    for j in range(m):
        drop = torch.zeros((b, m), dtype=torch.bool, device=present.device)
        drop[:, j] = complete
        cases.append(((1.0 - keep) / m, drop))
    return cases


def with_constant_fill(cases: list[tuple[float, torch.Tensor]], n_modalities: int) -> list[tuple]:
    """:func:`every_case`'s cases with each drop case split in two of half its weight: one filled
    with the estimate (the model's gates), one with the constant fill (every gate 0), so that the
    head learns each remaining modality both with and without the estimate. The keep-all case
    (first) stays as it is; weights still sum to 1."""
    out: list[tuple] = [cases[0]]
    zeros = [0.0] * n_modalities
    for w, drop in cases[1:]:
        out.append((w / 2, drop))
        out.append((w / 2, drop, zeros))
    return out

"""Losses of U2A (paper, eqs. 6 and 7): task loss + lambda x mask-token alignment."""

from __future__ import annotations

import torch

from u2a.losses import task_loss


def alignment_terms(out, modalities: list[str], stop_grad_target: bool = False,
                    target_var: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per direction ``s->t``: the MSE between the estimate from MT(s->t) and CLS(t), averaged over
    the samples that really have both (a dropped modality still counts as present).

    ``stop_grad_target``: no gradient flows into CLS(t). ``target_var``: each direction's MSE is
    divided by its target's variance per dimension (one number per target, see
    :func:`alignment_scale`), so every direction weighs the same whatever the target encoder's
    output scale."""
    feats = out.features
    terms: dict[str, torch.Tensor] = {}
    present = feats.present
    for si, s in enumerate(modalities):
        for ti, t in enumerate(modalities):
            if s == t or (s, t) not in feats.align_pred:
                continue
            key = f"{s}->{t}"
            rows = (present[:, si] & present[:, ti]).nonzero().squeeze(1)
            if rows.numel() == 0:
                terms[key] = out.logits.new_zeros((), dtype=torch.float32)
                continue
            pred = feats.align_pred[(s, t)][rows].float()
            target = feats.align_target[t][rows].float()
            if stop_grad_target:
                target = target.detach()
            err = ((pred - target) ** 2).mean()
            if target_var is not None:
                err = err / target_var[t].float()
            terms[key] = err
    return terms


def alignment_scale(mean: torch.Tensor, var: torch.Tensor, floor: float = 0.01) -> torch.Tensor:
    """The normaliser of a direction's MSE: the target's variance per dimension averaged over the
    dimensions, but at least ``floor`` x its mean square (a target whose CLS barely varies across
    samples - a random encoder, say - would otherwise turn dropout noise into a huge loss)."""
    v = var.float().mean()
    second = (var.float() + mean.float() ** 2).mean()
    return torch.maximum(v, floor * second).clamp_min(1e-12)


def source_alignment(out, modalities: list[str]) -> torch.Tensor:
    """The paper's eq. 6 on the raw MT outputs (``Features.mt_projected``) against CLS(t) in the
    common space, both sides trained, summed over directions."""
    feats = out.features
    total = out.logits.new_zeros((), dtype=torch.float32)
    for (s, t), pred in feats.mt_projected.items():
        si, ti = modalities.index(s), modalities.index(t)
        rows = (feats.present[:, si] & feats.present[:, ti]).nonzero().squeeze(1)
        if rows.numel():
            total = total + ((pred[rows].float() - feats.cls[t][rows].float()) ** 2).mean()
    return total


def u2a_loss(out, labels: torch.Tensor, modalities: list[str], task: str, align_weight: float,
             stop_grad_target: bool = False, target_var: dict[str, torch.Tensor] | None = None,
             source_align_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Named losses: ``loss`` (the total, eq. 7), ``task`` (with ``out.case_logits``: the
    probability-weighted sum of every dropout case's task loss), ``align`` (eq. 6, the sum over
    directions) and ``align/<s>-><t>`` per direction; with ``source_align_weight`` also
    ``source_align`` (eq. 6 on the raw MT outputs, :func:`source_alignment`)."""
    case_logits = getattr(out, "case_logits", None)
    if case_logits:  # every dropout case of the batch, weighted by its probability
        t = torch.stack([w * task_loss(lg, labels, task) for w, lg in case_logits]).sum()
    else:
        t = task_loss(out.logits, labels, task)
    terms = alignment_terms(out, modalities, stop_grad_target, target_var) if out.mt else {}
    a = torch.stack(list(terms.values())).sum() if terms else t.new_zeros(())
    losses = {"loss": t + align_weight * a, "task": t, "align": a}
    for k, v in terms.items():
        losses[f"align/{k}"] = v
    if source_align_weight > 0 and out.features is not None and out.features.mt_projected:
        sa = source_alignment(out, modalities)
        losses["loss"] = losses["loss"] + source_align_weight * sa
        losses["source_align"] = sa
    return losses

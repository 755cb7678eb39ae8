"""How MLA trains: alternating unimodal steps through one shared head, with the head's gradient
projected away from the features that earlier steps stored (Zhang et al., CVPR 2024).

Per batch, each modality in config order:

1. its encoder and the shared head on the samples that have it (a forward through the DDP-wrapped
   model, so gradients synchronise), its own task loss, backward;
2. ``model.mla.gradient_modification``: the head's weight gradient ``G`` becomes ``G @ P``;
3. an optimizer step (clip, AdamW, zero the gradients): only this modality's encoder (LoRA), CLS
   token and projection, and the shared head, have gradients, so only they move;
4. the batch-mean of this modality's head inputs, ``r``, is stored in ``P`` with
   ``alpha = model.mla.alpha * model.mla.alpha_decay ** progress``: the next step (the next
   modality, or the first one of the next batch) is projected away from it.

The step returns ``loss`` (the sum over modalities), ``task/<modality>`` and, as a diagnostic,
``projector/kept`` = trace(P) / D (1: the identity; towards 0 as the stored features span the
head's input space and its weight gradient is projected away).

Each modality's loss is the mean over the samples of *all* processes that have it (the local sum is
scaled by ``processes / global count``, so that DDP's gradient average is that mean), and ``r`` is
the mean over all processes: N processes train exactly as one process with the global batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from u2a.losses import summed_task_loss
from u2a.methods import register_method
from u2a.methods.base import Method, StepContext
from u2a.methods.mla.model import MLAModel


@register_method
class MLAMethod(Method):
    name = "mla"
    label = "MLA"
    model_class = MLAModel
    steps_optimizer = True

    def display_name(self, config) -> str:
        c = config.mla
        notes = []
        if c.finetune == "full":
            notes.append("full fine-tuning")
        if not c.gradient_modification:
            notes.append("no gradient modification")
        if c.fusion != "entropy":
            notes.append(f"{c.fusion} fusion")
        return "MLA" + (f" ({', '.join(notes)})" if notes else "")

    def prepare(self, model: MLAModel, dataset: Any, collate: Callable, cfg: Any,
                log: Callable[[str], None]) -> dict[str, Any]:
        c = cfg.model.mla
        log(f"MLA: finetune={c.finetune}, gradient_modification={c.gradient_modification} (alpha {c.alpha:g} x "
            f"{c.alpha_decay:g}^progress), fusion={c.fusion}; alternating modalities {model.modalities}")
        return {"finetune": c.finetune, "gradient_modification": c.gradient_modification, "alpha": c.alpha,
                "alpha_decay": c.alpha_decay, "fusion": c.fusion}

    @staticmethod
    def alpha_at(cfg: Any, progress: float) -> float:
        c = cfg.model.mla
        return float(c.alpha) * float(c.alpha_decay) ** float(progress)

    def train_step(self, ctx: StepContext, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        model: MLAModel = ctx.unwrapped
        c = ctx.cfg.model.mla
        task = ctx.cfg.model.task
        present = batch["present"].to(torch.bool)
        labels = batch["labels"]
        counts = ctx.sum_over_processes(present.sum(0).to(torch.float64)).cpu()
        alpha = self.alpha_at(ctx.cfg, ctx.progress)
        losses: dict[str, torch.Tensor] = {}
        for j, m in enumerate(model.modalities):
            n = float(counts[j])
            if n == 0:  # no process has this modality in this batch: no step
                losses[f"task/{m}"] = torch.zeros(())
                continue
            out = ctx.model(batch["inputs"], present, modality=m)
            loss = summed_task_loss(out.logits, labels[out.rows], task) * (ctx.num_processes / n)
            ctx.backward(loss)
            if c.gradient_modification:
                model.project_head_grad()
            ctx.optimizer_step()
            if c.gradient_modification:
                feat_sum = ctx.sum_over_processes(out.features.detach().double().sum(0))
                model.update_projector(feat_sum / n, alpha)
            losses[f"task/{m}"] = loss.detach().float().cpu()
        losses["loss"] = torch.stack([losses[f"task/{m}"] for m in model.modalities]).sum()
        # not a loss: how much of the head's input space the projector still lets through
        # (trace(P) / D: 1 = identity, 0 = every direction stored)
        losses["projector/kept"] = model.projector.diagonal().double().mean().float().cpu()
        return losses

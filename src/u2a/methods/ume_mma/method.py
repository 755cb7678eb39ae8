"""How UME-MMA trains (Li et al., arXiv 2310.06383): two stages within one run.

Stage 1 (the first ``model.ume_mma.stage1_fraction`` of ``train.epochs``, rounded half up, at
least one epoch and leaving at least one): each modality's encoder (LoRA, CLS token) and its own
head learn from that modality alone - a cross-entropy per modality over the samples that have it;
the losses are summed into one backward (they share no parameter, so this is the same as separate
uni-modal trainings stepped together).

Stage 2 (the rest): late fusion trained with missing-modality augmentation. Each complete training
sample loses one modality (uniformly chosen) with probability ``drop_prob``; the fusion predicts
from what is left. The encoders are frozen (run without gradient) unless
``train_encoders_in_stage2``; with ``fusion: linear`` the fusion layer (initialised from the
stage-1 heads) is what learns, with ``fusion: logit_mean`` the heads learn the mean of the
available logits.

Selection on validation happens only in stage 2 (:meth:`UMEMMAMethod.selectable`): a model whose
fusion was never trained is never the selected one. Stage-1 epochs still log their training loss.

Every loss is a mean over the samples of all processes (the local sum scaled by
``processes / global count``), so N processes train as one with the global batch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from u2a.errors import ConfigError
from u2a.losses import summed_task_loss
from u2a.methods import register_method
from u2a.methods.base import Method, StepContext
from u2a.methods.u2a.dropout import sample_modality_dropout
from u2a.methods.ume_mma.model import UMEMMAModel


@register_method
class UMEMMAMethod(Method):
    name = "ume_mma"
    label = "UME-MMA"
    model_class = UMEMMAModel

    def display_name(self, config) -> str:
        c = config.ume_mma
        notes = []
        if c.fusion != "linear":
            notes.append(f"{c.fusion} fusion")
        if c.train_encoders_in_stage2:
            notes.append("encoders trained in stage 2")
        return "UME-MMA" + (f" ({', '.join(notes)})" if notes else "")

    # ---- stages -------------------------------------------------------------------------------
    @staticmethod
    def stage1_epochs(cfg: Any) -> int:
        return cfg.model.ume_mma.stage1_epochs(cfg.train.epochs)

    def stage(self, epoch: int, cfg: Any) -> int:
        """The stage (1 or 2) of the 0-based training epoch ``epoch``."""
        return 1 if epoch < self.stage1_epochs(cfg) else 2

    def check_run(self, cfg: Any) -> None:
        super().check_run(cfg)
        if cfg.train.epochs < 2:
            raise ConfigError(f"train.epochs: UME-MMA trains in two stages (uni-modal, then fusion) and needs at "
                              f"least 2 epochs, got {cfg.train.epochs}")

    def prepare(self, model: UMEMMAModel, dataset: Any, collate: Callable, cfg: Any,
                log: Callable[[str], None]) -> dict[str, Any]:
        c = cfg.model.ume_mma
        n1 = self.stage1_epochs(cfg)
        log(f"UME-MMA: stage 1 (uni-modal) epochs 1-{n1}, stage 2 ({c.fusion} fusion, drop_prob {c.drop_prob:g}, "
            f"encoders {'trained' if c.train_encoders_in_stage2 else 'frozen'}) epochs {n1 + 1}-{cfg.train.epochs}; "
            f"selection on validation in stage 2 only")
        if cfg.train.max_steps is not None:
            log("UME-MMA: with train.max_steps the run may stop before stage 2; then no model is selected")
        return {"stage1_epochs": n1, "fusion": c.fusion, "drop_prob": c.drop_prob,
                "train_encoders_in_stage2": c.train_encoders_in_stage2}

    def on_epoch_start(self, model: UMEMMAModel, epoch: int, cfg: Any) -> None:
        if self.stage(epoch, cfg) == 2 and cfg.model.ume_mma.init_fusion_from_heads:
            model.init_fusion_from_heads()  # once: a resumed stage-2 run finds it done

    def selectable(self, epoch: int, cfg: Any) -> bool:
        """Only models whose fusion was trained (``epoch`` is 1-based: the epochs of stage 2)."""
        return epoch > self.stage1_epochs(cfg)

    # ---- the step -----------------------------------------------------------------------------
    def train_step(self, ctx: StepContext, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        model: UMEMMAModel = ctx.unwrapped
        c = ctx.cfg.model.ume_mma
        task = ctx.cfg.model.task
        present = batch["present"].to(torch.bool)
        labels = batch["labels"]
        zero = torch.zeros(())
        losses: dict[str, torch.Tensor] = {}
        if self.stage(ctx.epoch, ctx.cfg) == 1:
            counts = ctx.sum_over_processes(present.sum(0).to(torch.float64)).cpu()
            out = ctx.model(batch["inputs"], present, stage=1)
            terms = []
            for j, m in enumerate(model.modalities):
                br = out.get(m)
                if br is None:  # no sample of this process has m
                    losses[f"task/{m}"] = zero
                    continue
                n = float(counts[j])
                t = summed_task_loss(br.logits, labels[br.rows], task) * (ctx.num_processes / n)
                terms.append(t)
                losses[f"task/{m}"] = t.detach().float().cpu()
            total = torch.stack(terms).sum()
            ctx.backward(total)
            losses["fusion"] = zero
            losses["loss"] = torch.stack([losses[f"task/{m}"] for m in model.modalities]).sum()
            return losses

        drop = None
        if c.drop_prob > 0:
            drop = sample_modality_dropout(present.cpu(), ctx.generator, keep_prob=1.0 - c.drop_prob).to(present.device)
        n_all = float(ctx.sum_over_processes(torch.tensor(float(present.shape[0]), dtype=torch.float64)))
        out = ctx.model(batch["inputs"], present, drop=drop, stage=2, frozen_encoders=not c.train_encoders_in_stage2)
        loss = summed_task_loss(out.logits, labels, task) * (ctx.num_processes / n_all)
        ctx.backward(loss)
        for m in model.modalities:
            losses[f"task/{m}"] = zero
        losses["fusion"] = loss.detach().float().cpu()
        losses["loss"] = losses["fusion"]
        return losses

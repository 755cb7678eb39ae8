"""How U2A trains: modality dropout on complete samples, task loss + lambda x alignment, and -
before training - the target statistics and the check of how close any estimate can get."""

from __future__ import annotations

import dataclasses

import random
from typing import Any, Callable, Mapping

import torch

from u2a.methods import register_method
from u2a.methods.base import Method, StepContext
from u2a.methods.u2a.dropout import every_case, sample_modality_dropout, with_constant_fill
from u2a.methods.u2a.estimators import FloorCheck, reachable_floor
from u2a.methods.u2a.losses import alignment_scale, u2a_loss
from u2a.methods.u2a.model import U2AModel


def stats_indices(n: int, k: int, seed: int) -> list[int]:
    """A seeded sample of ``k`` training rows (all of them when there are fewer), in file order."""
    if n <= k:
        return list(range(n))
    return sorted(random.Random(f"u2a-stats-{seed}").sample(range(n), k))


@register_method
class U2AMethod(Method):
    name = "u2a"
    label = "U2A"
    model_class = U2AModel

    def display_name(self, config) -> str:
        u = config.u2a
        if not u.mask_tokens:
            return "U2A (no mask tokens)"
        return "U2A" if u.settings() == type(u)().settings() else f"U2A ({u.estimator} estimator)"

    # ---- before training ----------------------------------------------------------------
    @torch.no_grad()
    def collect(self, model: U2AModel, dataset: Any, collate: Callable, indices: list[int],
                batch_size: int = 32) -> dict[str, Any]:
        """CLS outputs (alignment space) and the RMS of the embedded tokens per modality, over
        ``indices`` of ``dataset``, with the model in eval mode."""
        was = model.training
        model.eval()
        dev = model.head.weight.device
        targets: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
        sources: dict[tuple[str, str], list[torch.Tensor]] = {}
        sq: dict[str, float] = {m: 0.0 for m in model.modalities}
        cnt: dict[str, float] = {m: 0.0 for m in model.modalities}
        slot_sq: dict[str, float] = {m: 0.0 for m in model.modalities}
        slot_n: dict[str, float] = {m: 0.0 for m in model.modalities}
        from u2a.data.processing import move_batch

        try:
            for start in range(0, len(indices), batch_size):
                batch = move_batch(collate([dataset[i] for i in indices[start:start + batch_size]]), dev)
                if not batch["ids"]:
                    continue  # every sample failed to load (data.skip_bad): the training lists them
                feats = model.encode(batch["inputs"], batch["present"], ids=batch["ids"])
                for (src, tgt), raw in feats.mt_source.items():
                    rows = feats.present[:, model.modalities.index(src)]
                    if rows.any():
                        sources.setdefault((src, tgt), []).append(raw[rows].float().cpu())
                for j, m in enumerate(model.modalities):
                    rows = feats.present[:, j]
                    if rows.any():
                        targets[m].append(feats.align_target[m][rows].float().cpu())
                        slot_sq[m] += float((feats.cls[m][rows].float() ** 2).mean(-1).sum())
                        slot_n[m] += float(rows.sum())
                    x = batch["inputs"].get(m)
                    if x is not None:
                        sub, _ = model.rows_to_encode(m, x, rows)
                        if "pixel_values" in sub and sub["pixel_values"].dim() == 5:
                            sub["pixel_values"] = sub["pixel_values"].flatten(0, 1)
                        tok, mask = model.encoders[m].embed(sub)
                        tok = tok.float()
                        w = torch.ones(tok.shape[:2]) if mask is None else mask.float().cpu()
                        sq[m] += float(((tok.cpu() ** 2).mean(-1) * w).sum())
                        cnt[m] += float(w.sum())
        finally:
            model.train(was)
        return {
            "targets": {m: torch.cat(v) if v else None for m, v in targets.items()},
            "sources": {k: torch.cat(v) for k, v in sources.items() if v},
            "embed_rms": {m: (sq[m] / cnt[m]) ** 0.5 if cnt[m] else None for m in model.modalities},
            #: RMS of each modality's CLS output in the common space (the slot scale of slot_norm: rms)
            "slot_rms": {m: (slot_sq[m] / slot_n[m]) ** 0.5 if slot_n[m] else None for m in model.modalities},
        }

    def floor_checks(self, model: U2AModel, targets: Mapping[str, torch.Tensor | None]) -> list[FloorCheck]:
        out = []
        settings = model.settings
        for s in model.modalities:
            for t in model.targets_of(s):
                y = targets.get(t)
                if y is None or len(y) < 2:
                    continue
                const = float(y.var(dim=0, unbiased=False).mean())
                if settings.output == "source":
                    if isinstance(model.proj[s], torch.nn.Identity) and model.widths[s] == y.shape[1]:
                        norm = model.encoders[s].final_norm
                        floor = float(reachable_floor(norm.weight.detach().float().cpu(),
                                                      norm.bias.detach().float().cpu(), y).mean())
                        note = "on the source encoder's final-norm manifold"
                        if floor >= const:
                            note += ("; WARNING: no training can bring this estimate below a constant "
                                     "(try the default, model.u2a.estimator=task_probe)")
                        out.append(FloorCheck(s, t, "source", floor, const, note))
                    else:
                        out.append(FloorCheck(s, t, "source", None, const, "learned projection: no fixed floor"))
                elif settings.output == "target_norm":
                    out.append(FloorCheck(s, t, "target_norm", 0.0, const,
                                          "on the target's own final-norm manifold, which holds every real CLS(t)"))
                else:
                    out.append(FloorCheck(s, t, settings.output, None, const,
                                          "starts at the constant (mean target) and can only be trained away from it"))
        return out

    def prepare(self, model: U2AModel, dataset: Any, collate: Callable, cfg: Any, log: Callable[[str], None]) -> dict[str, Any]:
        """Target statistics (stored with the model for the residual estimator and the normalised
        alignment loss), the embedding RMS for the token learning rate, and the floor check."""
        if dataset is None or len(dataset) == 0:
            return {}
        slot_norm = hasattr(model, "slot_scale")
        # without mask tokens there is no estimator: only a token learning rate or the slot scale needs the pass
        if not model.has_mask_tokens and model.settings.token_lr <= 0 and not slot_norm:
            return {}
        idx = stats_indices(len(dataset), cfg.model.u2a.stats_samples, cfg.train.seed)
        got = self.collect(model, dataset, collate, idx)
        slot = {}
        if slot_norm:
            lacking = [m for m, v in got["slot_rms"].items() if not v]
            if lacking:
                from u2a.errors import DataError

                raise DataError(f"the training data has no sample with modality {lacking}: cannot measure its scale")
            with torch.no_grad():
                model.slot_scale.copy_(torch.tensor([got["slot_rms"][m] for m in model.modalities]))
            slot = {"slot_rms": got["slot_rms"]}
            log("slot scales (RMS of each modality's CLS output; every slot is divided by it): "
                + ", ".join(f"{m} {v:.3g}" for m, v in got["slot_rms"].items()))
        if not model.has_mask_tokens:
            self._embed_rms = got["embed_rms"]
            return {"stats_samples": len(idx), "embed_rms": self._embed_rms,
                    "settings": {"token_lr": model.settings.token_lr}, **slot}
        targets = got["targets"]
        if len(model.stats):
            mean = {t: targets[t].mean(0) for t in model.stats if targets[t] is not None}
            var = {t: targets[t].var(0, unbiased=False) for t in model.stats if targets[t] is not None}
            lacking = [t for t in model.stats if t not in mean]
            if lacking:
                from u2a.errors import DataError

                raise DataError(f"the training data has no sample with modality {lacking}: cannot estimate it")
            model.set_target_stats(mean, var)
        if len(model.source_stats):
            from u2a.methods.u2a.estimators import pair_key

            src = {pair_key(*k): v for k, v in got["sources"].items()}
            missing_src = [k for k in model.source_stats if k not in src]
            if missing_src:
                from u2a.errors import DataError

                raise DataError(f"the training data has no sample for the mask-token directions {missing_src}")
            model.set_source_stats({k: v.mean(0) for k, v in src.items()},
                                   {k: v.var(0, unbiased=False) for k, v in src.items()})
        self._embed_rms = got["embed_rms"]
        checks = self.floor_checks(model, targets)
        s = model.settings
        switches = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in dataclasses.asdict(s).items())
        log(f"U2A estimator {model.config.u2a.estimator!r}: {switches} "
            f"(statistics from {len(idx)} training samples)")
        if checks:
            log("mask-token estimates, best reachable MSE against the constant (mean CLS):")
            for c in checks:
                log(c.line())
        return {"stats_samples": len(idx), "floor": [c.as_dict() for c in checks],
                "embed_rms": got["embed_rms"], "settings": s.__dict__, **slot}

    def param_groups(self, model: U2AModel, cfg: Any) -> list[dict[str, Any]]:
        lr = cfg.train.lr
        rel = model.settings.token_lr
        rms = getattr(self, "_embed_rms", None) or {}
        if rel <= 0 or not rms:
            return super().param_groups(model, cfg)
        token_ids = set()
        groups = []
        for m in model.modalities:
            params = [model.cls_tokens[m]] + ([model.mask_tokens[m]] if m in model.mask_tokens else [])
            token_ids.update(id(p) for p in params)
            if rms.get(m):
                groups.append({"params": params, "lr": rel * float(rms[m]), "name": f"tokens/{m}"})
            else:
                groups.append({"params": params, "lr": lr, "name": f"tokens/{m}"})
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in token_ids]
        return [{"params": rest, "lr": lr, "name": "main"}] + groups

    # ---- training -----------------------------------------------------------------------
    @torch.no_grad()
    def update_running_stats(self, ctx: StepContext, model: U2AModel, feats) -> None:
        """Running mean and variance of each target's CLS output, from this batch's sums over every
        process (so one process and several give the same numbers)."""
        from u2a.methods.u2a.estimators import pair_key

        parts, dims, owners = [], [], []
        for t in model.stats:
            ti = model.modalities.index(t)
            y = feats.align_target[t][feats.present[:, ti]].detach().double()
            parts += [y.sum(0), (y ** 2).sum(0), y.new_tensor([float(y.shape[0])])]
            dims.append(y.shape[1])
            owners.append(model.stats[t])
        for (src, tgt), raw in feats.mt_source.items():
            key = pair_key(src, tgt)
            if key not in model.source_stats:
                continue
            x = raw[feats.present[:, model.modalities.index(src)]].detach().double()
            parts += [x.sum(0), (x ** 2).sum(0), x.new_tensor([float(x.shape[0])])]
            dims.append(x.shape[1])
            owners.append(model.source_stats[key])
        flat = torch.cat(parts)
        if ctx.accelerator.num_processes > 1:
            flat = ctx.accelerator.reduce(flat, reduction="sum")
        i = 0
        for owner, d in zip(owners, dims):
            total, total_sq, n = flat[i:i + d], flat[i + d:i + 2 * d], float(flat[i + 2 * d])
            owner.update(total, total_sq, n)
            i += 2 * d + 1

    def train_step(self, ctx: StepContext, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ucfg = ctx.cfg.model.u2a
        present = batch["present"]
        md = ucfg.modality_dropout
        model = ctx.unwrapped
        if md.enabled and md.cases == "all":
            cases = every_case(present, md.keep_prob)
            if ucfg.fallback_cases and model.has_mask_tokens:
                cases = with_constant_fill(cases, len(model.modalities))
            out = ctx.model(batch["inputs"], present, ids=batch["ids"], cases=cases)
        else:
            drop = None
            if md.enabled:
                drop = sample_modality_dropout(present.cpu(), ctx.generator, md.keep_prob).to(present.device)
            out = ctx.model(batch["inputs"], present, drop=drop, ids=batch["ids"])
        s = model.settings
        var = None
        if len(model.stats) and out.mt:
            self.update_running_stats(ctx, model, out.features)
            if s.normalize_align:
                var = {t: alignment_scale(model.stats[t].run_mean, model.stats[t].run_var) for t in model.stats}
        losses = u2a_loss(out, batch["labels"], model.modalities, ctx.cfg.model.task, ucfg.align_weight,
                          stop_grad_target=s.stop_grad_target, target_var=var,
                          source_align_weight=s.source_align if s.output != "source" else 0.0)
        ctx.backward(losses["loss"])
        return losses

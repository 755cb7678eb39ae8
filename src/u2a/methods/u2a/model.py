"""The U2A model (paper, Section 3) for N >= 2 modalities.

Per modality m: a frozen encoder with LoRA, a learnable CLS token and mask tokens MT(m->t), one per
other modality t, appended to the token sequence (eq. 2: [CLS, tokens, MT...]). Token selection
(eq. 4, generalised): the slot of modality t is its own CLS output when t is available, else the
mean of the estimates from MT(s->t) over the available modalities s (with N = 2 exactly the paper).
The slots are projected to a common width (identity when the encoders agree), summed, and fed to a
linear head (eq. 5).

How an MT output becomes an estimate is set by ``model.u2a`` (:mod:`u2a.methods.u2a.config`):
``output: source`` is the paper's (the MT output as it is), ``target_norm`` and ``residual`` map it
into the target encoder's own space; ``one_way_attention`` keeps the MTs out of the other tokens'
attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from u2a.config import ModelConfig
from u2a.encoders import EncoderAdapter
from u2a.errors import ModelError
from u2a.methods.base import BatchFeatures, MethodModel, ModelOutput
from u2a.methods.u2a.estimators import layer_norm0, pair_key
from u2a.methods.u2a.selection import fuse_slots

Pair = tuple[str, str]


def _proper_subsets(n: int) -> list[tuple[int, ...]]:
    """The non-empty proper subsets of range(n), smallest first (config order within a size)."""
    import itertools

    return [k for size in range(1, n) for k in itertools.combinations(range(n), size)]


def _keep_only(keep: tuple[int, ...]):
    """Availability function: every sample keeps only the modalities ``keep`` (a sample with none
    of them keeps what it has)."""

    def fn(present: torch.Tensor) -> torch.Tensor:
        avail = torch.zeros_like(present)
        avail[:, list(keep)] = present[:, list(keep)]
        empty = ~avail.any(dim=1)
        avail[empty] = present[empty]
        return avail

    return fn


@dataclass
class Features(BatchFeatures):
    """Encoder outputs of a batch, before token selection (rows without a modality are zero)."""

    present: torch.Tensor
    #: projected CLS output per modality, (B, D)
    cls: dict[str, torch.Tensor]
    #: projected estimate of CLS(t) from MT(s->t), per (source, target), (B, D)
    mt: dict[Pair, torch.Tensor]
    #: the two sides of the alignment loss (eq. 6): CLS(t) and the estimate, in the space the
    #: estimator aligns in (the common space for the paper's output, the target's own otherwise)
    align_target: dict[str, torch.Tensor] = field(default_factory=dict)
    align_pred: dict[Pair, torch.Tensor] = field(default_factory=dict)
    #: ablation without mask tokens: CLS output of each modality's placeholder input, (1, D)
    placeholder_cls: dict[str, torch.Tensor] = field(default_factory=dict)
    #: ``linear`` output: the raw MT(s->t) output, (B, d_s) (its running statistics standardise it)
    mt_source: dict[Pair, torch.Tensor] = field(default_factory=dict)
    #: ``source_align_weight`` > 0: the raw MT(s->t) output projected to the common width, with
    #: gradient (the paper's alignment term on it, next to the estimator's own)
    mt_projected: dict[Pair, torch.Tensor] = field(default_factory=dict)

    shared_fields = ("placeholder_cls",)


@dataclass
class U2AOutput(ModelOutput):
    #: projected CLS output per modality, (B, D); rows without the modality are zero
    cls: dict[str, torch.Tensor] = field(default_factory=dict)
    #: projected MT(s->t) estimate per (source, target), (B, D); rows without the source are zero
    mt: dict[Pair, torch.Tensor] = field(default_factory=dict)
    present: torch.Tensor | None = None
    fused: torch.Tensor | None = None
    #: per modality, True where its slot was filled by an estimate (mask tokens or placeholder)
    estimated: torch.Tensor | None = None
    features: Features | None = None
    #: ``forward(cases=...)``: (weight, logits) of every dropout case; ``logits`` is the first's
    case_logits: list[tuple[float, torch.Tensor]] | None = None


class _TargetStats(nn.Module):
    """Statistics of one modality's CLS output: ``mean``/``var`` over training samples before
    training (the residual estimator's anchor and scale), and ``run_mean``/``run_var``, running
    averages over the training batches (the scale of the normalised alignment loss follows the
    target as training changes it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("run_mean", torch.zeros(dim))
        self.register_buffer("run_var", torch.ones(dim))

    @torch.no_grad()
    def update(self, total: torch.Tensor, total_sq: torch.Tensor, n: float, momentum: float = 0.9) -> None:
        if n < 2:
            return
        mean = total / n
        var = (total_sq / n - mean ** 2).clamp_min(0)
        self.run_mean.mul_(momentum).add_((1 - momentum) * mean.to(self.run_mean.dtype))
        self.run_var.mul_(momentum).add_((1 - momentum) * var.to(self.run_var.dtype))


class U2AModel(MethodModel):
    method_name = "u2a"

    def __init__(self, config: ModelConfig, encoders: Mapping[str, EncoderAdapter]):
        super().__init__(config, encoders)
        ucfg = config.u2a
        self.settings = ucfg.settings()
        widths = {m: self.encoders[m].hidden_size for m in self.modalities}
        self.widths = widths
        self.dim = config.common_dim or max(widths.values())
        self.proj = nn.ModuleDict(
            {m: nn.Identity() if w == self.dim else nn.Linear(w, self.dim) for m, w in widths.items()}
        )

        n_mod = len(self.modalities)
        self.cls_tokens = nn.ParameterDict()
        self.mask_tokens = nn.ParameterDict()
        for m in self.modalities:
            init = self.encoders[m].default_cls()
            if init is None:
                init = torch.randn(widths[m]) * 0.02
            init = init.detach().float().clone()
            self.cls_tokens[m] = nn.Parameter(init.clone())
            if ucfg.mask_tokens:
                # MT(m -> t) for every other modality t, in config order
                self.mask_tokens[m] = nn.Parameter(init.clone().unsqueeze(0).repeat(n_mod - 1, 1))

        out = self.settings.output
        self.bridge = nn.ModuleDict()
        self.gain = nn.ParameterDict()
        self.anchor = nn.ParameterDict()
        self.stats = nn.ModuleDict()
        #: ``linear`` output: per direction the down (d_s -> r) and up (r -> d_t) maps and the
        #: running statistics of the MT output that standardise it
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        self.source_stats = nn.ModuleDict()
        if ucfg.mask_tokens and out != "source":
            for s in self.modalities:
                for t in self.targets_of(s):
                    key = pair_key(s, t)
                    if out == "linear":
                        r = min(ucfg.estimator_rank, widths[s], widths[t])
                        self.down[key] = nn.Linear(widths[s], r, bias=False)
                        self.up[key] = nn.Linear(r, widths[t], bias=False)
                        nn.init.zeros_(self.up[key].weight)
                        self.source_stats[key] = _TargetStats(widths[s])
                        continue
                    if widths[s] != widths[t]:
                        self.bridge[key] = nn.Linear(widths[s], widths[t])
                    if out == "residual":
                        self.gain[key] = nn.Parameter(torch.zeros(widths[t]))
            if out in ("residual", "linear"):
                for t in self.modalities:
                    self.anchor[t] = nn.Parameter(torch.zeros(widths[t]))
        self.gate_mode = ucfg.gate if ucfg.mask_tokens else "none"
        #: the constant fill c_t is needed by a gate and by the constant-fill training cases
        self.uses_constant = ucfg.mask_tokens and (self.gate_mode != "none" or ucfg.fallback_cases)
        if ucfg.mask_tokens and (out in ("residual", "linear") or self.settings.normalize_align or self.uses_constant):
            for t in self.modalities:
                dim_t = widths[t] if out != "source" else self.dim
                self.stats[t] = _TargetStats(dim_t)
        if self.gate_mode == "validation":
            #: per target modality, the shrinkage of its estimate toward the constant fill (1: none),
            #: chosen on validation (:meth:`calibrate`)
            self.register_buffer("gates", torch.ones(n_mod))
        elif self.gate_mode == "learned":
            self.gate_logits = nn.Parameter(torch.full((n_mod,), 4.0))  # sigmoid(4) = 0.98
        if ucfg.slot_norm == "rms":
            #: per modality, the RMS of its CLS output (set before training): every slot is divided by it
            self.register_buffer("slot_scale", torch.ones(n_mod))
        self.head = nn.Linear(self.dim, config.num_classes)

    @property
    def has_mask_tokens(self) -> bool:
        return bool(self.config.u2a.mask_tokens)

    # ---- statistics (set by U2AMethod.prepare before training) -------------------------------
    @torch.no_grad()
    def set_target_stats(self, mean: Mapping[str, torch.Tensor], var: Mapping[str, torch.Tensor]) -> None:
        """Store the target statistics (in the alignment space). The residual / linear estimates are
        ``running mean + anchor offset (0) + ...``, so an untrained estimate is the mean placeholder."""
        for t in self.stats:
            self.stats[t].mean.copy_(mean[t])
            self.stats[t].var.copy_(var[t])
            self.stats[t].run_mean.copy_(mean[t])
            self.stats[t].run_var.copy_(var[t])
        for t in self.anchor:
            self.anchor[t].zero_()

    @torch.no_grad()
    def set_source_stats(self, mean: Mapping[str, torch.Tensor], var: Mapping[str, torch.Tensor]) -> None:
        """Statistics of each MT output (per direction key) that standardise it (``linear`` output)."""
        for key in self.source_stats:
            st = self.source_stats[key]
            for name, v in (("mean", mean[key]), ("var", var[key]), ("run_mean", mean[key]), ("run_var", var[key])):
                getattr(st, name).copy_(v)

    # ---- forward ------------------------------------------------------------------------
    def _estimate(self, s: str, t: str, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected estimate of CLS(t), the estimate in the alignment space) from MT(s->t)'s output."""
        out = self.settings.output
        if out == "source":
            e = self.proj[s](h)
            return e, e
        key = pair_key(s, t)
        if not self.settings.align_encoder:
            h = h.detach()  # the estimate map is a probe: nothing flows back into the encoder
        if out == "linear":  # mean_t + std_t * U V^T standardise(h)
            st = self.source_stats[key]
            z = (h.float() - st.run_mean) / (st.run_var + 1e-5 * st.run_var.mean() + 1e-12).sqrt()
            std = self.stats[t].run_var.clamp_min(1e-12).sqrt()
            e = self.stats[t].run_mean + self.anchor[t] + std * self.up[key](self.down[key](z))
            return self.proj[t](e), e
        x = self.bridge[key](h) if key in self.bridge else h
        if out == "target_norm":
            norm = self.encoders[t].final_norm
            e = F.layer_norm(x.float(), (x.shape[-1],), norm.weight.float(), norm.bias.float(), norm.eps)
        else:  # residual: mean_t + std_t * a * LN(h), mean_t and std_t the target's running statistics
            std = self.stats[t].run_var.clamp_min(1e-12).sqrt()
            e = self.stats[t].run_mean + self.anchor[t] + std * self.gain[key] * layer_norm0(x)
        return self.proj[t](e), e

    def encode(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
        need_placeholder: torch.Tensor | None = None,
    ) -> Features:
        """Run each encoder on the samples that have its modality: CLS and MT outputs, projected.

        The outputs of a modality do not depend on which other modalities a sample has, so one
        ``encode`` serves every missing-modality scenario (see :meth:`select`)."""
        present = self.check_present(present, ids)
        b = present.shape[0]
        dev = self.head.weight.device
        dtype = self.head.weight.dtype
        mtoks = self.has_mask_tokens
        cls_out: dict[str, torch.Tensor] = {}
        cls_native: dict[str, torch.Tensor] = {}
        est_out: dict[Pair, torch.Tensor] = {}
        pred_out: dict[Pair, torch.Tensor] = {}
        raw_out: dict[Pair, torch.Tensor] = {}
        proj_out: dict[Pair, torch.Tensor] = {}
        placeholder_cls: dict[str, torch.Tensor] = {}
        keep_raw = self.settings.output == "linear"
        keep_proj = self.settings.source_align > 0 and self.settings.output != "source"

        def scatter(rows: torch.Tensor, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(b, values.shape[-1], device=dev, dtype=dtype)
            # rows encoded but not present (encode_all) are not real features: zero them
            return full.index_put((rows,), values.to(dtype)) * keep

        for i, m in enumerate(self.modalities):
            x = inputs.get(m)
            has = present[:, i]
            keep = has.unsqueeze(1).to(dtype)
            # the ablation fills a missing slot with its placeholder's CLS feature
            want_placeholder = not mtoks and (need_placeholder is None or bool(need_placeholder[:, i].any()))
            if x is None or (not has.any() and not encode_all):
                if has.any():
                    raise ModelError(f"modality {m!r}: {int(has.sum())} samples have it but no inputs were given")
            else:
                sub, rows = self.rows_to_encode(m, x, has, encode_all)
                back = self.mask_tokens[m] if mtoks else None
                # the placeholder rides as one more row of the batch (one pass, not two)
                with_row = self._with_placeholder_row(m, sub) if want_placeholder else None
                if with_row is not None:
                    sub = with_row
                c, mt = self.run_encoder(m, sub, self.cls_tokens[m].unsqueeze(0), back,
                                         private=self.settings.one_way_attention)
                c = c[:, 0]
                if with_row is not None:
                    placeholder_cls[m] = self._placeholder_feature(m, c[-1:])
                    c = c[:-1]
                cls_out[m] = scatter(rows, self.proj[m](c), keep)
                cls_native[m] = scatter(rows, c, keep)
                if mt is not None:
                    for j, t in enumerate(self.targets_of(m)):
                        e, p = self._estimate(m, t, mt[:, j])
                        est_out[(m, t)] = scatter(rows, e, keep)
                        pred_out[(m, t)] = scatter(rows, p, keep)
                        if keep_raw:
                            raw_out[(m, t)] = scatter(rows, mt[:, j].detach(), keep)
                        if keep_proj:
                            proj_out[(m, t)] = scatter(rows, self.proj[m](mt[:, j]), keep)
            if m not in cls_out:
                cls_out[m] = torch.zeros(b, self.dim, device=dev, dtype=dtype)
                cls_native[m] = torch.zeros(b, self.widths[m], device=dev, dtype=dtype)
            if want_placeholder and m not in placeholder_cls:
                placeholder_cls[m] = self._placeholder_cls(m, x)  # nothing of m encoded: a pass of its own
        source_space = self.settings.output == "source"
        align_target = cls_out if source_space else cls_native
        return Features(present=present, cls=cls_out, mt=est_out, align_target=dict(align_target),
                        align_pred=pred_out, placeholder_cls=placeholder_cls, mt_source=raw_out,
                        mt_projected=proj_out)

    def constant_fill(self, t: str) -> torch.Tensor:
        """c_t (1, D): the fill of a missing modality t when its estimate is not trusted (gate 0):
        the estimate with its map switched off - the target's running mean, plus the learned
        anchor of the ``residual``/``linear`` outputs - in the common space."""
        st = self.stats[t]
        c = st.run_mean + self.anchor[t] if t in self.anchor else st.run_mean
        if self.settings.output != "source":
            c = self.proj[t](c)
        return c.to(self.head.weight.dtype).unsqueeze(0)

    def gate_values(self, gates: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor | None:
        """The gate g_t of every modality (M,) that :meth:`select` applies: ``gates`` when given,
        else the learned ones (``gate: learned``), the ones chosen on validation (``gate:
        validation``, outside training; in training the estimate is used as it is) or None (no gate)."""
        if gates is not None:
            return torch.as_tensor(gates, dtype=torch.float32, device=self.head.weight.device)
        if self.gate_mode == "learned":
            return torch.sigmoid(self.gate_logits.float())
        if self.gate_mode == "validation" and not self.training:
            return self.gates.float()
        return None

    def select(self, feats: Features, available: torch.Tensor,
               gates: torch.Tensor | Sequence[float] | None = None) -> U2AOutput:
        """Token selection (eq. 4), sum fusion and the head (eq. 5) for one availability pattern.

        ``available`` (B, M) must be a subset of ``feats.present``. ``gates`` (M,): the trust in
        each modality's estimate (the slot of a missing t is ``c_t + g_t (estimate - c_t)``,
        :meth:`constant_fill`); default :meth:`gate_values`."""
        available = self.check_available(feats, available)
        mods = self.modalities
        estimates = g = constants = placeholders = None
        if self.has_mask_tokens:
            estimates = {}
            for (s, t), e in feats.mt.items():
                if self.settings.detach_estimate and self.training:
                    e = e.detach()  # the estimator learns from the alignment loss only
                estimates[(mods.index(s), mods.index(t))] = e
            g = self.gate_values(gates)
            if g is not None:
                constants = [self.constant_fill(t) for t in mods]
        else:
            placeholders = [feats.placeholder_cls.get(t) for t in mods]
        fused = fuse_slots(available, [feats.cls[t] for t in mods], estimates, g, constants, placeholders,
                           getattr(self, "slot_scale", None))
        logits = self.head(fused)
        return U2AOutput(
            logits=logits, available=available, cls=feats.cls, mt=feats.mt, present=feats.present,
            fused=fused, estimated=~available, features=feats,
        )

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        drop: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
        cases: Sequence[tuple[float, torch.Tensor]] | None = None,
    ) -> U2AOutput:
        """Encode, then select for ``present`` minus ``drop``; with ``cases`` (weight, drop mask) or
        (weight, drop mask, gates) tuples instead, select once per case from the same encoder
        outputs (``case_logits``)."""
        present = present.to(torch.bool)
        if cases is not None:
            if drop is not None:
                raise ModelError("forward: give either drop or cases, not both")
            avail = [present & ~c[1].to(torch.bool) for c in cases]
            need = torch.stack([~a for a in avail]).any(dim=0)
            feats = self.encode(inputs, present, ids=ids, encode_all=encode_all, need_placeholder=need)
            outs = [self.select(feats, a, gates=c[2] if len(c) > 2 else None) for c, a in zip(cases, avail)]
            first = outs[0]
            first.case_logits = [(c[0], o.logits) for c, o in zip(cases, outs)]
            return first
        available = present & ~drop.to(torch.bool) if drop is not None else present
        feats = self.encode(inputs, present, ids=ids, encode_all=encode_all, need_placeholder=~available)
        return self.select(feats, available)

    def _with_placeholder_row(self, m: str, sub: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """``sub`` with the placeholder input of modality m appended as its last row (``None`` where
        the placeholder does not have the batch's input fields: then it gets a pass of its own)."""
        ph = self.encoders[m].placeholder_inputs(1, like=sub)
        if set(ph) != set(sub) or any(ph[k].shape[1:] != v.shape[1:] for k, v in sub.items()):
            return None
        return {k: torch.cat([v, ph[k].to(device=v.device, dtype=v.dtype)], dim=0) for k, v in sub.items()}

    def _placeholder_cls(self, m: str, like: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """CLS output of the placeholder input (ablation without mask tokens)."""
        enc = self.encoders[m]
        ph = enc.placeholder_inputs(1, like=like)
        dev = self.head.weight.device
        ph = {k: v.to(dev) for k, v in ph.items()}
        c, _ = self.run_encoder(m, ph, self.cls_tokens[m].unsqueeze(0))
        return self._placeholder_feature(m, c[:, 0])

    def _placeholder_feature(self, m: str, cls: torch.Tensor) -> torch.Tensor:
        """The slot feature of modality m's placeholder from its encoder's CLS output (1, width)."""
        return self.proj[m](cls).to(self.head.weight.dtype)

    # ---- the gate, chosen on validation (gate: validation) ---------------------------------
    def calibration_scenarios(self) -> dict[str, tuple[Any, dict[str, Any]]]:
        """Extra validation scenarios from which :meth:`calibrate` chooses the gates: for every
        non-empty proper subset K of the modalities, K alone with every gate 0, and with each
        missing modality's gate 1 in turn (logits are affine in the gates: these give them all)."""
        if self.gate_mode != "validation":
            return {}
        out: dict[str, tuple[Any, dict[str, Any]]] = {}
        n = len(self.modalities)
        for keep in _proper_subsets(n):
            fn = _keep_only(keep)
            name = " + ".join(self.modalities[j] for j in keep)
            out[f"gate:{name}|0"] = (fn, {"gates": [0.0] * n})
            for t in range(n):
                if t not in keep:
                    out[f"gate:{name}|{self.modalities[t]}"] = (fn, {"gates": [float(i == t) for i in range(n)]})
        return out

    @torch.no_grad()
    def calibrate(self, logits: Mapping[str, torch.Tensor], score: Any) -> dict[str, Any]:
        """Choose the gates (``GATE_GRID`` per modality) with the best mean ``score(logits)`` over
        the subsets of :meth:`calibration_scenarios` (ties: the larger gates), store them, and
        return ``{"gates": {m: g}, "score": best, "logits": {"<K> only": logits at the chosen
        gates}}``."""
        import itertools

        from u2a.methods.u2a.config import GATE_GRID

        n = len(self.modalities)
        subsets = []
        for keep in _proper_subsets(n):
            name = " + ".join(self.modalities[j] for j in keep)
            base = logits[f"gate:{name}|0"].float()
            deltas = {t: logits[f"gate:{name}|{self.modalities[t]}"].float() - base for t in range(n) if t not in keep}
            subsets.append((name, base, deltas))

        def at(g, base, deltas):
            out = base.clone()
            for t, d in deltas.items():
                out += g[t] * d
            return out

        best, best_key, best_g = None, None, None
        for g in itertools.product(GATE_GRID, repeat=n):
            value = sum(float(score(at(g, b, d))) for _, b, d in subsets) / len(subsets)
            key = (round(value, 12), sum(g), g)
            if best_key is None or key > best_key:
                best, best_key, best_g = value, key, g
        self.gates.copy_(torch.tensor(best_g, dtype=self.gates.dtype))
        return {"gates": {m: float(best_g[i]) for i, m in enumerate(self.modalities)}, "score": best,
                "logits": {f"{name} only": at(best_g, b, d) for name, b, d in subsets}}

    # ---- measurements -------------------------------------------------------------------
    @torch.no_grad()
    def estimate_sums(self, feats: Features) -> dict[str, torch.Tensor]:
        """Additive sums (over the samples that have both s and t) from which
        :meth:`estimate_errors` gets, per direction, the estimate's MSE and the MSE of the best
        constant (the mean of CLS(t) over the same samples)."""
        out: dict[str, torch.Tensor] = {}
        for (s, t), pred in feats.align_pred.items():
            si, ti = self.modalities.index(s), self.modalities.index(t)
            rows = feats.present[:, si] & feats.present[:, ti]
            y = feats.align_target[t][rows].double()
            e = pred[rows].double()
            key = f"{s}->{t}"
            out[f"{key}/n"] = torch.tensor(float(rows.sum()), dtype=torch.float64)
            out[f"{key}/sse"] = ((e - y) ** 2).sum()
            out[f"{key}/sum"] = y.sum(0)
            out[f"{key}/sumsq"] = (y ** 2).sum(0)
        return out

    @staticmethod
    def estimate_errors(sums: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float | None]]:
        """Per direction: ``mse`` of the estimate and ``constant_mse`` of the mean (per dimension)."""
        out: dict[str, dict[str, float | None]] = {}
        for key in sorted({k.rsplit("/", 1)[0] for k in sums}):
            n = float(sums[f"{key}/n"])
            if n == 0:
                out[key] = {"mse": None, "constant_mse": None, "n": 0}
                continue
            d = sums[f"{key}/sum"].numel()
            mean = sums[f"{key}/sum"] / n
            var = (sums[f"{key}/sumsq"] / n - mean ** 2).clamp_min(0)
            out[key] = {"mse": float(sums[f"{key}/sse"]) / (n * d), "constant_mse": float(var.mean()), "n": int(n)}
        return out

    def diagnostics(self, feats: Features, labels: torch.Tensor | None, classes: Sequence[str],
                    task: str) -> dict[str, Any]:
        if not feats.align_pred:
            return {}
        return {"estimates": self.estimate_errors(self.estimate_sums(feats))}

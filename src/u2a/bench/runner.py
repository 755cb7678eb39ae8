"""``u2a bench``: the comparisons, measured side by side in one process, as one JSON document.

Each comparison builds its variants (callables doing one training step or one inference pass on
the same batch) and times them interleaved (:func:`u2a.bench.measure.interleave`). A ratio
``"a/b"`` is ``median time of a / median time of b``: above 1, b is faster. See docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from u2a.bench import flops as flops_lib
from u2a.bench.measure import interleave, peak_memory, ratio, saved_for_backward, sync
from u2a.bench.workload import (
    SCENARIOS, build_scenarios, compact_inputs, placeholder_inputs, sequence_tokens, single_sample_patterns,
    synthetic_inputs, to_device,
)
from u2a.allocator import allocator_state
from u2a.errors import ConfigError

COMPARISONS = ("skip_absent", "precision", "attention", "dropout", "compile", "lora", "latency", "flops")
#: what each comparison times (for the table and the JSON)
DESCRIPTIONS = {
    "skip_absent": "the paper's placeholders through every encoder (encode_all) vs running each encoder only on "
                   "the samples that have its modality; logits checked equal",
    "precision": "fp32 vs bf16 autocast (bf16 frozen matrices, fp32 trainable parameters and optimizer state)",
    "attention": "eager attention (matmul + softmax) vs torch's SDPA kernel, in fp32 and in bf16",
    "dropout": "training step with torch's nn.Dropout (a bernoulli_ mask per module, as peft and transformers "
               "build them) vs u2a's FastDropout (16-bit masks applied by one multiply, one mask for q, k, v)",
    "compile": "torch.compile off vs on (compile time reported apart)",
    "lora": "inference: the frozen encoders' own forward (stock transformers, no U2A tokens, no LoRA) vs U2A with "
            "LoRA merged vs unmerged, and (U2A) merged without its mask tokens in the sequences",
    "latency": "per-sample latency (batch 1) with every modality and with each one alone, skip-absent vs "
               "placeholders",
    "flops": "FLOPs counted (FlopCounterMode) and analytic, per scenario and path; matmul peak per dtype",
}


@dataclass
class BenchOptions:
    batch_size: int = 16
    repeats: int = 5
    warmup: int = 2
    device: str = "cpu"
    #: the precision of skip_absent, compile, lora and latency ("fp32" or "bf16")
    precision: str = "fp32"
    #: the attention kernel of everything but the attention comparison ("auto": eager on CPU)
    attention: str = "auto"
    only: list[str] | None = None
    #: tokens per text sample (default: the modality's max_length, else 32)
    text_tokens: int | None = None
    #: the scenario of precision, attention, compile and lora
    scenario: str = "eta0"
    compile_timeout: float = 300.0
    compile_backend: str = "inductor"
    #: side of the square matmul measuring the peak (default: 1024 on CPU, 8192 on CUDA)
    peak_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision: must be fp32 or bf16, got {self.precision!r}")
        if self.batch_size < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("--batch-size and --repeats must be >= 1, --warmup >= 0")
        if self.only:
            bad = [c for c in self.only if c not in COMPARISONS]
            if bad:
                raise ConfigError(f"--only: unknown comparison(s) {bad}; known: {list(COMPARISONS)}")
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"--scenario: must be one of {list(SCENARIOS)}, got {self.scenario!r}")

    @property
    def comparisons(self) -> list[str]:
        return list(self.only) if self.only else list(COMPARISONS)


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`_Timeout` in the main thread after ``seconds`` (SIGALRM; no limit elsewhere)."""
    usable = hasattr(signal, "SIGALRM") and seconds > 0
    try:
        import threading

        usable = usable and threading.current_thread() is threading.main_thread()
    except Exception:  # pragma: no cover
        usable = False
    if not usable:
        yield
        return

    def handler(signum, frame):
        raise _Timeout(f"gave up after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def strip_lora(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of an encoder's transformers model with every LoRA layer replaced by the frozen
    Linear it wraps: the stock model with the same weights."""
    from peft.tuners.lora import LoraLayer

    stock = copy_model(module)
    for name, mod in list(stock.named_modules()):
        if isinstance(mod, LoraLayer):
            replace_submodule(stock, name, mod.get_base_layer())
    return stock


def untrained_lora(model: torch.nn.Module) -> bool:
    """Every LoRA B matrix is zero (peft's start): the LoRA update is zero."""
    from u2a.model.lora import lora_layers

    layers = lora_layers(model)
    return bool(layers) and all(not b.weight.any() for layer in layers for b in layer.lora_B.values())


@torch.no_grad()
def fill_lora_b(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded normal values (``std``) in every LoRA B matrix: a LoRA update that merging must keep."""
    from u2a.model.lora import lora_layers

    gen = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model):
        for b in layer.lora_B.values():
            b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * std)


def replace_submodule(root: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    """Put ``new`` where the dotted ``name`` is in ``root`` (ModuleDict entries included)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def with_torch_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose :class:`~u2a.model.dropout.FastDropout` modules are plain
    ``nn.Dropout`` of the same p again (what peft and transformers put there)."""
    from u2a.model.dropout import FastDropout

    copy_ = copy_model(model)
    for name, mod in list(copy_.named_modules()):
        if isinstance(mod, FastDropout):
            replace_submodule(copy_, name, torch.nn.Dropout(mod.p))
    return copy_


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of a model; the LoRA dropout groups' cached last input (a tensor inside the
    autograd graph, which cannot be deep-copied) is dropped first."""
    for mod in model.modules():
        shared = getattr(mod, "_shared", None)
        if shared is not None and hasattr(shared, "x"):
            shared.x = shared.mask = None
    return copy.deepcopy(model)


class Bench:
    """Runs the comparisons on a built model (its encoders, LoRA and method parts)."""

    def __init__(self, model, opts: BenchOptions, text_tokens: dict[str, int] | None = None,
                 image_sizes: dict[str, int] | None = None, frames: dict[str, int] | None = None,
                 meta: dict[str, Any] | None = None, log: Callable[[str], None] | None = None):
        from u2a.model.runtime import resolve_attention, set_attention

        self.opts = opts
        self.device = torch.device(opts.device)
        self.log = log or (lambda s: None)
        self.model = model.to(self.device)
        self.attention = resolve_attention(opts.attention, self.device)
        set_attention(self.model, self.attention)
        self.modalities = list(model.modalities)
        self.kinds = {m.name: m.kind for m in model.config.modalities}
        self.task = model.config.task
        self.num_classes = model.config.num_classes
        self.meta = dict(meta or {})
        b = opts.batch_size
        self.full = synthetic_inputs(model, b, text_tokens, image_sizes, frames, seed=opts.seed)
        self.full1 = {m: {k: v[:1] for k, v in x.items()} for m, x in self.full.items()}
        self.scenarios = {s.name: s for s in build_scenarios(self.modalities, self.kinds, b, seed=opts.seed)}
        g = torch.Generator().manual_seed(opts.seed)
        if self.task == "multilabel":
            self.labels = (torch.rand(b, self.num_classes, generator=g) < 0.3).float()
        else:
            self.labels = torch.randint(0, self.num_classes, (b,), generator=g)
        self.labels = self.labels.to(self.device)
        self._models: dict[str, Any] = {}
        self._flops: dict[tuple, dict[str, Any]] = {}
        self._peaks: dict[str, dict[str, Any]] = {}
        self.timed: list[dict[str, Any]] = []  # every timed variant with its workload, for utilisation
        self.tokens = {m: sequence_tokens(model, m, to_device(self.full1[m], self.device)) for m in self.modalities}

    # ---- models -----------------------------------------------------------------------
    def model_for(self, dtype: str):
        """The base model (fp32) or its bf16 copy (frozen matrices in bf16, under autocast)."""
        if dtype == "fp32":
            return self.model
        if "bf16" not in self._models:
            from u2a.model.runtime import configure

            m = copy_model(self.model)
            configure(m, self.attention, "bf16", self.device)
            self._models["bf16"] = m
        return self._models["bf16"]

    def _parameter_storages(self) -> set[int]:
        models = [self.model, *self._models.values()]
        return {p.untyped_storage().data_ptr() for m in models for p in m.parameters()}

    # ---- batches ----------------------------------------------------------------------
    def batch(self, scenario: str, path: str, one: bool = False, pattern: torch.Tensor | None = None):
        """(inputs, present, encode_all) of a scenario's batch on the ``skip`` or
        ``placeholder`` path."""
        full = self.full1 if one else self.full
        present = pattern if pattern is not None else self.scenarios[scenario].present
        if path == "skip":
            x = compact_inputs(full, present, self.modalities)
            encode_all = False
        else:
            x = placeholder_inputs(self.model, full, present)
            encode_all = True
        return to_device(x, self.device), present.to(self.device), encode_all

    # ---- steps ------------------------------------------------------------------------
    def loss(self, model, out, labels):
        if getattr(model, "method_name", "") == "u2a":
            from u2a.methods.u2a.losses import u2a_loss

            s = model.settings
            return u2a_loss(out, labels, model.modalities, self.task, model.config.u2a.align_weight,
                            stop_grad_target=s.stop_grad_target)["loss"]
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(out.logits.float(), labels)
        return F.cross_entropy(out.logits.float(), labels)

    def train_step(self, model, batch, dtype: str, attention: str | None = None, call=None):
        """One training step: forward, loss, backward, AdamW on the trainable parameters."""
        from u2a.model.runtime import set_attention

        inputs, present, encode_all = batch
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.02)
        fwd = model if call is None else call
        labels = self.labels[: present.shape[0]]

        def step():
            if attention is not None:
                set_attention(model, attention)
            model.train()
            with autocast(self.device, dtype):
                out = fwd(inputs, present, encode_all=encode_all)
                loss = self.loss(model, out, labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def infer_step(self, model, batch, dtype: str, attention: str | None = None, call=None):
        from u2a.model.runtime import set_attention

        inputs, present, encode_all = batch
        fwd = model if call is None else call

        def step():
            if attention is not None:
                set_attention(model, attention)
            model.eval()
            with torch.no_grad(), autocast(self.device, dtype):
                return fwd(inputs, present, encode_all=encode_all).logits

        return step

    def time_variants(self, comparison: str, variants: dict[str, Callable], items: int | dict[str, int],
                      tags: dict[str, dict[str, Any]] | None = None, memory: bool = True) -> dict[str, Any]:
        """Time the variants interleaved; memory of one extra call each; remember the workloads."""
        o = self.opts
        self.log(f"  {comparison}: {', '.join(variants)}")
        timings = interleave(variants, o.warmup, o.repeats, self.device, items)
        out = {}
        for name, t in timings.items():
            rec = t.as_dict()
            if memory:
                rec["memory"] = peak_memory(variants[name], self.device)
                if tags and tags.get(name, {}).get("mode") == "train":
                    rec["memory"].update(saved_for_backward(variants[name], self._parameter_storages()))
            out[name] = rec
            if tags and name in tags:
                self.timed.append({"comparison": comparison, "variant": name, **tags[name], "median_s": t.median})
        return {"variants": out, "_timings": timings}

    # ---- comparisons ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {"meta": self.describe(), "comparisons": {}}
        for name in self.opts.comparisons:
            self.log(f"{name}: {DESCRIPTIONS[name]}")
            t0 = time.perf_counter()
            try:
                section = getattr(self, f"cmp_{name}")()
            except Exception as e:  # one failing comparison must not lose the others
                section = {"error": f"{type(e).__name__}: {e}"}
            section["description"] = DESCRIPTIONS[name]
            section["wall_s"] = time.perf_counter() - t0
            result["comparisons"][name] = _clean(section)
        result["utilisation"] = self.utilisation()
        result["matmul_peak"] = self._peaks
        return result

    def cmp_skip_absent(self) -> dict[str, Any]:
        dt = self.opts.precision
        model = self.model_for(dt)
        out: dict[str, Any] = {"precision": dt, "ratio": "placeholder/skip", "scenarios": {}}
        for name, sc in self.scenarios.items():
            rec: dict[str, Any] = {"label": sc.label, "present": sc.counts(self.modalities)}
            if sc.note.startswith("skipped"):
                rec["note"] = sc.note
                out["scenarios"][name] = rec
                continue
            if sc.note:
                rec["note"] = sc.note
            rec["logits_check"] = self.equality(name)
            for mode in ("train", "infer"):
                make = self.train_step if mode == "train" else self.infer_step
                variants = {p: make(model, self.batch(name, p), dt) for p in ("placeholder", "skip")}
                tags = {p: {"scenario": name, "path": p, "mode": mode, "dtype": dt} for p in variants}
                res = self.time_variants(f"skip_absent/{name}/{mode}", variants, self.opts.batch_size, tags)
                t = res.pop("_timings")
                res["placeholder/skip"] = ratio(t["placeholder"], t["skip"])
                rec[mode] = res
            f = self.flops_of(name, "placeholder", "train"), self.flops_of(name, "skip", "train")
            rec["flop_bound_train"] = f[0]["counted"] / f[1]["counted"] if f[1]["counted"] else None
            fi = self.flops_of(name, "placeholder", "infer"), self.flops_of(name, "skip", "infer")
            rec["flop_bound_infer"] = fi[0]["counted"] / fi[1]["counted"] if fi[1]["counted"] else None
            out["scenarios"][name] = rec
        return out

    @torch.no_grad()
    def equality(self, scenario: str, atol: float = 1e-5, rtol: float = 1e-5) -> dict[str, Any]:
        """Logits of the skip path against the paper's path, fp32, eval mode."""
        model = self.model
        model.eval()
        a = model(*self.batch(scenario, "skip")[:2]).logits.float()
        x, p, _ = self.batch(scenario, "placeholder")
        b = model(x, p, encode_all=True).logits.float()
        diff = float((a - b).abs().max())
        ok = bool(torch.allclose(a, b, atol=atol, rtol=rtol))
        return {"max_abs_diff": diff, "equal": ok, "tolerance": f"atol {atol:g}, rtol {rtol:g} (fp32)"}

    def cmp_precision(self) -> dict[str, Any]:
        sc = self.opts.scenario
        batch = self.batch(sc, "skip")
        out: dict[str, Any] = {"scenario": sc, "path": "skip", "attention": self.attention, "ratio": "fp32/bf16"}
        for mode in ("train", "infer"):
            make = self.train_step if mode == "train" else self.infer_step
            variants = {dt: make(self.model_for(dt), batch, dt) for dt in ("fp32", "bf16")}
            tags = {dt: {"scenario": sc, "path": "skip", "mode": mode, "dtype": dt} for dt in variants}
            res = self.time_variants(f"precision/{mode}", variants, self.opts.batch_size, tags)
            t = res.pop("_timings")
            res["fp32/bf16"] = ratio(t["fp32"], t["bf16"])
            out[mode] = res
        with torch.no_grad():
            la = self.infer_step(self.model_for("fp32"), batch, "fp32")().float()
            lb = self.infer_step(self.model_for("bf16"), batch, "bf16")().float()
        out["logits_max_abs_diff_bf16_vs_fp32"] = float((la - lb).abs().max())
        out["logits_scale"] = float(la.abs().max())
        return out

    def cmp_attention(self) -> dict[str, Any]:
        from u2a.model.runtime import set_attention

        sc = self.opts.scenario
        batch = self.batch(sc, "skip")
        out: dict[str, Any] = {"scenario": sc, "path": "skip", "ratio": "sdpa/eager"}
        try:
            for dt in ("fp32", "bf16"):
                model = self.model_for(dt)
                rec = {}
                for mode in ("train", "infer"):
                    make = self.train_step if mode == "train" else self.infer_step
                    variants = {a: make(model, batch, dt, attention=a) for a in ("eager", "sdpa")}
                    tags = {a: {"scenario": sc, "path": "skip", "mode": mode, "dtype": dt} for a in variants}
                    res = self.time_variants(f"attention/{dt}/{mode}", variants, self.opts.batch_size, tags)
                    t = res.pop("_timings")
                    res["sdpa/eager"] = ratio(t["sdpa"], t["eager"])
                    rec[mode] = res
                out[dt] = rec
        finally:
            for dt in ("fp32", "bf16"):
                if dt == "fp32" or "bf16" in self._models:
                    set_attention(self.model_for(dt), self.attention)
        return out

    def cmp_dropout(self) -> dict[str, Any]:
        from u2a.model.dropout import FastDropout

        sc = self.opts.scenario
        batch = self.batch(sc, "skip")
        n = sum(isinstance(m, FastDropout) for m in self.model.modules())
        out: dict[str, Any] = {"scenario": sc, "path": "skip", "ratio": "torch/u2a", "modules": n}
        for dt in ("fp32", "bf16"):
            fast = self.model_for(dt)
            plain = with_torch_dropout(fast)
            variants = {"torch": self.train_step(plain, batch, dt), "u2a": self.train_step(fast, batch, dt)}
            tags = {v: {"scenario": sc, "path": "skip", "mode": "train", "dtype": dt} for v in variants}
            res = self.time_variants(f"dropout/{dt}/train", variants, self.opts.batch_size, tags)
            t = res.pop("_timings")
            res["torch/u2a"] = ratio(t["torch"], t["u2a"])
            out[dt] = {"train": res}
            del plain
        return out

    def cmp_compile(self) -> dict[str, Any]:
        sc = self.opts.scenario
        dt = self.opts.precision
        base = self.model_for(dt)
        batch = self.batch(sc, "skip")
        out: dict[str, Any] = {"scenario": sc, "path": "skip", "precision": dt, "backend": self.opts.compile_backend,
                               "time_limit_s": self.opts.compile_timeout, "ratio": "eager/compiled"}
        for mode in ("infer", "train"):
            make = self.train_step if mode == "train" else self.infer_step
            twin = copy_model(base)
            try:
                torch._dynamo.reset()
                compiled = torch.compile(twin, backend=self.opts.compile_backend)
            except Exception as e:
                out[mode] = {"error": f"torch.compile failed: {type(e).__name__}: {e}"}
                continue
            step_c = make(twin, batch, dt, call=compiled)
            step_e = make(base, batch, dt)
            rec: dict[str, Any] = {}
            t0 = time.perf_counter()
            try:
                with time_limit(self.opts.compile_timeout):
                    step_c()
                    sync(self.device)
            except _Timeout as e:
                rec["error"] = f"compile {e}"
            except Exception as e:
                msg = str(e).strip().splitlines()
                rec["error"] = f"compile failed: {type(e).__name__}: {msg[0] if msg else ''}"[:2000]
            first = time.perf_counter() - t0
            rec["first_call_s"] = first
            if "error" in rec:
                out[mode] = rec
                continue
            step_e()
            t1 = time.perf_counter()
            step_e()
            sync(self.device)
            rec["compile_s"] = max(first - (time.perf_counter() - t1), 0.0)
            variants = {"eager": step_e, "compiled": step_c}
            tags = {"eager": {"scenario": sc, "path": "skip", "mode": mode, "dtype": dt},
                    "compiled": {"scenario": sc, "path": "skip", "mode": mode, "dtype": dt}}
            res = self.time_variants(f"compile/{mode}", variants, self.opts.batch_size, tags)
            t = res.pop("_timings")
            res["eager/compiled"] = ratio(t["eager"], t["compiled"])
            rec.update(res)
            if mode == "infer":
                with torch.no_grad():
                    rec["logits_max_abs_diff"] = float((step_c().float() - step_e().float()).abs().max())
            out[mode] = rec
        torch._dynamo.reset()
        return out

    def cmp_lora(self) -> dict[str, Any]:
        sc = self.opts.scenario
        dt = self.opts.precision
        base = self.model_for(dt)
        if untrained_lora(base):  # B = 0: merging would change nothing, and the logit check below nothing
            base = copy_model(base)
            fill_lora_b(base, self.opts.seed)
        inputs, present, _ = batch = self.batch(sc, "skip")
        merged = copy_model(base)
        merged.merge_lora()
        stock = {m: strip_lora(base.encoders[m].model).eval() for m in self.modalities if m in inputs}
        errors: dict[str, str] = {}

        def stock_forward():
            with torch.no_grad(), autocast(self.device, dt):
                for m, enc in stock.items():
                    x = dict(inputs[m])
                    if "pixel_values" in x and _takes(enc, "interpolate_pos_encoding"):
                        x["interpolate_pos_encoding"] = True
                    try:
                        enc(**x)
                    except Exception as e:  # pragma: no cover - a family whose stock forward needs more
                        errors.setdefault(m, f"{type(e).__name__}: {e}")

        stock_forward()
        variants = {"stock": stock_forward, "merged": self.infer_step(merged, batch, dt),
                    "unmerged": self.infer_step(base, batch, dt)}
        if getattr(merged, "has_mask_tokens", False):
            def without_mask_tokens():
                """The merged model's encoders on their tokens and U2A's CLS token only (no mask
                token), projections and head: what the mask tokens cost, measured."""
                merged.eval()
                with torch.no_grad(), autocast(self.device, dt):
                    fused = 0
                    for m in self.modalities:
                        if m in inputs:
                            c, _ = merged.run_encoder(m, inputs[m], merged.cls_tokens[m].unsqueeze(0))
                            fused = fused + merged.proj[m](c[:, 0])
                    return merged.head(fused)

            variants["merged_no_mask_tokens"] = without_mask_tokens
        tags = {"unmerged": {"scenario": sc, "path": "skip", "mode": "infer", "dtype": dt}}
        res = self.time_variants("lora/infer", variants, self.opts.batch_size, tags)
        t = res.pop("_timings")
        with torch.no_grad():
            d = (variants["merged"]().float() - variants["unmerged"]().float()).abs().max()
        out = {"scenario": sc, "precision": dt, "present": self.scenarios[sc].counts(self.modalities), "infer": res,
               "merged/stock": ratio(t["merged"], t["stock"]), "unmerged/merged": ratio(t["unmerged"], t["merged"]),
               "unmerged/stock": ratio(t["unmerged"], t["stock"]),
               "logits_max_abs_diff_merged_vs_unmerged": float(d),
               "stock_tokens_note": "the stock forward runs each encoder on its own tokens (its own CLS); U2A runs "
                                    "the same tokens with its CLS token and its mask tokens (one per other modality)"}
        if "merged_no_mask_tokens" in t:
            out["merged/merged_no_mask_tokens"] = ratio(t["merged"], t["merged_no_mask_tokens"])
            out["merged_no_mask_tokens/stock"] = ratio(t["merged_no_mask_tokens"], t["stock"])
        if errors:
            out["stock_errors"] = errors
        return out

    def cmp_latency(self) -> dict[str, Any]:
        dt = self.opts.precision
        model = self.model_for(dt)
        patterns = single_sample_patterns(list(self.modalities))
        variants, tags = {}, {}
        for pname, p in patterns.items():
            for path in ("skip", "placeholder"):
                variants[f"{pname}/{path}"] = self.infer_step(model, self.batch("eta0", path, one=True, pattern=p), dt)
        res = self.time_variants("latency", variants, 1, tags)
        t = res.pop("_timings")
        out: dict[str, Any] = {"precision": dt, "batch": 1, **res, "ratio": "placeholder/skip"}
        for pname in patterns:
            out[f"{pname}: placeholder/skip"] = ratio(t[f"{pname}/placeholder"], t[f"{pname}/skip"])
        return out

    def cmp_flops(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": "counted: torch.utils.flop_counter.FlopCounterMode (matmuls and "
                                         "convolutions, 2 per multiply-add, forward and backward); analytic: "
                                         "u2a.bench.flops (docs/benchmarks.md)", "scenarios": {}}
        for name, sc in self.scenarios.items():
            if sc.note.startswith("skipped"):
                continue
            rec = {}
            for path in ("skip", "placeholder"):
                for mode in ("infer", "train"):
                    rec[f"{path}/{mode}"] = self.flops_of(name, path, mode)
            rec["useful_flops_train"] = rec["skip/train"]["counted"]
            rec["useful_flops_infer"] = rec["skip/infer"]["counted"]
            out["scenarios"][name] = rec
        for dt in ("fp32", "bf16"):
            self.peak(dt)
        out["matmul_peak"] = self._peaks
        return out

    # ---- FLOPs and utilisation --------------------------------------------------------------
    def flops_of(self, scenario: str, path: str, mode: str) -> dict[str, Any]:
        key = (scenario, path, mode)
        if key in self._flops:
            return self._flops[key]
        model = self.model
        batch = self.batch(scenario, path)
        step = self.train_step(model, batch, "fp32") if mode == "train" else self.infer_step(model, batch, "fp32")
        counted, by_op = flops_lib.count_flops(step)
        rec: dict[str, Any] = {"counted": counted, "by_op": by_op}
        if getattr(model, "method_name", "") == "u2a":
            inputs, present, encode_all = batch
            encoded = {}
            for i, m in enumerate(self.modalities):
                n = int(present.shape[0]) if encode_all else int(present[:, i].sum())
                tokens, frames = self.tokens[m]
                encoded[m] = (n, inputs.get(m), tokens, frames)
            an = flops_lib.analytic_flops(model, {"batch": int(present.shape[0]), "encoded": encoded},
                                          training=(mode == "train"))
            rec["analytic"] = an["total"]
            rec["analytic_parts"] = an
            rec["analytic/counted"] = an["total"] / counted if counted else None
        else:
            rec["analytic"] = None
            rec["note"] = "analytic count written for U2A models only"
        self._flops[key] = rec
        return rec

    def peak(self, dtype: str) -> dict[str, Any]:
        if dtype not in self._peaks:
            tdt = torch.bfloat16 if dtype == "bf16" else torch.float32
            n = self.opts.peak_size or (8192 if self.device.type == "cuda" else 1024)
            self._peaks[dtype] = flops_lib.matmul_peak(tdt, self.device, n=n)
        return self._peaks[dtype]

    def utilisation(self) -> list[dict[str, Any]]:
        """Useful FLOPs (the skip path's count: the modalities actually present) per second of
        every timed variant whose workload is known, over the matmul peak of its dtype."""
        rows = []
        for rec in self.timed:
            try:
                useful = self.flops_of(rec["scenario"], "skip", rec["mode"])["counted"]
                executed = self.flops_of(rec["scenario"], rec["path"], rec["mode"])["counted"]
            except Exception as e:  # pragma: no cover
                rows.append({**rec, "error": str(e)})
                continue
            peak = self.peak(rec["dtype"])["gflops"] * 1e9
            rate = useful / rec["median_s"] if rec["median_s"] > 0 else float("nan")
            rows.append({**rec, "useful_flops": useful, "executed_flops": executed,
                         "useful_gflops_per_s": rate / 1e9, "peak_gflops": peak / 1e9,
                         "utilisation": rate / peak if peak > 0 else None})
        return rows

    def describe(self) -> dict[str, Any]:
        o = self.opts
        model = self.model
        total, learnable = model.count_parameters()
        info = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "allocator": allocator_state(),
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "device": str(self.device),
            "gpu": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            "options": asdict(o),
            "attention": self.attention,
            "method": getattr(model, "method_name", ""),
            "parameters": {"total": total, "learnable": learnable},
            "modalities": {m: {"family": model.encoders[m].family, "layers": model.encoders[m].num_layers,
                               "width": model.encoders[m].hidden_size,
                               "inputs": {k: list(v.shape[1:]) for k, v in self.full[m].items()},
                               "tokens_per_sequence": self.tokens[m][0]} for m in self.modalities},
            "scenarios": {n: {"label": s.label, "present": s.counts(self.modalities), "note": s.note}
                          for n, s in self.scenarios.items()},
        }
        info.update(self.meta)
        return info


def _takes(module, kw: str) -> bool:
    import inspect

    try:
        return kw in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _clean(value: Any) -> Any:
    """Drop private keys (``_timings``) and make the document JSON-safe."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value

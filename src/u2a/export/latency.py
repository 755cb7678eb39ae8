"""``u2a bench --export DIR``: per-sample latency (batch 1) of an exported model with onnxruntime on
the CPU, with every modality and with each one alone, next to the same model in PyTorch (rebuilt
from the export's merged weights, eager attention, fp32), interleaved round-robin in one process."""

from __future__ import annotations

from typing import Any, Callable

import torch


def export_latency(directory, repeats: int = 20, warmup: int = 3, seed: int = 0, text_tokens: int | None = None,
                   threads: int | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    import datetime

    from u2a.bench.measure import interleave, ratio
    from u2a.bench.workload import compact_inputs, single_sample_patterns, synthetic_inputs
    from u2a.export.exporter import load_manifest, torch_model_from_export
    from u2a.export.runtime import ExportedModel
    from u2a.model.runtime import set_attention

    log = log or (lambda s: None)
    manifest = load_manifest(directory)
    threads = threads or torch.get_num_threads()
    log(f"loading {directory} (onnxruntime, {threads} threads) and its PyTorch twin")
    ort_model = ExportedModel(directory, threads=threads)
    model = torch_model_from_export(directory)
    set_attention(model, "eager")
    mods = {mc.name: mc for mc in model.config.modalities}
    tokens = {m: int(text_tokens or mods[m].max_length or 32) for m in model.modalities
              if model.encoders[m].kind == "text"}
    sizes = {m: mods[m].image_size for m in model.modalities if mods[m].image_size}
    full = synthetic_inputs(model, 1, tokens, sizes, seed=seed)
    patterns = single_sample_patterns(list(model.modalities))
    variants, checks = {}, {}
    for name, present in patterns.items():
        x = compact_inputs(full, present, model.modalities)
        xn = {m: {k: v.numpy() for k, v in d.items() if k in ort_model.input_names(m)} for m, d in x.items()}
        pn = present.numpy()

        def run_ort(xn=xn, pn=pn):
            return ort_model.run(xn, pn)

        def run_torch(x=x, present=present):
            with torch.no_grad():
                return model(x, present).logits

        variants[f"{name}/onnxruntime"] = run_ort
        variants[f"{name}/pytorch"] = run_torch
        checks[name] = float(abs(run_ort() - run_torch().numpy()).max())
        ran_absent = [m for m in ort_model.last_encoders_run if not present[0, model.modalities.index(m)]]
        if ran_absent:  # pragma: no cover - the runtime skips them by construction
            raise RuntimeError(f"the encoders of absent modalities {ran_absent} ran")
    log(f"timing {len(variants)} variants, {repeats} rounds after {warmup} warm-up")
    timings = interleave(variants, warmup, repeats, "cpu", 1)
    out: dict[str, Any] = {
        "meta": {"export": str(directory), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "threads": threads, "torch": torch.__version__, "repeats": repeats, "warmup": warmup,
                 "text_tokens": tokens, "image_sizes": sizes, "source": manifest.get("source")},
        "variants": {k: t.as_dict() for k, t in timings.items()},
        "max_abs_diff_onnxruntime_vs_pytorch": checks,
    }
    for name in patterns:
        out[f"{name}: pytorch/onnxruntime"] = ratio(timings[f"{name}/pytorch"], timings[f"{name}/onnxruntime"])
    try:
        import onnxruntime

        out["meta"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def render_latency(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"exported model {meta['export']}: per-sample latency, batch 1, {meta['threads']} threads, "
             f"median of {meta['repeats']} rounds (interleaved)", "",
             "| modalities | runtime | median ms | min ms |", "|---|---|---:|---:|"]
    for name, v in result["variants"].items():
        pattern, runtime = name.split("/")
        lines.append(f"| {pattern} | {runtime} | {1000 * v['median_s']:.2f} | {1000 * v['min_s']:.2f} |")
    lines.append("")
    for k, v in result.items():
        if k.endswith("pytorch/onnxruntime") and v is not None:
            lines.append(f"{k} {v:.2f}x")
    lines.append("max |logit diff| onnxruntime vs PyTorch: " + ", ".join(
        f"{k} {v:.2g}" for k, v in result["max_abs_diff_onnxruntime_vs_pytorch"].items()))
    return "\n".join(lines)

"""``u2a export RUN --out DIR``: a trained U2A model as ONNX graphs plus merged weights.

What DIR holds (docs/export.md):

- ``manifest.json`` - the graphs, their inputs and outputs, the preprocessing of each modality,
  the classes, and the check of every graph against PyTorch made at export time;
- ``encoder_<m>.onnx`` per modality and ``head.onnx`` (see :mod:`u2a.export.graphs`);
- ``weights/<m>/`` - each encoder in its own Hugging Face format (``config.json`` +
  ``model.safetensors``, loadable with ``transformers``) with the LoRA update merged into its
  weights, and ``weights/u2a.safetensors`` - U2A's own parts (CLS and mask tokens, projections,
  estimator maps and statistics, head). Together they are the model without peft;
- ``preprocess/<m>/`` - the encoder's tokenizer / image processor / feature extractor, where the
  encoder folder has one;
- ``model_config.json`` - the saved model's config.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch

from u2a.errors import ModelError
from u2a.io import atomic_dir, atomic_write_json

FORMAT = "u2a-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def model_folder(run: str | Path) -> Path:
    """A saved model folder: RUN itself, or RUN/best of a run folder."""
    from u2a.methods.base import CONFIG_NAME

    run = Path(run)
    for cand in (run, run / "best"):
        if (cand / CONFIG_NAME).is_file():
            return cand
    raise ModelError(f"{run}: neither a run folder with best/ nor a saved model ({CONFIG_NAME} missing)")


def check_exportable(model) -> None:
    method = getattr(model, "method_name", "")
    if method != "u2a":
        raise ModelError(f"u2a export supports U2A models only; exporting {method or type(model).__name__} models "
                         "is not supported yet")
    whisper = [m for m in model.modalities if model.encoders[m].family == "whisper"]
    if whisper:
        # its clips are padded to the longest of the batch, so the graph would need a dynamic number
        # of mel frames, which the adapter's embedding fixes when traced
        raise ModelError(f"modalities {whisper}: exporting Whisper encoders (variable-length audio) is not "
                         "supported yet")


def input_names_of(model, m: str) -> list[str]:
    enc = model.encoders[m]
    if enc.kind == "text":
        return ["input_ids", "attention_mask"]
    return list(enc.placeholder_inputs(1).keys())


def example_inputs(model, n: int = 2, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs to trace with: the config's sizes (text: max_length tokens, the second row padded)."""
    from u2a.bench.workload import synthetic_inputs

    mods = {mc.name: mc for mc in model.config.modalities}
    text = {m: int(mods[m].max_length or 16) for m in model.modalities if model.encoders[m].kind == "text"}
    sizes = {m: mods[m].image_size for m in model.modalities if mods[m].image_size}
    frames = {m: mods[m].frames for m in model.modalities if mods[m].kind == "video"}
    x = synthetic_inputs(model, n, text, sizes, frames, seed=seed)
    for m in text:
        if n > 1 and text[m] > 3:
            x[m]["attention_mask"][1, text[m] // 2:] = 0
            pad = getattr(model.encoders[m], "pad_token_id", 0) or 0
            x[m]["input_ids"][1, text[m] // 2:] = pad
    return {m: {k: v for k, v in x[m].items() if k in input_names_of(model, m)} for m in model.modalities}


def _onnx_export(module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                 dynamic_shapes, log: Callable[[str], None]) -> None:
    import logging
    import warnings

    buf = io.StringIO()
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            # the exporter's own deprecation and axis-renaming notices say nothing about the graph
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                              dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False)
    except ImportError as e:
        raise ModelError(f"ONNX export needs onnx and onnxscript: pip install 'u2a[export]' ({e})") from e
    except Exception as e:
        tail = "\n".join(buf.getvalue().strip().splitlines()[-5:])
        raise ModelError(f"ONNX export of {path.name} failed: {type(e).__name__}: {str(e)[:2000]}\n{tail}") from e
    finally:
        quiet.setLevel(level)


def _io_of(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names = {v: k for k, v in onnx.TensorProto.DataType.items()}

    def describe(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
        return {"name": v.name, "dtype": names.get(t.elem_type, str(t.elem_type)).lower(), "shape": dims}

    return {"inputs": [describe(v) for v in proto.graph.input], "outputs": [describe(v) for v in proto.graph.output]}


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _max_diff(ort_out, torch_out) -> float:
    import numpy as np

    return max(float(np.abs(a - b.detach().float().numpy()).max()) if a.size else 0.0
               for a, b in zip(ort_out, torch_out))


def write_weights(model, out: Path) -> dict[str, Any]:
    """Merged encoders in their own format, and U2A's own parts. ``model``'s LoRA must be merged."""
    from safetensors.torch import save_file

    from u2a.bench.runner import strip_lora

    info: dict[str, Any] = {"encoders": {}, "u2a": "weights/u2a.safetensors"}
    for m in model.modalities:
        stock = strip_lora(model.encoders[m].model)
        folder = out / "weights" / m
        stock.save_pretrained(str(folder))
        info["encoders"][m] = {"folder": f"weights/{m}", "class": type(stock).__name__,
                               "family": model.encoders[m].family, "lora": "merged into the weights"}
    own = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("encoders.")}
    save_file(own, str(out / "weights" / "u2a.safetensors"), metadata={"format": "pt"})
    return info


def write_preprocessing(model, out: Path) -> dict[str, Any]:
    """Each modality's processor (from its encoder folder) saved under preprocess/<m>."""
    from u2a.data.processing import build_processor

    info: dict[str, Any] = {}
    for mc in model.config.modalities:
        rec: dict[str, Any] = {"kind": mc.kind, "max_length": mc.max_length, "image_size": mc.image_size,
                               "frames": mc.frames if mc.kind == "video" else None, "encoder": mc.encoder}
        try:
            proc = build_processor(mc)
        except Exception as e:  # a random-init or hand-made encoder without a processor
            rec.update(available=False, reason=f"{type(e).__name__}: {str(e)[:300]}")
            info[mc.name] = rec
            continue
        inner = getattr(proc, "tokenizer", None) or getattr(proc, "processor", None) or getattr(proc, "extractor", None)
        folder = out / "preprocess" / mc.name
        inner.save_pretrained(str(folder))
        rec.update(available=True, folder=f"preprocess/{mc.name}", processor=type(proc).__name__,
                   hf_class=type(inner).__name__)
        if mc.kind == "text":
            rec["max_length"] = proc.max_length
        info[mc.name] = rec
    return info


def export_model(source, out: str | Path, log: Callable[[str], None] | None = None,
                 check: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Export a saved U2A model (a folder, a run folder, or a loaded model) to ``out``; returns
    the manifest."""
    from u2a.methods.base import load_model
    from u2a.model.runtime import set_attention

    log = log or (lambda s: None)
    out = Path(out)
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError as e:
            raise ModelError(f"u2a export needs onnx and onnxscript: pip install 'u2a[export]' ({e})") from e
    if isinstance(source, (str, Path)):
        folder = model_folder(source)
        log(f"loading {folder}")
        model = load_model(folder)
        src = str(folder)
    else:
        check_exportable(source)
        from u2a.bench.runner import copy_model

        # a copy: merging and unmerging LoRA in place would round the caller's frozen weights
        model, src = copy_model(source), "(in-memory model)"
    check_exportable(model)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out} is a file, not a folder: give --out the folder to export into")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ModelError(f"{out} exists and is not empty (use --overwrite)")
    model = model.float().eval()
    set_attention(model, "eager")
    model.merge_lora()
    # built under a temporary name and renamed when complete: a failed export leaves nothing behind
    with atomic_dir(out) as tmp:
        manifest = _export(model, tmp, src, log, check)
    log(f"wrote {out}")
    return manifest


def _export(model, out: Path, src: str, log: Callable[[str], None], check: bool) -> dict[str, Any]:
    from torch.export import Dim

    from u2a.export.graphs import HeadGraph, encoder_graph, exportable_masks

    log("writing merged weights")
    weights = write_weights(model, out)
    preprocessing = write_preprocessing(model, out)
    atomic_write_json(out / "model_config.json", {"method": "u2a", "model": model.config.to_dict()})

    examples = example_inputs(model, 2)
    batch = Dim("batch", min=1)
    graphs: dict[str, Any] = {"encoders": {}}
    checks: dict[str, float] = {}
    for m in model.modalities:
        names = input_names_of(model, m)
        g = encoder_graph(model, m, names)
        args = tuple(examples[m][k] for k in names)
        shapes: dict[str, dict[int, Any]] = {f"x{i}": {0: batch} for i in range(len(names))}
        if model.encoders[m].kind == "text":
            max_pos = int(getattr(model.encoders[m].config, "max_position_embeddings", 512))
            seq = Dim(f"seq_{m}", min=2, max=max_pos)
            for i in range(len(names)):
                shapes[f"x{i}"][1] = seq
        path = out / f"encoder_{m}.onnx"
        log(f"exporting {path.name} ({model.encoders[m].family}, inputs {names})")
        with torch.no_grad(), exportable_masks():
            _onnx_export(g, args, path, names, g.output_names(), shapes, log)
        graphs["encoders"][m] = {"file": path.name, "family": model.encoders[m].family,
                                 "kind": model.encoders[m].kind, **_io_of(path)}
        if check:
            with torch.no_grad():
                ref = g(*args)
            checks[path.name] = _check(path, names, args, ref)

    head = HeadGraph(model).eval()
    hnames = head.input_names()
    n_mod = len(model.modalities)
    # example availability: every modality, then each one alone
    avail = torch.cat([torch.ones(1, n_mod), torch.eye(n_mod)])
    g = torch.Generator().manual_seed(0)
    hargs = (avail,) + tuple(torch.randn(avail.shape[0], model.dim, generator=g) for _ in hnames[1:])
    hshapes = {"available": {0: batch}, "features": tuple({0: batch} for _ in hnames[1:])}
    path = out / "head.onnx"
    log(f"exporting {path.name}")
    with torch.no_grad():
        _onnx_export(head, hargs, path, hnames, ["logits"], hshapes, log)
    graphs["head"] = {"file": path.name, **_io_of(path)}
    if check:
        with torch.no_grad():
            checks[path.name] = _check(path, hnames, hargs, (head(*hargs),))

    s = model.settings
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": src,
        "method": "u2a",
        "modalities": [{"name": m, "kind": model.encoders[m].kind, "family": model.encoders[m].family}
                       for m in model.modalities],
        "task": model.config.task,
        "classes": list(model.config.classes or [str(i) for i in range(model.config.num_classes)]),
        "dim": model.dim,
        "mask_tokens": bool(model.has_mask_tokens),
        "estimator": {"output": s.output, "one_way_attention": s.one_way_attention},
        "graphs": graphs,
        "head_rule": "slot t = cls_<t> if available[t] else mean over available s of est_<s>_to_<t> "
                     "(no mask tokens: the placeholder's CLS feature); logits = head(sum of slots)",
        "preprocessing": preprocessing,
        "weights": weights,
        "dtype": "float32",
        "attention": "eager (exported as plain matmul + softmax)",
        "torch": torch.__version__,
        "check": {"max_abs_diff_vs_pytorch": checks, "note": "onnxruntime vs the PyTorch modules on the example "
                  "inputs at export time"} if check else None,
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _check(path: Path, names: list[str], args: tuple, ref: tuple) -> float | None:
    try:
        sess = _ort_session(path)
    except ImportError:
        return None
    got = sess.run(None, {n: a.numpy() for n, a in zip(names, args)})
    return _max_diff(got, ref)


def load_manifest(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / MANIFEST
    if not p.is_file():
        raise ModelError(f"{directory}: not a u2a export ({MANIFEST} missing)")
    data = json.loads(p.read_text())
    if data.get("format") != FORMAT:
        raise ModelError(f"{p}: not a u2a export manifest")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(f"{p}: format version {data.get('format_version')} is newer than this u2a reads")
    return data


def torch_model_from_export(directory: str | Path):
    """The PyTorch model an export describes, rebuilt from the export alone: each encoder from its
    merged Hugging Face folder (``weights/<m>``), U2A's own parts from ``weights/u2a.safetensors``.
    LoRA is injected as usual (its B matrices start at zero) and merged, so it adds nothing."""
    from safetensors.torch import load_file

    from u2a.config import ModelConfig
    from u2a.methods.u2a.model import U2AModel

    directory = Path(directory)
    manifest = load_manifest(directory)
    data = json.loads((directory / "model_config.json").read_text())
    cfg = ModelConfig.from_dict(data["model"])
    for mc in cfg.modalities:
        mc.encoder = str(directory / manifest["weights"]["encoders"][mc.name]["folder"])
        mc.pretrained = True
    model = U2AModel.from_config(cfg)
    own = load_file(str(directory / manifest["weights"]["u2a"]))
    result = model.load_state_dict(own, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("encoders.")]
    if missing or result.unexpected_keys:
        raise ModelError(f"{directory}: weights/u2a.safetensors does not fit the model: missing {missing[:5]}, "
                         f"unexpected {list(result.unexpected_keys)[:5]}")
    model.eval()
    model.merge_lora()
    return model

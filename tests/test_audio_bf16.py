"""Audio is first-class under bf16: a Whisper encoder trains and evaluates with
``train.mixed_precision: bf16`` for every method, through U2A's statistics pass (which runs the
collator inside the trainer's autocast region: Whisper's feature extractor then returned bf16
and every clip failed with 'Got unsupported ScalarType BFloat16')."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _tiny import save_tiny


def _audio_image_data(tmp: Path, sizes=(("train", 12), ("val", 6), ("test", 6))) -> Path:
    import soundfile as sf
    from PIL import Image

    data = tmp / "data"
    (data / "clips").mkdir(parents=True)
    (data / "images").mkdir()
    rng = np.random.default_rng(0)
    labels = ["low", "high"]
    for split, n in sizes:
        lines = []
        for i in range(n):
            sid = f"{split}{i}"
            y = i % 2
            t = np.arange(int(16000 * rng.uniform(0.3, 0.8))) / 16000
            wav = 0.3 * np.sin(2 * np.pi * (300 if y == 0 else 1200) * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(data / "clips" / f"{sid}.wav", wav.astype(np.float32), 16000)
            px = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            px[..., y] = 255
            Image.fromarray(px).save(data / "images" / f"{sid}.png")
            lines.append(json.dumps({"id": sid, "label": labels[y], "image": f"images/{sid}.png",
                                     "audio": f"clips/{sid}.wav" if i % 3 else None}))
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return data


def _encoders(tmp: Path) -> tuple[str, str]:
    from transformers import BitImageProcessor, WhisperFeatureExtractor

    audio = save_tiny("whisper", tmp / "whisper")
    WhisperFeatureExtractor(feature_size=16).save_pretrained(audio)
    image = save_tiny("dinov2", tmp / "dinov2")
    BitImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32},
                      do_center_crop=False).save_pretrained(image)
    return audio, image


@pytest.mark.parametrize("method", ["u2a", "mla", "ume_mma"])
def test_whisper_trains_and_evaluates_under_bf16(tmp_path, method):
    from u2a.config import load_run_config
    from u2a.pipelines.evaluate import evaluate_run
    from u2a.pipelines.train import train_run

    audio, image = _encoders(tmp_path)
    data = _audio_image_data(tmp_path)
    import yaml

    config = {
        "name": "bf16", "output_dir": str(tmp_path / "runs"),
        "model": {"modalities": [{"name": "image", "encoder": image, "kind": "image"},
                                 {"name": "audio", "encoder": audio, "kind": "audio"}],
                  "num_classes": 2, "method": method, "u2a": {"stats_samples": 8}},
        "data": {"manifest": str(data)},
        "train": {"epochs": 2, "batch_size": 4, "mixed_precision": "bf16", "tensorboard": False,
                  "progress": False, "warmup_epochs": 0.5},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cfg = load_run_config(tmp_path / "run.yaml")
    result = train_run(cfg, cfg.run_dir)
    summary = result.summary
    assert summary["epochs"] == 2 and np.isfinite(summary["best_metric"])
    if method == "u2a":  # the statistics pass ran on the clips, under the trainer's bf16 autocast
        assert summary["prepare"]["stats_samples"] == 8
    payload, _ = evaluate_run(cfg.run_dir, protocol="absent", progress=False)
    for label, scenarios in payload["results"].items():
        assert set(scenarios) == {"image only", "audio only"}, label
        assert all(0.0 <= s["accuracy"] <= 1.0 for s in scenarios.values())

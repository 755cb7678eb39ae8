"""`u2a params CONFIG [key=value ...]`: the paper's learnable parameter count, offline, and the
count of a variant named by overrides."""

from __future__ import annotations

from pathlib import Path

from u2a.cli import main

ROOT = Path(__file__).resolve().parents[1]


def learnable(capsys) -> int:
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("learnable parameters:"))
    return int(line.split(":")[1].split("(")[0].replace(",", ""))


def test_params_of_a_paper_config_and_of_overridden_variants(capsys):
    cfg = str(ROOT / "configs" / "paper" / "food101.yaml")  # CLIP ViT-B/16 + BERT-base, 101 classes
    assert main(["params", cfg]) == 0
    paper = learnable(capsys)
    assert paper == 228_197  # LoRA 147,456 + CLS 1,536 + MT 1,536 + head 77,669
    assert main(["params", cfg, "model.u2a.mask_tokens=false"]) == 0
    assert learnable(capsys) == paper - 1_536  # no mask tokens
    assert main(["params", cfg, "model.u2a.estimator=probe"]) == 0
    # two rank-16 maps 768 -> 768 (down and up) and two 768-wide anchors
    assert learnable(capsys) == paper + 2 * (2 * 768 * 16) + 2 * 768

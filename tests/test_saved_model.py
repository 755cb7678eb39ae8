"""A saved model (best/, save_pretrained) is checked when it is loaded: the sizes and SHA-256 of its
files, and the class list its weights were trained with. Loading prints no transformers load
report for the weights an encoder leaves out on purpose, and warns about any others."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import _synthetic as S
from u2a.cli import main
from u2a.errors import ModelError, U2AWarning
from u2a.methods.base import CONFIG_NAME, WEIGHTS_NAME, load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A U2A model on the tiny BERT (whose checkpoint holds a pooler, as BERT checkpoints do),
    with three classes, saved; and the encoder folder."""
    tmp = tmp_path_factory.mktemp("saved")
    enc = S.make_tiny_bert(tmp / "bert")
    S.make_tiny_tokenizer(tmp / "bert")
    cfg = S.build_config(tmp, enc)
    cfg.model.classes = ["red", "green", "blue"]
    from u2a.methods import method_of

    torch.manual_seed(0)
    model = method_of(cfg.model).build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    folder = model.save_pretrained(tmp / "model")
    return folder, model


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def _outputs(model):
    batch = S.collate(S.SyntheticDataset(5, seed=3).items)
    with torch.no_grad():
        return model(batch["inputs"], batch["present"]).logits


def test_saved_model_lists_its_files_and_binds_its_classes(saved):
    folder, model = saved
    meta = json.loads((folder / CONFIG_NAME).read_text())
    info = meta["files"][WEIGHTS_NAME]
    data = (folder / WEIGHTS_NAME).read_bytes()
    import hashlib

    assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
        assert len(f.metadata()["u2a_classes_sha256"]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checked folder loads without a warning
        loaded = load_model(folder)
    assert torch.equal(_outputs(loaded), _outputs(model))


def test_a_flipped_byte_of_the_same_size_is_an_error_naming_the_file(saved, tmp_path, capsys):
    folder = _copy(saved[0], tmp_path)
    w = folder / WEIGHTS_NAME
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor: safetensors itself would load it
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"saved model file {w} is corrupt: its SHA-256 does not match"):
        load_model(folder)
    # ... and from the command line, one line, exit 2
    assert main(["predict", str(folder), "--field", "a=w1 w2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"u2a: error: saved model file {w} is corrupt") and err.count("\n") == 1
    w.write_bytes(bytes(data[:-100]))
    with pytest.raises(ModelError, match=r"corrupt or truncated: \d+ bytes, u2a_config.json says \d+"):
        load_model(folder)


@pytest.mark.parametrize("edit", ["reorder", "rename", "count"])
def test_edited_classes_are_an_error_not_a_relabelling(saved, tmp_path, edit):
    folder = _copy(saved[0], tmp_path)
    meta = json.loads((folder / CONFIG_NAME).read_text())
    classes = meta["model"]["classes"]
    if edit == "reorder":
        meta["model"]["classes"] = [classes[1], classes[0], classes[2]]
    elif edit == "rename":
        meta["model"]["classes"] = [classes[0], classes[1], "purple"]
    else:
        meta["model"]["classes"] = [*classes, "purple"]
        meta["model"]["num_classes"] = 4
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"u2a_config.json: the classes .* are not those the weights in "
                                         r"adapter.safetensors were trained with"):
        load_model(folder)


def test_a_folder_saved_without_a_manifest_loads_with_a_warning(saved, tmp_path):
    """Models saved by u2a before the manifest existed (no `files`, no class hash) still load."""
    from safetensors.torch import load_file, save_file

    folder, model = saved
    old = _copy(folder, tmp_path)
    meta = json.loads((old / CONFIG_NAME).read_text())
    del meta["files"]
    (old / CONFIG_NAME).write_text(json.dumps(meta))
    save_file(load_file(str(old / WEIGHTS_NAME)), str(old / WEIGHTS_NAME), metadata={"format": "pt", "u2a_format": "2"})
    with pytest.warns(U2AWarning, match="saved by an older u2a, without the sizes and SHA-256 of its files"):
        loaded = load_model(old)
    assert torch.equal(_outputs(loaded), _outputs(model))


@pytest.fixture
def transformers_log():
    """What transformers logs, at its default verbosity (as a Python user has it; the `u2a` command
    lowers it): the messages, collected from its root logger."""
    import logging

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    yield messages
    root.removeHandler(handler)
    hf_logging.set_verbosity(level)


def test_loading_prints_no_load_report_for_the_unused_pooler(saved, transformers_log):
    folder, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(folder)
    assert not [m for m in transformers_log if "LOAD REPORT" in m or "UNEXPECTED" in m]


def test_unexpected_weights_beyond_the_known_ones_are_still_reported(tmp_path, transformers_log):
    """A checkpoint with weights the encoder does not know (other than a pooler or a pretraining
    head) is not silenced: u2a warns, naming them."""
    from safetensors.torch import load_file, save_file

    from u2a.encoders import build_encoder

    enc = S.make_tiny_bert(tmp_path / "bert")
    weights = load_file(str(enc / "model.safetensors"))
    weights["adapter.extra.weight"] = torch.zeros(3)
    save_file(weights, str(enc / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(U2AWarning, match=r"holds 1 weight the bert encoder does not use: adapter\.extra\.weight"):
        build_encoder(str(enc))
    assert not [m for m in transformers_log if "LOAD REPORT" in m]

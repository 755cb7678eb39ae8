"""Run configs: YAML + dotted overrides, errors that name the key, save/load round trip."""

from __future__ import annotations

import textwrap

import pytest

from u2a.config import (
    RunConfig,
    build_run_config,
    load_model_config,
    load_run_config,
    parse_override,
    save_run_config,
)
from u2a.errors import ConfigError

YAML = textwrap.dedent(
    """
    model:
      modalities:
        - {name: image, encoder: openai/clip-vit-base-patch16}
        - {name: text, encoder: bert-base-uncased, max_length: 40}
      num_classes: 101
    data:
      manifest: data/food101
      missing:
        train: {ratio: 0.7, type: text}
    train:
      epochs: 5
      lr: 1.0e-3
    """
)


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "food.yaml"
    p.write_text(YAML)
    return p


def test_yaml_and_defaults(cfg_file):
    cfg = load_run_config(cfg_file)
    assert isinstance(cfg, RunConfig)
    assert cfg.name == "food"  # from the file name
    assert cfg.model.modalities[0].kind == "image"
    assert cfg.model.modalities[1].max_length == 40
    assert cfg.train.epochs == 5 and cfg.train.batch_size == 8
    assert cfg.train.weight_decay == 0.02 and cfg.train.eps == 1e-8 and cfg.train.poly_power == 0.9
    assert cfg.train.warmup_factor == 0.1
    assert cfg.model.method == "u2a"
    assert cfg.model.u2a.modality_dropout.enabled and cfg.model.u2a.modality_dropout.keep_prob is None
    assert cfg.model.u2a.mask_tokens and cfg.model.u2a.align_weight == 0.2
    assert cfg.data.missing.train.ratio == 0.7 and cfg.data.missing.train.type == "text"
    assert cfg.data.missing.val.ratio == 0.0
    assert str(cfg.run_dir) == "runs/food"


def test_overrides(cfg_file):
    cfg = load_run_config(cfg_file, [
        "train.lr=5e-5", "train.epochs=100", "train.batch_size=4", "model.lora.rank=2",
        "model.modalities[1].max_length=256", "model.modalities.0.image_size=160", "train.grad_clip=1",
        "model.u2a.modality_dropout.keep_prob=0.5", "data.limit=null", "name=exp1", "train.betas=[0.8, 0.99]",
        "model.classes=null", "train.mixed_precision=bf16",
    ])
    assert cfg.train.lr == 5e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 4
    assert cfg.model.lora.rank == 2
    assert cfg.model.modalities[1].max_length == 256 and cfg.model.modalities[0].image_size == 160
    assert cfg.train.grad_clip == 1.0
    assert cfg.model.u2a.modality_dropout.keep_prob == 0.5
    assert cfg.train.betas == (0.8, 0.99)
    assert cfg.name == "exp1"
    assert cfg.train.mixed_precision == "bf16"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'"),
        ("trian.lr=1", "unknown key 'trian'"),
        ("model.modalities[0].foo=1", "unknown key 'model.modalities[0].foo'"),
        ("train.epochs=abc", "train.epochs: expected int, got 'abc'"),
        ("train.grad_clip=abc", "train.grad_clip: expected float"),
        ("train.tensorboard=maybe", "train.tensorboard: expected bool"),
        ("train.lr=-1", "train.lr: must be > 0, got -1"),
        ("train.epochs=0", "train.epochs: must be >= 1"),
        ("train.mixed_precision=fp8", "train.mixed_precision: must be one of"),
        ("model.u2a.modality_dropout.keep_prob=2", "model.u2a.modality_dropout.keep_prob: must be in [0, 1]"),
        ("model.u2a.modality_dropout.cases=every", "model.u2a.modality_dropout.cases: must be 'sample' or 'all'"),
        ("model.method=foo", "model.method: must be one of"),
        ("model.u2a.estimator=best", "model.u2a.estimator: must be one of"),
        ("model.u2a.output=middle", "model.u2a.output: must be one of"),
        ("model.u2a.token_lr=-1", "model.u2a.token_lr: must be >= 0"),
        ("model.mla.fusion=max", "model.mla.fusion: must be one of"),
        ("model.ume_mma.stage1_fraction=1", "model.ume_mma.stage1_fraction: must be in (0, 1)"),
        ("train.select_on=best", "train.select_on: must be one of"),
        ("data.missing.train.ratio=1.5", "data.missing.train.ratio: must be in [0, 1]"),
        ("data.missing.test.type=audio", "data.missing.test.type: must be 'both' or a modality name"),
        ("model.lora.rank=0", "model.lora.rank: must be >= 1"),
        ("model.num_classes=0", "model.num_classes: must be >= 1"),
        ("model.modalities[5].kind=text", "model.modalities[5]: index out of range"),
        ("train.select_metric=f1_samples", "train.select_metric: 'f1_samples' does not fit model.task"),
        ("train.lr", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(cfg_file, override, message):
    with pytest.raises(ConfigError) as e:
        load_run_config(cfg_file, [override])
    assert message in str(e.value)


def test_bad_yaml_names_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(YAML + "  warmup_epochs: soon\n")
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: expected float, got 'soon'"):
        load_run_config(p)
    p.write_text(YAML.replace("max_length: 40", "max_length: 40, colour: red"))
    with pytest.raises(ConfigError, match=r"unknown key 'model.modalities\[1\].colour'"):
        load_run_config(p)
    p.write_text("train: {epochs: 2}\n")
    with pytest.raises(ConfigError, match="model: is required"):
        load_run_config(p)
    p.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "missing.yaml")


def test_round_trip(cfg_file, tmp_path):
    cfg = load_run_config(cfg_file, ["train.lr=5e-5", "model.lora.rank=2", "train.grad_clip=0.5"])
    out = save_run_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_run_config(out)
    assert again == cfg
    # also through build_run_config with an explicit dict
    assert build_run_config({"model": cfg.model.to_dict()}).model == cfg.model


def test_load_model_config_still_works(cfg_file, tmp_path):
    m = load_model_config(cfg_file)
    assert m.num_classes == 101 and m.modality_names == ["image", "text"]
    only = tmp_path / "model.yaml"
    only.write_text("modalities: [{name: image, encoder: x}, {name: text, encoder: y}]\nnum_classes: 2\n")
    assert load_model_config(only).num_classes == 2
    only.write_text("modalities: [{name: image, encoder: x}, {name: text, encoder: y}]\nnum_classes: 2\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'model.bogus'"):
        load_model_config(only)


def test_parse_override_values():
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("name=x=y") == ("name", "x=y")


def test_moved_keys_still_load_with_a_warning_saying_what_to_change(tmp_path):
    """Configs written before the method seam: model.mask_tokens, model.align_weight and
    train.modality_dropout moved under model.u2a."""
    from u2a.config import U2AConfigWarning

    old = YAML.replace("  num_classes: 101\n", "  num_classes: 101\n  mask_tokens: false\n  align_weight: 0.5\n")
    old += "  modality_dropout: {enabled: false}\n"
    p = tmp_path / "old.yaml"
    p.write_text(old)
    with pytest.warns(U2AConfigWarning) as rec:
        cfg = load_run_config(p, ["model.align_weight=0.3"])
    msgs = " ".join(str(r.message) for r in rec)
    assert "'model.mask_tokens' is now 'model.u2a.mask_tokens'" in msgs
    assert "'train.modality_dropout' is now 'model.u2a.modality_dropout'" in msgs
    assert "override 'model.align_weight' is now 'model.u2a.align_weight'" in msgs
    assert cfg.model.u2a.mask_tokens is False and cfg.model.u2a.align_weight == 0.3
    assert cfg.model.u2a.modality_dropout.enabled is False
    # a run folder's own config.yaml written by an older u2a loads silently
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_run_config(p, warn=False)
    # both spellings at once is an error naming both
    p.write_text(old.replace("  mask_tokens: false\n", "  mask_tokens: false\n  u2a: {mask_tokens: true}\n"))
    with pytest.raises(ConfigError, match="both model.mask_tokens .* and model.u2a.mask_tokens"):
        load_run_config(p, warn=False)


def test_estimator_presets_and_switches():
    from u2a.methods.u2a.config import ESTIMATOR_PRESETS, U2AConfig

    paper = U2AConfig(estimator="paper").settings()
    assert paper == ESTIMATOR_PRESETS["paper"]
    assert paper.output == "source" and not paper.stop_grad_target and not paper.normalize_align
    assert not paper.one_way_attention and paper.token_lr == 0
    # one switch at a time on top of the paper's estimator
    one = U2AConfig(estimator="paper", stop_grad_target=True).settings()
    assert one.stop_grad_target and one.output == "source" and not one.normalize_align
    # the default preset, and a switch turned off on it
    default = U2AConfig().settings()
    assert default == ESTIMATOR_PRESETS[U2AConfig().estimator]
    assert U2AConfig(one_way_attention=False).settings().one_way_attention is False

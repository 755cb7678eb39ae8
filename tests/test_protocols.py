"""Evaluation protocols (scenarios, MAP-chained tables, MSE of mask tokens), `u2a evaluate` and
`u2a experiment` on tiny random models."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

import _synthetic as S
from _tiny import tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.data.missing import MissingSpec, build_tables
from u2a.errors import ConfigError
from u2a.evaluation.metrics import compute_metrics
from u2a.evaluation.protocols import (
    TableContext,
    availability,
    build_protocol,
    mask_token_mse,
    run_protocol,
)
from u2a.evaluation.scenarios import encode_split
from u2a.evaluation.tables import aggregate, fmt
from u2a.methods.u2a.config import U2AConfig
from u2a.methods.u2a.model import Features, U2AModel
from u2a.pipelines.experiment import parse_seeds

PAIR = ("text", "image")


# ---- scenario construction ------------------------------------------------------------------

def names(scs):
    return [s.name for s in scs]


def test_complete_and_absent():
    assert names(build_protocol("complete", PAIR)) == ["complete"]
    ab = build_protocol("absent", PAIR)
    assert names(ab) == ["image only", "text only"]
    assert [s.drop_all for s in ab] == ["text", "image"] and all(s.spec is None for s in ab)
    assert dict(ab[0].percent) == {"text": 0, "image": 100}


def test_missing_protocol_types_and_percentages():
    ms = build_protocol("missing", PAIR, eta=0.7)
    assert names(ms) == ["missing text 70%", "missing image 70%", "missing both 70%"]
    assert [s.spec for s in ms] == [MissingSpec(0.7, "text"), MissingSpec(0.7, "image"), MissingSpec(0.7, "both")]
    assert all(s.chain for s in ms)
    # the paper's table columns: % of samples that keep each modality
    assert [dict(s.percent) for s in ms] == [{"text": 30, "image": 100}, {"text": 100, "image": 30}, {"text": 65, "image": 65}]
    with pytest.raises(ConfigError):
        build_protocol("missing", PAIR, eta=0.0)


def test_sweep_both_directions():
    sw = build_protocol("sweep", PAIR)
    xs = [0, 10, 30, 50, 70, 90, 100]
    assert names(sw) == [f"text {x}%" for x in xs] + [f"image {x}%" for x in xs]
    for s in sw:
        m, x = s.sweep
        assert s.spec == MissingSpec((100 - x) / 100, m) and not s.chain
        other = "image" if m == "text" else "text"
        assert dict(s.percent) == {m: x, other: 100}


def test_all_is_the_union_once_and_audio_video_names():
    al = build_protocol("all", PAIR, eta=0.7)
    parts = [build_protocol(p, PAIR, eta=0.7) for p in ("complete", "missing", "absent", "sweep")]
    assert names(al) == [n for p in parts for n in names(p)]
    assert len(set(names(al))) == len(al) == 1 + 3 + 2 + 14
    av = build_protocol("all", ("audio", "video"), eta=0.5)
    assert "missing audio 50%" in names(av) and "video only" in names(av) and "audio 30%" in names(av)
    assert not any("text" in n or "image" in n for n in names(av))
    with pytest.raises(ConfigError, match="unknown protocol"):
        build_protocol("nope", PAIR)


def test_missing_scenario_tables_are_chained_like_the_run():
    """A `missing` scenario's table is the MAP table the test split gets after train and val."""
    sizes = {"train": 40, "val": 10, "test": 30}
    specs = {"train": MissingSpec(0.7, "both"), "val": MissingSpec(0.7, "both"), "test": MissingSpec(0.7, "both")}
    ctx = TableContext(split="test", sizes=sizes, specs=specs, both_ratio=0.5, seed=3)
    present = torch.ones(30, 2, dtype=torch.bool)
    mods = ["image", "text"]  # config order differs from the pair order on purpose
    for sc in build_protocol("missing", PAIR, eta=0.7):
        avail = availability(sc, present, mods, PAIR, seed=3, context=ctx)
        want = build_tables(sizes, {**specs, "test": sc.spec}, PAIR, 0.5, 3)["test"]
        for i, code in enumerate(want):
            assert avail[i].tolist() == [code != 2, code != 1]
    # the run's own test spec gives exactly the run's own test table
    own = build_tables(sizes, specs, PAIR, 0.5, 3)["test"]
    sc = build_protocol("missing", PAIR, eta=0.7)[2]
    assert ctx.table(sc.spec, PAIR) == own
    # a test-only table (what a run trained on complete data gets) differs when train/val draw first
    assert build_tables({"test": 30}, {"test": specs["test"]}, PAIR, 0.5, 3)["test"] != own


def test_availability_never_removes_the_only_modality():
    present = torch.tensor([[True, False]] * 10 + [[True, True]] * 10)
    sc = build_protocol("absent", PAIR)[1]  # text only: image dropped
    avail = availability(sc, present, ["image", "text"], PAIR)
    assert avail[:10].tolist() == [[True, False]] * 10  # these have no text: they keep their image
    assert avail[10:].tolist() == [[False, True]] * 10


# ---- running scenarios on a tiny model --------------------------------------------------------

def tiny_model(mask_tokens=True, seed=0, estimator="paper"):
    torch.manual_seed(seed)
    cfg = ModelConfig(modalities=[dict(name="image", encoder="tiny-vit", kind="image"), dict(name="text", encoder="tiny-bert", kind="text")],
                      num_classes=3, classes=["x", "y", "z"], u2a=U2AConfig(mask_tokens=mask_tokens, estimator=estimator))
    return U2AModel(cfg, {"image": tiny_adapter("vit"), "text": tiny_adapter("bert")}).eval()


class _DS(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n
        self.img = tiny_inputs("vit", n, 1)["pixel_values"]
        self.txt = tiny_inputs("bert", n, 2)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _collate_for(ds):
    def collate(idx):
        idx = torch.tensor(idx)
        return {"ids": [f"s{int(i)}" for i in idx],
                "inputs": {"image": {"pixel_values": ds.img[idx]},
                           "text": {k: v[idx] for k, v in ds.txt.items()}},
                "present": torch.ones(len(idx), 2, dtype=torch.bool), "labels": ds.y[idx]}
    return collate


def test_run_protocol_matches_direct_selection_and_mse():
    model = tiny_model()
    ds = _DS(24)
    enc = encode_split(model, ds, _collate_for(ds), batch_size=7, progress=False)
    scs = build_protocol("all", PAIR, eta=0.7)
    ctx = TableContext(split="test", sizes={"train": 10, "val": 5, "test": 24},
                       specs={s: MissingSpec(0.7, "both") for s in ("train", "val", "test")}, seed=1)
    res = run_protocol(model, enc, scs, PAIR, seed=1, context=ctx)
    assert list(res) == names(scs)
    with torch.no_grad():
        for sc in scs:
            avail = availability(sc, enc.features.present, model.modalities, PAIR, 1, ctx)
            logits = model.select(enc.features, avail).logits
            want = compute_metrics(logits, enc.labels, "multiclass", ["x", "y", "z"])
            assert res[sc.name]["accuracy"] == pytest.approx(want["accuracy"])
            assert res[sc.name]["per_class"] == want["per_class"]
    assert res["text only"]["available"] == {"image": 0.0, "text": 1.0}
    assert res["image 30%"]["available"]["image"] == pytest.approx(1 - int(24 * 0.7) / 24)
    assert res["missing both 70%"]["available"] == {"image": pytest.approx(1 - 8 / 24), "text": pytest.approx(1 - 8 / 24)}

    mse = mask_token_mse(enc.features, enc.labels, model.modalities, ["x", "y", "z"], "multiclass")
    assert set(mse) == {"image->text", "text->image"}
    f = enc.features
    err = ((f.mt[("image", "text")] - f.cls["text"]) ** 2).mean(dim=1)
    for c, name in enumerate("xyz"):
        assert mse["image->text"]["per_class"][name]["mse"] == pytest.approx(float(err[enc.labels == c].mean()), rel=1e-5)
        assert mse["image->text"]["per_class"][name]["n"] == 8
    assert mse["image->text"]["mean"] == pytest.approx(float(err.mean()), rel=1e-5)
    y = f.cls["text"]
    assert mse["image->text"]["constant"] == pytest.approx(float(((y - y.mean(0)) ** 2).mean()), rel=1e-5)
    # no mask tokens: nothing to estimate
    ab = tiny_model(mask_tokens=False)
    enc_ab = encode_split(ab, ds, _collate_for(ds), batch_size=8, progress=False)
    assert mask_token_mse(enc_ab.features, enc_ab.labels, ab.modalities, ["x", "y", "z"]) == {}


def test_mse_multilabel_counts_a_sample_in_each_of_its_classes():
    cls = {"a": torch.zeros(3, 2), "b": torch.zeros(3, 2)}
    mt = {("a", "b"): torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]]), ("b", "a"): torch.zeros(3, 2)}
    present = torch.tensor([[True, True], [True, True], [True, False]])
    labels = torch.tensor([[1, 1], [0, 1], [1, 0]])
    feats = Features(present=present, cls=cls, mt=mt, align_target=cls, align_pred=mt)
    out = mask_token_mse(feats, labels, ["a", "b"], ["c0", "c1"], "multilabel")
    # sample 2 lacks b: left out; per-sample MSE 1.0 and 2.0
    assert out["a->b"]["per_class"]["c0"] == {"mse": 1.0, "n": 1}
    assert out["a->b"]["per_class"]["c1"] == {"mse": 1.5, "n": 2}
    assert out["a->b"]["mean"] == 1.5 and out["a->b"]["n"] == 2


def test_aggregate_mean_and_sample_std():
    def payload(acc, mse):
        return {"results": {"U2A": {"complete": {"accuracy": acc, "n": 10, "available": {"a": 1.0},
                                                 "per_class": {"k": {"precision": acc, "recall": acc / 2, "f1": acc, "support": 5}}}}},
                "mse": {"U2A": {"a->b": {"mean": mse, "n": 10, "per_class": {"k": {"mse": mse, "n": 5}}}}}}

    agg = aggregate([payload(0.5, 0.1), payload(0.7, 0.3), payload(0.9, 0.2)])
    s = agg["results"]["U2A"]["complete"]["accuracy"]
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(0.2) and s["n"] == 3
    assert agg["results"]["U2A"]["complete"]["per_class"]["k"]["recall"]["mean"] == pytest.approx(0.35)
    assert agg["mse"]["U2A"]["a->b"]["per_class"]["k"]["std"] == pytest.approx(0.1)
    assert fmt(s) == "70.00 ± 20.00"
    one = aggregate([payload(0.5, 0.1)])["results"]["U2A"]["complete"]["accuracy"]
    assert one["std"] is None and fmt(one) == "50.00"
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "a", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


# ---- commands -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proto")
    path = S.write_cli_config(tmp, name="tiny", sizes=(("train", 32), ("val", 8), ("test", 20)), missing=0.1,
                              data={"missing": {"train": {"ratio": 0.5, "type": "both"},
                                                "test": {"ratio": 0.5, "type": "both"}}},
                              max_length=10, log_every_steps=1)
    return tmp, path


def _run(*argv):
    from u2a.cli import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


def _csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_experiment_then_evaluate(tiny_setup, capsys):
    tmp, cfg_path = tiny_setup
    assert _run("experiment", cfg_path, "--seeds", "0,1", "--protocol", "all", "--ablation", "-q", "name=exp") == 0
    root = tmp / "runs" / "exp"
    for k in (0, 1):
        for run in (root / "u2a" / f"seed{k}", root / "u2a_no_mt" / f"seed{k}"):
            assert (run / "best" / "adapter.safetensors").is_file() and (run / "summary.json").is_file()
        saved = yaml.safe_load((root / "u2a" / f"seed{k}" / "config.yaml").read_text())
        assert saved["train"]["seed"] == k and saved["data"]["missing"]["seed"] == k
    res = json.loads((root / "results.json").read_text())
    assert res["seeds"] == [0, 1] and len(res["per_seed"]) == 2
    # mean and std over the seeds, checked against the per-seed results
    per = res["per_seed"]
    labels = list(per[0]["results"])
    assert labels == ["U2A", "U2A (no mask tokens)"]
    scen = [s["name"] for s in per[0]["scenarios"]]
    assert "missing both 50%" in scen and "a only" in scen and "b 30%" in scen
    for label in labels:
        for sc in scen:
            vals = [p["results"][label][sc]["accuracy"] for p in per]
            got = res["aggregate"]["results"][label][sc]["accuracy"]
            assert got["mean"] == pytest.approx(np.mean(vals))
            assert got["std"] == pytest.approx(np.std(vals, ddof=1))
    c0 = per[0]["classes"][0]
    vals = [p["mse"]["U2A"]["a->b"]["per_class"][c0]["mse"] for p in per]
    assert res["aggregate"]["mse"]["U2A"]["a->b"]["per_class"][c0]["mean"] == pytest.approx(np.mean(vals))
    # the tables hold mean ± std, matching the aggregate
    t1 = _csv(root / "table1_complete.csv")
    assert t1[0] == ["model", "accuracy", "f1_macro"] and t1[1][0] == "U2A"
    acc = res["aggregate"]["results"]["U2A"]["complete"]["accuracy"]
    assert t1[1][1] == f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}"
    t3 = _csv(root / "table3_missing.csv")
    assert t3[0][:3] == ["missing rate", "a (%)", "b (%)"] and [r[1:3] for r in t3[1:]] == [["50", "100"], ["100", "50"], ["75", "75"]]
    for name in ("table4_absent", "fig2_sweep", "fig5_per_class", "fig3_mask_tokens", "fig4_mse", "methods"):
        assert (root / f"{name}.csv").is_file(), name
    methods = _csv(root / "methods.csv")
    assert methods[0][:3] == ["model", "method", "learnable parameters"] and [r[0] for r in methods[1:]] == labels
    for png in ("fig2_sweep", "fig5_per_class", "fig3_mask_tokens", "fig4_mse"):
        assert (root / f"{png}.png").stat().st_size > 1000, png
    report = (root / "report.md").read_text()
    assert "±" in report and "![fig2_sweep](fig2_sweep.png)" in report and "Table 4" in report
    assert "Model selection (validation)" in report
    # the seed's own test table (the run's missing.test spec) is what `missing both 50%` evaluated
    own = json.loads(next((root / "u2a" / "seed0" / "missing").glob("*.json")).read_text())["tables"]["test"]
    assert per[0]["results"]["U2A"]["missing both 50%"]["available"]["a"] == pytest.approx(1 - own.count(1) / len(own))

    # a second experiment call reuses the finished runs (no retraining)
    mtime = (root / "u2a" / "seed0" / "best" / "adapter.safetensors").stat().st_mtime
    assert _run("experiment", cfg_path, "--seeds", "0", "--protocol", "complete", "-q", "name=exp") == 0
    assert (root / "u2a" / "seed0" / "best" / "adapter.safetensors").stat().st_mtime == mtime
    # ... but refuses a changed config without --overwrite
    with pytest.raises(ConfigError, match="--overwrite"):
        _run("experiment", cfg_path, "--seeds", "0", "-q", "name=exp", "train.lr=0.01")
    capsys.readouterr()

    # u2a evaluate on one trained run folder, compared with its ablation
    out = tmp / "eval_out"
    assert _run("evaluate", root / "u2a" / "seed0", "--protocol", "all", "--compare", root / "u2a_no_mt" / "seed0",
                "--out", out, "-q") == 0
    printed = capsys.readouterr().out
    assert "Table 4" in printed
    ev = json.loads((out / "results.json").read_text())
    assert list(ev["results"]) == ["U2A", "U2A (no mask tokens)"] and ev["split"] == "test" and ev["n"] == 20
    # same model, same data, same scenario seed: the same numbers as the experiment's seed 0
    for sc in scen:
        assert ev["results"]["U2A"][sc]["accuracy"] == pytest.approx(per[0]["results"]["U2A"][sc]["accuracy"])
    assert ev["mse"]["U2A"]["a->b"]["mean"] == pytest.approx(per[0]["mse"]["U2A"]["a->b"]["mean"], rel=1e-4)
    for name in ("table1_complete", "table3_missing", "table4_absent", "fig2_sweep", "fig5_per_class",
                 "fig3_mask_tokens", "fig4_mse"):
        rows = _csv(out / f"{name}.csv")
        assert len(rows) > 1 and "±" not in "".join(map("".join, rows)), name
    for png in ("fig2_sweep.png", "fig5_per_class.png", "fig3_mask_tokens.png", "fig4_mse.png"):
        assert (out / png).stat().st_size > 1000, png
    report = (out / "report.md").read_text()
    for png in ("fig2_sweep.png", "fig5_per_class.png", "fig3_mask_tokens.png", "fig4_mse.png"):
        assert f"({png})" in report
    assert set(ev["files"]) >= {"report.md", "table1_complete.csv", "fig4_mse.png"}

    # a single protocol, default output folder
    assert _run("evaluate", root / "u2a" / "seed1", "--protocol", "absent", "-q") == 0
    d = root / "u2a" / "seed1" / "eval" / "absent"
    assert [r[:2] for r in _csv(d / "table4_absent.csv")] == [["available", "missing"], ["b", "a"], ["a", "b"]]
    ev1 = json.loads((d / "results.json").read_text())
    assert list(ev1["results"]["U2A"]) == ["b only", "a only"]
    with pytest.raises(Exception, match="config.yaml"):
        _run("evaluate", tmp, "-q")


def test_missing_scenario_equals_the_runs_own_test_table(tmp_path):
    """On a run's data, `missing both η%` removes exactly what the run's own test table removes."""
    from u2a.config import build_run_config
    from u2a.data.datasets import build_datasets, missing_pair
    from u2a.pipelines.evaluate import test_datasets

    enc = S.make_tiny_bert(tmp_path / "bert")
    S.make_tiny_tokenizer(tmp_path / "bert")
    data = S.write_text_manifests(tmp_path / "data", sizes=(("train", 30), ("val", 10), ("test", 25)), missing=0.0)
    miss = {s: {"ratio": 0.7, "type": t} for s, t in (("train", "a"), ("val", "both"), ("test", "both"))}
    cfg = build_run_config({"name": "r", "output_dir": str(tmp_path), "model": S.model_section(enc),
                            "data": {"manifest": str(data), "missing": {**miss, "seed": 4}}})
    own = build_datasets(cfg, tmp_path / "r")["test"]
    plain = test_datasets(cfg)
    assert plain["test"].table is None and own.table is not None
    present = torch.tensor([[v is not None for v in plain["test"].fields(i).values()] for i in range(len(own))])
    want = torch.tensor([[v is not None for v in own.fields(i).values()] for i in range(len(own))])
    ctx = TableContext.from_config(cfg, {s: len(d) for s, d in plain.items()}, "test")
    sc = [s for s in build_protocol("missing", ("a", "b"), 0.7) if s.spec.type == "both"][0]
    got = availability(sc, present, ["a", "b"], missing_pair(["a", "b"]), seed=4, context=ctx)
    assert torch.equal(got, want)


def test_a_finished_run_is_recognised_by_what_was_trained():
    """Reuse in `u2a experiment` compares what defines a run: not its folder, and not the config
    sections of methods the run does not use."""
    from u2a.config import build_run_config
    from u2a.pipelines.experiment import _comparable

    base = {"name": "a", "output_dir": "/x", "model": S.model_section("enc")}
    a = build_run_config({**base, "model": {**base["model"], "method": "mla"}})
    b = build_run_config({**base, "name": "b", "output_dir": "/elsewhere",
                          "model": {**base["model"], "method": "mla", "u2a": {"estimator": "paper"}}})
    assert _comparable(a) == _comparable(b)
    c = build_run_config({**base, "model": {**base["model"], "method": "mla", "mla": {"fusion": "mean"}}})
    assert _comparable(a) != _comparable(c)
    u = build_run_config({**base, "model": {**base["model"], "u2a": {"estimator": "paper"}}})
    v = build_run_config({**base, "model": {**base["model"], "u2a": {"estimator": "anchored"}}})
    assert _comparable(u) != _comparable(v)
    # a preset and its switches spelled out on another preset are the same estimator
    from u2a.methods.u2a.config import ESTIMATOR_PRESETS

    spelled = {("source_align_weight" if k == "source_align" else k): v
               for k, v in vars(ESTIMATOR_PRESETS["anchored"]).items()}
    w = build_run_config({**base, "model": {**base["model"], "u2a": {"estimator": "paper", **spelled}}})
    assert _comparable(w) == _comparable(v)


def test_a_run_trained_before_a_preset_changed_is_not_reused_as_the_current_one():
    """A config that names a preset (``estimator: probe``, switches null) means what the preset
    says *today*; the settings a run trained with are in its summary, and reuse checks them."""
    import dataclasses

    from u2a.config import build_run_config
    from u2a.pipelines.experiment import _trained_settings_match

    base = {"name": "a", "output_dir": "/x", "model": S.model_section("enc")}
    cfg = build_run_config(base)
    now = dataclasses.asdict(cfg.model.u2a.settings())
    assert _trained_settings_match(cfg, {"prepare": {"settings": now}})
    assert not _trained_settings_match(cfg, {"prepare": {"settings": {**now, "token_lr": now["token_lr"] + 1}}})
    # a run trained before a setting was recorded (source_align) is judged on what it recorded
    older = {k: v for k, v in now.items() if k != "source_align"}
    assert _trained_settings_match(cfg, {"prepare": {"settings": older}})
    assert not _trained_settings_match(cfg, {"prepare": {"settings": {**older, "output": "residual"}}})
    assert not _trained_settings_match(cfg, {"prepare": {"settings": {**now, "retired_switch": True}}})
    # without mask tokens a run records only a token learning rate it used (none: the base rate)
    ablation = build_run_config({**base, "model": {**base["model"], "u2a": {"mask_tokens": False, "token_lr": 0}}})
    assert _trained_settings_match(ablation, {"prepare": {}})
    assert not _trained_settings_match(ablation, {"prepare": {"settings": {"token_lr": 0.01}}})
    tuned = build_run_config({**base, "model": {**base["model"], "u2a": {"mask_tokens": False, "token_lr": 0.01}}})
    assert not _trained_settings_match(tuned, {"prepare": {}})
    assert _trained_settings_match(tuned, {"prepare": {"settings": {"token_lr": 0.01}}})


def test_a_saved_run_from_before_a_key_existed_keeps_the_value_it_trained_with(tmp_path):
    """A run folder's config.yaml written before ``modality_dropout.cases`` existed trained with one
    random case per sample; reuse and resume must not read it as today's default (``all``)."""
    import yaml

    from u2a.config import build_run_config, load_run_config, load_saved_run_config, save_run_config
    from u2a.pipelines.experiment import _comparable

    base = {"name": "a", "output_dir": str(tmp_path), "model": S.model_section("enc")}
    now = build_run_config(base)
    assert now.model.u2a.modality_dropout.cases == "all"
    path = save_run_config(now, tmp_path / "config.yaml")
    assert _comparable(load_saved_run_config(path)) == _comparable(now)  # written today: as it was
    data = yaml.safe_load(path.read_text())
    del data["model"]["u2a"]["modality_dropout"]["cases"]  # as an older u2a wrote it
    path.write_text(yaml.safe_dump(data))
    assert load_saved_run_config(path).model.u2a.modality_dropout.cases == "sample"
    assert load_run_config(path, warn=False).model.u2a.modality_dropout.cases == "all"
    assert _comparable(load_saved_run_config(path)) != _comparable(now)

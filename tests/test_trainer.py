"""A short training run on the synthetic set: loss decreases, the run's files exist, the same seed
gives bit-identical metrics and weights, and a damaged checkpoint is reported by name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from u2a.errors import ModelError
from u2a.evaluation.metrics import compute_metrics, is_better
from u2a.evaluation.predict import predict
from u2a.train import checkpoint as ck
from u2a.train.trainer import Trainer, read_metrics

TIME_KEYS = {"samples_per_s", "train_time_s", "time", "run_dir"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIME_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return S.make_tiny_bert(tmp_path_factory.mktemp("enc") / "bert", dropout=0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, encoder):
    """The same config trained twice (LoRA and encoder dropout on, modality dropout on)."""
    out = []
    for name in ("first", "second"):
        tmp = tmp_path_factory.mktemp(name)
        cfg = S.build_config(tmp, encoder, ["train.checkpoint_every_steps=5", "train.tensorboard=true",
                                            "train.keep_last=2"], lora_dropout=0.1)
        summary = S.run_training(cfg, n_test=6)
        out.append((cfg, summary))
    return out


def test_loss_decreases_and_files_exist(runs):
    cfg, summary = runs[0]
    run = cfg.run_dir
    records = read_metrics(run)
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    # the task loss falls (the alignment term of the default estimator starts at its floor, the
    # constant mean, and rises as the targets become class-informative)
    steps = [r for r in records if r["type"] == "step"]
    first = sum(r["task_loss"] for r in steps[:4]) / 4
    last = sum(r["task_loss"] for r in steps[-4:]) / 4
    assert last < first * 0.7, (first, last)
    assert all(k in steps[0] for k in ("loss", "task_loss", "align_loss", "align/a->b", "align/b->a"))
    assert any(r["type"] == "step" for r in records)
    assert all(r["val"]["n"] == 7 and r["val"]["n_distinct"] == 7 for r in epochs)
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["best_epoch"] in (1, 2, 3, 4) and summary["epochs"] == 4 and summary["global_steps"] == 48
    assert summary["best_metric"] == max(r["val"]["accuracy"] for r in epochs)
    assert summary["test"]["n"] == 6 and "test" in {r["type"] for r in records}
    assert summary["samples_per_s"] > 0
    assert (run / "best" / "adapter.safetensors").is_file() and (run / "best" / "u2a_config.json").is_file()
    assert any((run / "tb").iterdir())
    names = sorted(p.name for p in ck.list_checkpoints(run))
    # the last 2 plus the best epoch's
    assert "epoch-0004" in names and f"epoch-{summary['best_epoch']:04d}" in names and len(names) <= 3
    state = json.loads((run / "checkpoints" / "epoch-0004" / "state.json").read_text())
    assert state["epoch"] == 4 and state["step_in_epoch"] == 0 and state["global_step"] == 48
    assert set(state["files"]) == {"trainable.safetensors", "optimizer.safetensors", "optimizer.json",
                                   "scheduler.json", "rng.safetensors", "rng.json"}
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.bin")) and not list(run.rglob("*.pkl"))


def test_best_model_loads_and_scores_as_logged(runs):
    from u2a.model import U2AModel

    cfg, summary = runs[0]
    model = U2AModel.from_pretrained(cfg.run_dir / "best")
    val = S.SyntheticDataset(7, missing=0.3, seed=2, prefix="v")
    loader = torch.utils.data.DataLoader(val, batch_size=3, collate_fn=S.collate)
    res = predict(model, loader)
    assert res["ids"] == [it["id"] for it in val.items]
    m = compute_metrics(res["logits"], res["labels"])
    assert m["accuracy"] == pytest.approx(summary["best_val"]["accuracy"])
    assert m["loss"] == pytest.approx(summary["best_val"]["loss"], rel=1e-5)


def test_same_seed_is_bit_identical(runs):
    (c1, s1), (c2, s2) = runs
    assert _strip(read_metrics(c1.run_dir)) == _strip(read_metrics(c2.run_dir))
    assert _strip(s1) == _strip(s2)
    for rel in ("best/adapter.safetensors", "checkpoints/epoch-0004/trainable.safetensors",
                "checkpoints/epoch-0004/optimizer.safetensors"):
        a, b = load_file(str(c1.run_dir / rel)), load_file(str(c2.run_dir / rel))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (rel, k)


def test_truncated_checkpoint_is_reported_by_name(runs, tmp_path):
    import shutil

    cfg, _ = runs[0]
    run = tmp_path / "copy"
    shutil.copytree(cfg.run_dir, run)
    latest = ck.latest_checkpoint(run)
    target = latest / "trainable.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"trainable\.safetensors.*(corrupt|truncated)"):
        ck.load_checkpoint(latest)
    # the trainer's resume gives the same error, naming the file
    from u2a.model import U2AModel

    torch.manual_seed(0)
    model = U2AModel.from_config(cfg.model)
    trainer = Trainer(cfg, model, {"train": S.SyntheticDataset(48, seed=1, prefix="t")}, S.collate, run)
    with pytest.raises(ModelError, match=str(target).replace(".", r"\.")):
        trainer.resume()
    # a truncated JSON file is caught too, even without the size check
    (latest / "state.json").write_text('{"format": 1, "files": {')
    with pytest.raises(ModelError, match=r"state\.json.*not valid JSON"):
        ck.load_checkpoint(latest)


def test_checkpoint_round_trip_restores_optimizer_and_rng(runs):
    cfg, _ = runs[0]
    c = ck.load_checkpoint(cfg.run_dir / "checkpoints" / "epoch-0004")
    assert c.state["global_step"] == 48
    steps = {k: v for k, v in c.optimizer_state["state"].items()}
    assert steps and all("exp_avg" in s and "exp_avg_sq" in s for s in steps.values())
    assert c.optimizer_state["param_groups"][0]["betas"] == (0.9, 0.999)
    assert c.rng_states[0]["tensors"]["torch_cpu"].dtype == torch.uint8
    before = torch.rand(3)
    ck.restore_rng_state(c.rng_states[0])
    a = torch.rand(3)
    ck.restore_rng_state(c.rng_states[0])
    assert torch.equal(a, torch.rand(3)) and not torch.equal(a, before)


def test_metrics_multiclass_and_multilabel():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    m = compute_metrics(logits, torch.tensor([0, 1, 2, 2]), classes=["x", "y", "z"])
    assert m["accuracy"] == 0.75 and m["n"] == 4
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["per_class"]["z"]["recall"] == 0.5 and m["per_class"]["z"]["support"] == 2
    ml_logits = torch.tensor([[3.0, -3.0], [3.0, 3.0], [-3.0, -3.0]])
    ml_labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    m = compute_metrics(ml_logits, ml_labels, task="multilabel")
    assert m["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))
    assert m["f1_macro"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["f1_samples"] == pytest.approx((1 + 1 + 0) / 3)
    assert "f1_weighted" in m and "accuracy" not in m
    # macro-F1 averages over the classes that occur: a perfect model on a split without class z
    # scores 1, not 2/3 (z's F1 of 0/0 left out); a class predicted but absent still counts as 0
    m = compute_metrics(logits[:2], torch.tensor([0, 1]), classes=["x", "y", "z"])
    assert m["f1_macro"] == 1.0 and m["per_class"]["z"]["support"] == 0
    m = compute_metrics(logits[2:], torch.tensor([1, 1]), classes=["x", "y", "z"])
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0) / 2)
    ml = compute_metrics(torch.tensor([[3.0, -3.0, -3.0], [-3.0, 3.0, -3.0]]),
                         torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), task="multilabel")
    assert ml["f1_macro"] == 1.0
    assert is_better(0.5, 0.4, "accuracy") and is_better(0.3, 0.4, "loss") and not is_better(0.4, 0.4, "f1_macro")


def test_cli_train_resume_and_predict(tmp_path, capsys):
    """`u2a train CONFIG k=v`, `u2a train --resume RUN`, `u2a predict RUN --field ...` end to end."""
    import yaml

    from u2a.commands.train import register
    from u2a.cli import _Formatter
    import argparse

    enc = S.make_tiny_bert(tmp_path / "bert")
    S.make_tiny_tokenizer(tmp_path / "bert")
    data = S.write_text_manifests(tmp_path / "data")
    cfg = {"name": "cli", "output_dir": str(tmp_path / "runs"), "model": S.model_section(enc),
           "data": {"manifest": str(data)},
           "train": {"epochs": 2, "batch_size": 8, "lr": 5e-2, "warmup_epochs": 0.5, "tensorboard": False,
                     "progress": False}}
    cfg["model"]["modalities"][0]["max_length"] = 8
    cfg["model"]["modalities"][1]["max_length"] = 8
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(cfg))

    parser = argparse.ArgumentParser(formatter_class=_Formatter)
    register(parser.add_subparsers(), _Formatter)

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    assert run("train", str(path), "train.epochs=1", "train.log_every_steps=1") == 0
    run_dir = tmp_path / "runs" / "cli"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["model"]["classes"] == ["blue", "green", "red"]
    assert (run_dir / "best" / "adapter.safetensors").is_file()
    # a second `train` into the same folder is refused; --resume with more epochs continues
    from u2a.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        run("train", str(path))
    assert run("train", "--resume", str(run_dir), "train.epochs=2") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["resumed_from"].endswith("epoch-0001")
    assert summary["test"]["n"] == 6
    capsys.readouterr()

    assert run("predict", str(run_dir), "--field", "a=w1 w1 w1 w50", "--top-k", "2") == 0
    out = capsys.readouterr().out
    assert "estimated by mask tokens: b" in out and len([l for l in out.splitlines() if l.startswith("  ")]) == 2
    preds = tmp_path / "preds.jsonl"
    assert run("predict", str(run_dir), "--manifest", str(data / "test.jsonl"), "--out", str(preds)) == 0
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    assert len(rows) == 6 and all(r["pred"] in ("red", "green", "blue") for r in rows)
    assert any(r["estimated"] for r in rows)


def test_samples_that_fail_to_decode_are_counted_and_listed(tmp_path, encoder):
    """data.skip_bad: the collator drops samples it cannot load and says so in batch["skipped"];
    the trainer lists them, with their split, in RUN/data.json and counts them in summary.json.
    A validation sample that fails is left out of the metrics and counted there, instead of
    failing the run's every-sample-counted-once check."""
    cfg = S.build_config(tmp_path, encoder, ["train.epochs=2", "train.log_every_steps=100"])
    bad_ids = ("t0003", "t0010", "v0002")

    def failing(items):
        bad = [it for it in items if it["id"] in bad_ids]
        batch = S.collate([it for it in items if it not in bad])
        batch["skipped"] = [{"id": it["id"], "modality": "a", "file": f"/data/{it['id']}.png", "reason": "truncated"}
                            for it in bad]
        return batch

    torch.manual_seed(0)
    from u2a.methods import method_of

    model = method_of(cfg.model).build_model(cfg.model)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "data.json").write_text(json.dumps({"sizes": {"train": 48, "val": 7}, "skipped_count": 0,
                                                       "skipped": []}))
    trainer = Trainer(cfg, model, {"train": S.SyntheticDataset(48, seed=1, prefix="t"),
                                   "val": S.SyntheticDataset(7, seed=2, prefix="v")},
                      failing, cfg.run_dir, eval_collate_fn=failing)
    summary = trainer.train()
    report = json.loads((cfg.run_dir / "data.json").read_text())
    assert summary["skipped_samples"] == 3 and report["skipped_samples_count"] == 3
    assert sorted((r["split"], r["id"]) for r in report["skipped_samples"]) == [
        ("train", "t0003"), ("train", "t0010"), ("val", "v0002")]
    assert summary["train_samples"] == 2 * 46
    epochs = [r for r in read_metrics(cfg.run_dir) if r["type"] == "epoch"]
    assert len(epochs) == 2
    assert all(r["val"]["n"] == 6 and r["val"]["n_distinct"] == 6 and r["val"]["skipped"] == 1 for r in epochs)


def test_counted_once_check_accounts_for_skipped_samples():
    from u2a.errors import DataError
    from u2a.evaluation.predict import check_counted_once

    ds = list(range(4))
    check_counted_once({"ids": ["a", "b", "c"], "skipped": [{"id": "d"}]}, ds)
    with pytest.raises(DataError, match="3 predictions"):
        check_counted_once({"ids": ["a", "b", "c"], "skipped": []}, ds)
    with pytest.raises(DataError, match="predicted and skipped"):
        check_counted_once({"ids": ["a", "b", "c"], "skipped": [{"id": "c"}, {"id": "d"}]}, ds)


def test_a_warm_up_that_covers_the_whole_run_is_warned_about(tmp_path, encoder):
    """The paper's warm-up holds 0.1 x lr; with train.warmup_epochs >= train.epochs the run would
    never leave it, silently."""
    from u2a.errors import U2AWarning
    from u2a.methods import method_of

    cfg = S.build_config(tmp_path, encoder, ["train.epochs=1", "train.warmup_epochs=1"])
    model = method_of(cfg.model).build_model(cfg.model)
    with pytest.warns(U2AWarning, match=r"warmup_epochs=1.0 covers the whole run \(12 optimizer steps\)"):
        Trainer(cfg, model, {"train": S.SyntheticDataset(48, seed=1, prefix="t")}, S.collate, cfg.run_dir)


def test_repeated_sample_ids_are_kept_once_in_the_gathered_batches():
    """A padding loader repeats the first samples at the end: each id is kept at its first
    occurrence, in every tensor (and dict of tensors) of its batch; emptied batches go."""
    from u2a.evaluation.predict import _drop_repeats

    chunks = [{"ids": ["a", "b"], "logits": {"complete": torch.tensor([[1.0], [2.0]])}, "labels": torch.tensor([0, 1])},
              {"ids": ["c", "a"], "logits": {"complete": torch.tensor([[3.0], [1.5]])}, "labels": torch.tensor([2, 0])},
              {"ids": ["b"], "logits": {"complete": torch.tensor([[2.5]])}, "labels": torch.tensor([1])}]
    out = _drop_repeats(chunks)
    assert [c["ids"] for c in out] == [["a", "b"], ["c"]]
    assert out[1]["logits"]["complete"].tolist() == [[3.0]] and out[1]["labels"].tolist() == [2]

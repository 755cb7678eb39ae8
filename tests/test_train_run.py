"""What `u2a train` (u2a.pipelines.train.train_run) does to a run folder: --overwrite replaces a run
only once the new one has read its data and built its model; a folder is locked while a process
trains into it; the saved config never names a precision the run did not use."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import _synthetic as S
from u2a.cli import main
LOCK_NAME = "train.lock"  # u2a.train.lock.LOCK_NAME

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(run: Path) -> dict[str, str]:
    """Every file of a run folder with the SHA-256 of its bytes."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def trained(tmp_path):
    """A finished 1-epoch run, `tmp/runs/cli`, and its config file."""
    cfg = S.write_cli_config(tmp_path)
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "cli"
    assert (run / "best" / "adapter.safetensors").is_file() and (run / "summary.json").is_file()
    return cfg, run


def _bad_manifest_folder(tmp_path: Path) -> Path:
    """The run's data with one broken line in train.jsonl."""
    import shutil

    bad = tmp_path / "bad_data"
    shutil.copytree(tmp_path / "data", bad)
    with open(bad / "train.jsonl", "a") as f:
        f.write('{"id": "broken", "label": "red", "a": "w1 w2"\n')
    return bad


@pytest.mark.parametrize("breakage", ["bad manifest line", "wrong encoder path", "class count"])
def test_overwrite_that_fails_to_start_leaves_the_old_run_intact(trained, tmp_path, capsys, breakage):
    cfg, run = trained
    before = _snapshot(run)
    assert {"best/adapter.safetensors", "metrics.jsonl", "summary.json", "config.yaml"} <= set(before)
    assert any(k.startswith("checkpoints/epoch-0001/") for k in before)
    override = {
        "bad manifest line": f"data.manifest={_bad_manifest_folder(tmp_path)}",
        "wrong encoder path": f"model.modalities[1].encoder={tmp_path / 'no-such-encoder'}",
        "class count": "model.num_classes=5",  # the data has 3
    }[breakage]
    capsys.readouterr()
    assert main(["train", str(cfg), "--overwrite", override, "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("u2a: error: ")
    assert _snapshot(run) == before, "the old run was changed by an overwrite that never started"
    assert not (run / LOCK_NAME).exists()


def test_overwrite_replaces_the_run_once_the_new_one_starts(trained, capsys):
    cfg, run = trained
    old_summary = json.loads((run / "summary.json").read_text())
    (run / "eval").mkdir()
    (run / "eval" / "results.json").write_text("{}")  # an evaluation of the old model
    capsys.readouterr()
    assert main(["train", str(cfg), "--overwrite", "train.epochs=2", "train.lr=0.01"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and old_summary["epochs"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.01
    epochs = [r["epoch"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "epoch"]
    assert epochs == [1, 2], "records of the old run are left in metrics.jsonl"
    assert not (run / "eval").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "leftovers of the replacement"
    assert "replaced the run" in capsys.readouterr().err


def test_train_into_a_finished_run_needs_resume_or_overwrite(trained, capsys):
    cfg, run = trained
    before = _snapshot(run)
    assert main(["train", str(cfg)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_resume_refuses_settings_that_change_what_the_run_computes(trained, capsys):
    """A resumed run continues the optimisation its config.yaml records: another grad_accum (which
    used to leave the rest of the run at LR 0), seed or learning rate is refused, naming each key,
    before anything in the run changes; train.epochs may change (train longer)."""
    cfg, run = trained
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.grad_accum=2", "train.seed=5", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "train.grad_accum: 1 in the run, 2 now" in err and "train.seed: 0 in the run, 5 now" in err
    assert "train.epochs" not in err.split("may change only")[0]
    assert _snapshot(run) == before
    assert main(["train", "--resume", str(run), "train.lr=0.01", "train.epochs=2"]) == 2
    assert "train.lr: 0.05 in the run, 0.01 now" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2


def _hold_lock(run: Path) -> subprocess.Popen:
    """Another process that holds the lock of ``run`` (as a training process would) until killed."""
    code = ("import sys, time; from u2a.train.lock import acquire; acquire(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(600)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_run_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    cfg = S.write_cli_config(tmp_path)
    run = tmp_path / "runs" / "cli"
    holder = _hold_lock(run)
    try:
        capsys.readouterr()
        assert main(["train", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"u2a: error: {run} is in use: process {holder.pid} on host " in err and "started 20" in err
        assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
        # --resume and --overwrite are refused too
        assert main(["train", str(cfg), "--overwrite"]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing it: the next run takes the lock over, with a warning
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid
    assert main(["train", str(cfg)]) == 0
    err = capsys.readouterr().err
    assert f"u2a: warning: {run}: taking over the stale lock of process {holder.pid}" in err
    assert not (run / LOCK_NAME).exists(), "the lock is released when training ends"
    assert (run / "summary.json").is_file()


def test_fp16_on_cpu_is_refused_and_never_saved(tmp_path, capsys):
    from accelerate import Accelerator

    from u2a.config import load_run_config
    from u2a.errors import ConfigError
    from u2a.pipelines.train import train_run

    cfg_path = S.write_cli_config(tmp_path)
    run = tmp_path / "runs" / "cli"
    assert main(["train", str(cfg_path), "train.mixed_precision=fp16"]) == 2
    assert "fp16 needs a GPU" in capsys.readouterr().err
    assert not run.exists()
    # an accelerator that runs another precision than the config says is refused before anything is written
    cfg = load_run_config(cfg_path, ["train.mixed_precision=fp16"])
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train_run(cfg, accelerator=Accelerator(cpu=True))
    cfg = load_run_config(cfg_path, ["train.mixed_precision=bf16"])
    with pytest.raises(ConfigError, match="the config says 'bf16', but the accelerator runs 'no'"):
        train_run(cfg, accelerator=Accelerator(cpu=True))
    assert not run.exists()
    # a finished run resumed with fp16 keeps its config
    assert main(["train", str(cfg_path)]) == 0
    assert main(["train", "--resume", str(run), "train.mixed_precision=fp16", "train.epochs=2"]) == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["mixed_precision"] == "no"


def test_skip_bad_lists_the_bad_lines_and_without_it_the_first_stops_the_run(tmp_path, capsys):
    cfg = S.write_cli_config(tmp_path)
    bad = _bad_manifest_folder(tmp_path)
    capsys.readouterr()
    assert main(["train", str(cfg), f"data.manifest={bad}"]) == 2
    err = capsys.readouterr().err
    assert f"{bad / 'train.jsonl'}:49: broken JSON" in err
    run = tmp_path / "runs" / "cli"
    assert not run.exists()
    assert main(["train", str(cfg), f"data.manifest={bad}", "--skip-bad"]) == 0
    assert f"skipped 1 bad manifest lines (data.skip_bad); listed in {run / 'data.json'}" in capsys.readouterr().err
    report = json.loads((run / "data.json").read_text())
    assert report["skipped_count"] == 1 and report["sizes"]["train"] == 48
    assert report["skipped"][0]["line"] == 49 and report["skipped"][0]["file"] == str(bad / "train.jsonl")


def test_skip_bad_passes_over_a_batch_in_which_every_sample_fails(tmp_path, capsys, monkeypatch):
    """With --skip-bad, a training or validation batch whose every sample fails to load (here batch
    size 1 and two samples made to fail) is passed over, counted and listed; it does not stop the
    run."""
    from u2a.data.processing import Collator
    from u2a.errors import SampleError

    cfg = S.write_cli_config(tmp_path, batch_size=1, log_every_steps=1000)
    load = Collator._load

    def failing(self, it):
        if it["id"] in ("tr0007", "va0003"):
            raise SampleError("unreadable input: damaged", str(it["id"]), "/x/file", "a", it.get("where"))
        return load(self, it)

    monkeypatch.setattr(Collator, "_load", failing)
    assert main(["train", str(cfg)]) == 2  # without --skip-bad the first failure stops the run
    assert "sample 'tr0007'" in capsys.readouterr().err
    assert main(["train", str(cfg), "--skip-bad", "--overwrite"]) == 0
    run = tmp_path / "runs" / "cli"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_batches"] == 1 and summary["skipped_samples"] == 2
    assert summary["train_samples"] == 47 and summary["global_steps"] == 48
    report = json.loads((run / "data.json").read_text())
    assert sorted((r["split"], r["id"]) for r in report["skipped_samples"]) == [("train", "tr0007"),
                                                                                 ("val", "va0003")]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["processes"] for r in records if r["type"] == "skipped_batch"] == [[0]]
    val = [r["val"] for r in records if r["type"] == "epoch"][0]
    assert val["n"] == 6 and val["skipped"] == 1


def test_runs_of_different_precision_follow_each_other_in_one_process(tmp_path):
    """accelerate keeps one process-wide state: a bf16 run followed by an fp32 one (a notebook, an
    experiment over configs, a test session) must get the precision its own config names."""
    from u2a.config import load_run_config
    from u2a.train.trainer import make_accelerator

    cfg_path = S.write_cli_config(tmp_path)
    bf16 = make_accelerator(load_run_config(cfg_path, ["train.mixed_precision=bf16"]))
    assert bf16.mixed_precision == "bf16"
    fp32 = make_accelerator(load_run_config(cfg_path, ["train.mixed_precision=no"]))  # YAML: false
    assert fp32.mixed_precision == "no"
    assert main(["train", str(cfg_path), "train.mixed_precision=bf16"]) == 0
    assert main(["train", str(cfg_path), "--overwrite"]) == 0

"""`u2a experiment --jobs N`: trainings in worker processes give the runs a sequential experiment
gives, a failing worker names its run and log, and --jobs is parsed and bounded."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from u2a.errors import ConfigError, ModelError
from u2a.pipelines.experiment import run_experiment
from u2a.pipelines.parallel import auto_jobs, parse_jobs


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    path = S.write_cli_config(tmp, name="tiny", epochs=2, sizes=(("train", 24), ("val", 8), ("test", 12)),
                              missing=0.1, data={"missing": {"train": {"ratio": 0.5, "type": "both"}}},
                              max_length=10, log_every_steps=1)
    return tmp, path


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get threads // jobs = 1: compare at the same thread count
    yield
    torch.set_num_threads(before)


def _adapter(run):
    return load_file(str(run / "best" / "adapter.safetensors"))


def test_parallel_runs_equal_sequential_runs(tiny_config, one_thread):
    tmp, cfg = tiny_config
    kw = dict(seeds=[0, 1], methods="u2a,u2a_no_mt", protocol="complete")
    seq = run_experiment(cfg, overrides=["name=seq"], jobs=1, progress=False, **kw)
    par = run_experiment(cfg, overrides=["name=par"], jobs=2, progress=True, **kw)  # with the parent's bars
    assert par["timing"]["parallel trainings (s)"] > 0 and "parallel trainings (s)" not in seq["timing"]
    for variant in ("u2a", "u2a_no_mt"):
        for k in (0, 1):
            a, b = tmp / "runs" / "seq" / variant / f"seed{k}", tmp / "runs" / "par" / variant / f"seed{k}"
            # the same selected weights, bit for bit, and the same training record
            wa, wb = _adapter(a), _adapter(b)
            assert wa.keys() == wb.keys() and all(torch.equal(wa[n], wb[n]) for n in wa), (variant, k)
            sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
            for key in ("best_epoch", "best_metric", "global_steps", "train_samples"):
                assert sa[key] == sb[key], (variant, k, key)
            log = b.with_name(b.name + ".log")  # the worker's output
            assert log.is_file() and "run folder:" in log.read_text()
            steps = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
            assert all(r["total_steps"] == sb["global_steps"] for r in steps if r["type"] in ("step", "epoch"))
    for label in ("U2A", "U2A (no mask tokens)"):
        for p_seq, p_par in zip(seq["per_seed"], par["per_seed"]):
            assert p_seq["results"][label]["complete"]["accuracy"] == p_par["results"][label]["complete"]["accuracy"]


def test_a_failing_worker_names_its_run_and_log(tiny_config, one_thread):
    tmp, cfg = tiny_config
    with pytest.raises(ModelError) as err:
        run_experiment(cfg, seeds=[0], methods="u2a", variants=[f"broken=model.modalities.0.encoder={tmp}/nowhere"],
                       overrides=["name=fail"], protocol="complete", progress=False, jobs=2)
    msg = str(err.value)
    assert "broken seed 0" in msg and str(tmp / "runs" / "fail" / "broken" / "seed0.log") in msg
    assert "nowhere" in msg


def test_parse_jobs():
    assert parse_jobs("1", 4) == 1 and parse_jobs(3, 4) == 3
    assert parse_jobs("8", 2) == 2  # never more workers than trainings
    assert 1 <= parse_jobs("auto", 2) <= 2 and parse_jobs(None, 1) == 1
    assert auto_jobs(2, device_count=1) == 1  # trainings do not share a GPU by default
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="--jobs"):
            parse_jobs(bad, 2)

"""benchmarks/sweep_expectation.py: a sweep point's expectation over the random missing tables,
checked against brute force over every table and against the tables u2a draws."""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sweep_expectation as SE  # noqa: E402

from u2a.data.missing import MissingSpec, build_tables


def test_expectation_equals_the_mean_over_every_table():
    rng = random.Random(0)
    n = 9
    complete = [rng.random() < 0.8 for _ in range(n)]
    text_only = [rng.random() < 0.6 for _ in range(n)]
    acc = {"complete": 100 * sum(complete) / n, "text only": 100 * sum(text_only) / n}
    for percent in (10, 30, 50, 70, 90):
        k = int(n * (100 - percent) / 100)
        tables = list(itertools.combinations(range(n), k))
        mean = sum(100 * sum(text_only[i] if i in lose else complete[i] for i in range(n)) / n
                   for lose in tables) / len(tables)
        assert SE.expected_accuracy(acc, "image", "text", percent, n) == pytest.approx(mean, abs=1e-9)


def test_u2a_tables_drop_a_uniform_subset_of_the_stated_size():
    """The premise: a sweep table drops exactly int(N * ratio) samples, each equally likely."""
    n, ratio, draws = 20, 0.3, 2000
    hits = [0] * n
    for seed in range(draws):
        codes = build_tables({"test": n}, {"test": MissingSpec(ratio, "image")}, ("text", "image"), seed=seed)["test"]
        lost = [i for i, c in enumerate(codes) if c == 2]
        assert len(lost) == int(n * ratio) and all(c in (0, 2) for c in codes)
        for i in lost:
            hits[i] += 1
    share = [h / draws for h in hits]
    assert max(abs(s - ratio) for s in share) < 0.05


def test_script_writes_both_differences(tmp_path):
    def scen(complete, text, image):
        out = {"complete": complete, "text only": text, "image only": image}
        for x in (0, 10, 30, 50, 70, 90, 100):
            out[f"image {x}%"] = complete if x == 100 else text if x == 0 else complete
            out[f"text {x}%"] = complete if x == 100 else image if x == 0 else complete
        return {k: {"accuracy": v} for k, v in out.items()}

    res = {"per_seed": {"0": {"m": scen(0.9, 0.8, 0.7), "b": scen(0.9, 0.7, 0.7)}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    out = tmp_path / "o.json"
    assert SE.main([str(path), "--method", "m", "--baseline", "b", "--n-test", "100", "--out", str(out)]) == 0
    got = json.loads(out.read_text())["points"]
    # image 70%: 30 of 100 samples are text only, where m is 10 points ahead: +3 expected; the
    # made-up "table" scores every point as complete: 0 on it
    assert got["image 70%"]["expected_over_tables"]["mean"] == pytest.approx(3.0)
    assert got["image 70%"]["on_the_table"]["mean"] == pytest.approx(0.0)
    assert got["text 50%"]["expected_over_tables"]["mean"] == pytest.approx(0.0)

"""Evaluation with three or more modalities (MAP's tables are defined for two): the drop tables,
the scenarios of each protocol, and `u2a experiment` / `u2a evaluate` on a three-modality model;
the panel's summary (missing mean, paired differences)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

import _synthetic as S
from u2a.data.missing import drop_table
from u2a.errors import ConfigError
from u2a.evaluation.protocols import ProtocolScenario, availability, build_protocol, build_protocol_n, scenarios_for

MODS = ("image", "text", "audio")


def test_drop_table_loses_the_given_share_never_everything_and_is_seeded():
    for what in ("text", "mixed"):
        t = drop_table(200, 0.7, what, MODS, seed=3)
        assert sum(1 for lost in t if lost) == 140
        assert all(len(lost) < 3 for lost in t)
        assert t == drop_table(200, 0.7, what, MODS, seed=3) and t != drop_table(200, 0.7, what, MODS, seed=4)
    assert {lost for lost in drop_table(50, 1.0, "text", MODS)} == {("text",)}
    # mixed: every non-empty proper subset occurs, about equally often
    kinds = Counter(drop_table(6000, 1.0, "mixed", MODS, seed=0))
    assert len(kinds) == 6 and min(kinds.values()) > 850
    with pytest.raises(ConfigError):
        drop_table(10, 0.5, "video", MODS)


def test_protocols_for_three_modalities():
    sc = build_protocol_n("all", MODS, 0.7)
    assert [s.name for s in sc] == [
        "complete", "missing image 70%", "missing text 70%", "missing audio 70%", "missing mixed 70%",
        "image only", "text only", "audio only", "image + text only", "image + audio only", "text + audio only"]
    only = {s.name: s for s in sc}
    assert only["image + audio only"].drop == ("text",)
    assert dict(only["missing text 70%"].percent)["text"] == pytest.approx(30.0)
    # mixed: each modality is in 3 of the 6 subsets a sample may lose
    assert dict(only["missing mixed 70%"].percent)["image"] == pytest.approx(100 * (1 - 0.7 * 3 / 6))
    with pytest.raises(ConfigError, match="sweep"):
        build_protocol_n("sweep", MODS)
    # two modalities: the MAP protocols, as before
    assert [s.name for s in scenarios_for("all", ("image", "text"))] == \
        [s.name for s in build_protocol("all", ("text", "image"))]


def test_availability_of_three_modality_scenarios():
    present = torch.ones(10, 3, dtype=torch.bool)
    present[0, 1] = False  # sample 0 has no text
    sc = {s.name: s for s in build_protocol_n("all", MODS, 0.5)}
    a = availability(sc["text only"], present, MODS, ("image", "text"))
    assert a[1:].tolist() == [[False, True, False]] * 9
    assert a[0].tolist() == [True, False, True]  # it keeps what it has rather than nothing
    a = availability(sc["missing audio 50%"], present, MODS, ("image", "text"))
    assert int((~a[:, 2]).sum()) == 5 and a[:, 0].all()
    mixed = availability(ProtocolScenario("m", protocol="missing", table=(1.0, "mixed")), present, MODS, ("image", "text"))
    assert mixed.any(dim=1).all() and not mixed.all(dim=1).any()


def _three_text_setup(tmp: Path) -> Path:
    cfg_path = S.write_cli_config(tmp, name="tri", sizes=(("train", 24), ("val", 8), ("test", 12)), missing=0.0,
                                  max_length=10)
    cfg = yaml.safe_load(cfg_path.read_text())
    enc = cfg["model"]["modalities"][0]["encoder"]
    cfg["model"]["modalities"].append({"name": "c", "encoder": enc, "kind": "text", "max_length": 10})
    data = Path(cfg["data"]["manifest"])
    for split in ("train", "val", "test"):
        lines = [json.loads(x) for x in (data / f"{split}.jsonl").read_text().splitlines()]
        for rec in lines:
            rec["c"] = rec["a"] or rec["b"]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


@pytest.mark.parametrize("method", ["u2a", "mla", "ume_mma"])
def test_experiment_and_evaluate_with_three_modalities(tmp_path, method):
    from u2a.cli import build_parser

    cfg_path = _three_text_setup(tmp_path)

    def run(*argv):
        args = build_parser().parse_args([str(a) for a in argv])
        return args.func(args)

    extra = ["train.epochs=2"] if method == "ume_mma" else []
    assert run("experiment", cfg_path, "--seeds", "0", "--methods", method, "-q", "name=e3", *extra) == 0
    res = json.loads((tmp_path / "runs" / "e3" / "results.json").read_text())
    names = [s["name"] for s in res["per_seed"][0]["scenarios"]]
    assert len(names) == 11 and "a + c only" in names and "missing mixed 70%" in names
    table = (tmp_path / "runs" / "e3" / "table4_absent.csv").read_text().splitlines()
    assert table[0].startswith("available,missing") and any(r.startswith("a + b,c,") for r in table)
    run_dir = tmp_path / "runs" / "e3" / method / "seed0"
    assert run("evaluate", run_dir, "--protocol", "absent", "-q") == 0
    got = json.loads((run_dir / "eval" / "absent" / "results.json").read_text())
    assert len(next(iter(got["results"].values()))) == 6


def _payload(seed: int, acc: dict[str, dict[str, float]]):
    scen = [{"name": "complete", "protocol": "complete"}, {"name": "a only", "protocol": "absent"},
            {"name": "missing a 70%", "protocol": "missing"}, {"name": "a 30%", "protocol": "sweep"}]
    return {"seed": seed, "scenarios": scen,
            "results": {lab: {s: {"accuracy": v} for s, v in r.items()} for lab, r in acc.items()}}


def test_panel_summary_pairs_seeds_and_averages_only_missing_scenarios():
    from u2a.pipelines.panel import missing_scenarios, summarise

    runs = [
        {"U2A": {"complete": 0.9, "a only": 0.6, "missing a 70%": 0.8, "a 30%": 0.0},
         "abl": {"complete": 0.9, "a only": 0.5, "missing a 70%": 0.8, "a 30%": 1.0}},
        {"U2A": {"complete": 0.8, "a only": 0.5, "missing a 70%": 0.7, "a 30%": 0.0},
         "abl": {"complete": 0.8, "a only": 0.6, "missing a 70%": 0.8, "a 30%": 1.0}},
    ]
    data = {"per_seed": [_payload(k, r) for k, r in enumerate(runs)],
            "methods": [{"name": "u2a", "label": "U2A"}, {"name": "u2a_no_mt", "label": "abl"}]}
    assert missing_scenarios(data["per_seed"][0]) == ["a only", "missing a 70%"]
    s = summarise(data, "u2a_no_mt")
    u = s["methods"]["u2a"]
    assert u["missing mean"]["values"] == pytest.approx([70.0, 60.0])  # the sweep point is not a missing scenario
    d = u["vs_u2a_no_mt"]["missing mean"]
    assert d["values"] == pytest.approx([5.0, -10.0]) and d["ahead"] == 1 and d["mean"] == pytest.approx(-2.5)

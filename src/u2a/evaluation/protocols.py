"""Named evaluation protocols (the paper's tables and figures) as lists of test-time scenarios.

For a run's modality pair (a, b) (``missing_pair``: MAP's (text, image), else the config order):

- ``complete`` (Table 1 / Table 2): every modality the data has.
- ``missing`` (Tables 3 and 6): eta of the test samples lose a modality, of type a, type b and
  "both" (eta/2 each), eta = the run's ``data.missing.test.ratio``. The table of each scenario is
  built with the MAP algorithm exactly as a run with that test spec builds it: one seeded
  ``random`` over train, val, then test, with the run's train and val specs and sizes
  (:class:`TableContext`), so the scenario whose type is the run's own test type reproduces the
  run's own test table.
- ``absent`` (Table 4): one modality absent from every test sample, each modality.
- ``sweep`` (Figure 2): 100% of one modality and x% of the other, x in 0, 10, ..., 100, both ways.
- ``all``: all of the above (each scenario once).

With three or more modalities (MAP's tables are defined for two) the protocols are
:func:`build_protocol_n`'s: ``complete``; ``missing``: eta of the test samples lose one modality,
for each modality, and eta lose a random non-empty proper subset ("missing mixed");
``absent``: every non-empty proper subset of the modalities alone (``image + text only``), for
every sample; no sweep. The tables come from :func:`u2a.data.missing.drop_table`.

Every scenario of a protocol is evaluated from one encoding pass of the split (see
:mod:`u2a.evaluation.scenarios`): only the availability mask changes between scenarios.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from u2a.data.missing import MissingSpec, build_tables
from u2a.errors import ConfigError
from u2a.evaluation.scenarios import EncodedSplit, Scenario, run_scenarios, scenario_available

PROTOCOLS = ("complete", "missing", "absent", "sweep", "all")
SWEEP = (0, 10, 30, 50, 70, 90, 100)
#: the eta of the ``missing`` protocol for a run trained and tested on complete data
DEFAULT_ETA = 0.7


@dataclass(frozen=True)
class ProtocolScenario(Scenario):
    """A :class:`Scenario` that knows which protocol (table) it belongs to.

    ``chain``: build ``spec``'s table as MAP does for a whole run (train, val, then the evaluated
    split from one seeded ``random``, see :class:`TableContext`) instead of for the split alone.
    ``percent``: the share (%) of the samples that keep each modality, as the paper's tables name
    a setting (e.g. image 100, text 30)."""

    protocol: str = ""
    chain: bool = False
    percent: tuple[tuple[str, float], ...] = ()
    #: sweep scenarios: the modality that is swept and its percentage
    sweep: tuple[str, int] | None = None
    #: three or more modalities: the modalities every sample loses (``absent``), and
    #: ``(ratio, what)`` of a :func:`~u2a.data.missing.drop_table` (``missing``)
    drop: tuple[str, ...] = ()
    table: tuple[float, str] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "spec": None if self.spec is None else {"ratio": self.spec.ratio, "type": self.spec.type},
            "drop_all": self.drop_all,
            "chain": self.chain,
            "percent": dict(self.percent),
            "sweep": list(self.sweep) if self.sweep else None,
            "drop": list(self.drop),
            "table": list(self.table) if self.table else None,
        }


def _pct(d: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((k, round(float(v), 4)) for k, v in d.items())


def complete_scenarios(pair: Sequence[str]) -> list[ProtocolScenario]:
    a, b = pair
    return [ProtocolScenario("complete", protocol="complete", percent=_pct({a: 100, b: 100}))]


def missing_scenarios(pair: Sequence[str], eta: float) -> list[ProtocolScenario]:
    """Type a, type b and both at ``eta`` (MAP tables, chained after the run's train/val tables)."""
    if not 0.0 < eta <= 1.0:
        raise ConfigError(f"missing protocol: eta must be in (0, 1], got {eta}")
    a, b = pair
    keep = 100 * (1 - eta)
    half = 100 * (1 - eta / 2)
    e = f"{100 * eta:g}%"
    return [
        ProtocolScenario(f"missing {a} {e}", MissingSpec(eta, a), protocol="missing", chain=True,
                         percent=_pct({a: keep, b: 100})),
        ProtocolScenario(f"missing {b} {e}", MissingSpec(eta, b), protocol="missing", chain=True,
                         percent=_pct({a: 100, b: keep})),
        ProtocolScenario(f"missing both {e}", MissingSpec(eta, "both"), protocol="missing", chain=True,
                         percent=_pct({a: half, b: half})),
    ]


def absent_scenarios(pair: Sequence[str]) -> list[ProtocolScenario]:
    """One modality absent for every sample (named by the one that is left: ``image only``)."""
    a, b = pair
    return [
        ProtocolScenario(f"{b} only", drop_all=a, protocol="absent", percent=_pct({a: 0, b: 100})),
        ProtocolScenario(f"{a} only", drop_all=b, protocol="absent", percent=_pct({a: 100, b: 0})),
    ]


def sweep_scenarios(pair: Sequence[str], sweep: Sequence[int] = SWEEP) -> list[ProtocolScenario]:
    """100% of one modality and x% of the other (``text 30%``: 30% of the samples keep text, all
    keep image), in both directions; a's sweep first (Figure 2: text)."""
    out = []
    for m in pair:
        other = pair[1] if m == pair[0] else pair[0]
        for x in sweep:
            out.append(ProtocolScenario(
                f"{m} {x}%", MissingSpec((100 - x) / 100, m), protocol="sweep",
                percent=_pct({m: x, other: 100}), sweep=(m, int(x)),
            ))
    return out


def build_protocol(name: str, pair: Sequence[str], eta: float = DEFAULT_ETA, sweep: Sequence[int] = SWEEP) -> list[ProtocolScenario]:
    """The scenarios of protocol ``name`` for the modality pair ``pair`` (table code order)."""
    if len(pair) != 2:
        raise ConfigError(f"protocols are defined for two modalities, got {list(pair)}")
    builders = {
        "complete": lambda: complete_scenarios(pair),
        "missing": lambda: missing_scenarios(pair, eta),
        "absent": lambda: absent_scenarios(pair),
        "sweep": lambda: sweep_scenarios(pair, sweep),
    }
    if name == "all":
        out: list[ProtocolScenario] = []
        seen: set[str] = set()
        for part in ("complete", "missing", "absent", "sweep"):
            for sc in builders[part]():
                if sc.name not in seen:
                    seen.add(sc.name)
                    out.append(sc)
        return out
    if name not in builders:
        raise ConfigError(f"--protocol: unknown protocol {name!r}; known: {list(PROTOCOLS)}")
    return builders[name]()


def build_protocol_n(name: str, modalities: Sequence[str], eta: float = DEFAULT_ETA) -> list[ProtocolScenario]:
    """The scenarios of protocol ``name`` for three or more modalities (config order): see the
    module docstring. ``sweep`` is a two-modality protocol; ``all`` is complete + missing + absent."""
    from itertools import combinations

    mods = list(modalities)
    if len(mods) < 3:
        raise ConfigError(f"build_protocol_n is for three or more modalities, got {mods}")
    if name not in PROTOCOLS:
        raise ConfigError(f"--protocol: unknown protocol {name!r}; known: {list(PROTOCOLS)}")
    if name == "sweep":
        raise ConfigError("--protocol sweep: the sweep is defined for two modalities; use complete, missing, "
                          f"absent or all with {len(mods)}")
    if not 0.0 < eta <= 1.0:
        raise ConfigError(f"missing protocol: eta must be in (0, 1], got {eta}")
    out: list[ProtocolScenario] = []
    if name in ("complete", "all"):
        out.append(ProtocolScenario("complete", protocol="complete", percent=_pct({m: 100 for m in mods})))
    if name in ("missing", "all"):
        e = f"{100 * eta:g}%"
        for m in mods:
            out.append(ProtocolScenario(f"missing {m} {e}", protocol="missing", table=(eta, m),
                                        percent=_pct({o: 100 * (1 - eta) if o == m else 100 for o in mods})))
        # of the 2^N - 2 non-empty proper subsets that a sample may lose, 2^(N-1) - 1 hold a
        # given modality
        share = (2 ** (len(mods) - 1) - 1) / (2 ** len(mods) - 2)
        out.append(ProtocolScenario(f"missing mixed {e}", protocol="missing", table=(eta, "mixed"),
                                    percent=_pct({o: 100 * (1 - eta * share) for o in mods})))
    if name in ("absent", "all"):
        for k in range(1, len(mods)):
            for keep in combinations(mods, k):
                drop = tuple(m for m in mods if m not in keep)
                out.append(ProtocolScenario(f"{' + '.join(keep)} only", protocol="absent", drop=drop,
                                            percent=_pct({m: 100 if m in keep else 0 for m in mods})))
    return out


def scenarios_for(name: str, modalities: Sequence[str], eta: float = DEFAULT_ETA) -> list[ProtocolScenario]:
    """The scenarios of protocol ``name`` for a model's modalities: :func:`build_protocol` on the
    MAP pair for two, :func:`build_protocol_n` for three or more."""
    from u2a.data.datasets import missing_pair

    if len(modalities) == 2:
        return build_protocol(name, missing_pair(modalities), eta)
    return build_protocol_n(name, modalities, eta)


def protocol_eta(cfg: Any, eta: float | None = None) -> float:
    """The eta of the ``missing`` protocol: given, else the run's test ratio, else 0.7."""
    if eta is not None:
        return float(eta)
    r = float(cfg.data.missing.test.ratio)
    return r if r > 0 else DEFAULT_ETA


# ---- availability -------------------------------------------------------------------------

@dataclass
class TableContext:
    """What a MAP table of the evaluated split depends on besides its own spec: the sizes and
    specs of the splits built before it (and the seed and both_ratio)."""

    split: str = "test"
    sizes: dict[str, int] = field(default_factory=dict)
    specs: dict[str, MissingSpec] = field(default_factory=dict)
    both_ratio: float = 0.5
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any, sizes: Mapping[str, int], split: str = "test") -> "TableContext":
        miss = cfg.data.missing
        specs = {s: MissingSpec(float(getattr(miss, s).ratio), str(getattr(miss, s).type)) for s in ("train", "val", "test")}
        return cls(split=split, sizes={k: int(v) for k, v in sizes.items()}, specs=specs,
                   both_ratio=float(miss.both_ratio), seed=int(miss.seed))

    def table(self, spec: MissingSpec, pair: Sequence[str]) -> list[int]:
        """The table the MAP algorithm gives ``split`` when its spec is ``spec``."""
        specs = {s: sp for s, sp in self.specs.items() if s in self.sizes}
        specs[self.split] = spec
        return build_tables(self.sizes, specs, pair, self.both_ratio, self.seed)[self.split]


def availability(
    sc: Scenario,
    present: torch.Tensor,
    modalities: Sequence[str],
    pair: Sequence[str],
    seed: int = 0,
    context: TableContext | None = None,
) -> torch.Tensor:
    """The (N, M) availability mask of a scenario on data whose modalities are ``present``."""
    if isinstance(sc, ProtocolScenario) and (sc.drop or sc.table):
        return _available_n(sc, present, modalities, seed)
    if not (isinstance(sc, ProtocolScenario) and sc.chain and sc.spec is not None):
        return scenario_available(sc, present, modalities, pair, seed)
    if context is None or context.sizes.get(context.split) != len(present):
        context = TableContext(split="test", sizes={"test": len(present)}, seed=seed)
    avail = present.clone()
    if sc.drop_all is not None:
        avail[:, list(modalities).index(sc.drop_all)] = False
    for i, code in enumerate(context.table(sc.spec, pair)):
        if code:
            avail[i, list(modalities).index(pair[code - 1])] = False
    empty = ~avail.any(dim=1)  # a sample never loses its only modality
    avail[empty] = present[empty]
    return avail


def _available_n(sc: ProtocolScenario, present: torch.Tensor, modalities: Sequence[str], seed: int) -> torch.Tensor:
    from u2a.data.missing import drop_table

    mods = list(modalities)
    avail = present.clone()
    for m in sc.drop:
        avail[:, mods.index(m)] = False
    if sc.table is not None:
        ratio, what = sc.table
        for i, lost in enumerate(drop_table(len(present), ratio, what, mods, seed)):
            for m in lost:
                avail[i, mods.index(m)] = False
    empty = ~avail.any(dim=1)  # a sample never loses its only modality
    avail[empty] = present[empty]
    return avail


def run_protocol(
    model: Any,
    encoded: EncodedSplit,
    scenarios: Sequence[Scenario],
    pair: Sequence[str],
    seed: int = 0,
    context: TableContext | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of every scenario from one encoding of the split: :func:`run_scenarios` with
    MAP-chained tables for the ``missing`` protocol."""
    return run_scenarios(
        model, encoded, scenarios, pair, seed,
        availability=lambda sc, present: availability(sc, present, model.modalities, pair, seed, context),
    )


# ---- feature estimation (Figure 4) -----------------------------------------------------------

def class_members(labels: torch.Tensor, num_classes: int, task: str) -> torch.Tensor:
    """(N, C) bool: sample n belongs to class c (multi-label: every class it is labelled with)."""
    if task == "multilabel":
        return labels.to(torch.float32) > 0.5
    return torch.nn.functional.one_hot(labels.long(), num_classes).bool()


def mask_token_mse(
    features: Any,
    labels: torch.Tensor,
    modalities: Sequence[str],
    classes: Sequence[str],
    task: str = "multiclass",
) -> dict[str, dict[str, Any]]:
    """Per direction ``s->t``: the MSE between the mask-token estimate of CLS(t) from MT(s->t) and
    the real CLS(t), in the space the model aligns them in, on the samples that have both s and t;
    per class the mean over its samples of the per-sample MSE (mean over feature dimensions); and
    ``constant``: the MSE of the best constant on the same samples (their mean CLS(t)). Empty for
    models without mask-token estimates (the ablation, MLA, UME-MMA)."""
    out: dict[str, dict[str, Any]] = {}
    preds = getattr(features, "align_pred", None) or {}
    targets = getattr(features, "align_target", None) or {}
    members = class_members(labels, len(classes), task)
    present = features.present.bool()
    for (s, t), est in preds.items():
        si, ti = list(modalities).index(s), list(modalities).index(t)
        rows = present[:, si] & present[:, ti]
        y = targets[t].float()
        err = ((est.float() - y) ** 2).mean(dim=1)
        const = float(((y[rows] - y[rows].mean(0)) ** 2).mean()) if rows.any() else None
        per_class = {}
        for c, name in enumerate(classes):
            sel = rows & members[:, c]
            n = int(sel.sum())
            per_class[name] = {"mse": float(err[sel].mean()) if n else None, "n": n}
        n_all = int(rows.sum())
        out[f"{s}->{t}"] = {"mean": float(err[rows].mean()) if n_all else None, "constant": const, "n": n_all,
                            "per_class": per_class}
    return out

"""Probes of the mask-token estimator on real encoders and data (docs/estimators.md, "Why the
paper's estimator fails here").

Untrained U2A (the recipe's encoders, LoRA at zero) on the training split, then - for every trained
run folder given with ``--runs`` - the same measurements after training:

1. the floor: the best MSE per dimension that an output of the *source* encoder's final LayerNorm
   can reach from the real CLS(t), against the MSE of the constant mean CLS(t);
3. the spread (variance per dimension) of each modality's CLS output;
4. how far the available modality's CLS output moves when the mask tokens are in its sequence
   (the paper's two-way attention), in % of its across-sample variance;
5. the RMS of the CLS/MT tokens and of the embedded tokens, and the relative step an Adam update at
   the recipe's learning rate makes on them;
6. the ceiling of estimation on this data: ridge regression from CLS(s) to CLS(t) (fitted on the
   training split, scored on validation) against the constant;
7. (trained runs) MSE(estimate, CLS(t)) per direction next to the constant's, on the test split;
8. the linear-probe floor of each modality alone: logistic regression on its frozen CLS output
   (the encoder's own, LoRA at zero; standardised), fitted on the whole training split, the
   inverse regularisation C chosen on validation, accuracy on test.

    python benchmarks/estimator_probes.py --out docs/results/estimator_probes.json \
        [--runs runs/ablation/paper/seed0 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def encode(model, dataset, collate, n=None, batch_size=32):
    from u2a.data.processing import move_batch

    model.eval()
    idx = list(range(len(dataset)))[: n or len(dataset)]
    parts = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            batch = move_batch(collate([dataset[i] for i in idx[s:s + batch_size]]), "cpu")
            parts.append(model.encode(batch["inputs"], batch["present"], ids=batch["ids"]))
    return type(parts[0]).concat(parts)


def ridge_gain(x_tr, y_tr, x_va, y_va, alphas=(0.1, 1, 10, 100, 1000)):
    """Best validation MSE of ridge regression x -> y over alphas, and the constant's."""
    from sklearn.linear_model import Ridge

    const = float(((y_va - y_tr.mean(0)) ** 2).mean())
    best = min(float(((Ridge(alpha=a).fit(x_tr, y_tr).predict(x_va) - y_va) ** 2).mean()) for a in alphas)
    return best, const


def main(argv=None) -> int:
    from u2a.config import load_run_config
    from u2a.data.datasets import build_datasets
    from u2a.data.processing import build_collator
    from u2a.methods import method_of
    from u2a.methods.u2a.estimators import reachable_floor
    from u2a.pipelines.demo import recipe_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(recipe_path("emoji")))
    p.add_argument("--out", default="docs/results/estimator_probes.json")
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders to measure (step 7)")
    p.add_argument("--n", type=int, default=512, help="training samples for the untrained probes")
    args = p.parse_args(argv)
    t0 = time.time()
    torch.manual_seed(0)
    out: dict = {"config": args.config, "command": "python " + " ".join(sys.argv)}

    cfg = load_run_config(args.config, ["model.u2a.estimator=paper"])
    ds = build_datasets(cfg, None, write_tables=False)
    collate = build_collator(cfg.model, train=False)
    model = method_of(cfg.model).build_model(cfg.model).eval()
    mods = model.modalities
    feats = encode(model, ds["train"], collate, args.n)
    cls = {m: feats.cls[m].float() for m in mods}

    # 1. floors and 3. spreads
    norms = {m: model.encoders[m].final_norm for m in mods}
    out["final_norm_scale"] = {m: {"min": float(norms[m].weight.min()), "max": float(norms[m].weight.max()),
                                   "mean": float(norms[m].weight.mean())} for m in mods}
    out["cls_variance_per_dim"] = {m: float(cls[m].var(0, unbiased=False).mean()) for m in mods}
    floors = {}
    for s in mods:
        for t in mods:
            if s == t:
                continue
            y = cls[t]
            fl = reachable_floor(norms[s].weight.detach(), norms[s].bias.detach(), y)
            floors[f"{s}->{t}"] = {"floor": float(fl.mean()), "constant": float(((y - y.mean(0)) ** 2).mean())}
    out["floor"] = floors

    # 4. the available modality's CLS with the mask tokens in its sequence vs without them
    cfg_no = load_run_config(args.config, ["model.u2a.mask_tokens=false"])
    torch.manual_seed(0)
    no_mt = method_of(cfg_no.model).build_model(cfg_no.model).eval()
    feats_no = encode(no_mt, ds["train"], collate, args.n)
    out["cls_shift_from_mask_tokens_pct_of_variance"] = {
        m: float(100 * ((cls[m] - feats_no.cls[m].float()) ** 2).mean() / cls[m].var(0, unbiased=False).mean()) for m in mods}

    # 5. token scales and the relative step of Adam at the recipe's lr
    rms = method_of(cfg.model).collect(model, ds["train"], collate, list(range(min(args.n, len(ds["train"])))))["embed_rms"]
    lr = cfg.train.lr
    out["token_rms"] = {m: {"cls_token": float(model.cls_tokens[m].pow(2).mean().sqrt()),
                            "embedded_tokens": rms[m],
                            "adam_step_pct_of_cls_token": float(100 * lr / model.cls_tokens[m].pow(2).mean().sqrt())}
                        for m in mods}

    # 6. ridge regression ceiling (train -> val)
    feats_va = encode(model, ds["val"], collate)
    ridge = {}
    for s in mods:
        for t in mods:
            if s == t:
                continue
            best, const = ridge_gain(cls[s].numpy(), cls[t].numpy(), feats_va.cls[s].float().numpy(),
                                     feats_va.cls[t].float().numpy())
            ridge[f"{s}->{t}"] = {"ridge_mse": best, "constant_mse": const, "gain_pct": 100 * (1 - best / const)}
    out["ridge_ceiling"] = ridge

    # 8. logistic regression on each modality's frozen CLS (train -> test, C chosen on val)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def frozen(split):
        f = encode(no_mt, ds[split], collate)
        labels = torch.cat([collate([ds[split][i]])["labels"] for i in range(len(ds[split]))])
        return {m: (f.align_target or f.cls)[m].float().numpy() for m in mods}, labels.numpy()

    data = {split: frozen(split) for split in ("train", "val", "test")}

    def acc(clf, m, split):
        x, y = data[split]
        return float((clf.predict(x[m]) == y).mean())

    probe = {}
    for m in mods:
        fits = {c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
                .fit(data["train"][0][m], data["train"][1]) for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)}
        c = max(fits, key=lambda k: acc(fits[k], m, "val"))
        probe[m] = {"C": c, "val_accuracy": acc(fits[c], m, "val"), "test_accuracy": acc(fits[c], m, "test")}
    out["frozen_cls_logistic_regression"] = probe

    # 7. trained runs
    if args.runs:
        from u2a.methods.base import load_model
        from u2a.pipelines.evaluate import test_datasets

        out["trained"] = {}
        for run in args.runs:
            m = load_model(Path(run) / "best").eval()
            rcfg = load_run_config(Path(run) / "config.yaml", warn=False)
            test = test_datasets(rcfg)["test"]
            f = encode(m, test, build_collator(m.config, train=False))
            res = {"spread": {t: float(f.cls[t].float().var(0, unbiased=False).mean()) for t in m.modalities}}
            if hasattr(m, "estimate_errors") and f.align_pred:
                res["estimates"] = m.estimate_errors(m.estimate_sums(f))
                # how close each estimate stays to its own source's CLS (point 7)
                res["estimate_vs_own_cls_mse"] = {f"{s}->{t}": float(((f.mt[(s, t)] - f.cls[s]) ** 2).mean())
                                                  for (s, t) in f.mt}
            out["trained"][str(run)] = res
    out["time_s"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

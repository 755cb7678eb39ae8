"""``u2a bench``: training-step and inference speed, memory and FLOP utilisation of a config's
model, each comparison measured side by side in one process (docs/benchmarks.md).
``u2a bench --export DIR``: latency of an exported model (onnxruntime) next to PyTorch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from u2a.commands import positive_int


def default_config() -> str:
    from importlib import resources

    return str(resources.files("u2a.recipes") / "emoji.yaml")


def _log(line: str) -> None:
    print(f"u2a bench: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import torch

    from u2a.bench import Bench, BenchOptions
    from u2a.bench.report import render
    from u2a.errors import ConfigError
    from u2a.io import atomic_write_json

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA device here")
    if args.export:
        from u2a.export.latency import export_latency, render_latency

        result = export_latency(args.export, repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                                text_tokens=args.text_tokens, log=_log)
        text = render_latency(result)
    else:
        from u2a.config import load_run_config
        from u2a.methods import method_of

        config = args.config or default_config()
        cfg = load_run_config(config, args.overrides or [], warn=False)
        pretrained = {"pretrained": True, "random": False}.get(args.weights)
        opts = BenchOptions(batch_size=args.batch_size or cfg.train.batch_size, repeats=args.repeats,
                            warmup=args.warmup, device=args.device, precision=args.precision,
                            attention=args.attention or cfg.train.attention, only=only,
                            text_tokens=args.text_tokens, scenario=args.scenario,
                            compile_timeout=args.compile_timeout, compile_backend=args.compile_backend,
                            peak_size=args.peak_size, seed=args.seed)
        _log(f"building the model of {config} "
             f"({'config weights' if pretrained is None else 'pretrained' if pretrained else 'random init'})")
        torch.manual_seed(args.seed)
        model = method_of(cfg.model).build_model(cfg.model, pretrained=pretrained)
        mods = cfg.model.modalities
        text_tokens = {m.name: int(args.text_tokens or m.max_length or 32) for m in mods if m.kind == "text"}
        image_sizes = {m.name: m.image_size for m in mods if m.image_size}
        frames = {m.name: m.frames for m in mods if m.kind == "video"}
        meta = {"config": config, "overrides": list(args.overrides or []),
                "weights": "per config" if pretrained is None else ("pretrained" if pretrained else "random init"),
                "text_tokens": text_tokens, "image_sizes": image_sizes}
        bench = Bench(model, opts, text_tokens=text_tokens, image_sizes=image_sizes, frames=frames, meta=meta, log=_log)
        result = bench.run()
        text = render(result)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        print(f"wrote {out}")
    if args.fail_on_mismatch:
        bad = [n for n, rec in result.get("comparisons", {}).get("skip_absent", {}).get("scenarios", {}).items()
               if rec.get("logits_check") and not rec["logits_check"]["equal"]]
        if bad:
            print(f"u2a bench: logits of the skip path differ from the placeholder path in {bad}", file=sys.stderr)
            return 1
    return 0


def register(sub, formatter_class) -> None:
    from u2a.bench.runner import COMPARISONS

    p = sub.add_parser(
        "bench",
        help="measure training and inference speed, memory and FLOP utilisation (comparisons side by side)",
        description="Build the model of a run config (default: the demo recipe) and measure, side by side in one "
        "process (variants interleaved round-robin, medians over --repeats after --warmup): "
        + "; ".join(COMPARISONS) + ". Writes every figure as JSON (--out) and prints a table. "
        "With --export DIR: per-sample latency of an exported model (onnxruntime) next to PyTorch. "
        "See docs/benchmarks.md.",
        formatter_class=formatter_class,
    )
    p.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides of the config")
    p.add_argument("--config", default=None, help="run config YAML (default: the demo recipe, emoji.yaml)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="samples per step (default: the config's train.batch_size)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per comparison (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each variant first")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--pretrained", dest="weights", action="store_const", const="pretrained",
                   help="load every encoder's pretrained weights")
    w.add_argument("--random-init", dest="weights", action="store_const", const="random",
                   help="randomly initialised encoders (offline for the shipped architecture configs)")
    p.set_defaults(weights=None)
    p.add_argument("--only", default=None, metavar="NAME,...", help=f"comparisons to run, of {','.join(COMPARISONS)}")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="precision of skip_absent, compile, lora and latency")
    p.add_argument("--attention", default=None, choices=["auto", "eager", "sdpa"],
                   help="attention kernel outside the attention comparison (default: the config's train.attention)")
    p.add_argument("--scenario", default="eta0", choices=["eta0", "both70", "text70"],
                   help="missing-modality scenario of precision, attention, compile and lora")
    p.add_argument("--text-tokens", type=int, default=None, help="tokens per text sample (default: max_length, else 32)")
    p.add_argument("--compile-timeout", type=float, default=300.0, help="give up compiling after this many seconds")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument("--peak-size", type=int, default=None,
                   help="side of the square matmul that measures the peak (default: 1024 on CPU, 8192 on CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", default=None, metavar="DIR",
                   help="measure an exported model (u2a export) instead: onnxruntime vs PyTorch latency")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    p.add_argument("--fail-on-mismatch", action="store_true",
                   help="exit 1 when the skip path's logits differ from the placeholder path's")
    p.set_defaults(func=run)

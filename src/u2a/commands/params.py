"""``u2a params CONFIG``: total and learnable parameters of the model a config describes."""

from __future__ import annotations

import argparse

from u2a.config import load_model_config, load_run_config


def run(args: argparse.Namespace) -> int:
    from u2a.methods import method_of

    if args.overrides:  # a run config and key=value overrides, as `u2a train` takes them
        cfg = load_run_config(args.config, args.overrides, warn=False).model
    else:
        cfg = load_model_config(args.config)
    if args.method:
        cfg.method = args.method
    method = method_of(cfg)
    # counting needs the architecture only: randomly initialised encoders, built offline for the
    # encoders whose configs u2a ships
    model = method.build_model(cfg, pretrained=False if not args.pretrained else None)
    total, learnable = model.count_parameters()
    print(f"config: {args.config} (method: {method.display_name(cfg)})")
    for m in cfg.modalities:
        enc = model.encoders[m.name]
        print(f"  {m.name:<8} {m.encoder} ({enc.family}, {enc.num_layers} layers, width {enc.hidden_size})")
    print(f"total parameters:     {total:,} ({total / 1e6:.2f}M)")
    print(f"learnable parameters: {learnable:,} ({learnable / 1e6:.2f}M)")
    if args.verbose:
        groups: dict[str, int] = {}
        for n, p in model.named_parameters():
            if p.requires_grad:
                key = "lora" if "lora_" in n else n.split(".")[0]
                groups[key] = groups.get(key, 0) + p.numel()
        for k, v in groups.items():
            print(f"  {k:<12} {v:,}")
    return 0


def register(sub, formatter_class) -> None:
    p = sub.add_parser(
        "params",
        help="count total and learnable parameters of a config's model",
        description="Build the model of CONFIG (randomly initialised encoders, so it works offline) "
        "and print its total and learnable parameter counts.",
        formatter_class=formatter_class,
    )
    p.add_argument("config", help="a run or model YAML config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of a run config, e.g. model.u2a.estimator=paper model.lora.rank=4")
    p.add_argument("--pretrained", action="store_true", help="load the encoders' weights instead of random init")
    p.add_argument("--method", default=None, help="count for this method instead of the config's model.method")
    p.add_argument("-v", "--verbose", action="store_true", help="break learnable parameters down by group")
    p.set_defaults(func=run)

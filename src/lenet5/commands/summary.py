"""``lenet5 summary MODEL`` and ``lenet5 models``."""

from __future__ import annotations

import json

from ..config import PRESETS
from ..models import create_model, get_entry, list_models
from ..reporting.summary import format_table, layer_table


def register(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: shapes, parameters, connections, mult-adds")
    p.add_argument("model", help="registered model name, preset name, or checkpoint path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)
    q = sub.add_parser("models", help="list registered models, presets and bundled weights")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_models)


def resolve_model(spec: str):
    if spec in list_models():
        return spec, create_model(spec)
    if spec in PRESETS:
        preset = PRESETS[spec]
        return f"{preset['model']} (preset {spec})", create_model(preset["model"], **preset.get("model_args", {}))
    from ..checkpoint import load_model

    model, meta = load_model(spec)
    return f"{meta['model']} ({spec})", model


def cmd_summary(args) -> int:
    name, model = resolve_model(args.model)
    rows = layer_table(model)
    print(json.dumps({"model": name, "layers": rows}, indent=2) if args.json else format_table(name, rows))
    return 0


def cmd_models(args) -> int:
    models = []
    for name in list_models():
        e = get_entry(name)
        n = sum(p.numel() for p in create_model(name).parameters() if p.requires_grad)
        models.append({"name": name, "head": e.head, "normalization": e.normalization,
                       "loss": e.loss, "params": n, "description": e.description})
    presets = {k: v["model"] for k, v in PRESETS.items()}
    bundled = bundled_summary()
    if args.json:
        print(json.dumps({"models": models, "presets": presets, "bundled": bundled}, indent=2))
        return 0
    print("models:")
    for m in models:
        print(f"  {m['name']:<14} {m['params']:>7,} params  {m['head']:<6} head  {m['description']}")
    print("presets (use with --preset):")
    for k, v in presets.items():
        print(f"  {k:<14} {v}")
    print("bundled weights (use with `lenet5 predict --model`; * = default):")
    for b in bundled:
        mark = "*" if b["default"] else " "
        print(f"{mark} {b['name']:<14} {b['model']:<14} test accuracy {b['accuracy'] * 100:.2f}% "
              f"({b['errors']} errors)  preset {b['preset']}, seed {b['seed']}")
    if not bundled:
        print("  (none installed)")
    return 0


def bundled_summary() -> list[dict]:
    from ..weights import bundled_models, default_name

    entries = bundled_models()
    default = default_name(entries) if entries else None
    return [{"name": e["name"], "model": e["card"]["model"], "preset": e["card"]["preset"],
             "seed": e["card"]["seed"], "accuracy": e["card"]["test"]["accuracy"],
             "errors": e["card"]["test"]["errors"], "path": str(e["path"]),
             "default": e["name"] == default} for e in entries]

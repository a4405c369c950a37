"""``lenet5 summary MODEL`` and ``lenet5 models``.

Both show what is actually trained: a preset is summarised as the model (variant) and options it
trains, and bundled weights are named by the registered model nearest to what they hold, with
the options that still differ (``lenet5-modern-bn (dropout 0.1)``).
"""

from __future__ import annotations

import json

from ..config import PRESETS
from ..models import create_model, describe, get_entry, label, list_models


def register(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: shapes, parameters, connections, mult-adds")
    p.add_argument("model", help="registered model or variant, preset name, or checkpoint path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summary)
    q = sub.add_parser("models", help="list registered models, presets and bundled weights")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_models)


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_model(spec: str):
    """``(title, torch model)`` for a registered model, a preset, or a checkpoint."""
    if spec in list_models():
        return spec, create_model(spec)
    if spec in PRESETS:
        preset = PRESETS[spec]
        options = preset.get("model_args", {})
        return (f"{label(preset['model'], options)} (preset {spec})",
                create_model(preset["model"], **options))
    from ..checkpoint import CheckpointError
    from ..inference.load import load

    try:
        loaded = load(spec)
    except CheckpointError as e:
        if "no bundled model" not in str(e):
            raise
        raise CheckpointError(f"{e}; registered models: {', '.join(list_models())}; presets: "
                              f"{', '.join(PRESETS)}") from None
    model, meta = loaded.model, loaded.meta
    return f"{describe(meta['model'], meta.get('model_config', {}))} ({spec})", model


def cmd_summary(args) -> int:
    from ..reporting.summary import format_table, layer_table

    name, model = resolve_model(args.model)
    rows = layer_table(model)
    print(json.dumps({"model": name, "layers": rows}, indent=2) if args.json else format_table(name, rows))
    return 0


def cmd_models(args) -> int:
    models = []
    for name in list_models():
        e = get_entry(name)
        models.append({"name": name, "architecture": e.architecture, "options": e.defaults,
                       "head": e.head, "normalization": e.normalization, "loss": e.loss,
                       "params": trainable_params(create_model(name)),
                       "description": e.description})
    presets = {}
    for k, p in PRESETS.items():
        options = p.get("model_args", {})
        presets[k] = {"model": p["model"], "model_args": options, "label": label(p["model"], options),
                      "params": trainable_params(create_model(p["model"], **options))}
    bundled = bundled_summary()
    if args.json:
        print(json.dumps({"models": models, "presets": presets, "bundled": bundled}, indent=2))
        return 0
    print("models:")
    for m in models:
        print(f"  {m['name']:<17} {m['params']:>7,} params  {m['head'] + ' head':<12} "
              f"{m['description']}")
    print("presets (use with --preset; the model each trains):")
    for k, p in presets.items():
        print(f"  {k:<17} {p['params']:>7,} params  {p['label']}")
    print("bundled weights (use with: lenet5 predict --model NAME; * = default):")
    for b in bundled:
        mark = "*" if b["default"] else " "
        print(f"{mark} {b['name']:<17} {b['params']:>7,} params  {b['label']}  test accuracy "
              f"{b['accuracy'] * 100:.2f}% ({b['errors']} errors)  preset {b['preset']}, "
              f"seed {b['seed']}")
    if not bundled:
        print("  (none installed)")
    return 0


def bundled_summary() -> list[dict]:
    from ..weights import bundled_models, default_name

    entries = bundled_models()
    default = default_name(entries) if entries else None
    out = []
    for e in entries:
        card = e["card"]
        options = card.get("model_config") or card.get("train_config", {}).get("model_args", {})
        text = describe(card["model"], options)
        out.append({"name": e["name"], "model": card["model"], "label": text,
                    "params": card.get("params"), "preset": card["preset"], "seed": card["seed"],
                    "accuracy": card["test"]["accuracy"], "errors": card["test"]["errors"],
                    "path": str(e["path"]), "default": e["name"] == default})
    return out

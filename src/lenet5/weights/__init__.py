"""Pretrained weights shipped with the package, each with its model card.

Each bundled model ``NAME`` is three files in this folder: ``NAME.safetensors`` (a lenet5
checkpoint without optimiser state; :func:`lenet5.checkpoint.load_model` reads it),
``NAME.json`` (the model card: command, seed, commit, test accuracy, error count, per-class
accuracy) and ``NAME.md`` (the same card for people). ``lenet5 bundle RUN_DIR NAME`` writes
them from a training run (:mod:`lenet5.inference.bundle`).
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "lenet5-modern"  # the registered model whose best bundled weights are the default


def bundled_models(directory: str | Path = WEIGHTS_DIR) -> list[dict]:
    """``[{"name", "path", "card"}]`` for every ``NAME.safetensors`` with a ``NAME.json`` card."""
    out = []
    for path in sorted(Path(directory).glob("*.safetensors")):
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        out.append({"name": path.stem, "path": path, "card": card})
    return out


def default_name(models: list[dict] | None = None) -> str:
    """The most accurate bundled ``lenet5-modern``; failing that, the most accurate of any."""
    models = bundled_models() if models is None else models
    if not models:
        raise ValueError("no bundled weights are installed (see `lenet5 bundle`)")
    modern = [m for m in models if m["card"].get("model") == DEFAULT_MODEL] or models
    return max(modern, key=lambda m: m["card"]["test"]["accuracy"])["name"]


def get_bundled(name: str | None = None) -> dict:
    """The bundled entry called ``name`` (default: :func:`default_name`)."""
    models = bundled_models()
    name = name or default_name(models)
    for m in models:
        if m["name"] == name:
            return m
    known = ", ".join(m["name"] for m in models) or "none"
    raise ValueError(f"no bundled model {name!r}; bundled: {known}")

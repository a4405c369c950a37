"""Pretrained weights shipped with the package, each with its model card.

Each bundled model ``NAME`` is three files in this folder: ``NAME.safetensors`` (a lenet5
checkpoint without optimiser state; :func:`lenet5.inference.load.load` reads it by name),
``NAME.json`` (the model card: command, seed, commit, test accuracy, error count, per-class
accuracy) and ``NAME.md`` (the same card for people). ``lenet5 bundle RUN_DIR NAME`` writes
them from a training run (:mod:`lenet5.inference.bundle`).

:func:`default_name` is the one place that says which bundled model is the default: what
``lenet5 models`` marks, what ``predict``, ``viz``, ``report`` and ``evaluate`` use when given
no model, and what ``serve`` lists first.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "lenet5-modern"  # the registered model whose best bundled weights are the default
# The default when it ships (issue #17): trained for robust reading, with a reject calibration.
# A user drawing on the page or photographing a digit meets turned, thick, thin and noisy
# digits, and non-digits, far more often than MNIST's last tenth of a percent.
DEFAULT_BUNDLE = "lenet5-robust"


def bundled_models(directory: str | Path = WEIGHTS_DIR) -> list[dict]:
    """``[{"name", "path", "card"}]`` for every ``NAME.safetensors`` with a ``NAME.json`` card:
    the default (:func:`default_name`) first, then the others by name."""
    models = _scan(directory)
    if not models:
        return models
    default = default_name(models)
    return sorted(models, key=lambda m: (m["name"] != default, m["name"]))


def _scan(directory: str | Path) -> list[dict]:
    out = []
    for path in sorted(Path(directory).glob("*.safetensors")):
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        out.append({"name": path.stem, "path": path, "card": card})
    return out


def default_name(models: list[dict] | None = None) -> str:
    """``DEFAULT_BUNDLE`` when it ships; else the most accurate bundled ``lenet5-modern``;
    failing that, the most accurate of any."""
    models = _scan(WEIGHTS_DIR) if models is None else models
    if not models:
        raise ValueError("no bundled weights are installed (see `lenet5 bundle`)")
    if any(m["name"] == DEFAULT_BUNDLE for m in models):
        return DEFAULT_BUNDLE
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

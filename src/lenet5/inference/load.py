"""One front door for models: whatever a user holds becomes a model plus its metadata.

``load(source)`` takes what any command is given (litgpt's ``Config.from_name / from_file /
from_checkpoint`` and timm's ``create_model`` in one function):

- ``None``: the default bundled model (:func:`lenet5.weights.default_name`, the one
  ``lenet5 models`` marks with ``*``);
- a run directory (``runs/x``, holding ``checkpoint.safetensors``, ``metrics.jsonl`` and
  ``config.json``) or a checkpoint file (``runs/x/checkpoint.safetensors``, ``model.safetensors``);
- the name of a bundled model (``lenet5-modern``). A file or folder of that name wins.

The checkpoint is checked once, against the schema of :mod:`lenet5.checkpoint`, and the model is
built for the engine asked for: ``"torch"`` (an ``nn.Module`` in eval mode on ``device``) or
``"numpy"`` (a :class:`lenet5.scratch.Model`). Every problem is one :class:`CheckpointError`
line, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint as ckpt
from ..checkpoint import CheckpointError

ENGINES = ("torch", "numpy")


@dataclass(frozen=True)
class Source:
    """Where a model comes from: the checkpoint file, what to call it, its run directory."""

    path: Path
    name: str
    run_dir: Path | None = None
    bundled: bool = False


@dataclass
class Loaded:
    """A model and everything known about it. ``history`` and ``train_config`` come from the
    run directory's ``metrics.jsonl`` and ``config.json`` when there is one, else from the
    checkpoint's own copies; they are read when first asked for."""

    model: Any
    meta: dict
    name: str
    path: Path
    run_dir: Path | None
    engine: str

    @functools.cached_property
    def history(self) -> list[dict]:
        rows = self.meta.get("history", [])
        if self.run_dir is not None and (file := self.run_dir / "metrics.jsonl").is_file():
            rows = _read_json(file, lines=True)
            if problem := ckpt.FIELDS["history"](rows):
                raise CheckpointError(f"{file}: history {problem}")
        return rows

    @functools.cached_property
    def train_config(self) -> dict:
        config = self.meta.get("train_config", {})
        if self.run_dir is not None and (file := self.run_dir / "config.json").is_file():
            config = _read_json(file)
            if not isinstance(config, dict):
                raise CheckpointError(f"{file}: not a JSON object")
        return config


def load(source: str | Path | None = None, *, engine: str = "torch", device: str = "cpu") -> Loaded:
    """The model ``source`` names (see the module docstring), checked, for ``engine``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    src = resolve(source)
    state, _, meta = ckpt.read_checkpoint(src.path, purpose="model")
    meta = with_defaults(meta)
    try:
        model = _build_torch(meta, state, device) if engine == "torch" else _build_numpy(meta, state)
    except (KeyError, ValueError, RuntimeError) as e:  # the schema compares shapes first: a last resort
        raise CheckpointError(f"{src.path}: weights do not fit {meta['model']}: "
                              f"{' '.join(str(e).split())}") from None
    _check_outputs(model, meta, src.path, engine)
    return Loaded(model, meta, src.name, src.path, src.run_dir, engine)


def resolve(source: str | Path | None = None) -> Source:
    """Which checkpoint file ``source`` means, without opening it."""
    from ..weights import bundled_models, default_name

    if source is None:
        source = default_name()
    path = Path(source)
    if path.exists():
        file = ckpt.resolve(path)  # a folder without a checkpoint, a FIFO: CheckpointError
        run_dir = path if path.is_dir() else (path.parent if path.name == ckpt.CHECKPOINT_NAME else None)
        return Source(file, run_name(path), run_dir)
    bundled = {m["name"]: m for m in bundled_models()}
    if str(source) in bundled:
        return Source(bundled[str(source)]["path"], str(source), bundled=True)
    if path.suffix == ".safetensors" or "/" in str(source) or os.sep in str(source):
        raise CheckpointError(f"{source}: no checkpoint found (no such file or directory)")
    known = ", ".join(bundled) or "none"
    raise CheckpointError(f"no bundled model {str(source)!r} and no file or folder of that name "
                          f"(bundled: {known})")


def run_name(path: str | Path) -> str:
    """``runs/bn`` and ``runs/bn/checkpoint.safetensors`` are both called ``bn``; any other file
    by its stem (``lenet5-modern.safetensors``: ``lenet5-modern``)."""
    p = Path(path).resolve()
    if p.is_file():
        return p.parent.name if p.name == ckpt.CHECKPOINT_NAME else p.stem
    return p.name


def with_defaults(meta: dict) -> dict:
    """``meta`` with what older files may leave out filled in from the model and dataset:
    ``model_config`` complete, ``head``, ``dataset`` and ``classes``."""
    from ..data.datasets import get_spec
    from ..models import get_entry, make_config

    entry = get_entry(meta["model"])
    dataset = meta.get("dataset", "mnist")
    return {**meta, "model_config": make_config(entry.name, meta.get("model_config", {})).to_dict(),
            "head": entry.head, "dataset": dataset,
            "classes": list(meta.get("classes", get_spec(dataset).classes))}


def _build_torch(meta: dict, state: dict[str, np.ndarray], device: str):
    import torch

    from ..models import create_model

    model = create_model(meta["model"], **meta["model_config"])
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return model.to(device).eval()


def _build_numpy(meta: dict, state: dict[str, np.ndarray]):
    from ..scratch import build

    model = build(meta["model"], meta["model_config"], np.float32)
    model.load_state_dict(state)
    return model.train(False)


def _check_outputs(model, meta: dict, path: Path, engine: str) -> None:
    """Finite weights can still overflow to inf on the way up: a blank and a full field must
    give finite outputs, or the file would answer NaN to every question."""
    norm = meta["normalization"]
    probe = (np.stack([np.zeros((1, 32, 32)), np.ones((1, 32, 32))]) - norm["shift"]) * norm["scale"]
    probe = probe.astype(np.float32)
    if engine == "torch":
        import torch

        device = next(iter([*model.parameters(), *model.buffers()])).device  # k-NN: buffers only
        with torch.no_grad():
            out = model(torch.from_numpy(probe).to(device)).float().cpu().numpy()
    else:
        out = model.forward(probe, train=False)
    if not np.isfinite(out).all():
        raise CheckpointError(f"{path}: the weights give non-finite outputs (overflow)")


MAX_SIDE_FILE = 64 * 2**20  # config.json, metrics.jsonl: a run of 100,000 epochs is ~40 MB


def _read_json(file: Path, lines: bool = False) -> Any:
    """A run's JSON side file, bounded: a larger one is an error before it is read."""
    try:
        size = file.stat().st_size
        if size > MAX_SIDE_FILE:
            raise CheckpointError(f"{file}: {size:,} bytes, over the {MAX_SIDE_FILE:,} a run's "
                                  "JSON file may have")
        text = file.read_text()
        return [json.loads(s) for s in text.splitlines() if s.strip()] if lines else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, MemoryError) as e:
        raise CheckpointError(f"{file}: not readable JSON ({type(e).__name__})") from None

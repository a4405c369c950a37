"""Tampered copies of real checkpoints, written with ``safetensors.numpy.save_file`` directly
(so nothing of lenet5's own writer can tidy them up)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.numpy import save_file

from lenet5.weights import bundled_models

BUNDLED = {m["name"]: m["path"] for m in bundled_models()}


def read_raw(path: str | Path) -> tuple[dict, dict]:
    """``(tensors, meta)`` of a checkpoint file as stored, no checks."""
    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["lenet5"])
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def write_raw(path: str | Path, tensors: dict, meta=None, header: str | None = None) -> Path:
    """Write ``tensors`` with ``meta`` as JSON (or the raw ``header`` text) as the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = header if header is not None else json.dumps(meta)
    save_file(tensors, str(path), metadata={"lenet5": text})
    return path


def tampered(path: str | Path, name: str = "lenet5-modern", meta_fn=None, tensors_fn=None) -> Path:
    """A copy of bundled model ``name`` at ``path``, its meta and tensors passed through the
    given functions (each returns the new value)."""
    tensors, meta = read_raw(BUNDLED[name])
    if meta_fn is not None:
        meta = meta_fn(meta)
    if tensors_fn is not None:
        tensors = tensors_fn(tensors)
    return write_raw(path, tensors, meta)

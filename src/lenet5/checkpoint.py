"""Self-describing checkpoints: one safetensors file, JSON metadata in its header.

``<run>/checkpoint.safetensors`` holds the model's state dict under its own names (the
unwrapped module's keys, buffers such as batch-norm statistics included) and, under the prefix
``optimizer/``, the optimiser's tensors. Its header metadata key ``lenet5`` is a JSON document:
model name and config, normalisation, train config, epoch and step, metrics, the optimiser's
non-tensor state and library versions, so loading needs no flags. ``<run>/checkpoint.json`` is
a readable copy of that document. Every write goes to a temporary file in the same folder and is
renamed into place (atomic on POSIX), so an interrupted save never leaves half a file. Nothing
is ever unpickled.

The format is framework-neutral: :func:`read_checkpoint` returns NumPy arrays, which the NumPy
engine reads directly.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lenet5-checkpoint/1"
OPT_PREFIX = "optimizer/"
CHECKPOINT_NAME = "checkpoint.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or not a lenet5 checkpoint."""


def atomic_write(path: str | Path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename the finished file over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def versions() -> dict[str, str]:
    import lenet5

    out = {"lenet5": lenet5.__version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:  # the NumPy engine works without torch
        pass
    return out


def to_numpy(value: Any) -> np.ndarray:
    """A contiguous array of the same shape; 0-d stays 0-d (``num_batches_tracked``), which
    ``np.ascontiguousarray`` alone would turn into shape (1,)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    return value if value.ndim == 0 else np.ascontiguousarray(value)


def save_checkpoint(
    path: str | Path,
    state: dict[str, Any],
    meta: dict[str, Any],
    optimizer_tensors: dict[str, Any] | None = None,
) -> Path:
    """Write weights (+ optimiser tensors) and metadata atomically; also a JSON sidecar."""
    from safetensors.numpy import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / CHECKPOINT_NAME
    meta = {"format": FORMAT, "versions": versions(), **meta}
    tensors = {k: to_numpy(v) for k, v in state.items()}
    for k, v in (optimizer_tensors or {}).items():
        tensors[OPT_PREFIX + k] = to_numpy(v)
    header = {"lenet5": json.dumps(meta, default=_json_default)}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=header))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, default=_json_default))
    return path


def resolve(path: str | Path) -> Path:
    """Accept a run directory or the ``.safetensors`` file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint found")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """``(model_state, optimizer_tensors, meta)`` as NumPy arrays, validated."""
    from safetensors import SafetensorError, safe_open

    path = resolve(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if "lenet5" not in header:
        raise CheckpointError(f"{path}: safetensors file without lenet5 metadata")
    try:
        meta = json.loads(header["lenet5"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}")
    state = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    return state, opt, meta


def load_model(path: str | Path, device: str = "cpu"):
    """Rebuild the PyTorch model a checkpoint describes: ``(model, meta)``, in eval mode."""
    import torch

    from .models import create_model

    state, _, meta = read_checkpoint(path)
    model = create_model(meta["model"], **meta.get("model_config", {}))
    try:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {meta['model']}: {e}") from None
    return model.to(device).eval(), meta


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")

"""Self-describing checkpoints: one safetensors file, JSON metadata in its header.

``<run>/checkpoint.safetensors`` holds the model's state dict under its own names (the
unwrapped module's keys, buffers such as batch-norm statistics included) and, under the prefix
``optimizer/``, the optimiser's tensors. Its header metadata key ``lenet5`` is a JSON document:
model name and config, normalisation, train config, epoch and step, metrics, the optimiser's
non-tensor state and library versions, so loading needs no flags. ``<run>/checkpoint.json`` is
a readable copy of that document. Every write goes to a temporary file in the same folder and is
renamed into place (atomic on POSIX), so an interrupted save never leaves half a file. Nothing
is ever unpickled.

Every checkpoint is checked once, when it is opened (:func:`read_checkpoint`), against one
schema (:data:`FIELDS`): the metadata's keys and types, the model and its config, the head,
the normalisation, and the tensors' names, shapes and dtypes compared with the model's own
*from the file's header, before any tensor is read*, then every float finite. Whatever is
wrong becomes one :class:`CheckpointError` line. Which keys must be present depends on what
the file is opened for (:data:`PURPOSES`): a model needs ``model`` and ``normalization``, a
resumed run also its config, epoch and optimiser state.

The format is framework-neutral: :func:`read_checkpoint` returns NumPy arrays, which the NumPy
engine reads directly. :func:`lenet5.inference.load.load` turns a checkpoint into a model.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import platform
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "lenet5-checkpoint/1"
OPT_PREFIX = "optimizer/"
# A weight average (training/ema.py) keeps, among the optimiser tensors, the live weights under
# this prefix and its step count under this key.
LIVE_PREFIX = "ema_live."
COUNT_KEY = "ema_steps"
CHECKPOINT_NAME = "checkpoint.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, inconsistent, or not a lenet5 checkpoint."""


# ----------------------------------------------------------------------------- writing


def _umask() -> int:
    """This process's umask, read without changing it where Linux says (a server's threads may
    be creating files meanwhile), else by setting it and back (at import, before any)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file: 0644 under umask 022


def atomic_write(path: str | Path, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then rename the finished file over ``path``, with the mode a
    plain new file would get (``mkstemp`` makes its files private)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, say: named by the file asked for, not the temporary one
        Path(tmp).unlink(missing_ok=True)
        if e.filename is not None and os.fsdecode(e.filename) == tmp and e.errno is not None:
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def versions() -> dict[str, str]:
    import lenet5

    out = {"lenet5": lenet5.__version__, "python": platform.python_version(), "numpy": np.__version__}
    torch = sys.modules.get("torch")  # not imported for it: the compiled engine runs without
    if torch is not None:
        out["torch"] = torch.__version__
    else:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out["torch"] = version("torch")
        except PackageNotFoundError:  # the NumPy engine works without torch
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
    """Write weights (+ optimiser tensors) and metadata atomically; also a JSON sidecar.

    A failed write (a full disk, a read-only folder) is one :class:`CheckpointError` line;
    the previous checkpoint is untouched and no temporary file is left behind.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / CHECKPOINT_NAME
    meta = {"format": FORMAT, "versions": versions(), **meta}
    tensors = {k: to_numpy(v) for k, v in state.items()}
    for k, v in (optimizer_tensors or {}).items():
        tensors[OPT_PREFIX + k] = to_numpy(v)
    header = {"lenet5": json.dumps(meta, default=_json_default)}
    write_safetensors(path, tensors, header)
    try:
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, default=_json_default))
    except OSError as e:
        raise CheckpointError(f"{path.with_suffix('.json')}: could not write the readable copy of "
                              f"the metadata ({_os_reason(e)}); the checkpoint itself was saved") from None
    return path


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], header: dict[str, str]) -> Path:
    """``safetensors.numpy.save_file`` through :func:`atomic_write`, failures as one line."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    try:
        return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=header))
    except (OSError, SafetensorError) as e:
        kept = "the previous checkpoint is unchanged" if path.exists() else "nothing was written"
        raise CheckpointError(f"{path}: could not save the checkpoint ({_os_reason(e)}); {kept}") from None


def _os_reason(e: BaseException) -> str:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(reason.split()) or type(e).__name__


# ----------------------------------------------------------------------------- the schema


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _object(v: Any) -> str | None:
    return None if isinstance(v, dict) else "must be a JSON object"


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a non-empty string"


def _count(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be a whole number >= 0"


def _history(v: Any) -> str | None:
    """Per-epoch rows as ``metrics.jsonl`` holds them: numbers (or null) by name, with at least
    the epoch and the train and test errors."""
    if not isinstance(v, list):
        return "must be a list of per-epoch rows"
    for row in v:
        if not isinstance(row, dict) or _count(row.get("epoch")):
            return f"rows must be objects with an epoch >= 0, not {_short(row)}"
        for key, value in row.items():
            if not (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
                return f"row {row['epoch']}: {key} must be a number, not {_short(value)}"
        if not all(_is_number(row.get(k)) for k in ("train_error", "test_error")):
            return f"row {row['epoch']} lacks train_error or test_error"
    return None


def _classes(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 10 and all(isinstance(c, str) for c in v)
    return None if ok else "must be a list of 10 class names"


NORMALIZATION_MODES = ("paper", "standard", "none", "lush")  # lenet5.data.transforms.Normalization.make


def _normalization(v: Any) -> str | None:
    if not isinstance(v, dict):
        return "must be a JSON object {mode, shift, scale}"
    if v.get("mode") not in NORMALIZATION_MODES:
        return f"mode must be one of {', '.join(NORMALIZATION_MODES)}, not {_short(v.get('mode'))}"
    if not _is_number(v.get("shift")):
        return f"shift must be a finite number, not {_short(v.get('shift'))}"
    if not (_is_number(v.get("scale")) and v["scale"] > 0):
        return f"scale must be a finite number > 0, not {_short(v.get('scale'))}"
    return None


def _optimizer(v: Any) -> str | None:
    """The shared optimiser layout (:mod:`lenet5.training.optim_state`): type, lr, steps and
    scalar hyper-parameters."""
    if not isinstance(v, dict):
        return "must be a JSON object {type, lr, steps, ...}"
    if not isinstance(v.get("type"), str):
        return f"type must be a string, not {_short(v.get('type'))}"
    if not (_is_number(v.get("lr")) and v["lr"] >= 0):
        return f"lr must be a finite number >= 0, not {_short(v.get('lr'))}"
    if _count(v.get("steps")):
        return f"steps must be a whole number >= 0, not {_short(v.get('steps'))}"
    for key, value in v.items():
        if not (value is None or isinstance(value, (bool, str)) or _is_number(value)):
            return f"{key} must be a number, a string or a boolean, not {_short(value)}"
    return None


def _bundle(v: Any) -> str | None:
    return None if isinstance(v, dict) and isinstance(v.get("name"), str) else "must be {\"name\": ...}"


# Every key a checkpoint may hold, and what its value must be. Unknown keys are ignored.
FIELDS = {
    "format": lambda v: None if v == FORMAT else f"is {_short(v)}, not {FORMAT!r}",
    "model": _string,
    "model_config": _object,
    "normalization": _normalization,
    "dataset": _string,
    "classes": _classes,
    "head": _string,
    "engine": _string,
    "train_config": _object,
    "epoch": _count,
    "metrics": _object,
    "history": _history,
    "optimizer": _optimizer,
    "versions": _object,
    "bundle": _bundle,
}

# The keys each use of a checkpoint needs. "read": the file alone (tests, tools).
PURPOSES = {
    "read": ("format",),
    "model": ("format", "model", "normalization"),
    "bundle": ("format", "model", "normalization", "train_config", "epoch"),
    "resume": ("format", "model", "model_config", "normalization", "train_config", "epoch",
               "optimizer"),
}


def check_meta(meta: Any, purpose: str = "model") -> dict:
    """``meta`` checked against :data:`FIELDS` and the keys ``purpose`` needs; the model
    config checked against the model's own. Raises ``ValueError`` with what is wrong."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; choose from {', '.join(PURPOSES)}")
    if not isinstance(meta, dict):
        raise ValueError(f"metadata must be a JSON object, not {type(meta).__name__}")
    missing = [k for k in PURPOSES[purpose] if k not in meta]
    if missing:
        raise ValueError(f"metadata lacks {', '.join(missing)}")
    for key, check in FIELDS.items():
        if key in meta and (problem := check(meta[key])):
            raise ValueError(f"metadata field {key} {problem}")
    if "model" in meta:
        from .models import get_entry

        entry = get_entry(meta["model"])  # ValueError: unknown model, with the known ones
        if meta.get("head", entry.head) != entry.head:
            raise ValueError(f"metadata says head {meta['head']!r}, but {entry.name} has a "
                             f"{entry.head!r} head")
        check_model_config(entry, meta.get("model_config", {}))
    if "dataset" in meta:
        from .data.datasets import DATASETS

        if meta["dataset"] not in DATASETS:
            raise ValueError(f"metadata names an unknown dataset {_short(meta['dataset'])}; "
                             f"known: {', '.join(DATASETS)}")
    return meta


def check_model_config(entry, config: dict) -> dict:
    """The model's own config checks (:func:`lenet5.models.make_config`: known options, types,
    ranges); returns the full config as a dict."""
    from .models import make_config

    try:
        return make_config(entry.name, config).to_dict()
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_config: {e}") from None


# ----------------------------------------------------------------------------- tensors

# safetensors dtype codes by kind. bfloat16 and the float8 kinds have no NumPy dtype.
FLOAT_CODES = {"F16", "F32", "F64"}
INT_CODES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}


@functools.lru_cache(maxsize=32)
def _expected_state(model: str, config_json: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (kind, shape)}`` of the model's state dict. A config no larger than the default
    (every whole number in it at most its default) is built for real, which costs nothing: as
    the NumPy engine's model where it has one (the same names, kinds and shapes as torch's,
    tested; so the NumPy and compiled engines read checkpoints without importing PyTorch),
    else as the torch model. A larger one is built on torch's ``meta`` device: shapes and
    dtypes only, nothing allocated, whatever the widths. (Not always ``meta``: the 1998
    model's initialisation there imports torch's compiler stack, seconds on a first call.)"""
    from .models import create_model, get_entry

    config = json.loads(config_json)
    entry = get_entry(model)
    defaults = {f.name: f.default for f in fields(entry.config)}
    small = all(_sizes(v) <= _sizes(defaults.get(k)) for k, v in config.items())
    if small and entry.numpy is not None:
        state = _numpy_state(model, config)
        if state is not None:
            return state
    import torch

    with torch.device("cpu" if small else "meta"):
        module = create_model(model, **config)
    return {k: ("float" if v.is_floating_point() else "int", tuple(v.shape))
            for k, v in module.state_dict().items()}


def _numpy_state(model: str, config: dict) -> dict[str, tuple[str, tuple[int, ...]]] | None:
    """The NumPy model's ``{name: (kind, shape)}``, or None where it cannot build ``config``."""
    import numpy as np

    from .models import build_numpy

    try:
        state = build_numpy(model, config, "float32", 0).state_dict()
    except (ValueError, TypeError, NotImplementedError):
        return None  # an option only the torch model has: ask torch
    return {k: ("float" if np.issubdtype(v.dtype, np.floating) else "int", tuple(v.shape))
            for k, v in state.items()}


def _sizes(value: Any) -> int:
    """The largest whole number in a config value (0 if none): how big it can make a model."""
    if _is_int(value):
        return value
    if isinstance(value, (list, tuple)):
        return max((_sizes(v) for v in value), default=0)
    return 0


def expected_state(model: str, config: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    return _expected_state(model, json.dumps(config, sort_keys=True))


def _check_header(header: dict[str, tuple[str, tuple[int, ...]]], meta: dict, purpose: str) -> None:
    """Names, dtypes and shapes of the file's tensors against the model's, before reading any."""
    for key, (code, _) in header.items():
        if code not in FLOAT_CODES | INT_CODES:
            raise ValueError(f"tensor {key} has dtype {code}; weights must be float16/32/64")
    if "model" not in meta:
        return
    from .models import make_config

    config = make_config(meta["model"], meta.get("model_config", {})).to_dict()
    want = expected_state(meta["model"], config)
    state = {k: v for k, v in header.items() if not k.startswith(OPT_PREFIX)}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        what = ([f"missing {_names(missing)}"] if missing else []) + ([f"unexpected {_names(extra)}"] if extra else [])
        raise ValueError(f"tensors do not fit {meta['model']} with its model_config: {'; '.join(what)}")
    for key, (kind, shape) in want.items():
        code, got = state[key]
        if (kind == "float") != (code in FLOAT_CODES):
            need = "a float" if kind == "float" else "an integer"
            raise ValueError(f"tensor {key} has dtype {code}; {meta['model']} needs {need} tensor")
        if got != shape and not (shape == () and got == (1,)):  # old files: 0-d buffers as (1,)
            raise ValueError(f"tensor {key} has shape {list(got)}; {meta['model']} with its "
                             f"model_config needs {list(shape)}")
    if purpose == "resume":
        _check_optimizer_header(header, want)


def _check_optimizer_header(header: dict, want: dict) -> None:
    """Optimiser buffers are named ``<parameter>.<buffer>`` with the parameter's shape; an
    averaged run also keeps its live weights (``ema_live.<name>``) and a step count."""

    for key, (code, shape) in header.items():
        if not key.startswith(OPT_PREFIX):
            continue
        name = key[len(OPT_PREFIX) :]
        if name == COUNT_KEY:
            ok = code in INT_CODES and shape == (1,)
        elif name.startswith(LIVE_PREFIX):
            target = want.get(name[len(LIVE_PREFIX) :])
            ok = target is not None and (shape == target[1] or (target[1] == () and shape == (1,)))
        else:
            target = want.get(name.rsplit(".", 1)[0])
            ok = target is not None and target[0] == "float" and code in FLOAT_CODES and shape == target[1]
        if not ok:
            raise ValueError(f"optimizer tensor {name} ({code} {list(shape)}) does not fit the model")


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _check_values(tensors: dict[str, np.ndarray]) -> None:
    for key, v in tensors.items():
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(f"tensor {key} holds NaN or infinite values")
        if np.issubdtype(v.dtype, np.integer) and v.size and v.min() < 0:
            raise ValueError(f"tensor {key} holds negative counts")
        if key.endswith("running_var") and v.size and v.min() < 0:
            raise ValueError(f"tensor {key} holds negative variances")


# ----------------------------------------------------------------------------- reading


def resolve(path: str | Path) -> Path:
    """Accept a run directory or the ``.safetensors`` file itself (a regular file only)."""
    path = given = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path}: not a regular file")
    if not path.is_file():
        why = "" if given.exists() else " (no such file or directory)"
        raise CheckpointError(f"{path}: no checkpoint found{why}")
    return path


def read_checkpoint(
    path: str | Path, purpose: str = "read"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """``(model_state, optimizer_tensors, meta)`` as NumPy arrays, checked against the schema
    for ``purpose`` (:data:`PURPOSES`); anything wrong is one :class:`CheckpointError` line."""
    from safetensors import SafetensorError, safe_open

    path = resolve(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
            meta = _parse_meta(metadata)
            check_meta(meta, purpose)
            _check_header(header, meta, purpose)
            tensors = {k: f.get_tensor(k) for k in header}
        _check_values(tensors)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_os_reason(e)})") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {_one_line(e)}") from None
    state = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    return state, opt, meta


def _parse_meta(metadata: dict) -> Any:
    if "lenet5" not in metadata:
        raise ValueError("safetensors file without lenet5 metadata")
    try:
        return json.loads(metadata["lenet5"])
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"corrupt metadata ({type(e).__name__})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


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

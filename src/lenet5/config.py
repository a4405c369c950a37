"""``TrainConfig``: the single source of truth for a training run.

Defaults live here; a preset (a named bundle of settings) applies first, then a TOML file
(``--config``), then explicit CLI flags. The resolved config is saved as ``config.json`` in
the run directory and inside every checkpoint.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    # what to train
    model: str = "lenet5-modern"
    preset: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)  # overrides of the model config
    engine: str = "torch"  # "torch" | "numpy"
    # data
    dataset: str = "mnist"
    data_dir: str | None = None
    normalization: str | None = None  # None: the model's own ("paper" or "standard")
    limit_train: int | None = None  # use only the first N training images
    val_split: int = 0  # hold out the last N training images as validation (tuning)
    distort: bool = False
    distort_translate: float = 2.0
    distort_scale: float = 0.10
    distort_squeeze: float = 0.10
    distort_shear: float = 0.20
    distort_rotate: float = 0.0
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 1000
    eval_train: bool = False  # also measure the error on the whole (undistorted) training set
    loss: str | None = None  # None: the model's own ("map" or "ce"); or "mle"
    map_j: float | None = None  # None: the model's config value
    optimizer: str = "adam"  # "sgd" | "adam" | "adamw" | "sdlm"
    lr: float = 1e-3  # for SDLM: the eta of the first pass unless the paper schedule is used
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "none"  # "none" | "paper" | "step" | "cosine" | "onecycle"
    step_size: int = 5
    gamma: float = 0.5
    sdlm_mu: float = 0.02
    sdlm_samples: int = 500
    label_smoothing: float = 0.0
    ema: float = 0.0  # >0: keep, evaluate and save an average of the weights (lenet5.training.ema)
    # run
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    threads: int | None = None  # CPU threads of torch and of NumPy's BLAS; None: their defaults
    amp: bool = False
    out: str | None = None
    resume: str | None = None
    overwrite: bool = False  # replace a finished run in `out` (never done without it)
    save_every: int = 1  # epochs between checkpoints
    progress: bool = True
    nproc: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}")
        return cls(**d)


# Named bundles of settings. `model` is part of each; flags and config files override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's recipe: MAP loss, SDLM, per-pattern updates, 20 passes, eta table (Sec. II-C).
    "paper": dict(
        model="lenet5-1998", loss="map", optimizer="sdlm", batch_size=1, epochs=20,
        schedule="paper", lr=5e-4,
    ),
    # ... trained on random affine distortions generated on the fly (Section III-C-2).
    "paper-distort": dict(
        model="lenet5-1998", loss="map", optimizer="sdlm", batch_size=1, epochs=20,
        schedule="paper", lr=5e-4, distort=True,
    ),
    # What most tutorials write: ReLU, max-pool, Adam.
    "relu-maxpool": dict(
        model="lenet5-modern", model_args={"activation": "relu", "pool": "max"},
        optimizer="adam", lr=1e-3, batch_size=64, epochs=10,
    ),
    # ... with batch-norm after every conv and F6.
    "batchnorm": dict(
        model="lenet5-modern", model_args={"activation": "relu", "pool": "max", "batchnorm": True},
        optimizer="adam", lr=2e-3, batch_size=64, epochs=10,
    ),
    # Tuned on a validation split: batch-norm, light dropout, distortions, AdamW + one-cycle.
    "best": dict(
        model="lenet5-modern",
        model_args={"activation": "relu", "pool": "max", "batchnorm": True, "dropout": 0.1},
        optimizer="adamw", lr=4e-3, weight_decay=5e-4, batch_size=128, epochs=15,
        schedule="onecycle", distort=True, label_smoothing=0.05,
    ),
}


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML ({e})") from None
    return data.get("train", data)  # allow a [train] table or top-level keys


def resolve_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- preset <- TOML file <- explicit overrides (``None`` values are ignored)."""
    values: dict[str, Any] = {}
    file_values = load_toml(file) if file else {}
    preset = (overrides or {}).get("preset") or file_values.get("preset") or preset
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        values.update(PRESETS[preset], preset=preset)
    values.update(file_values)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k == "model_args":
            values["model_args"] = {**values.get("model_args", {}), **v}
        else:
            values[k] = v
    cfg = TrainConfig.from_dict(values)
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.engine in ("torch", "numpy"), f"engine must be torch or numpy, got {cfg.engine!r}"),
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (0.0 <= cfg.ema < 1.0, f"ema must be 0 (off) or a decay in (0, 1), got {cfg.ema}"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.optimizer in ("sgd", "adam", "adamw", "sdlm"), f"unknown optimizer {cfg.optimizer!r}"),
        (cfg.schedule in ("none", "paper", "step", "cosine", "onecycle"), f"unknown schedule {cfg.schedule!r}"),
        (cfg.loss in (None, "map", "mle", "ce"), f"unknown loss {cfg.loss!r}"),
        (cfg.device in ("auto", "cpu", "cuda"), f"unknown device {cfg.device!r}"),
        (cfg.lr > 0, "lr must be > 0"),
        (cfg.limit_train is None or cfg.limit_train > 0, "limit_train must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **kw)

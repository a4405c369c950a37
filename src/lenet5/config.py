"""``TrainConfig``: the single source of truth for a training run, typed and checked.

Defaults live here; a preset (a named recipe) applies first, then a TOML file (``--config``),
then the command line (flags and ``--set KEY=VALUE``). Each field's type hint and its
:func:`~lenet5.fieldtypes.setting` (help text, bounds, choices) are the only statement of what
it accepts: ``lenet5 train``'s flags and their ``--help`` are derived from them, and every
value, whether from a flag, ``--set``, a TOML file or a checkpoint being resumed, is checked
against them before any data is read, with one line naming the field and what it allows. The
resolved config is saved as ``config.json`` in the run directory and inside every checkpoint.

The names a run chooses between (engines, optimisers, schedules, losses, devices,
normalisations, datasets) are defined once, below or in their own registry, and feed the
checks, the flags' choices and the engines' factories.

Why a small helper (:mod:`lenet5.fieldtypes`, ~200 lines, standard library) rather than tyro
or jsonargparse: the CLI is one argparse tree of sub-commands whose ``main`` turns every user
error into one ``lenet5: error:`` line; presets, a TOML file, ``--set`` and a resumed
checkpoint's config are layered over each other and must be held to the same rule. tyro builds
its own parser (and brings rich, typeguard and docstring-parser), jsonargparse its own config
layering and error format; adopting either would mean two parsers or rewriting the CLI around
the library, for what amounts to: read the type hint, check the value, say what is allowed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from .data.datasets import DATASETS
from .fieldtypes import FieldError, check_values, setting
from .models import canonical, get_entry, list_models, make_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The names, once. The engines' factories and the CLI import these.
Engine = Literal["auto", "torch", "numpy", "compiled"]
Optimizer = Literal["sgd", "adam", "adamw", "sdlm"]
Schedule = Literal["none", "paper", "step", "cosine", "onecycle", "onecycle-linear"]
Loss = Literal["map", "mle", "ce"]
Device = Literal["auto", "cpu", "cuda"]
NormalizationName = Literal["paper", "standard", "none", "lush"]
Precision = Literal["float32", "float64"]

ENGINES: tuple[str, ...] = get_args(Engine)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PER_STEP_SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "onecycle-linear")  # the rest: per epoch
LOSSES: tuple[str, ...] = get_args(Loss)
DEVICES: tuple[str, ...] = get_args(Device)
NORMALIZATIONS: tuple[str, ...] = get_args(NormalizationName)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def _preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


@dataclass
class TrainConfig:
    # what to train
    model: str = setting("lenet5-modern", choices=list_models,
                         help="registered model or variant (list them: lenet5 models)")
    preset: str | None = setting(None, choices=_preset_names,
                                 help="named recipe, applied first; then --config, then flags")
    model_args: dict[str, Any] = setting(default_factory=dict, flag=False,
                                         help="model options (--set model_args.NAME=VALUE)")
    engine: Engine = setting("auto", help="auto: compiled on a CPU where it runs the model and "
                                          "options, else torch; torch: PyTorch (GPU, DDP, "
                                          "amp); numpy: lenet5.scratch, NumPy only, for "
                                          "reading; compiled: Numba, fastest on a CPU")
    # data
    dataset: str = setting("mnist", choices=DATASET_NAMES, help="dataset to train and test on")
    data_dir: str | None = setting(None, help="data root (default: $LENET5_DATA_DIR, then the "
                                              "user cache; missing files are downloaded)")
    normalization: NormalizationName | None = setting(
        None, help="input normalisation (default: the model's own: paper or standard)")
    limit_train: int | None = setting(None, ge=1, help="train on the first N training images")
    val_split: int = setting(0, ge=0, help="hold out the last N training images as a "
                                           "validation split (for tuning)")
    shuffle: bool = setting(True, help="a new random order of the training images each pass "
                                       "(off: file order, as Lush's lenet5 demo)")
    distort_pool: int = setting(0, ge=0, le=100, help="0: a fresh distortion at every "
                                "presentation; N: the paper's protocol, N distorted copies of "
                                "each image drawn once (9: 540,000) plus the originals, each "
                                "pass drawing its patterns from them (needs --distort)")
    distort: bool = setting(False, help="random affine distortions of the training images "
                                        "(paper III-C-2)")
    distort_translate: float = setting(2.0, ge=0, le=16, help="distortion: largest shift, pixels")
    distort_scale: float = setting(0.10, ge=0, lt=1, help="distortion: scale in 1 +- s")
    distort_squeeze: float = setting(0.10, ge=0, lt=1, help="distortion: x *= 1 + q, y *= 1 - q")
    distort_shear: float = setting(0.20, ge=0, le=2, help="distortion: horizontal shear k")
    distort_rotate: float = setting(0.0, ge=0, le=180, help="distortion: rotation, degrees")
    elastic_alpha: float = setting(0.0, ge=0, le=100, help="elastic distortion (Simard 2003): "
                                                           "displacement scale, pixels; 0: off")
    elastic_sigma: float = setting(4.0, gt=0, le=16, help="elastic distortion: smoothing "
                                                          "sigma, pixels")
    augment_stroke: float = setting(0.0, ge=0, le=3, help="stroke width (a quarter of the "
                                                          "images): U[-s, s] 3x3 dilation or "
                                                          "erosion steps")
    augment_noise: float = setting(0.0, ge=0, le=1, help="pixel noise (a quarter): Gaussian "
                                                         "std U[0, n] or salt-and-pepper "
                                                         "share n / 4")
    augment_blur: float = setting(0.0, ge=0, le=4, help="blur (a quarter): Gaussian sigma "
                                                        "U[0, b], pixels")
    augment_share: float = setting(1.0, ge=0, le=1, help="the share of training images the "
                                   "elastic and appearance augmentations touch (the others "
                                   "only get the affine distortion)")
    clean_epochs: int = setting(0, ge=0, le=10_000, help="the last N passes train on the digits "
                                "as they are, with no distortion or augmentation (0: none)")
    # optimisation
    epochs: int = setting(10, ge=1, le=10_000, help="passes over the training images")
    batch_size: int = setting(64, ge=1, le=65_536, help="images per update")
    eval_batch_size: int = setting(1000, ge=1, le=65_536, help="images per evaluation batch")
    eval_train: bool = setting(False, help="also measure the error on the whole (undistorted) "
                                           "training set each epoch")
    loss: Loss | None = setting(None, help="criterion (default: the model's own, map or ce)")
    map_j: float | None = setting(None, gt=0, help="the MAP criterion's j (default: the "
                                                   "model's, 0.1)")
    optimizer: Optimizer = setting("adam", help="optimiser; sdlm: the paper's stochastic "
                                                "diagonal Levenberg-Marquardt")
    lr: float = setting(1e-3, gt=0, help="learning rate (peak rate of a schedule; for "
                                         "sdlm the eta of pass 1)")
    momentum: float = setting(0.9, ge=0, lt=1, help="SGD momentum")
    nesterov: bool = setting(False, help="Nesterov momentum (SGD)")
    weight_decay: float = setting(0.0, ge=0, le=1, help="L2 weight decay (AdamW: decoupled)")
    schedule: Schedule = setting("none", help="learning-rate schedule; onecycle: 25 percent "
                                              "warm-up, cosine down; onecycle-linear: 20 percent "
                                              "linear warm-up from 0, linear down to 0")
    step_size: int = setting(5, ge=1, le=10_000, help="step schedule: epochs between decays")
    gamma: float = setting(0.5, gt=0, le=1, help="step schedule: decay factor")
    sdlm_mu: float = setting(0.02, gt=0, help="SDLM: mu in eta / (mu + h)")
    sdlm_samples: int = setting(500, ge=1, le=100_000, help="SDLM: patterns per curvature "
                                                            "estimate")
    sdlm_output_d2: float = setting(2.0, gt=0, le=1000, help="SDLM: the second derivative of "
                                    "the loss per output unit that h_kk is propagated from "
                                    "(open in the paper; 2: the Gauss-Newton value of the "
                                    "y_D term; h scales with it)")
    sdlm_every: int = setting(1, ge=1, le=10_000, help="SDLM: passes between curvature "
                                                       "estimates (Lush: 10, one per set)")
    label_smoothing: float = setting(0.0, ge=0, lt=1, help="label smoothing (ce loss)")
    ema: float = setting(0.0, ge=0, lt=1, help="0: off; a decay in (0, 1): evaluate and save "
                                               "an exponential moving average of the weights")
    # run
    seed: int = setting(0, ge=0, le=2**32 - 1, help="seed of everything random")
    deterministic: bool = setting(False, help="deterministic kernels (torch)")
    device: Device = setting("auto", help="auto: cuda when available")
    threads: int | None = setting(None, ge=1, le=1024, help="CPU threads of torch and NumPy's "
                                                            "BLAS (default: the cores other "
                                                            "processes leave idle)")
    amp: bool = setting(False, help="bfloat16 autocast (torch)")
    precision: Precision = setting("float32", help="the arithmetic of the numpy and compiled "
                                                   "engines (float64: weights, state and sums; "
                                                   "torch computes in float32)")
    cuda_graph: bool = setting(False, help="torch on a GPU: replay each full training batch's "
                                           "step from one CUDA graph (sgd, adam or adamw; "
                                           "one process)")
    out: str | None = setting(None, help="run directory (default: runs/PRESET-OR-MODEL-TIME)")
    resume: str | None = setting(None, help="run directory (or its checkpoint) to continue")
    overwrite: bool = setting(False, help="replace a finished run in --out (refused without it)")
    save_every: int = setting(1, ge=1, le=10_000, help="epochs between checkpoints")
    progress: bool = setting(True, help="progress bar")
    nproc: int = setting(1, ge=1, le=1024, help="processes (DDP through torchrun)")

    def __post_init__(self) -> None:
        # A variant (lenet5-modern-bn) is recorded as its architecture plus its options, the
        # form checkpoints have always had, so both engines and every loader can build it.
        if isinstance(self.model, str) and self.model in list_models() and isinstance(self.model_args, dict):
            self.model, self.model_args = canonical(self.model, self.model_args)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> TrainConfig:
        """A checked config from plain values (unknown keys and wrong types are refused)."""
        cfg = cls(**check_layer(d, source))
        validate(cfg)
        return cfg


# Where ``--help`` starts a new group of flags: the sections of the dataclass above.
SECTIONS = {"model": "what to train", "dataset": "data", "epochs": "optimisation", "seed": "run"}


# Named recipes. `model` is part of each (a variant where the recipe trains one); flags and
# config files override them.
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
    # ... with the paper's protocol (Section III-C-2): 9 distorted copies of each image drawn
    # once plus the originals (600,000), each pass drawing 60,000 from them; ranges chosen on
    # --val-split 10000 over two settings (docs/results.md, "paper gap"): half the defaults.
    "paper-pool": dict(
        model="lenet5-1998", loss="map", optimizer="sdlm", batch_size=1, epochs=20,
        schedule="paper", lr=5e-4, distort=True, distort_pool=9, distort_translate=1.0,
        distort_scale=0.05, distort_squeeze=0.05, distort_shear=0.1,
    ),
    # Bottou's Lush lenet5.lsh as run for the QMNIST README (0.82%; docs/results.md, "paper
    # gap"): the lenet5-lush net, pixels x 0.01 on 32x32, MSE to +-1 targets, file order,
    # three sets of 10 passes at 1e-4, 1e-5, 1e-6, h_kk on the first 1,000 patterns at the
    # start of each set. mu 0.04 here is Lush's 0.02: our MLE is the squared distance, twice
    # Lush's half-squared energy, so gradients and h_kk are doubled and eta / (2 mu + 2 h)
    # gives Lush's steps exactly.
    "lush": dict(
        model="lenet5-lush", loss="mle", normalization="lush", optimizer="sdlm", batch_size=1,
        epochs=30, schedule="step", step_size=10, gamma=0.1, lr=1e-4, sdlm_mu=0.04,
        sdlm_samples=1000, sdlm_every=10, shuffle=False,
    ),
    # The paper's network and criterion (all 60,000 weights, C3 table, trainable subsampling,
    # bitmap RBF, MAP) trained the modern way: Adam, batches of 32, cosine to 0 over 50 passes,
    # fresh affine distortions with +-10 degree rotations. Chosen on --val-split 10000 against
    # SDLM variants (docs/results.md, "paper gap", section 5): SDLM under-fits distorted digits.
    "paper-best": dict(
        model="lenet5-1998", loss="map", optimizer="adam", lr=2e-3, batch_size=32, epochs=50,
        schedule="cosine", distort=True, distort_rotate=10.0,
    ),
    # What most tutorials write: ReLU, max-pool, Adam.
    "relu-maxpool": dict(model="lenet5-modern", optimizer="adam", lr=1e-3, batch_size=64, epochs=10),
    # ... with batch-norm after every conv and F6.
    "batchnorm": dict(model="lenet5-modern-bn", optimizer="adam", lr=2e-3, batch_size=64, epochs=10),
    # Tuned on a validation split: batch-norm, light dropout, distortions, AdamW + one-cycle.
    "best": dict(
        model="lenet5-modern-bn", model_args={"dropout": 0.1},
        optimizer="adamw", lr=4e-3, weight_decay=5e-4, batch_size=128, epochs=15,
        schedule="onecycle", distort=True, label_smoothing=0.05,
    ),
    # The fastest found to 99% on a 2-core CPU (docs/results.md, issue #7 run 5): one pass of
    # SGD Nesterov at a peak rate of 0.4 that batch-norm keeps stable; the default engine (the
    # compiled one on a CPU: 14.6 s to 99% against 30 s in NumPy and 18 s in PyTorch, issue 14).
    "fast": dict(
        model="lenet5-modern-bn", optimizer="sgd", momentum=0.9, nesterov=True,
        weight_decay=5e-4, lr=0.4, schedule="onecycle-linear", batch_size=64,
        label_smoothing=0.1, epochs=1,
    ),
    # Robust reading (issue #17): rotation, wider shifts, and for a quarter of the images elastic
    # distortions (Simard 2003) and a change of stroke width, blur or noise; wider C1 and C3
    # (16 and 32 maps, C5 56: 63,930 parameters), 50 epochs of AdamW one-cycle, no dropout or
    # label smoothing. Chosen on --val-split 10000 (docs/results.md, "Robust reading").
    "robust": dict(
        model="lenet5-modern-bn", model_args={"widths": [16, 32, 56, 84]},
        optimizer="adamw", lr=4e-3, weight_decay=5e-4, batch_size=128, epochs=50,
        schedule="onecycle", distort=True,
        distort_translate=3.0, distort_scale=0.15, distort_rotate=15.0,
        elastic_alpha=34.0, elastic_sigma=4.0, augment_stroke=1.2, augment_noise=0.4,
        augment_blur=1.2, augment_share=0.25,
    ),
}


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid TOML ({e})") from None
    train = data.get("train", data)  # allow a [train] table or top-level keys
    if not isinstance(train, dict):
        raise ValueError(f"{path}: [train] must be a table of settings")
    return train


def check_layer(values: Any, source: str = "") -> dict[str, Any]:
    """One layer of settings (a preset, a file, the command line) checked field by field:
    unknown keys, wrong types and values out of range are refused, naming ``source``."""
    where = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise ValueError(f"{where}settings must be a table of NAME = VALUE; got {values!r}")
    try:
        return check_values(TrainConfig, values)
    except FieldError as e:
        raise ValueError(f"{where}{e}") from None


def resolve_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- preset <- TOML file <- explicit overrides (``None`` values are ignored);
    every layer is checked, then the whole (:func:`validate`)."""
    overrides = check_layer({k: v for k, v in (overrides or {}).items() if v is not None})
    file_values = check_layer(load_toml(file), str(file)) if file else {}
    preset = overrides.get("preset") or file_values.get("preset") or preset
    values: dict[str, Any] = {}
    if preset is not None:
        values.update(check_layer({"preset": preset}), **PRESETS[preset])
    for layer in (file_values, overrides):
        for k, v in layer.items():
            values[k] = {**values.get(k, {}), **v} if k == "model_args" else v
    return TrainConfig.from_dict(values)


def validate(cfg: TrainConfig) -> None:
    """Every field against its type and range, the model's options against the model, and
    the choices that only make sense together; one ``ValueError`` line for the first refusal."""
    check_layer({f.name: getattr(cfg, f.name) for f in fields(cfg)})
    entry = get_entry(cfg.model)
    make_config(cfg.model, cfg.model_args)  # options known, typed, within the model's bounds
    loss = cfg.loss or entry.loss
    checks = [
        (not cfg.distort_pool or cfg.distort, "distort_pool needs --distort (its ranges)"),
        (cfg.clean_epochs <= cfg.epochs,
         f"clean_epochs {cfg.clean_epochs} is more than the run's {cfg.epochs} epochs"),
        (loss == "ce" or entry.head == "rbf",
         f"loss {loss} needs an RBF head; {cfg.model} has {entry.head} (use ce)"),
        (cfg.optimizer != "sdlm" or entry.curvature,
         f"optimizer sdlm needs a Gauss-Newton diagonal, which {cfg.model} lacks (use lenet5-1998)"),
        (not (cfg.nesterov and cfg.optimizer == "sgd" and cfg.momentum == 0),
         "nesterov needs momentum > 0"),
        (cfg.engine in ("torch", "auto") or not cfg.amp,
         f"amp is a PyTorch option; engine is {cfg.engine}"),
        (cfg.precision == "float32" or cfg.engine != "torch",
         f"precision {cfg.precision} is the numpy and compiled engines'; torch computes in "
         "float32 (--amp: bfloat16)"),
        (cfg.engine in ("torch", "auto") or cfg.nproc == 1,
         f"nproc > 1 needs engine torch, not {cfg.engine}"),
        (not cfg.cuda_graph or cfg.engine in ("torch", "auto"),
         f"cuda_graph is a PyTorch option; engine is {cfg.engine}"),
        (not cfg.cuda_graph or cfg.optimizer in ("sgd", "adam", "adamw"),
         f"cuda_graph updates with sgd, adam or adamw, not {cfg.optimizer}"),
        (not cfg.cuda_graph or cfg.nproc == 1, "cuda_graph runs in one process (nproc 1)"),
        (cfg.limit_train is None or cfg.val_split < cfg.limit_train,
         f"val_split {cfg.val_split} leaves none of the {cfg.limit_train} training images"),
        (cfg.engine != "compiled" or not compiled_refusal(cfg), f"{compiled_refusal(cfg)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(msg)


# The architectures the compiled engine has kernels for (lenet5.compiled); variants included.
COMPILED_ARCHITECTURES = ("lenet5-1998", "lenet5-modern")


def compiled_refusal(cfg: TrainConfig) -> str | None:
    """Why the compiled engine cannot run ``cfg`` (None: it can): what ``--engine auto``
    checks before it picks it, and what ``--engine compiled`` refuses."""
    architecture = get_entry(cfg.model).architecture
    if architecture not in COMPILED_ARCHITECTURES:
        return (f"the compiled engine has no kernels for {cfg.model} (architectures: "
                f"{', '.join(COMPILED_ARCHITECTURES)}); use engine torch")
    return None


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **kw)

"""Training: one loop for every model, optimiser and engine.

``train(cfg)`` reads as its steps: take the run directory (:mod:`.rundir`), read the checkpoint
to resume from, load the data once onto the device, build the engine (:mod:`.engine`), then per
epoch train a pass, evaluate, and save an atomic self-describing checkpoint, a ``metrics.jsonl``
row and one log line. Everything random is drawn from ``(seed, epoch)``, so ``--resume`` from
the last checkpoint replays exactly what an uninterrupted run does. Under ``torchrun`` the model
is wrapped in DistributedDataParallel; only rank 0 logs and writes.

PyTorch is imported only when the run uses it (:func:`uses_torch`): the compiled engine on plain
or affine-distorted data trains from NumPy arrays, and ``lenet5 train`` then starts without
PyTorch's import (start-up 2.1-2.5 s instead of 3.8-4.6 s on the project's machine,
docs/results.md).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

if "IPython" in sys.modules:  # a notebook: tqdm.auto picks the widget bar
    from tqdm.auto import tqdm
else:  # a terminal: tqdm.auto would also import asyncio (0.08 s in an import profile)
    from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import PER_STEP_SCHEDULES, TrainConfig, validate
from ..data.datasets import get_spec, load_split
from ..data.loader import TensorLoader
from ..data.transforms import Distortion, Normalization, unit_array
from ..models import describe, get_entry, make_config
from .ema import WeightAverage
from .engine import Engine, PassTotals, device_type, make_engine, resolve_engine
from .rundir import METRICS_NAME, RunLock, claim_for_new_run, run_directory, saving
from .schedules import lr_at
from .threads import auto_threads


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def train(cfg: TrainConfig, log=print) -> dict:
    """Run (or resume) training as ``cfg`` says; returns the last epoch's metrics row."""
    validate(cfg)
    if cfg.data_dir:  # saved absolute, so a resume from another directory reads the same data
        cfg = replace(cfg, data_dir=os.path.abspath(os.path.expanduser(cfg.data_dir)))
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    cfg = replace(cfg, engine=resolve_engine(cfg, device, world))  # config.json says which
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this host
    threads = cfg.threads or auto_threads(local)  # decided once, for every library
    with cpu_threads(threads, torch_too=uses_torch(cfg, device, world)):
        return _train(cfg, device, rank, world, threads, log)


def uses_torch(cfg: TrainConfig, device: str, world: int) -> bool:
    """Whether the run computes with PyTorch: every engine but the compiled one, any device but
    the CPU, torchrun, and what only the loader makes with PyTorch for the compiled engine (the
    elastic, stroke, blur and noise augmentations, the paper's distortion pool, the batches of a
    per-step weight average)."""
    return bool(cfg.engine != "compiled" or device_type(device) != "cpu" or world > 1
                or cfg.deterministic or cfg.distort_pool or cfg.ema or asks_augment(cfg))


def asks_augment(cfg: TrainConfig) -> bool:
    """Whether the config sets any of the loader's elastic, stroke, noise or blur strengths
    (:class:`~lenet5.data.augment.Augment`, PyTorch's ops, decides whether they are active)."""
    return bool(cfg.elastic_alpha or cfg.augment_stroke or cfg.augment_noise or cfg.augment_blur)


def _train(cfg: TrainConfig, device: str, rank: int, world: int, threads: int, log) -> dict:
    if cfg.deterministic:
        import torch

        torch.use_deterministic_algorithms(True)
    run_dir = run_directory(cfg.resume, cfg.out, default_run_dir(cfg))
    with RunLock(run_dir) if rank == 0 else nullcontext():  # only rank 0 writes
        resumed = read_resume(cfg, run_dir) if cfg.resume else None
        if rank == 0 and resumed is None:
            claim_for_new_run(run_dir, cfg.overwrite)
        run = start_run(cfg, run_dir, resumed, device, rank, world, threads,
                        say=log if rank == 0 else (lambda *a, **k: None))
        row = {}
        try:
            with sigterm_as_interrupt():
                for epoch in range(run.start_epoch, cfg.epochs):
                    row = run_epoch(run, epoch)
        except KeyboardInterrupt:
            if rank == 0:
                print(interrupted_line(run_dir, run.saved_epoch), file=sys.stderr, flush=True)
            raise
    if world > 1:
        import torch.distributed

        torch.distributed.barrier()
    return {**row, "run_dir": str(run_dir)}


def interrupted_line(run_dir: Path, saved_epoch: int | None) -> str:
    """What a stopped run says: what it keeps and the command that goes on from there."""
    if not saved_epoch:
        return f"stopped before the first checkpoint: nothing saved in {run_dir}"
    return (f"stopped: {run_dir} keeps epoch {saved_epoch}'s checkpoint; go on with "
            f"`lenet5 train --resume {run_dir}`")


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill``, a scheduler's stop) ends training as Ctrl-C does: the epoch under way
    is dropped, the last checkpoint stays, and the run says how to go on. Main thread only
    (where Python delivers signals); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


# ----------------------------------------------------------------------------- setup


@dataclass
class Resumed:
    """What a checkpoint hands the run that continues it."""

    epoch: int  # epochs done
    history: list[dict]  # their metrics rows
    model_config: dict
    state: dict  # the model's weights: the average, when the run keeps one
    live_state: dict | None  # the live weights beside an average
    ema_steps: int
    opt_tensors: dict
    opt_meta: dict


@dataclass
class Run:
    """One training run as :func:`start_run` sets it up; the epoch steps read and extend it."""

    cfg: TrainConfig
    dir: Path
    engine: Engine
    averager: WeightAverage | None  # the per-step weight average (``--ema``)
    loader: TensorLoader  # the training split, shuffled and distorted per epoch
    splits: dict  # "train", "val" (or None), "test": (x in [0, 1], y), as load_data holds them
    norm: Normalization
    meta: dict  # checkpoint metadata shared by every epoch
    history: list[dict]
    start_epoch: int
    saved_epoch: int | None  # the last epoch whose checkpoint is on disk
    rank: int
    world: int
    say: Callable[..., None]  # the log; silent on ranks other than 0


def read_resume(cfg: TrainConfig, run_dir: Path) -> Resumed:
    """The checkpoint in ``run_dir``, checked against ``cfg`` before any work is done."""
    state, opt_tensors, meta = ckpt.read_checkpoint(run_dir, purpose="resume")
    opt_tensors, live_state, ema_steps = WeightAverage.split(opt_tensors)
    if meta["model"] != cfg.model:
        raise ValueError(f"--resume: checkpoint holds {meta['model']}, not {cfg.model}")
    epoch = meta["epoch"]
    if cfg.epochs <= epoch:
        raise ValueError(f"--resume {run_dir}: its checkpoint is at epoch {epoch} already; "
                         f"ask for more epochs (--epochs N with N > {epoch})")
    return Resumed(epoch, meta.get("history", []), meta["model_config"], state, live_state,
                   ema_steps, opt_tensors, meta["optimizer"])


def start_run(cfg: TrainConfig, run_dir: Path, resumed: Resumed | None, device: str,
              rank: int, world: int, threads: int, say) -> Run:
    """Data on the device, the engine (resumed or fresh), the loader; config.json and the
    banner from rank 0."""
    entry = get_entry(cfg.model)
    norm = Normalization.make(cfg.normalization or entry.normalization, cfg.dataset)
    train_xy, val, test_xy = load_data(cfg, norm, device)
    model_config = (resumed.model_config if resumed
                    else make_config(cfg.model, cfg.model_args).to_dict())
    engine, averager = build_engine(replace(cfg, threads=threads), model_config, resumed,
                                    device, world)
    if resumed:
        say(f"resumed {run_dir} at epoch {resumed.epoch}/{cfg.epochs}")
    meta = {
        "model": cfg.model, "model_config": model_config, "normalization": norm.to_dict(),
        "dataset": cfg.dataset, "classes": list(get_spec(cfg.dataset).classes),
        "head": entry.head, "engine": cfg.engine, "train_config": asdict(cfg),
    }
    done = resumed.epoch if resumed else 0
    run = Run(cfg=cfg, dir=run_dir, engine=engine, averager=averager,
              loader=make_loader(cfg, train_xy, norm, rank, world),
              splits={"train": train_xy, "val": val, "test": test_xy}, norm=norm, meta=meta,
              history=resumed.history if resumed else [], start_epoch=done,
              saved_epoch=done or None, rank=rank, world=world, say=say)
    if rank == 0:
        ckpt.atomic_write_text(run_dir / "config.json", cfg.to_json())
        n_params = sum(v.size for v in map(np.asarray, engine.state_dict().values()))
        n = engine.threads if cfg.engine == "compiled" else threads
        threads = f", {n} thread{'s' * (n > 1)}"
        say(f"{describe(cfg.model, cfg.model_args)} ({cfg.engine}, {device}{threads}, world {world}) | "
            f"{len(train_xy[0])} train "
            f"{len(test_xy[0])} test | {cfg.optimizer} lr {cfg.lr:g} batch {cfg.batch_size} | "
            f"state {n_params:,} values | run {run_dir}")
    return run


def build_engine(cfg: TrainConfig, model_config: dict, resumed: Resumed | None,
                 device: str, world: int) -> tuple[Engine, WeightAverage | None]:
    """The engine with fresh weights from ``cfg.seed`` (each engine draws them from the seed
    alone), or the checkpoint's weights, average and optimiser state."""
    engine = make_engine(cfg, model_config, device, ddp=world > 1)
    if resumed is None:
        return engine, WeightAverage(cfg.ema, engine.state_dict()) if cfg.ema else None
    engine.load_state_dict(resumed.state)  # the averaged weights, when the run kept an average
    averager = WeightAverage(cfg.ema, resumed.state, resumed.ema_steps) if cfg.ema else None
    if resumed.live_state is not None:
        engine.load_state_dict(resumed.live_state)
    engine.load_optimizer_state(resumed.opt_tensors, resumed.opt_meta)
    return engine, averager


def make_loader(cfg: TrainConfig, train_xy, norm: Normalization, rank: int,
                world: int) -> TensorLoader:
    distortion = None
    if cfg.distort:
        distortion = Distortion(cfg.distort_translate, cfg.distort_scale, cfg.distort_squeeze,
                                cfg.distort_shear, cfg.distort_rotate)
    augment = None
    if asks_augment(cfg):
        from ..data.augment import Augment  # PyTorch's ops

        augment = Augment(cfg.elastic_alpha, cfg.elastic_sigma, cfg.augment_stroke,
                          cfg.augment_noise, cfg.augment_blur, cfg.augment_share)
        augment = augment if augment.active else None
    clean_from = cfg.epochs - cfg.clean_epochs if cfg.clean_epochs else None
    if cfg.distort_pool:  # the paper's protocol: copies drawn once, passes drawn from them
        from ..data.pool import PoolLoader  # PyTorch's ops

        return PoolLoader(*train_xy, cfg.batch_size, norm, shuffle=cfg.shuffle, seed=cfg.seed,
                          rank=rank, world_size=world, augment=augment, clean_from=clean_from,
                          pool_distortion=distortion, copies=cfg.distort_pool)
    return TensorLoader(*train_xy, cfg.batch_size, norm, shuffle=cfg.shuffle, seed=cfg.seed,
                        distortion=distortion, rank=rank, world_size=world, augment=augment,
                        clean_from=clean_from)


def pick_device(name: str) -> str:
    """``"cpu"``, ``"cuda"`` or, under torchrun, ``"cuda:LOCAL_RANK"``. ``auto`` is CUDA where
    PyTorch sees a GPU; a CPU-only PyTorch build (its version ends in ``+cpu``) answers
    without being imported."""
    if name == "auto":
        if cpu_only_torch():
            return "cpu"
        import torch

        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        if "LOCAL_RANK" in os.environ:
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return name


def cpu_only_torch() -> bool:
    """Whether the installed PyTorch is a CPU-only build, read from its package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return True


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device_type(device) == "cuda":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device_type(device) == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def load_data(cfg: TrainConfig, norm: Normalization, device: str):
    """(train, val or None, test) as (x, y): x ``(N, 1, 32, 32)`` in [0, 1] as torch tensors on
    ``device`` for the PyTorch engine and NumPy arrays for the NumPy engine; the raw ``(N, 28,
    28)`` uint8 digits for the compiled engine, which pads and scales each pattern as it loads
    it (the same values; no 245 MB float copy of the training split to make at start-up)."""
    xs, ys = load_split(cfg.dataset, "train", cfg.data_dir)
    if cfg.limit_train:
        xs, ys = xs[: cfg.limit_train], ys[: cfg.limit_train]
    xt, yt = load_split(cfg.dataset, "test", cfg.data_dir)

    def tensors(images, labels) -> tuple[Any, Any]:
        y = labels.astype(np.int64)
        if cfg.engine == "compiled":
            return np.ascontiguousarray(images), y
        x = unit_array(images)
        if cfg.engine != "torch":
            return x, y
        import torch

        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    val = None
    if cfg.val_split:
        if cfg.val_split >= len(xs):
            raise ValueError(f"val_split {cfg.val_split} leaves no training images")
        val = tensors(xs[-cfg.val_split :], ys[-cfg.val_split :])
        xs, ys = xs[: -cfg.val_split], ys[: -cfg.val_split]
    return tensors(xs, ys), val, tensors(xt, yt)


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.preset or cfg.model}-{stamp}"


@contextmanager
def cpu_threads(n: int | None, torch_too: bool = True):
    """Run the block with ``n`` CPU threads for the BLAS/OpenMP pools NumPy calls into (the
    NumPy engine's matmuls) and, with ``torch_too``, for PyTorch; the limits are undone
    afterwards. ``None`` leaves the libraries' own defaults (all cores, or ``OMP_NUM_THREADS``
    and the like); :func:`train` passes ``--threads`` or else :func:`.threads.auto_threads`
    (the compiled engine reads the same number for Numba)."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    if not torch_too:
        with threadpool_limits(limits=n):
            yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- one epoch


def run_epoch(run: Run, epoch: int) -> dict:
    """Train pass ``epoch`` (0-based), evaluate, save; the epoch's metrics row."""
    lr, totals, seconds = train_pass(run, epoch)
    row = evaluate_epoch(run, epoch, lr, totals, seconds)
    run.history.append(row)
    if run.rank == 0:
        save_epoch(run, epoch, row)
        run.say(epoch_line(run.cfg, epoch, row))
    return row


def train_pass(run: Run, epoch: int) -> tuple[float, PassTotals, float]:
    """One pass over the training split: ``(lr at its start, totals, seconds)``."""
    cfg, engine, loader = run.cfg, run.engine, run.loader
    loader.set_epoch(epoch)
    steps = len(loader)
    lr = lr_at(cfg.schedule, cfg.lr, epoch, 0, steps, cfg.epochs, cfg.step_size, cfg.gamma)
    engine.set_lr(lr)
    engine.begin_epoch(epoch, loader)

    def step_lr(step: int) -> float:
        return lr_at(cfg.schedule, cfg.lr, epoch, step, steps, cfg.epochs)

    def average() -> None:
        run.averager.update(engine.live_state())

    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (cfg.progress and run.rank == 0), mininterval=0.5, unit="batch")
    try:
        totals = engine.train_epoch(loader,
                                    step_lr if cfg.schedule in PER_STEP_SCHEDULES else None,
                                    average if run.averager else None,
                                    watch(bar, steps, epoch, run.dir))
    finally:
        bar.close()
    return lr, totals, time.perf_counter() - t0


def watch(bar, steps: int, epoch: int, run_dir: Path):
    """The pass's ``progress`` callback: the bar, and every 200 steps and at the end the
    running loss, which must be finite."""

    def progress(step: int, totals: PassTotals) -> None:
        bar.update(step + 1 - bar.n)
        if step % 200 == 199 or step == steps - 1:
            running = float(totals.loss_sum) / totals.seen
            if not math.isfinite(running):
                raise TrainingDiverged(
                    f"loss became {running} at epoch {epoch + 1} step {step + 1}; stopping. "
                    f"The last good checkpoint in {run_dir} is untouched (lower --lr?)")
            err = 100 * float(totals.errors) / totals.seen
            bar.set_postfix(loss=f"{running:.4f}", err=f"{err:.2f}%")

    return progress


def evaluate_epoch(run: Run, epoch: int, lr: float, totals: PassTotals, seconds: float) -> dict:
    """The metrics row: the pass's running figures, then the test split (and training and
    validation splits, if asked) with the averaged weights when the run keeps an average."""
    cfg, engine, splits = run.cfg, run.engine, run.splits
    evaluate = partial(engine.evaluate, norm=run.norm, batch_size=cfg.eval_batch_size,
                       rank=run.rank, world=run.world)
    extra: dict = {}
    if run.averager:  # what the average buys: the live weights' test (and val) error too
        raw = evaluate(*splits["test"])
        extra.update(raw_test_error=raw["error"], raw_test_errors=raw["errors"])
        if splits["val"] is not None:
            raw = evaluate(*splits["val"])
            extra.update(raw_val_error=raw["error"], raw_val_errors=raw["errors"])
    with run.averager.swapped_in(engine) if run.averager else nullcontext():  # one swap
        test = evaluate(*splits["test"])
        if cfg.eval_train:  # the paper's "training set error": fixed weights, every image once
            tr = evaluate(*splits["train"])
            extra.update(train_set_error=tr["error"], train_set_errors=tr["errors"])
        if splits["val"] is not None:
            v = evaluate(*splits["val"])
            extra.update(val_loss=v["loss"], val_error=v["error"], val_errors=v["errors"])
    seen = totals.seen
    return {
        "epoch": epoch + 1, "lr": lr,
        "train_loss": float(totals.loss_sum) / seen, "train_error": float(totals.errors) / seen,
        "test_loss": test["loss"], "test_error": test["error"], "test_errors": test["errors"],
        "test_count": test["count"],
        # A first run's pass also compiles the kernels: that time is the pass's, not its speed's.
        "images_per_s": seen * run.world / max(seconds - totals.compile_seconds, 1e-9),
        "epoch_seconds": seconds, **extra,
        **({"compile_seconds": totals.compile_seconds} if totals.compile_seconds else {}),
    }


def save_epoch(run: Run, epoch: int, row: dict) -> None:
    """The checkpoint (every ``save_every`` epochs and at the end) and ``metrics.jsonl``."""
    cfg, engine = run.cfg, run.engine
    with saving(run.dir, epoch + 1, run.saved_epoch):
        if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
            opt_tensors, opt_meta = engine.optimizer_state()
            weights = engine.state_dict()
            if run.averager:  # the average is the model; the live weights resume training
                weights = run.averager.shadow
                opt_tensors = {**opt_tensors, **run.averager.checkpoint_tensors(engine)}
            ckpt.save_checkpoint(
                run.dir, weights,
                {**run.meta, "epoch": epoch + 1, "metrics": row, "history": run.history,
                 "optimizer": opt_meta},
                opt_tensors,
            )
            run.saved_epoch = epoch + 1
        ckpt.atomic_write_text(run.dir / METRICS_NAME,
                               "".join(json.dumps(r) + "\n" for r in run.history))


def epoch_line(cfg: TrainConfig, epoch: int, row: dict) -> str:
    """One line per epoch. With a validation split it shows the validation error in place of
    the test error (which metrics.jsonl still records): a run being tuned shows what to tune
    on, not the test set."""
    held = "val" if "val_error" in row else "test"
    compiling = f" (of which {row['compile_seconds']:.0f}s compiling)" if "compile_seconds" in row else ""
    return (f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
            f"err {100 * row['train_error']:.2f}%  {held} loss {row[held + '_loss']:.4f} "
            f"err {100 * row[held + '_error']:.2f}%  {row['images_per_s']:,.0f} img/s  "
            f"{row['epoch_seconds']:.1f}s{compiling}  lr {row['lr']:.3g}")

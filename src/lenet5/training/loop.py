"""Training: one loop for every model, optimiser and engine.

``train(cfg)`` loads the data once onto the device, builds the model and an *engine* (the
PyTorch one here, the NumPy one in :mod:`lenet5.training.numpy_engine`), and runs epochs: a progress
bar, one log line and one ``metrics.jsonl`` row per epoch, and an atomic self-describing
checkpoint. Everything random is drawn from ``(seed, epoch)``, so ``--resume`` from the last
checkpoint replays exactly what an uninterrupted run does. Under ``torchrun`` the model is
wrapped in DistributedDataParallel; only rank 0 logs and writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import checkpoint as ckpt
from ..config import TrainConfig, validate
from ..data.datasets import get_spec, load_split
from ..data.loader import TensorLoader
from ..data.transforms import Distortion, Normalization, to_unit
from ..models import create_model, get_entry
from .ema import WeightAverage
from .losses import make_loss
from .optim import estimate_curvature, lr_at, make_optimizer
from .optim_state import load_torch_optimizer_state, torch_optimizer_state


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


# ----------------------------------------------------------------------------- engine


class TorchEngine:
    """Model + loss + optimiser in PyTorch. The NumPy engine implements the same methods."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, device: torch.device, ddp: bool):
        self.cfg, self.device = cfg, device
        if ddp:  # batch-norm statistics over the global batch, as in one process
            from .distributed import has_batchnorm, sync_batchnorm

            if has_batchnorm(model):
                model = sync_batchnorm(model, device)
        self.model = model.to(device)
        self.module = model  # the unwrapped module: what checkpoints hold
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.ddp = ddp
        entry = get_entry(cfg.model)
        loss_name = cfg.loss or entry.loss
        map_j = cfg.map_j if cfg.map_j is not None else getattr(model.config, "map_j", 0.1)
        if loss_name in ("map", "mle") and entry.head != "rbf":
            raise ValueError(f"loss {loss_name!r} needs an RBF head; {cfg.model} has logits")
        self.loss_fn = make_loss(loss_name, map_j)
        if loss_name == "ce" and cfg.label_smoothing:
            smoothing = cfg.label_smoothing
            self.loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y, label_smoothing=smoothing)
        self.eval_loss_fn = make_loss(loss_name, map_j)
        self.optimizer = make_optimizer(cfg.optimizer, self.module.parameters(), cfg.lr, cfg.momentum,
                                        cfg.nesterov, cfg.weight_decay, cfg.sdlm_mu)
        self.amp = cfg.amp
        self.steps = 0  # optimiser updates so far (Adam's bias correction, in checkpoints)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def begin_epoch(self, epoch: int, loader: TensorLoader) -> None:
        if self.cfg.optimizer != "sdlm":
            return
        # h_kk from the first `sdlm_samples` patterns of this pass, frozen for the pass.
        order = loader.order()[: self.cfg.sdlm_samples].to(loader.images.device)
        x = loader.normalization(loader.images[order])
        h = estimate_curvature(self.module, x)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ws = torch.distributed.get_world_size()
            for v in h.values():
                torch.distributed.all_reduce(v)
                v.div_(ws)
        self.optimizer.set_curvature(h)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x)
            # A rank's slice of a short last batch can be empty; its mean would be NaN.
            loss = self.loss_fn(out.float(), y) if y.shape[0] else out.float().sum()
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.rank_weight(y.shape[0]) if self.ddp else loss).backward()
        self.optimizer.step()
        self.steps += 1
        errors = (self.module.scores(out.detach()).argmax(1) != y).sum()
        return loss.detach() * y.shape[0], errors

    def rank_weight(self, n: int) -> float:
        """n * world / global batch: DDP then averages to the global batch's mean gradient.

        Exactly 1.0 for full batches; it matters when the last global batch splits unevenly.
        """
        counts = torch.tensor([n, 1], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(counts)
        return n * int(counts[1]) / int(counts[0])

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.module(x).float()

    def scores(self, out: torch.Tensor) -> torch.Tensor:
        return self.module.scores(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """In the layout the NumPy engine reads too (:mod:`lenet5.training.optim_state`)."""
        return torch_optimizer_state(self.optimizer, self.module, self.cfg.optimizer, self.steps)

    def load_optimizer_state(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.steps = load_torch_optimizer_state(self.optimizer, self.module, self.cfg.optimizer,
                                                tensors, meta)


def make_engine(cfg: TrainConfig, model_config: dict, device: torch.device, ddp: bool):
    if cfg.engine == "numpy":
        if ddp:
            raise ValueError("the NumPy engine runs in one process; use --engine torch with torchrun")
        from .numpy_engine import NumpyEngine

        return NumpyEngine(cfg, cfg.model, model_config)
    model = create_model(cfg.model, **model_config)
    return TorchEngine(cfg, model, device, ddp)


# ----------------------------------------------------------------------------- setup


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def load_data(cfg: TrainConfig, norm: Normalization, device: torch.device):
    """(train, val or None, test) as (x in [0,1], y) tensors on ``device``."""
    xs, ys = load_split(cfg.dataset, "train", cfg.data_dir)
    if cfg.limit_train:
        xs, ys = xs[: cfg.limit_train], ys[: cfg.limit_train]
    xt, yt = load_split(cfg.dataset, "test", cfg.data_dir)

    def tensors(images, labels):
        return to_unit(images).to(device), torch.as_tensor(labels.astype(np.int64)).to(device)

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


# ----------------------------------------------------------------------------- loop


def evaluate_split(engine, x: torch.Tensor, y: torch.Tensor, norm: Normalization,
                   batch_size: int, rank: int = 0, world: int = 1) -> dict:
    """Loss and errors over the whole split, each sample exactly once across ranks: rank r
    takes samples r, r + world, ...; ``count`` is how many were evaluated in all."""
    idx = torch.arange(rank, x.shape[0], world, device=x.device)
    loss_sum = torch.zeros((), dtype=torch.float64)
    errors = torch.zeros((), dtype=torch.int64)
    for i in range(0, idx.shape[0], batch_size):
        sel = idx[i : i + batch_size]
        out = torch.as_tensor(engine.outputs(norm(x[sel])))
        target = y[sel].to(out.device)
        loss_sum += float(engine.eval_loss_fn(out, target)) * sel.shape[0]
        errors += int((engine.scores(out).argmax(1) != target).sum())
    count = idx.shape[0]
    if world > 1:
        import torch.distributed as dist

        packed = torch.tensor([float(loss_sum), float(errors), float(count)], dtype=torch.float64)
        dist.all_reduce(packed)
        loss_sum, errors, count = packed[0], packed[1].long(), int(packed[2])
    return {"loss": float(loss_sum) / count, "errors": int(errors), "error": int(errors) / count,
            "count": count}


@contextmanager
def cpu_threads(n: int | None):
    """Run the block with ``n`` CPU threads for torch and for the BLAS/OpenMP pools NumPy
    calls into (the NumPy engine's matmuls); both limits are undone afterwards. ``None``
    leaves the libraries' own defaults (all cores, or ``OMP_NUM_THREADS`` and the like)."""
    if not n:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def train(cfg: TrainConfig, log=print) -> dict:
    """Run (or resume) training as ``cfg`` says; returns the last epoch's metrics row."""
    validate(cfg)
    with cpu_threads(cfg.threads):
        return _train(cfg, log)


def _train(cfg: TrainConfig, log) -> dict:
    device = pick_device(cfg.device)
    rank, world = init_distributed(device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    is_main = rank == 0
    say = log if is_main else (lambda *a, **k: None)

    entry = get_entry(cfg.model)
    norm = Normalization.make(cfg.normalization or entry.normalization, cfg.dataset)
    (x_train, y_train), val, (x_test, y_test) = load_data(cfg, norm, device)

    run_dir = Path(cfg.resume or cfg.out or default_run_dir(cfg))
    start_epoch, history, resume_meta = 0, [], None
    if cfg.resume:
        state, opt_tensors, resume_meta = ckpt.read_checkpoint(run_dir)
        opt_tensors, live_state, ema_steps = WeightAverage.split(opt_tensors)
        if resume_meta["model"] != cfg.model:
            raise ValueError(f"--resume: checkpoint holds {resume_meta['model']}, not {cfg.model}")
        start_epoch, history = resume_meta["epoch"], resume_meta.get("history", [])
        model_config = resume_meta["model_config"]
    else:
        from ..models import make_config

        model_config = make_config(cfg.model, cfg.model_args).to_dict()

    torch.manual_seed(cfg.seed)  # initial weights depend on the seed alone
    engine = make_engine(cfg, model_config, device, ddp=world > 1)
    averager = None
    if resume_meta is not None:
        engine.load_state_dict(state)  # the averaged weights, when the run kept an average
        if cfg.ema:
            averager = WeightAverage(cfg.ema, state, ema_steps)
        if live_state is not None:
            engine.load_state_dict(live_state)
        engine.load_optimizer_state(opt_tensors, resume_meta["optimizer"])
        say(f"resumed {run_dir} at epoch {start_epoch}/{cfg.epochs}")
    elif cfg.ema:
        averager = WeightAverage(cfg.ema, engine.state_dict())
    averaged = averager.swapped_in if averager else (lambda engine: nullcontext())
    current_state = getattr(engine, "live_state", engine.state_dict)  # no copies where it can

    distortion = None
    if cfg.distort:
        distortion = Distortion(cfg.distort_translate, cfg.distort_scale, cfg.distort_squeeze,
                                cfg.distort_shear, cfg.distort_rotate)
    loader = TensorLoader(x_train, y_train, cfg.batch_size, norm, shuffle=True, seed=cfg.seed,
                          distortion=distortion, rank=rank, world_size=world)
    steps = len(loader)
    meta_base = {
        "model": cfg.model, "model_config": model_config, "normalization": norm.to_dict(),
        "dataset": cfg.dataset, "classes": list(get_spec(cfg.dataset).classes),
        "head": entry.head, "engine": cfg.engine, "train_config": asdict(cfg),
    }
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(run_dir / "config.json", cfg.to_json())
        n_params = sum(v.size for v in map(np.asarray, engine.state_dict().values()))
        say(f"{cfg.model} ({cfg.engine}, {device}, world {world}) | {len(x_train)} train "
            f"{len(x_test)} test | {cfg.optimizer} lr {cfg.lr:g} batch {cfg.batch_size} | "
            f"state {n_params:,} values | run {run_dir}")

    row: dict = history[-1] if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch + 1)  # dropout etc., replayable on resume
        loader.set_epoch(epoch)
        per_step_lr = cfg.schedule in ("cosine", "onecycle")
        lr = lr_at(cfg.schedule, cfg.lr, epoch, 0, steps, cfg.epochs, cfg.step_size, cfg.gamma)
        engine.set_lr(lr)
        engine.begin_epoch(epoch, loader)
        t0 = time.perf_counter()
        loss_sum, err_sum, seen = 0.0, 0, 0
        bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and is_main), mininterval=0.5, unit="batch")
        for step, (x, y) in enumerate(bar):
            if per_step_lr:
                engine.set_lr(lr_at(cfg.schedule, cfg.lr, epoch, step, steps, cfg.epochs))
            loss, errors = engine.train_step(x, y)
            if averager:
                averager.update(current_state())
            loss_sum, err_sum, seen = loss_sum + loss, err_sum + errors, seen + y.shape[0]
            if step % 200 == 199 or step == steps - 1:
                running = float(loss_sum) / seen
                if not math.isfinite(running):
                    raise TrainingDiverged(
                        f"loss became {running} at epoch {epoch + 1} step {step + 1}; stopping. "
                        f"The last good checkpoint in {run_dir} is untouched (lower --lr?)")
                bar.set_postfix(loss=f"{running:.4f}", err=f"{100 * float(err_sum) / seen:.2f}%")
        bar.close()
        seconds = time.perf_counter() - t0
        seen_all = seen * world
        extra: dict = {}
        if averager:  # what the average buys: the live weights' test error too
            raw = evaluate_split(engine, x_test, y_test, norm, cfg.eval_batch_size, rank, world)
            extra.update(raw_test_error=raw["error"], raw_test_errors=raw["errors"])
        with averaged(engine):  # one swap for every evaluation of the epoch
            test = evaluate_split(engine, x_test, y_test, norm, cfg.eval_batch_size, rank, world)
            if cfg.eval_train:  # the paper's "training set error": fixed weights, every image once
                tr = evaluate_split(engine, x_train, y_train, norm, cfg.eval_batch_size, rank, world)
                extra.update(train_set_error=tr["error"], train_set_errors=tr["errors"])
            if val is not None:
                v = evaluate_split(engine, val[0], val[1], norm, cfg.eval_batch_size, rank, world)
                extra.update(val_loss=v["loss"], val_error=v["error"], val_errors=v["errors"])
        row = {
            "epoch": epoch + 1, "lr": lr,
            "train_loss": float(loss_sum) / seen, "train_error": float(err_sum) / seen,
            "test_loss": test["loss"], "test_error": test["error"], "test_errors": test["errors"],
            "test_count": test["count"],
            "images_per_s": seen_all / seconds, "epoch_seconds": seconds, **extra,
        }
        history.append(row)
        if is_main:
            if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == cfg.epochs:
                opt_tensors, opt_meta = engine.optimizer_state()
                weights = engine.state_dict()
                if averager:  # the average is the model; the live weights resume training
                    weights = averager.shadow
                    opt_tensors = {**opt_tensors, **averager.checkpoint_tensors(engine)}
                ckpt.save_checkpoint(
                    run_dir, weights,
                    {**meta_base, "epoch": epoch + 1, "metrics": row, "history": history,
                     "optimizer": opt_meta},
                    opt_tensors,
                )
            ckpt.atomic_write_text(run_dir / "metrics.jsonl",
                                   "".join(json.dumps(r) + "\n" for r in history))
            val_txt = f" val err {100 * row['val_error']:.2f}%" if val is not None else ""
            say(f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                f"err {100 * row['train_error']:.2f}%  test loss {row['test_loss']:.4f} "
                f"err {100 * row['test_error']:.2f}%{val_txt}  {row['images_per_s']:,.0f} img/s  "
                f"{seconds:.1f}s  lr {lr:.3g}")
    if world > 1:
        torch.distributed.barrier()
    return {**row, "run_dir": str(run_dir)}

"""Training boosted LeNet-4 (the 1998 paper's Section III-C-9), one function, one run directory.

Drucker, Schapire and Simard's boosting by filtering, as the paper describes it:

1. net 1 is trained as usual (:func:`lenet5.training.loop.train`, its own run directory);
2. net 2 is trained on a mix of patterns, half of which net 1 got right and half wrong. Net 1
   errs on few training patterns, so (as in the paper) the patterns come from distorted copies
   of the training set: copies are drawn and classified by net 1 until ``size / 2`` errors are
   found or ``scan`` copies have been looked at; the errors are joined by as many patterns net 1
   got right;
3. net 3 is trained on distorted patterns on which nets 1 and 2 disagree (up to ``size``,
   within the same ``scan``).

Nets 2 and 3 train on these fixed filtered sets through the same engine and loader as any run
(:func:`train_on_arrays`). The three are saved together as one ``boosted-lenet4`` checkpoint
(``<out>/checkpoint.safetensors``), which loads, evaluates, predicts and exports like any model;
each member also keeps its own run directory (``net1``, ``net2``, ``net3``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import PER_STEP_SCHEDULES, TrainConfig
from ..data.datasets import get_spec, load_split
from ..data.loader import TensorLoader
from ..data.transforms import Distortion, Normalization, apply_affine, to_unit
from ..models import get_entry, make_config
from .engine import make_engine
from .loop import cpu_threads, train
from .schedules import lr_at

BLOCK = 4096  # distorted patterns classified per call while filtering


def train_boosted(cfg: TrainConfig, out: str | Path, size: int = 60000, scan: int = 10,
                  exit_confidence: float = 0.995, log=print) -> Path:
    """Train the three members as ``cfg`` says (``cfg.model`` must be ``lenet4``; its
    distortion settings also make the filtered patterns) and save ``boosted-lenet4`` in
    ``out``; returns the checkpoint's path. A finished member found in ``out`` is reused."""
    if cfg.model != "lenet4":
        raise ValueError(f"boosting trains lenet4 members; the config names {cfg.model}")
    out = Path(out)
    with cpu_threads(cfg.threads):
        norm = Normalization.make(cfg.normalization or get_entry("lenet4").normalization,
                                  cfg.dataset)
        x, y = training_split(cfg)
        xt, yt = load_split(cfg.dataset, "test", cfg.data_dir)
        test = to_unit(xt), torch.as_tensor(yt.astype(np.int64))
        distortion = Distortion(cfg.distort_translate, cfg.distort_scale, cfg.distort_squeeze,
                                cfg.distort_shear, cfg.distort_rotate)
        stats: dict = {"size": size, "scan": scan}
        t0 = time.perf_counter()

        net1 = member(out / "net1", cfg.epochs, lambda: train(replace(cfg, out=str(out / "net1"),
                                                                     overwrite=True), log=log))
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + 2)
        x2, y2, stats["net2"] = filter_patterns(x, y, distortion, norm, gen, size, scan,
                                                lambda o: o[0] != o[1], [net1], half=True)
        log(f"boost: net 2 set {len(y2)} patterns ({stats['net2']})")
        cfg2 = replace(cfg, seed=cfg.seed + 1, distort=False, out=str(out / "net2"))
        net2 = member(out / "net2", cfg.epochs,
                      lambda: train_on_arrays(cfg2, x2, y2, norm, test, log))
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + 3)
        x3, y3, stats["net3"] = filter_patterns(x, y, distortion, norm, gen, size, scan,
                                                lambda o: o[0] != o[1], [net1, net2])
        log(f"boost: net 3 set {len(y3)} patterns ({stats['net3']})")
        cfg3 = replace(cfg, seed=cfg.seed + 2, distort=False, out=str(out / "net3"))
        net3 = member(out / "net3", cfg.epochs,
                      lambda: train_on_arrays(cfg3, x3, y3, norm, test, log))
        stats["seconds"] = time.perf_counter() - t0

        options = {k: v for k, v in make_config("lenet4", cfg.model_args).to_dict().items()}
        model_config = make_config("boosted-lenet4",
                                   {**options, "exit_confidence": exit_confidence}).to_dict()
        state = {f"{name}.{k}": v for name, net in (("net1", net1), ("net2", net2), ("net3", net3))
                 for k, v in net.state_dict().items()}
        meta = {"model": "boosted-lenet4", "model_config": model_config,
                "normalization": norm.to_dict(), "dataset": cfg.dataset,
                "classes": list(get_spec(cfg.dataset).classes), "head": "logits",
                "engine": cfg.engine, "train_config": asdict(cfg), "epoch": cfg.epochs,
                "boosting": stats}
        return ckpt.save_checkpoint(out, state, meta)


def member(run_dir: Path, epochs: int, make) -> torch.nn.Module:
    """The finished run in ``run_dir`` if there is one (``epochs`` done), else ``make()``'s."""
    from ..inference.load import load

    file = run_dir / ckpt.CHECKPOINT_NAME
    if not (file.is_file() and ckpt.read_checkpoint(file, "model")[2].get("epoch") == epochs):
        make()
    return load(run_dir).model


def training_split(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The training patterns a run of ``cfg`` trains on (``limit_train``, less ``val_split``),
    as ``(N, 1, 32, 32)`` in [0, 1] and labels."""
    xs, ys = load_split(cfg.dataset, "train", cfg.data_dir)
    if cfg.limit_train:
        xs, ys = xs[: cfg.limit_train], ys[: cfg.limit_train]
    if cfg.val_split:
        xs, ys = xs[: -cfg.val_split], ys[: -cfg.val_split]
    return to_unit(xs), torch.as_tensor(ys.astype(np.int64))


@torch.no_grad()
def filter_patterns(x: torch.Tensor, y: torch.Tensor, distortion: Distortion,
                    norm: Normalization, gen: torch.Generator, size: int, scan: int, keep,
                    nets: list, half: bool = False):
    """Distorted copies of ``x`` classified by ``nets``: ``keep(answers)`` marks the patterns
    wanted, ``answers`` being the nets' predicted classes and then the labels (tensors): net 1
    wrong is ``o[0] != o[1]`` with one net, nets 1 and 2 disagreeing the same with two. With
    ``half``, up to ``size / 2`` of them plus as many of the others; else up to ``size``.
    Returns ``(patterns in [0, 1], labels, counts)``."""
    want = size // 2 if half else size
    kept, kept_y, others, others_y = [], [], [], []
    n_kept = seen = 0
    for _ in range(scan):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], BLOCK):
            idx = order[start : start + BLOCK]
            warped = apply_affine(x[idx], distortion.sample(idx.shape[0], gen))
            inputs = norm(warped)
            answers = [net(inputs).argmax(1) for net in nets]
            mask = keep(answers + [y[idx]])
            kept.append(warped[mask])
            kept_y.append(y[idx][mask])
            if half:
                others.append(warped[~mask][: max(0, want - sum(len(o) for o in others_y))])
                others_y.append(y[idx][~mask][: others[-1].shape[0]])
            n_kept += int(mask.sum())
            seen += idx.shape[0]
            if n_kept >= want:
                break
        if n_kept >= want:
            break
    xs, ys = torch.cat(kept)[:want], torch.cat(kept_y)[:want]
    counts = {"scanned": seen, "kept": int(ys.shape[0])}
    if half:
        xo, yo = torch.cat(others)[: ys.shape[0]], torch.cat(others_y)[: ys.shape[0]]
        xs, ys = torch.cat([xs, xo]), torch.cat([ys, yo])
        counts["others"] = int(yo.shape[0])
    return xs, ys, counts


def train_on_arrays(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, norm: Normalization,
                    test: tuple[torch.Tensor, torch.Tensor], log=print) -> Path:
    """Train ``cfg.model`` on the patterns ``x`` (in [0, 1]) with the run's engine and loader,
    evaluate on ``test`` each epoch, and save a checkpoint in ``cfg.out``; returns it."""
    torch.manual_seed(cfg.seed)
    model_config = make_config(cfg.model, cfg.model_args).to_dict()
    engine = make_engine(cfg, model_config, torch.device("cpu"))
    loader = TensorLoader(x, y, cfg.batch_size, norm, shuffle=True, seed=cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        steps = len(loader)
        engine.set_lr(lr_at(cfg.schedule, cfg.lr, epoch, 0, steps, cfg.epochs, cfg.step_size,
                            cfg.gamma))
        engine.begin_epoch(epoch, loader)
        step_lr = None
        if cfg.schedule in PER_STEP_SCHEDULES:
            def step_lr(step: int, epoch: int = epoch, steps: int = steps) -> float:
                return lr_at(cfg.schedule, cfg.lr, epoch, step, steps, cfg.epochs)
        t0 = time.perf_counter()
        totals = engine.train_epoch(loader, step_lr)
        seconds = time.perf_counter() - t0
        result = engine.evaluate(*test, norm=norm, batch_size=cfg.eval_batch_size)
        history.append({"epoch": epoch + 1, "train_loss": float(totals.loss_sum) / totals.seen,
                        "train_error": float(totals.errors) / totals.seen,
                        "test_loss": result["loss"], "test_error": result["error"],
                        "test_errors": result["errors"], "epoch_seconds": seconds})
        log(f"{Path(str(cfg.out)).name} epoch {epoch + 1}/{cfg.epochs} train err "
            f"{100 * history[-1]['train_error']:.2f}% test err {100 * result['error']:.2f}% "
            f"{seconds:.1f}s")
    meta = {"model": cfg.model, "model_config": model_config, "normalization": norm.to_dict(),
            "dataset": cfg.dataset, "classes": list(get_spec(cfg.dataset).classes),
            "head": get_entry(cfg.model).head, "engine": cfg.engine, "train_config": asdict(cfg),
            "epoch": cfg.epochs, "metrics": history[-1], "history": history}
    return ckpt.save_checkpoint(Path(str(cfg.out)), engine.state_dict(), meta)

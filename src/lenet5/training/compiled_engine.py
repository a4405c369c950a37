"""``CompiledEngine``: ``lenet5 train --engine compiled``, :mod:`lenet5.compiled` behind the engine
interface (:class:`lenet5.training.engine.Engine`).

The NumPy engine's semantics (:mod:`lenet5.scratch`: same initial weights from ``cfg.seed``, same
criteria and update rules, same state names and optimiser-state layout, so checkpoints move
between all engines) at compiled speed. A pass runs in one compiled call
(:meth:`CompiledModel.train_pass`; the modern model's batch-wide kernels on the run's threads,
with results that do not depend on how many): the loader's order, batch size, normalisation and
distortion ranges go in, the totals come out, with no Python per step. Per-step rates (a
schedule that moves within a pass) go in as one rate per update. Only a per-step hook (the
weight average reads the weights after every update) needs the default loop of
:meth:`train_step` calls.

Affine distortions are drawn by Numba's generator from ``(seed, epoch)``: the same family and
ranges as the loader's, not the same numbers (a run is reproducible within this engine). Dropout
masks likewise. The loader-only augmentations (elastic, stroke width, blur, noise) have no
kernels: with them the loader makes the whole pass's images first (``pass_images``, the torch
engine's draws) and the compiled pass trains on those.

No PyTorch here: the loop hands this engine NumPy arrays, so ``lenet5 train`` with it imports
PyTorch only for what needs it (the loader's augmentations, a weight average, torchrun).
"""

from __future__ import annotations

import sys

import numba
import numpy as np

from ..compiled import kernels_1998 as K98
from ..compiled import kernels_modern as KM
from ..compiled.jit import compile_timer, is_cached
from ..compiled.model import CompiledModel, seed_dropout
from ..compiled.optim import make_optimizer
from ..config import TrainConfig
from ..data.loader import TensorLoader, array
from ..data.transforms import Normalization
from .engine import ArrayEngine, PassTotals, Progress, StepLr
from .threads import auto_threads


def pass_seed(seed: int, epoch: int) -> int:
    """The generator's seed for pass ``epoch`` of a run seeded ``seed`` (32 bits)."""
    return (seed * 1_000_003 + epoch) % 2**32


class CompiledEngine(ArrayEngine):
    """Model + loss + optimiser compiled with Numba (float32, or float64 by ``precision``; one
    process, CPU)."""

    name, label = "compiled", "compiled (Numba)"

    def __init__(self, cfg: TrainConfig, model_config: dict, device=None, ddp: bool = False):
        super().__init__(cfg, model_config, device or "cpu", ddp)
        self.model = CompiledModel(cfg.model, model_config, np.dtype(cfg.precision).type,
                                   seed=cfg.seed)
        # The run's thread count (``--threads``, or the idle cores, as :func:`lenet5.training.
        # loop.train` decides it for every engine) for Numba's parallel loops, which only the
        # modern model's batch-wide kernels have (the 1998 network trains pattern by pattern on
        # one thread).
        parallel = self.model.name == "lenet5-modern"
        wanted = cfg.threads or auto_threads()
        self.threads = min(wanted, numba.config.NUMBA_NUM_THREADS) if parallel else 1
        numba.set_num_threads(self.threads)
        kernel = K98.train_pass if self.model.name == "lenet5-1998" else KM.train_pass
        if not is_cached(kernel):  # first run after installing or upgrading: say why it waits
            minutes = "about a minute" if self.model.name == "lenet5-1998" else "about 3 minutes"
            print(f"compiling the compiled engine's kernels for {self.model.name} (once: Numba "
                  f"keeps them on disk; {minutes})", file=sys.stderr, flush=True)
        self.optimizer = make_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.momentum,
                                        cfg.nesterov, cfg.weight_decay, cfg.sdlm_mu)

    # -- training

    def begin_epoch(self, epoch: int, loader: TensorLoader) -> None:
        seed_dropout(pass_seed(self.cfg.seed, epoch))  # for train_step; a pass reseeds itself
        super().begin_epoch(epoch, loader)

    def train_epoch(self, loader: TensorLoader, step_lr: StepLr | None = None,
                    after_step=None, progress: Progress | None = None) -> PassTotals:
        """The whole pass in one compiled call, unless a hook must run after every step."""
        if after_step is not None or loader.world_size != 1:
            return super().train_epoch(loader, step_lr, after_step, progress)
        steps = len(loader)
        if loader.augment is not None:
            # Elastic, stroke, blur and noise have no kernels here: the loader makes the pass's
            # images (its affine warp and augmentations, the torch engine's draws) and the
            # compiled pass trains on them in that order.
            images, labels = (array(t) for t in loader.pass_images())
            order, distortion = np.arange(len(labels)), None
        else:
            images, labels = array(loader.images), array(loader.labels)
            order = loader.order()[: steps * loader.batch_size]
            distortion = loader.distortion
        lrs = self.optimizer.lr if step_lr is None else np.array([step_lr(i) for i in range(steps)])
        c = self.criterion
        with compile_timer() as compiling:
            loss, errors, _ = self.model.train_pass(
                images, labels, order, self.optimizer, lrs,
                batch_size=loader.batch_size, loss=c.loss, map_j=c.map_j,
                label_smoothing=c.label_smoothing, normalization=loader.normalization,
                distortion=distortion, seed=pass_seed(loader.seed, loader.epoch))
        if step_lr is not None:
            self.set_lr(float(lrs[-1]))
        totals = PassTotals(loss, errors, len(order), compile_seconds=compiling[0])
        if progress is not None:
            progress(steps - 1, totals)
        return totals

    # -- evaluation
    def outputs(self, x) -> np.ndarray:
        """Eval-mode raw outputs ``(B, 10)``: RBF distances or logits."""
        return self.model.forward(self.inputs(x), train=False)

    def evaluate(self, x, y, norm: Normalization, batch_size: int, rank: int = 0,
                 world: int = 1) -> dict:
        """A whole split in one compiled call (normalisation included)."""
        if world != 1:
            return super().evaluate(x, y, norm, batch_size, rank, world)
        out = self.model.evaluate_images(array(x), normalization=norm, batch_size=batch_size)
        target = array(y).astype(np.int64)
        loss, _ = self.eval_loss_fn(out, target)
        errors = int((self.scores(out).argmax(1) != target).sum())
        count = len(target)
        return {"loss": float(loss), "errors": errors, "error": errors / count, "count": count}





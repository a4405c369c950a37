"""``NumpyEngine``: ``lenet5 train --engine numpy``, :mod:`lenet5.scratch` behind the engine
interface (:class:`lenet5.training.engine.Engine`).

The data pipeline (batches arrive as torch tensors and leave as NumPy arrays), the learning-rate
schedules, metrics and checkpoints are the loop's, shared with PyTorch. Training and evaluation
compute in NumPy alone, criterion included. The checkpoint's weights use the torch names and
layouts, so either engine (or ``lenet5.inference.load.load``) can read them, and the optimiser
state uses the layout of :mod:`lenet5.training.optim_state`, so a run started by either engine
resumes in the other.
"""

from __future__ import annotations

import numpy as np

from ..config import TrainConfig
from ..scratch import build
from ..scratch.layers import Dropout
from ..scratch.optim import make_optimizer
from .engine import ArrayEngine


class NumpyEngine(ArrayEngine):
    """Model + loss + optimiser in NumPy (float32, or float64 by ``precision``; one process,
    CPU)."""

    name, label = "numpy", "NumPy"

    def __init__(self, cfg: TrainConfig, model_config: dict, device=None, ddp: bool = False):
        super().__init__(cfg, model_config, device or "cpu", ddp)
        self.model = build(cfg.model, model_config, np.dtype(cfg.precision).type, seed=cfg.seed)
        self.optimizer = make_optimizer(cfg.optimizer, self.model.params(), cfg.lr, cfg.momentum,
                                        cfg.nesterov, cfg.weight_decay, cfg.sdlm_mu)

    # -- training

    def begin_epoch(self, epoch: int, loader) -> None:
        # Dropout masks drawn from (seed, epoch) alone, so a resumed run replays them.
        dropouts = [layer for _, layer in self.model.layers if isinstance(layer, Dropout)]
        for i, layer in enumerate(dropouts):
            layer.rng = np.random.default_rng([self.cfg.seed, epoch, i])
        super().begin_epoch(epoch, loader)

    # -- evaluation
    def outputs(self, x) -> np.ndarray:
        """Eval-mode raw outputs ``(B, 10)``: RBF distances or logits."""
        return self.model.forward(self.inputs(x), train=False).copy()

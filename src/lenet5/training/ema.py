"""Exponential moving average of the weights (Polyak averaging), for either engine.

``TrainConfig.ema = d`` keeps ``shadow <- shadow + (1 - d_t) (w - shadow)`` after every
optimiser step, with the warm-up ``d_t = min(d, (1 + t) / (10 + t))`` so the first steps do
not drag the random initialisation along. Evaluation, the saved weights and everything that
reads them (``lenet5 evaluate``, ``predict``, ``bundle``) see the average; the live weights
the optimiser keeps moving are stored beside the optimiser state so ``--resume`` is exact.

It reads any engine through the interface of :class:`lenet5.training.engine.Engine`: the loop
passes ``live_state()`` (no copies where the engine can) to :meth:`WeightAverage.update` after
every step, and a swap uses ``state_dict()`` and ``load_state_dict()``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..checkpoint import COUNT_KEY, LIVE_PREFIX
from ..checkpoint import to_numpy as _numpy


class WeightAverage:
    def __init__(self, decay: float, state: dict, steps: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay, self.steps = decay, steps
        self.shadow = {k: _numpy(v).copy() for k, v in state.items()}

    def update(self, state: dict) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, v in state.items():
            w, s = _numpy(v), self.shadow[k]
            if np.issubdtype(s.dtype, np.floating):
                s += (1.0 - d) * (w - s)
            else:  # counters such as batch-norm's num_batches_tracked follow the live value
                s[...] = w
        self.steps += 1

    @contextmanager
    def swapped_in(self, engine):
        """Run the block with the averaged weights in ``engine``; the live ones come back."""
        live = {k: _numpy(v).copy() for k, v in engine.state_dict().items()}
        engine.load_state_dict(self.shadow)
        try:
            yield
        finally:
            engine.load_state_dict(live)

    # --- checkpoints: the averaged weights are the model's; the live ones ride along
    def checkpoint_tensors(self, engine) -> dict[str, np.ndarray]:
        live = {LIVE_PREFIX + k: _numpy(v).copy() for k, v in engine.state_dict().items()}
        return {**live, COUNT_KEY: np.array([self.steps], dtype=np.int64)}

    @staticmethod
    def split(opt_tensors: dict[str, np.ndarray]):
        """``(optimizer tensors, live weights or None, steps)`` from a checkpoint's tensors."""
        live = {k[len(LIVE_PREFIX):]: v for k, v in opt_tensors.items() if k.startswith(LIVE_PREFIX)}
        rest = {k: v for k, v in opt_tensors.items() if not k.startswith(LIVE_PREFIX) and k != COUNT_KEY}
        steps = int(opt_tensors[COUNT_KEY][0]) if COUNT_KEY in opt_tensors else 0
        return rest, (live or None), steps

"""``lenet5.compiled``: LeNet-5 compiled with Numba, batch 1 first (issue 13).

The third engine, after PyTorch and the NumPy engine of :mod:`lenet5.scratch`, whose semantics
it reproduces (same parameter names, layouts, initialisation, losses and update rules; equal
results to rounding). A whole pass of per-pattern training (the paper's recipe: MAP loss, SDLM,
one update per pattern, Section II-C and Appendix C) runs inside one compiled call.

- :mod:`.layers`, :mod:`.blocks`: the layers, forward / backward / Gauss-Newton side by side.
- :mod:`.kernels_1998`, :mod:`.kernels_modern`: the two networks, their passes;
  :mod:`.infer_1998`, :mod:`.infer_modern`: each network's evaluation, compiled for throughput.
- :mod:`.inputs`, :mod:`.losses`, :mod:`.updates`: padding, distortion, normalisation; the
  criteria; the update rules. :mod:`.simd`: vectorised dot products and the lanes blocks of
  the evaluation kernels. :mod:`.jit`: the decorators.
- :mod:`.model`, :mod:`.optim`: the Python interface, like ``scratch.Model`` and its optimisers.
- The engine behind ``lenet5 train --engine compiled`` is :mod:`lenet5.training.compiled_engine`.

Numba compiles on first use and caches the machine code on disk (``cache=True``).
"""

from .model import CompiledModel, build, seed_dropout
from .optim import Optimizer, make_optimizer

__all__ = ["CompiledModel", "Optimizer", "build", "make_optimizer", "seed_dropout"]

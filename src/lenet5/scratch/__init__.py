"""``lenet5.scratch``: LeNet-5 trained with NumPy alone, no autograd (issue 4).

Every layer writes its own backward pass (``layers``), the criteria return their gradients
(``losses``), ``optim`` has SGD, Adam(W) and the paper's SDLM (Appendix C), and ``model``
assembles LeNet-5 (1998) and the modern variant with the torch models' parameter names, so
weights and checkpoints move between the engines unchanged.
"""

from .model import Model, build

__all__ = ["Model", "build"]

"""``python -m lenet5`` (also what ``torchrun -m lenet5 train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())

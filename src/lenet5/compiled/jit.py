"""The one decorator of the compiled engine's kernels.

- ``cache=True``: compiled code is kept on disk next to the sources (``__pycache__``), so only
  the first run pays for compilation (about a minute for the 1998 training pass). Numba checks
  a cached function against its own source file only, not against the files of the functions
  it calls: after editing a kernel module, delete ``src/lenet5/compiled/__pycache__/*.nb[ic]``
  (or point ``NUMBA_CACHE_DIR`` at a fresh folder).
- ``fastmath=False``: no reassociation or contraction, so results do not depend on the
  compiler's choices (reductions are vectorised by hand, see :mod:`.simd`).
- ``error_model="numpy"``: a float division by zero gives inf/nan as in NumPy instead of
  raising, which also keeps the check out of the loops, so LLVM can vectorise loops that divide.
"""

from numba import njit

jit = njit(cache=True, fastmath=False, error_model="numpy")

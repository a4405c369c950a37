"""The two decorators of the compiled engine's kernels.

:data:`jit`, for everything that trains (and everything else but evaluation):

- ``cache=True``: compiled code is kept on disk next to the sources (``__pycache__``), so only
  the first run pays for compilation (about a minute for the 1998 training pass). Numba checks
  a cached function against its own source file only, not against the files of the functions
  it calls: after editing a kernel module, delete ``src/lenet5/compiled/__pycache__/*.nb[ic]``
  (or point ``NUMBA_CACHE_DIR`` at a fresh folder).
- ``fastmath=False``: no reassociation or contraction, so results do not depend on the
  compiler's choices (reductions are vectorised by hand, see :mod:`.simd`).
- ``error_model="numpy"``: a float division by zero gives inf/nan as in NumPy instead of
  raising, which also keeps the check out of the loops, so LLVM can vectorise loops that divide.

:data:`parallel_jit`: :data:`jit` plus ``parallel=True`` (below).

:data:`fast_jit`, for the evaluation kernels of :mod:`.infer_1998` only: the same, but LLVM may
fuse multiply-adds (``contract``) and reorder sums (``reassoc``), so it vectorises reductions
and halves the instructions of every multiply-add. Outputs differ from the exact kernels by
rounding (about 1e-7 relative in float32); NaN and inf keep their meaning (no ``nnan``/``ninf``),
so a diverged model still shows NaN outputs.

Compile time. A kernel called from another with a constant argument (``f(x, 28)``) is typed
with ``Literal[int](28)`` and compiled once per distinct constant, with everything it calls: the
modern model's batch-norm kernels compile once per layer. That is kept on purpose: passing the
map sizes as plain ``np.int64`` values compiled the modern training pass 1.2x faster but ran it
at 0.83x the speed (session 14, ``benchmarks/bench_compile.py``, JSON
``benchmarks/results/compile-plain-sizes.json``); the loops those sizes bound run faster
compiled for them.
"""

import sys
from contextlib import contextmanager
from pathlib import Path

from numba import njit


def _load_numba_registries() -> None:
    """Load Numba's CPU implementations now, without SciPy's linear algebra.

    Numba imports its implementations on the first compile or cached-kernel load, and with them
    ``scipy.linalg.cython_blas``, only to decide whether ``np.correlate``/``np.convolve`` may
    call BLAS; importing ``scipy.linalg`` took 0.38 s of ``lenet5 train``'s start-up in an
    import profile (session 17, docs/results.md), and no kernel here uses BLAS. So the
    registries are loaded with that one import refused, and Numba's flag is then set to what it
    would have found, so jitted code elsewhere in the process is unaffected (``np.dot`` imports
    BLAS when it is compiled).
    """
    import numba.np  # noqa: F401 - the package whose arraymath is about to be imported

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return  # loaded already, or SciPy's BLAS is in the process anyway
    from numba.core.registry import cpu_target

    name = "scipy.linalg.cython_blas"
    sys.modules[name] = None  # an import of it raises ImportError without loading scipy.linalg
    try:
        cpu_target.target_context.refresh()
    finally:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
    from numba.np import arraymath

    arraymath._HAVE_BLAS = _scipy_has_blas()


def _scipy_has_blas() -> bool:
    """Whether ``scipy.linalg.cython_blas`` is installed, without importing ``scipy.linalg``."""
    try:
        import scipy
    except ImportError:
        return False
    return any(any(Path(p, "linalg").glob("cython_blas*")) for p in scipy.__path__)


_load_numba_registries()

jit = njit(cache=True, fastmath=False, error_model="numpy")
# The same, for the batch-wide training kernels of the modern model (:mod:`.kernels_modern`,
# :mod:`.blocks`): their ``prange`` loops run on Numba's threads (``numba.set_num_threads``).
# Every sum keeps one order whatever the thread count (a prange iteration sums serially; the
# patterns of a batch go into a fixed number of partial gradients), so results do not depend on
# how many threads ran.
parallel_jit = njit(cache=True, fastmath=False, error_model="numpy", parallel=True)

FAST_FLAGS = {"contract", "reassoc", "nsz", "arcp", "afn"}
fast_jit = njit(cache=True, fastmath=FAST_FLAGS, error_model="numpy")


@contextmanager
def compile_timer():
    """Seconds Numba spends compiling inside the block (not loading cached code), in the list it
    yields once the block ends: ``with compile_timer() as t: ...; t[0]``. Reads Numba's
    ``numba:compile`` events, outermost compiles only (a kernel's callees compile inside it)."""
    from numba.core import event

    out = [0.0]
    with event.install_recorder("numba:compile") as rec:
        try:
            yield out
        finally:
            depth, start = 0, 0.0
            for stamp, e in rec.buffer:
                if e.is_start:
                    depth, start = depth + 1, (stamp if depth == 0 else start)
                else:
                    depth -= 1
                    if depth == 0:
                        out[0] += stamp - start


def is_cached(kernel) -> bool:
    """Whether Numba's on-disk cache holds compiled code for ``kernel`` (a :data:`jit`
    function) that matches its source, so the first call loads it instead of compiling.
    Best effort: reads Numba's cache index; True when that cannot be read (say nothing)."""
    try:
        return bool(kernel._cache._cache_file._load_index())
    except Exception:  # noqa: BLE001 - Numba internals moved: assume cached
        return True

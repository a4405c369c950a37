"""Compile the compiled engine's kernels once, before pytest-xdist's workers start.

With an empty Numba cache (CI's fresh clone) each worker compiles every kernel its tests call
on their first call, and kernels that tests in both workers call (the modern model's training
pass above all, minutes of compiling) were compiled twice, at the same time. ``tests/conftest.py``
runs this script once per group, the groups side by side, when a whole-suite run starts in
several workers; the workers then load the kernels from the cache. Each group trains a few
tiny runs through :func:`lenet5.training.loop.train`, as the tests do, so what is compiled is
what they call (raw digits, the loader's augmented images, the per-step path of a weight
average). A group whose training pass is already in the cache is skipped (about a second).

    python tests/warm_kernels.py modern|1998 DATA_ROOT
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

GROUPS = {
    "modern": [dict(preset="fast"), dict(preset="robust"), dict(preset="fast", ema=0.99)],
    "1998": [dict(preset="paper"), dict(preset="paper-best"), dict(preset="lush")],
}


def main(group: str, data_root: str) -> None:
    from lenet5.compiled import kernels_1998, kernels_modern
    from lenet5.compiled.jit import is_cached
    from lenet5.config import resolve_config
    from lenet5.training.loop import train

    if is_cached((kernels_modern if group == "modern" else kernels_1998).train_pass):
        return

    with tempfile.TemporaryDirectory(prefix="lenet5-warm-") as tmp:
        for i, run in enumerate(GROUPS[group]):
            cfg = resolve_config(run.pop("preset"), overrides=dict(
                run, engine="compiled", limit_train=128, epochs=1, threads=1, progress=False,
                sdlm_samples=32, data_dir=data_root, out=str(Path(tmp) / str(i))))
            train(cfg, log=lambda *a: None)


if __name__ == "__main__":
    main(*sys.argv[1:3])

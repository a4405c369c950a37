"""Shared fixtures: the real MNIST data root and the tiny committed fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def real_data_root() -> Path:
    return Path(os.environ.get("LENET5_DATA_DIR") or REPO.parent / "shared" / "data")


def pytest_configure(config: pytest.Config) -> None:
    """A whole-suite run in several workers (``python -m pytest``, ``-m "not slow"``) first
    compiles the shared Numba kernels once (``tests/warm_kernels.py``, its groups side by side),
    so the workers do not each compile them. Not in a worker, with ``-n 0``, or when test paths
    are named; ``LENET5_WARM=0`` turns it off. A failure here is left for the tests to show."""
    workers = getattr(config.option, "numprocesses", None)
    if (hasattr(config, "workerinput") or not workers or config.args != config.getini("testpaths")
            and config.args != [str(REPO / "tests")] or os.environ.get("LENET5_WARM") == "0"):
        return
    root = real_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        return
    script = Path(__file__).parent / "warm_kernels.py"
    procs = [subprocess.Popen([sys.executable, str(script), group, str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for group in ("modern", "1998")]
    for proc in procs:
        proc.wait()


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root (``../shared/data``). In CI its absence is a failure, not a skip."""
    root = real_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"real MNIST not found under {root} (set LENET5_DATA_DIR)")
        pytest.skip(f"real MNIST not found under {root}")
    return root


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    return FIXTURES  # holds mnist-tiny/, used with dataset name overridden in tests


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield

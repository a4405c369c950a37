"""Shared fixtures: the real MNIST data root and the tiny committed fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def real_data_root() -> Path:
    return Path(os.environ.get("LENET5_DATA_DIR") or REPO.parent / "shared" / "data")


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

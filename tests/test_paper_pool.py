"""The paper's distortion protocol (``--distort-pool 9``; issue 15): 9 distorted copies of
each training image drawn once plus the originals, every pass drawing its patterns from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet5.config import resolve_config
from lenet5.data.datasets import load_split
from lenet5.data.pool import PoolLoader
from lenet5.data.transforms import Distortion, Normalization, to_unit


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "train", data_root)
    return to_unit(x[:400]), torch.as_tensor(y[:400].astype(np.int64))


def pool(digits, seed=0, copies=9) -> PoolLoader:
    return PoolLoader(*digits, 1, Normalization.make("paper"), shuffle=True, seed=seed,
                      pool_distortion=Distortion(), copies=copies)


def test_a_pass_draws_n_distinct_patterns_from_originals_and_copies(digits):
    loader = pool(digits)
    n = digits[0].shape[0]
    assert loader.pool_size == 10 * n and loader.params["tx"].shape == (9 * n,)
    idx = loader.pass_indices(0)
    assert idx.shape == (n,) and len(set(idx.tolist())) == n
    assert 0 <= int(idx.min()) and int(idx.max()) < 10 * n
    source = idx % n
    assert torch.equal(loader.labels, digits[1][source])
    originals = idx < n
    assert 0 < int(originals.sum()) < n // 4  # about a tenth are the originals themselves
    assert torch.equal(loader.images[originals], digits[0][source[originals]])
    warped = loader.images[~originals]
    assert (warped - digits[0][source[~originals]]).abs().amax((1, 2, 3)).min() > 0


def test_a_copy_is_the_same_image_whenever_it_is_drawn(digits):
    """Drawn once: a copy presented in two passes (or by a resumed run) is the same image."""
    loader = pool(digits)
    first = {int(i): loader.images[k].clone() for k, i in enumerate(loader.pass_indices(0))}
    n = digits[0].shape[0]
    resumed = pool(digits)  # a fresh loader for the same seed, as a resumed run builds it
    resumed.set_epoch(3)
    again = [(k, int(i)) for k, i in enumerate(resumed.pass_indices(3)) if int(i) in first]
    assert any(i >= n for _, i in again)
    for k, i in again:
        assert torch.equal(resumed.images[k], first[i])
    assert not torch.equal(loader.pass_indices(0), loader.pass_indices(1))
    other = pool(digits, seed=1)
    assert not torch.equal(other.params["tx"], loader.params["tx"])


def test_pool_needs_distort():
    with pytest.raises(ValueError, match="distort_pool needs --distort"):
        resolve_config("paper", overrides={"distort_pool": 9})


@pytest.mark.slow
def test_full_pool_draws_from_600000(data_root, tmp_path):
    """The real protocol on the whole training set: 600,000 patterns, two passes of 60,000,
    about a tenth of each pass originals; then one pass of the compiled engine on 2,000 of them
    learns."""
    from lenet5.training.loop import make_loader, train

    cfg = resolve_config("paper-distort", overrides=dict(distort_pool=9))
    x, y = load_split("mnist", "train", data_root)
    loader = make_loader(cfg, (to_unit(x), torch.as_tensor(y.astype(np.int64))),
                         Normalization.make("paper"), 0, 1)
    assert isinstance(loader, PoolLoader) and loader.pool_size == 600_000
    seen = torch.cat([loader.pass_indices(e) for e in range(2)])
    assert int(seen.max()) >= 590_000 and 10_800 < int((seen < 60_000).sum()) < 13_200
    small = resolve_config("paper-distort", overrides=dict(
        distort_pool=9, engine="compiled", epochs=1, limit_train=2000, threads=1,
        progress=False, data_dir=str(data_root), out=str(tmp_path / "run"), sdlm_samples=100))
    row = train(small, log=lambda *a: None)
    assert row["test_error"] < 0.25


def test_the_clean_passes_present_the_originals_in_the_passs_order(digits):
    loader = PoolLoader(*digits, 1, Normalization.make("paper"), shuffle=True, seed=0,
                        pool_distortion=Distortion(), clean_from=2)
    loader.set_epoch(1)
    assert not torch.equal(loader.images, digits[0])
    loader.set_epoch(2)
    assert loader.is_clean(2) and torch.equal(loader.images, digits[0])
    assert torch.equal(loader.labels, digits[1])
    assert np.array_equal(loader.order(), torch.randperm(400, generator=loader.generator(1)).numpy())

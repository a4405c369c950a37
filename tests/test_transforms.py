"""Padding, normalisation, the batch iterator and the paper's affine distortions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet5.data.datasets import load_split
from lenet5.data.loader import TensorLoader, randperm
from lenet5.data.transforms import Distortion, Normalization, apply_affine, to_unit


def centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(N, 2) as (x, y) in pixels of (N, 1, H, W) images."""
    h, w = x.shape[-2:]
    mass = x.sum((1, 2, 3))
    ys = (x.sum((1, 3)) * torch.arange(h)).sum(1) / mass
    xs = (x.sum((1, 2)) * torch.arange(w)).sum(1) / mass
    return torch.stack([xs, ys], 1)


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "test", data_root)
    return to_unit(x[:256]), torch.as_tensor(y[:256].astype(np.int64))


def test_to_unit_is_the_float_copy_padded_on_real_mnist(data_root):
    """The one-buffer cast equals a float32 copy divided by 255 then zero-padded, bit for bit,
    for any padding, a single 2-D image and float input; other shapes are a clear error."""
    x, _ = load_split("mnist", "train", data_root)
    x = x[:2000]
    for pad in (2, 0, 5):
        want = torch.nn.functional.pad(
            torch.tensor(x, dtype=torch.float32).div_(255.0)[:, None], (pad,) * 4)
        got = to_unit(x, pad)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert torch.equal(got, want)
    assert torch.equal(to_unit(x[7]), to_unit(x[7:8]))
    assert torch.equal(to_unit(x[:50].astype(np.float64)), to_unit(x[:50]))
    with pytest.raises(ValueError, match="expected images of shape"):
        to_unit(x[:2, None])


def test_pad_and_paper_scaling():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 10, 10] = 255
    x = to_unit(img)
    assert x.shape == (1, 1, 32, 32) and x[0, 0, 12, 12] == 1.0
    y = Normalization.make("paper")(x)
    assert torch.isclose(y.min(), torch.tensor(-0.1)) and torch.isclose(y.max(), torch.tensor(1.175))


def test_standard_normalisation_is_zero_mean_unit_std(data_root):
    x, _ = load_split("mnist", "train", data_root)
    n = Normalization.make("standard", "mnist")
    z = n(torch.tensor(x[:20000], dtype=torch.float32)[:, None] / 255)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert Normalization.make("standard", "fashion-mnist").shift == pytest.approx(0.2860)


def test_zero_ranges_are_identity(digits):
    x, _ = digits
    out = Distortion(0, 0, 0, 0, 0)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)


@pytest.mark.parametrize("tx, ty", [(3.0, 0.0), (0.0, -2.0), (1.5, 2.5)])
def test_translation_moves_centre_of_mass(digits, tx, ty):
    x, _ = digits
    n = x.shape[0]
    p = {"tx": torch.full((n,), tx), "ty": torch.full((n,), ty), "scale": torch.ones(n),
         "squeeze": torch.zeros(n), "shear": torch.zeros(n), "rotate": torch.zeros(n)}
    shift = centre_of_mass(apply_affine(x, p)) - centre_of_mass(x)
    assert torch.allclose(shift.mean(0), torch.tensor([tx, ty]), atol=0.05)


def test_random_ranges_hold_and_labels_untouched(digits):
    x, y = digits
    d = Distortion(translate=2.0, scale=0.0, squeeze=0.0, shear=0.0)
    out = d(x, torch.Generator().manual_seed(1))
    shift = (centre_of_mass(out) - centre_of_mass(x)).abs()
    assert shift.max() <= 2.0 + 0.1 and shift.max() > 1.0
    loader = TensorLoader(x, y, 64, Normalization.make("paper"), shuffle=True, distortion=d)
    seen = torch.cat([b for _, b in loader])
    assert sorted(seen.tolist()) == sorted(y.tolist())


def test_scale_grows_ink_and_shear_keeps_mass(digits):
    x, _ = digits
    n = x.shape[0]
    base = {"tx": torch.zeros(n), "ty": torch.zeros(n), "scale": torch.full((n,), 1.2),
            "squeeze": torch.zeros(n), "shear": torch.zeros(n), "rotate": torch.zeros(n)}
    bigger = apply_affine(x, base).sum() / x.sum()
    assert bigger == pytest.approx(1.44, rel=0.05)  # area scales with s^2
    sheared = apply_affine(x, {**base, "scale": torch.ones(n), "shear": torch.full((n,), 0.2)})
    assert sheared.sum() / x.sum() == pytest.approx(1.0, rel=0.03)


def test_loader_shuffles_every_epoch_and_keeps_remainder():
    x, y = torch.zeros(10, 1, 32, 32), torch.arange(10)
    loader = TensorLoader(x, y, 4, Normalization.make("none"), shuffle=True, seed=3)
    assert len(loader) == 3
    e0 = torch.cat([b for _, b in loader])
    loader.set_epoch(1)
    e1 = torch.cat([b for _, b in loader])
    assert sorted(e0.tolist()) == list(range(10)) and not torch.equal(e0, e1)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b for _, b in loader]), e0)  # replayable


def test_loader_shards_equal_one_big_batch():
    x, y = torch.zeros(20, 1, 32, 32), torch.arange(20)
    one = TensorLoader(x, y, 6, Normalization.make("none"), shuffle=True, seed=5)
    ranks = [TensorLoader(x, y, 3, Normalization.make("none"), shuffle=True, seed=5, rank=r, world_size=2)
             for r in range(2)]
    for (_, big), (_, a), (_, b) in zip(one, *ranks):
        assert torch.equal(big, torch.cat([a, b]))


@pytest.mark.parametrize("batch, world, rank", [(1, 1, 0), (7, 2, 0), (8, 2, 1), (30, 3, 1)])
def test_distorted_batches_are_the_warps_drawn_batch_by_batch(digits, batch, world, rank):
    """The loader warps a block of batches in one call; each batch is still exactly what its own
    draws give, warped alone (the draws, and so training, as when each batch was warped alone)."""
    x, y = digits
    d = Distortion(rotate=5.0)
    loader = TensorLoader(x, y, batch, Normalization.make("none"), shuffle=True, seed=3,
                          distortion=d, rank=rank, world_size=world)
    loader.set_epoch(2)
    gen, order, got = loader.generator(2), loader.order(), list(loader)
    assert len(got) == len(loader) > 1
    for i, (xb, yb) in enumerate(got):
        chunk = order[i * loader.global_batch : (i + 1) * loader.global_batch]
        drawn = d.sample(chunk.shape[0], gen)
        mine = chunk[rank * batch : (rank + 1) * batch]
        want = apply_affine(x[mine], {k: v[rank * batch : rank * batch + mine.shape[0]]
                                      for k, v in drawn.items()})
        assert torch.equal(yb, y[mine]) and torch.equal(xb, want), i


def test_a_rank_with_nothing_left_in_the_last_distorted_batch_gets_an_empty_batch(digits):
    x, y = digits  # 256 images, global batch 2 x 96: the last one has 64, all on rank 0
    loader = TensorLoader(x, y, 96, Normalization.make("none"), shuffle=True, distortion=Distortion(),
                          rank=1, world_size=2)
    sizes = [yb.shape[0] for _, yb in loader]
    assert sizes == [96, 0]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000, 60000])
@pytest.mark.parametrize("seed", [0, 5, 7_000_022, 2**32 + 3, 123_456_789_012])
def test_randperm_is_torch_randperm_without_torch(n, seed):
    """The loader's order is drawn without PyTorch (the compiled engine trains without importing
    it) and is still exactly ``torch.randperm``'s, so runs replay as they always did."""
    want = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    got = randperm(n, seed)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_the_loader_takes_tensors_arrays_and_raw_digits_alike(data_root):
    """The same split as tensors, NumPy arrays (the NumPy engine's) or the raw uint8 digits
    (the compiled engine's): the same order, batches and curvature patterns."""
    raw, labels = load_split("mnist", "test", data_root)
    raw, labels = raw[:256], labels[:256].astype(np.int64)
    x, y = to_unit(raw), torch.as_tensor(labels)
    kw = dict(shuffle=True, seed=4, distortion=Distortion())
    loaders = [TensorLoader(x, y, 50, Normalization.make("paper"), **kw),
               TensorLoader(x.numpy(), labels, 50, Normalization.make("paper"), **kw),
               TensorLoader(raw, labels, 50, Normalization.make("paper"), **kw)]
    for loader in loaders:
        loader.set_epoch(3)
    first = loaders[0]
    for other in loaders[1:]:
        assert np.array_equal(first.order(), other.order())
        assert np.array_equal(np.asarray(first.take(first.order()[:9])),
                              other.take(other.order()[:9]))
        for (xa, ya), (xb, yb) in zip(first, other, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)

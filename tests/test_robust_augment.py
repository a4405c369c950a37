"""The training augmentations of issue #17 (elastic, stroke width, noise) and their wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet5.config import PRESETS, resolve_config
from lenet5.data.augment import Augment, elastic, pixel_noise, smooth, stroke_width
from lenet5.data.datasets import load_split
from lenet5.data.loader import TensorLoader
from lenet5.data.transforms import Normalization, to_unit


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "train", data_root)
    return to_unit(x[:256]), torch.tensor(y[:256], dtype=torch.int64)


def test_elastic_with_no_displacement_is_the_identity(digits):
    x = digits[0][:8]
    assert torch.allclose(elastic(x, 0.0, 4.0), x, atol=1e-6)


def test_elastic_moves_ink_a_little_and_keeps_most_of_it(digits):
    x = digits[0][:64]
    g = torch.Generator().manual_seed(0)
    y = elastic(x, 34.0, 4.0, g)
    moved = (y - x).abs().mean().item()
    assert 0.01 < moved < 0.2
    assert 0.8 < (y.sum() / x.sum()).item() < 1.2


def test_smoothing_matches_a_separable_gaussian_convolution():
    f = torch.rand(2, 2, 32, 32)
    k = torch.exp(-0.5 * (torch.arange(-12, 13, dtype=torch.float32) / 4.0) ** 2)
    k = k / k.sum()
    ref = torch.nn.functional.conv2d(f, k.view(1, 1, 1, -1).repeat(2, 1, 1, 1), padding=(0, 12), groups=2)
    ref = torch.nn.functional.conv2d(ref, k.view(1, 1, -1, 1).repeat(2, 1, 1, 1), padding=(12, 0), groups=2)
    assert torch.allclose(smooth(f, 4.0), ref, atol=1e-5)


def test_stroke_width_thickens_and_thins(digits):
    x = digits[0][:32]
    ink = x.sum().item()
    assert stroke_width(x, torch.full((32,), 1.0)).sum().item() > 1.5 * ink
    assert stroke_width(x, torch.full((32,), -1.0)).sum().item() < 0.6 * ink
    assert torch.equal(stroke_width(x, torch.zeros(32)), x)


@settings(max_examples=20, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 60), st.integers(0, 2**31 - 1))
def test_augmented_images_stay_images(noise, stroke, alpha, seed):
    x = torch.rand(5, 1, 32, 32)
    y = Augment(alpha, 4.0, stroke, noise)(x, torch.Generator().manual_seed(seed))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1


def test_noise_is_seeded_and_hits_the_background(digits):
    x = digits[0][:16]
    a = pixel_noise(x, 0.5, torch.Generator().manual_seed(3))
    b = pixel_noise(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a[x == 0] > 0).float().mean() > 0.05


def test_augment_share_leaves_the_other_images_as_they_were(digits):
    x = digits[0]
    aug = Augment(34.0, 4.0, 1.2, 0.4, 1.2, share=0.5)
    y = aug(x, torch.Generator().manual_seed(7))
    untouched = (y == x).flatten(1).all(1).float().mean().item()
    assert 0.35 < untouched < 0.65  # about half, drawn per image
    assert torch.equal(y, aug(x, torch.Generator().manual_seed(7)))
    assert not Augment(34.0, share=0.0).active and Augment(34.0, share=0.1).active
    assert resolve_config(None, overrides={"augment_share": 0.5}).augment_share == 0.5
    with pytest.raises(ValueError, match="augment_share"):
        resolve_config(None, overrides={"augment_share": 1.5})


def test_loader_applies_the_augmentation_only_when_asked(digits):
    x, y = digits
    norm = Normalization.make("none")
    plain = [b for b, _ in TensorLoader(x, y, 64, norm, shuffle=True, seed=1)]
    aug = Augment(34.0, 4.0, 0.5, 0.2)
    again = [b for b, _ in TensorLoader(x, y, 64, norm, shuffle=True, seed=1, augment=aug)]
    twice = [b for b, _ in TensorLoader(x, y, 64, norm, shuffle=True, seed=1, augment=aug)]
    assert all(torch.equal(a, b) for a, b in zip(again, twice))  # seeded
    assert not any(torch.equal(a, b) for a, b in zip(plain, again))


def test_the_robust_preset_resolves_and_runs_on_the_compiled_engine():
    cfg = resolve_config("robust")
    assert cfg.elastic_alpha == PRESETS["robust"]["elastic_alpha"] > 0 and cfg.distort
    assert resolve_config("robust", overrides={"engine": "compiled"}).engine == "compiled"
    assert np.isclose(resolve_config("best").elastic_alpha, 0.0)  # the old recipes are unchanged


def test_pass_images_are_the_batches_the_loader_gives(digits):
    """The compiled engine trains on ``pass_images``: the same distorted, augmented images, in
    the same order, as iterating the loader (which then normalises them)."""
    from lenet5.data.transforms import Distortion

    x, y = digits
    norm = Normalization.make("standard")
    make = lambda: TensorLoader(x, y, 48, norm, shuffle=True, seed=5, epoch=2,  # noqa: E731
                                distortion=Distortion(rotate=15.0),
                                augment=Augment(34.0, 4.0, 1.2, 0.4, 1.2))
    batches = list(make())
    images, labels = make().pass_images()
    assert images.shape == (256, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(labels, torch.cat([b for _, b in batches]))
    assert torch.equal(norm(images), torch.cat([a for a, _ in batches]))


@pytest.mark.slow
def test_the_compiled_engine_learns_from_augmented_digits(data_root, tmp_path):
    """Elastic, stroke, blur and noise through the compiled engine: the pass trains on the
    loader's images (training error on them is that of augmented digits) and the model
    reads clean test digits."""
    from lenet5.training.loop import train

    cfg = resolve_config("robust", overrides=dict(
        data_dir=str(data_root), engine="compiled", limit_train=6000, epochs=3, threads=1,
        progress=False, out=str(tmp_path / "run")))
    row = train(cfg, log=lambda *a: None)
    assert row["test_error"] < 0.06
    assert row["train_error"] > row["test_error"]  # augmented digits are harder than clean ones


def test_the_clean_passes_at_the_end_present_the_digits_as_they_are(digits):
    """``--clean-epochs N``: the last N passes get neither the affine warp nor the
    augmentations; the order is still the pass's own, so a clean pass's batches are a plain
    loader's batches of the same pass."""
    from lenet5.data.transforms import Distortion

    x, y = digits
    norm = Normalization.make("none")
    kw = dict(shuffle=True, seed=4, distortion=Distortion(rotate=15.0),
              augment=Augment(34.0, 4.0, 1.2, 0.4, 1.2))
    loader = TensorLoader(x, y, 64, norm, clean_from=3, **kw)
    plain = TensorLoader(x, y, 64, norm, shuffle=True, seed=4)
    distorted = TensorLoader(x, y, 64, norm, **kw)
    for epoch in range(5):
        for each in (loader, plain, distorted):
            each.set_epoch(epoch)
        assert loader.is_clean(epoch) == (epoch >= 3)
        want = plain if epoch >= 3 else distorted
        assert all(torch.equal(a, b) and torch.equal(la, lb)
                   for (a, la), (b, lb) in zip(loader.batches(), want.batches()))
    loader.set_epoch(1)  # going back (a resumed run) distorts again
    assert loader.distortion is not None and loader.augment is not None


def test_clean_epochs_is_checked_and_reaches_the_loader(digits):
    from lenet5.training.loop import make_loader

    cfg = resolve_config("robust", overrides={"clean_epochs": 5})
    loader = make_loader(cfg, digits, Normalization.make("standard"), 0, 1)
    assert loader.clean_from == cfg.epochs - 5
    assert make_loader(resolve_config("robust"), digits, Normalization.make("standard"), 0,
                       1).clean_from is None
    with pytest.raises(ValueError, match="clean_epochs 11 is more than the run's 10 epochs"):
        resolve_config(None, overrides={"clean_epochs": 11, "epochs": 10})
    with pytest.raises(ValueError, match="clean_epochs"):
        resolve_config(None, overrides={"clean_epochs": -1})

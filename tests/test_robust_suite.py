"""The corruption suite, its curves (``viz robustness``) and ``viz animate``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lenet5.cli import main
from lenet5.data.corruptions import CORRUPTIONS, CURVES, PROBE, corrupt
from lenet5.data.datasets import load_split
from lenet5.inference.predict import Predictor
from lenet5.reporting import robustness


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "test", str(data_root))
    return x[:200].astype(np.float32) / 255, y[:200]


def centre(img: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(img.shape)
    return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_the_clean_end_of_every_curve_leaves_digits_alone(digits, name):
    x = digits[0][:20]
    clean = CURVES[name][0]
    assert np.allclose(corrupt(x, name, clean), x, atol=1e-5)
    strong = corrupt(x, name, max(CURVES[name], key=lambda s: abs(s - clean)))
    assert strong.shape == x.shape and strong.dtype == np.float32
    assert 0 <= strong.min() and strong.max() <= 1 and np.abs(strong - x).mean() > 0.005


def test_rotation_is_counter_clockwise_and_shift_moves_the_ink():
    img = np.zeros((28, 28), np.float32)
    img[13:15, 18:22] = 1  # a dash right of the centre
    turned = corrupt(img, "rotate", 90)
    cx, cy = centre(turned)
    assert cy < 11 and abs(cx - 13.5) < 1  # now above the centre
    moved = corrupt(np.stack([img] * 8), "shift", 4, seed=3)
    d = np.array([np.linalg.norm(centre(m) - centre(img)) for m in moved])
    assert np.allclose(d, 4, atol=0.3)
    assert len({tuple(np.round(centre(m), 1)) for m in moved}) == 8  # each its own way


def test_stroke_width_and_noise(digits):
    x = digits[0][:20]
    assert corrupt(x, "thicken", 1).sum() > 1.4 * x.sum() > 2 * corrupt(x, "thin", 1).sum()
    assert np.array_equal(corrupt(x, "noise", 0.3, seed=5), corrupt(x, "noise", 0.3, seed=5))
    assert not np.array_equal(corrupt(x, "noise", 0.3, seed=5), corrupt(x, "noise", 0.3, seed=6))


def test_corrupt_refuses_what_it_cannot_do(digits):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(digits[0], "melt", 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt((digits[0] * 255).astype(np.uint8), "rotate", 10)


def test_bundled_models_degrade_with_severity_and_the_robust_one_least(digits):
    modern, robust = Predictor.load("lenet5-modern"), Predictor.load("lenet5-robust")
    res = robustness.curves([modern, robust], *digits, {"noise": (0, 0.5), "rotate": (0, 60)})
    for kind in ("noise", "rotate"):
        (_, clean), (_, strong) = res["lenet5-modern"][kind]
        assert clean >= 0.97 and strong < clean - 0.1
        (_, r_clean), (_, r_strong) = res["lenet5-robust"][kind]
        assert r_clean >= 0.97 and strong < r_strong < r_clean
    p = robust
    probe = robustness.probe(p, *digits)
    assert len(probe["settings"]) == len(PROBE) == 10
    assert probe["mean"] == pytest.approx(np.mean(list(probe["settings"].values())))
    assert probe["clean"] > probe["mean"]


@pytest.mark.slow
def test_viz_robustness_and_animate_write_their_files(tmp_path, data_root, capsys):
    png = tmp_path / "rob.png"
    assert main(["viz", "robustness", "--limit", "40", "--compare", "lenet5-1998",
                 "--data-dir", str(data_root), "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 800
    gif = tmp_path / "turn.gif"
    assert main(["viz", "animate", "--test-index", "0", "--transform", "rotate", "--frames", "4",
                 "--data-dir", str(data_root), "--out", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 4
        first = np.asarray(im.convert("L"), np.float64)
        im.seek(1)
        assert np.abs(np.asarray(im.convert("L"), np.float64) - first).mean() > 0.5  # it moves
    assert main(["viz", "animate", "--test-index", "0", "--transform", "melt",
                 "--data-dir", str(data_root), "--out", str(gif)]) != 0
    assert "unknown transformation" in capsys.readouterr().err
    assert main(["viz", "animate", "--test-index", "0", "--frames", "100000",
                 "--data-dir", str(data_root), "--out", str(gif)]) != 0  # bounded: refused
    assert "an animation has 2 to 360 frames, got 100000" in capsys.readouterr().err

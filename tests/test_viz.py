"""Plots: valid PNG/SVG files of the stated size with real content; the viz command."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from lenet5.cli import main
from lenet5.data.datasets import load_split
from lenet5.inference.predict import Predictor
from lenet5.models.bitmaps import rbf_prototypes
from lenet5.reporting import viz


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "test", str(data_root))
    return x[:300].astype(np.float32) / 255, y[:300]


def check_png(path, fig=None) -> np.ndarray:
    """Valid PNG, of the figure's size in pixels, not blank; returns its RGB pixels."""
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        if fig is not None:
            w, h = fig.get_size_inches() * viz.DPI
            assert img.size == (round(w), round(h))
        rgb = np.asarray(img.convert("RGB"), np.float64)
    grey = rgb.mean(-1)
    assert grey.std() > 10, "image is (nearly) blank"
    assert (grey < 128).mean() > 0.002 and (grey > 128).mean() > 0.2  # ink and background
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 16
    return rgb


def history(n=6, model_err=0.02):
    return [{"epoch": e, "train_error": model_err / e, "test_error": 1.2 * model_err / e}
            for e in range(1, n + 1)]


def test_feature_maps_png(predictor, digits, tmp_path):
    x = digits[0][0]
    fig = viz.feature_maps(predictor.features(x), x, predictor.predict(x)[0]["probs"], "digit 0")
    check_png(viz.save(fig, tmp_path / "f0.png"), fig)
    shown = {ax.get_title(): ax.images[0].get_array() for ax in fig.axes if ax.images}
    assert len(shown) == 7  # input, C1, S2, C3, S4, C5, F6
    x1 = digits[0][1]
    other = viz.feature_maps(predictor.features(x1), x1)
    for ax in other.axes:
        if ax.images:  # another digit, other pictures in every panel
            assert np.abs(ax.images[0].get_array() - shown[ax.get_title()]).mean() > 1e-3


def test_feature_maps_of_the_1998_model_show_f6_as_7x12(tmp_path):
    import torch

    from lenet5.data.transforms import Normalization
    from lenet5.models import create_model

    torch.manual_seed(0)
    meta = {"normalization": Normalization.make("paper").to_dict(), "head": "rbf", "model": "lenet5-1998"}
    pred = Predictor(create_model("lenet5-1998"), meta, "untrained")
    x = np.zeros((28, 28), np.float32)
    x[4:24, 12:16] = 1.0
    feats = pred.features(x)
    fig = viz.feature_maps(feats, x, pred.predict(x)[0]["probs"])
    f6_axes = [ax for ax in fig.axes if ax.get_title().startswith("F6")]
    assert f6_axes[0].images[0].get_array().shape == (12, 7)
    check_png(viz.save(fig, tmp_path / "f.png"), fig)


def test_kernels_prototypes_and_svg(predictor, tmp_path):
    from lenet5.reporting.report import c1_kernels

    fig = viz.kernels(c1_kernels(predictor.model))
    check_png(viz.save(fig, tmp_path / "k.png"), fig)
    fig = viz.prototypes(rbf_prototypes().numpy())
    rgb = check_png(viz.save(fig, tmp_path / "p.png"), fig)
    assert (rgb.mean(-1) < 60).mean() > 0.03  # black bitmap ink
    svg = viz.save(viz.prototypes(rbf_prototypes().numpy()), tmp_path / "p.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(list(root.iter())) > 100
    assert "http://matplotlib" not in svg.read_text()
    with pytest.raises(ValueError, match="png or .svg"):
        viz.save(fig, tmp_path / "p.jpg")


def test_curves_overlay_the_paper_for_lenet5_1998(tmp_path):
    fig = viz.training_curves(history(), "lenet5-1998")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "paper test error (Fig. 5)" in labels and "test error" in labels
    paper = [ln for ln in fig.axes[0].lines if ln.get_label() == "paper test error (Fig. 5)"][0]
    assert list(paper.get_ydata()) == list(viz.PAPER_TEST_ERROR)
    check_png(viz.save(fig, tmp_path / "c.png"), fig)
    modern = viz.training_curves(history(), "lenet5-modern")
    assert not any("paper" in s for s in modern.axes[0].get_legend_handles_labels()[1])
    with pytest.raises(ValueError, match="no epochs"):
        viz.training_curves([], "lenet5-modern")


def test_confusion_errors_and_class_bars(predictor, digits, tmp_path):
    x, y = digits
    probs, _ = predictor.outputs(x)
    pred = probs.argmax(1)
    pred[:5] = (y[:5] + 1) % 10  # make sure there are errors to show
    from lenet5.inference.evaluate import classification_metrics

    m = classification_metrics(y, pred, predictor.classes)
    fig = viz.confusion_heatmap(np.array(m["confusion_matrix"]), predictor.classes)
    assert f"{m['errors']} errors" in fig.axes[0].get_title()
    check_png(viz.save(fig, tmp_path / "cm.png"), fig)
    conf = probs.max(1)
    conf[:5] = 1.0  # the planted errors are the most confident, so they come first
    fig = viz.error_gallery(x, y, pred, conf, predictor.classes, max_n=20)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert len(labels) == min(20, m["errors"])
    assert labels[:5] == [f"{y[i]}->{pred[i]} 1.00" for i in range(5)]
    check_png(viz.save(fig, tmp_path / "err.png"), fig)
    fig = viz.per_class_bars(m["per_class_accuracy"])
    heights = [b.get_height() for b in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [100 * v for v in m["per_class_accuracy"].values()])
    check_png(viz.save(fig, tmp_path / "cls.png"), fig)


def test_mosaic_layout():
    m = viz.mosaic(np.ones((5, 2, 3)), cols=2)
    assert m.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert np.isnan(m[2]).all() and np.isnan(m[-2:, 4:]).all()  # gaps and the empty slot


def test_viz_command_features_and_curves(tmp_path, capsys):
    page = tmp_path / "digit.png"
    img = np.full((120, 90), 250, np.uint8)
    img[20:100, 40:52] = 10  # a "1"
    Image.fromarray(img).save(page)
    assert main(["viz", "features", str(page), "--out", str(tmp_path / "f.png")]) == 0
    check_png(tmp_path / "f.png")
    assert main(["viz", "curves", "--model", "lenet5-modern", "--out", str(tmp_path / "c.svg")]) == 0
    assert ET.parse(tmp_path / "c.svg").getroot().tag.endswith("svg")
    capsys.readouterr()
    assert main(["viz", "features", "--out", str(tmp_path / "x.png")]) == 1
    assert "needs an IMAGE" in capsys.readouterr().err


@pytest.mark.slow
def test_viz_command_every_kind(data_root, tmp_path):
    page = tmp_path / "digit.png"
    x, _ = load_split("mnist", "test", str(data_root))
    Image.fromarray(255 - np.kron(x[0], np.ones((4, 4), np.uint8))).save(page)
    common = ["--data-dir", str(data_root), "--limit", "500"]
    runs = {
        "features": ["features", str(page)],
        "features-idx": ["features", "--test-index", "3", "--data-dir", str(data_root)],
        "kernels": ["kernels"],
        "prototypes": ["prototypes"],
        "curves": ["curves"],
        "confusion": ["confusion", *common],
        "errors": ["errors", *common],
        "classes": ["classes", *common],
    }
    for name, argv in runs.items():
        out = tmp_path / f"{name}.png"
        assert main(["viz", *argv, "--out", str(out)]) == 0, name
        check_png(out)
    assert main(["viz", "kernels", "--out", str(tmp_path / "k.svg")]) == 0
    assert ET.parse(tmp_path / "k.svg").getroot().tag.endswith("svg")


def test_a_picture_is_written_whole_or_not_at_all(tmp_path):
    """A failure while drawing (a full disk, say) leaves the previous picture as it was and no
    temporary file: ``viz.save`` writes atomically, as every other output does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    out = tmp_path / "curves.png"
    viz.save(fig, out)
    before = out.read_bytes()

    def full_disk(path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device", str(path))

    fig.savefig = full_disk
    with pytest.raises(OSError) as e:
        viz.save(fig, out)
    assert e.value.filename == str(out)
    assert out.read_bytes() == before and sorted(tmp_path.iterdir()) == [out]
    plt.close(fig)

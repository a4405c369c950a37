"""Predict on users' images: loading, MNIST-style preprocessing, probabilities, bad inputs, CLI."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lenet5.cli import main
from lenet5.data.datasets import load_split
from lenet5.data.photos import photo_page
from lenet5.data.transforms import Normalization
from lenet5.inference import images
from lenet5.inference.images import ink_map, to_grey
from lenet5.inference.predict import (
    LAYERS,
    BlankImage,
    PredictError,
    Predictor,
    center_of_mass_paste,
    load_image,
    preprocess,
)
from lenet5.models import create_model
from lenet5.training.losses import map_loss


@pytest.fixture(scope="module")
def mnist_test(data_root):
    return load_split("mnist", "test", str(data_root))


@pytest.fixture(scope="module")
def predictor():
    return Predictor.load()


def render(digit: np.ndarray, rng: np.random.Generator, canvas=None) -> Image.Image:
    """An MNIST digit (uint8, ink bright) as dark ink on a light page, rescaled and off-centre."""
    scale = rng.uniform(2.0, 7.0)
    aspect = rng.uniform(0.9, 1.1)
    size = (max(8, round(28 * scale * aspect)), max(8, round(28 * scale)))
    a = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC), np.float64) / 255
    a = np.clip(a, 0, 1)
    w, h = canvas or (size[0] + int(rng.integers(20, 200)), size[1] + int(rng.integers(20, 200)))
    alpha = np.zeros((h, w))
    y, x = int(rng.integers(0, h - size[1] + 1)), int(rng.integers(0, w - size[0] + 1))
    alpha[y : y + size[1], x : x + size[0]] = a
    page = rng.uniform(190, 255, 3)  # off-white, slightly tinted paper
    ink = rng.uniform(0, 70, 3)  # black, blue-black or brown pen
    img = page * (1 - alpha[..., None]) + ink * alpha[..., None]
    img += rng.normal(0, 3, img.shape) + np.linspace(-10, 10, w)[None, :, None]  # noise, shading
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def digit_page(mnist_test, i=0, seed=0) -> Image.Image:
    return render(mnist_test[0][i], np.random.default_rng(seed))


# ----------------------------------------------------------------------------- preprocessing


def test_mnist_digit_passes_through_nearly_unchanged(mnist_test):
    images = mnist_test[0][:200]
    diffs = []
    for im in images:
        out = preprocess(im.astype(np.float32) / 255)
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() == pytest.approx(1.0)
        diffs.append(np.abs(out - im / 255.0).mean())
    # Same size and centring as MNIST: the mean absolute change is a few grey levels.
    assert np.median(diffs) < 0.03, np.median(diffs)


def test_output_is_20px_box_centred_by_mass(mnist_test):
    out = preprocess(digit_page(mnist_test, 3))
    rows, cols = np.nonzero(out > 0.05)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    assert 19 <= extent <= 23
    ys, xs = np.mgrid[:28, :28]
    cy, cx = (out * ys).sum() / out.sum(), (out * xs).sum() / out.sum()
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_center_of_mass_paste_moves_mass_to_centre():
    patch = np.zeros((20, 10))
    patch[:5, :] = 1.0  # heavy top
    out = center_of_mass_paste(patch)
    ys = np.arange(28)
    assert (out.sum(1) @ ys) / out.sum() == pytest.approx(14.0, abs=0.5)
    assert out.sum() == pytest.approx(patch.sum())


@pytest.mark.parametrize("width", [2, 4, 40])
def test_pen_drawings_fine_or_bold_on_a_large_page(predictor, width):
    # A fine pen on a big page would shrink to a hairline at 20 px; it is thickened instead.
    strokes = {1: [(400, 150), (400, 650)], 2: [(260, 250), (400, 180), (540, 250), (520, 380),
                                                 (260, 650), (560, 650)],
               4: [(450, 650), (450, 150), (250, 450), (550, 450)], 7: [(250, 200), (550, 200), (380, 650)]}
    for label, pts in strokes.items():
        img = Image.new("L", (800, 800), 255)
        ImageDraw.Draw(img).line(pts, fill=0, width=width, joint="curve")
        x = preprocess(img)
        rows = np.nonzero(x.max(1) > 0.3)[0]
        assert rows.max() - rows.min() + 1 >= 18  # the 20-px box
        assert predictor.predict(x)[0]["label"] == label, (label, width)


QUICK_PHOTOS = ("falloff", "ruled", "grainy", "boxed")  # the rest in the slow tier (2-8 s each)


@pytest.mark.parametrize("kind", [
    k if k in QUICK_PHOTOS else pytest.param(k, marks=pytest.mark.slow)
    for k in ("falloff", "vignette", "ruled", "squared", "grainy", "shadow", "corner-shadow",
              "cropped", "boxed", "neighbours", "ruled-askew", "boxed-askew")])
def test_photos_under_uneven_light_on_lined_paper_grainy_cropped_or_boxed_read_as_the_plain_page(
        mnist_test, predictor, kind):
    """The page is a surface fitted to the border, not one grey level, or where the light has
    a hard edge, the page an opening reads; ruled lines across the page are dropped; a grainy
    page is median-filtered and its stray specks dropped; a box drawn round the digit and
    pieces of its neighbours cut by the picture's edges are taken out. Before, light falling off across the
    page alone took every one of these digits to a wrong answer, a shadow's edge most of them,
    and grain a third of them to a refusal."""
    x, y = mnist_test
    rng = np.random.default_rng(0)
    n = 30
    results = [predictor.predict_image(photo_page(x[i], kind, rng)) for i in range(n)]
    right = sum(r["label"] == y[i] for i, r in enumerate(results))
    wrong = sum(r["label"] not in (None, y[i]) for i, r in enumerate(results))
    assert right >= 0.9 * n and wrong <= 0.05 * n, (right, wrong)
    # Much like the digit from the plain page (the ink's contrast follows the light, and lines
    # crossing the strokes leave gaps where they are taken out).
    same = [np.corrcoef(preprocess(photo_page(x[i], "plain", rng)).ravel(),
                        preprocess(photo_page(x[i], kind, rng)).ravel())[0, 1] for i in range(5)]
    assert np.mean(same) > 0.75, same


@pytest.mark.parametrize("margin", [0, 1])
def test_a_digit_cropped_to_its_ink_is_not_taken_for_a_shadowed_page(mnist_test, monkeypatch,
                                                                    margin):
    """Ink touching the edge of a tight crop leaves the border ring off the fitted page, as a
    shadow does; the page read by an opening must not take over there (it would keep a bold
    stroke as page and lose it). Nor may its bars be taken for lines askew, or its pieces
    touching the edge for a neighbour's."""
    x, _ = mnist_test
    crops = []
    for d in x[:60]:
        rows, cols = np.flatnonzero(d.max(1) > 30), np.flatnonzero(d.max(0) > 30)
        c = d[max(0, rows[0] - margin) : rows[-1] + 1 + margin,
              max(0, cols[0] - margin) : cols[-1] + 1 + margin]
        big = Image.fromarray(c).resize((c.shape[1] * 10, c.shape[0] * 10),
                                        Image.Resampling.BILINEAR)
        crops.append(to_grey(Image.fromarray(230 - (np.asarray(big) * 0.8).astype(np.uint8))))
    got = [ink_map(g) for g in crops]
    monkeypatch.setattr(images, "EDGED", 2.0)  # never: the smooth page only
    monkeypatch.setattr(images, "line_angle", lambda ink: 0.0)  # no lines looked for askew
    monkeypatch.setattr(images, "drop_neighbours", lambda ink: ink)  # no pieces dropped
    for g, a in zip(crops, got):
        np.testing.assert_array_equal(a, ink_map(g))


def test_light_and_dark_backgrounds_give_the_same_digit(mnist_test):
    page = digit_page(mnist_test, 5)
    inverted = Image.fromarray(255 - np.asarray(page))
    np.testing.assert_allclose(preprocess(page), preprocess(inverted), atol=0.1)


@pytest.mark.parametrize("fmt,mode,kw", [
    ("PNG", "L", {}), ("PNG", "RGB", {}), ("JPEG", "RGB", {"quality": 80}), ("JPEG", "L", {}),
    ("BMP", "RGB", {}), ("GIF", "P", {}), ("TIFF", "RGB", {}), ("TIFF", "I;16", {}),
])
def test_formats_and_modes_load_to_the_same_input(mnist_test, fmt, mode, kw):
    page = digit_page(mnist_test, 7)
    ref = preprocess(page)
    if mode == "I;16":
        src = Image.fromarray(np.asarray(page.convert("L"), np.uint16) * 257)  # 16-bit grey
        assert src.mode == "I;16"
    elif mode == "P":
        src = page.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        src = page.convert(mode)
    got = preprocess(load_image(encode(src, fmt, **kw)))
    assert np.abs(got - ref).mean() < 0.03, (fmt, mode)


@pytest.mark.parametrize("ink_value", [0, 255])
def test_alpha_png_ink_on_transparency(mnist_test, ink_value):
    # A canvas export: colour is constant, the digit lives in alpha alone. Dark ink and light
    # ink both come out as the digit, whatever colour hides under the transparent pixels.
    digit = mnist_test[0][11]
    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
    rgba = np.zeros((160, 200, 4), np.uint8)
    rgba[..., :3] = ink_value
    rgba[20:132, 60:172, 3] = big
    got = preprocess(load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    page = np.full((160, 200), 255, np.uint8)
    page[20:132, 60:172] = 255 - big  # the same drawing, opaque: black ink on white
    np.testing.assert_allclose(got, preprocess(Image.fromarray(page)), atol=0.02)
    assert np.abs(got - preprocess(digit)).mean() < 0.06  # and still that MNIST digit


def test_alpha_png_with_opaque_page_uses_the_page(mnist_test):
    page = np.asarray(digit_page(mnist_test, 2))
    rgba = np.dstack([page, np.full(page.shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0  # a transparent corner must not become ink
    got = preprocess(load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert np.abs(got - preprocess(Image.fromarray(page))).mean() < 0.03


def test_canvas_array_in_unit_range_is_accepted(mnist_test):
    x = mnist_test[0][0].astype(np.float64) / 255
    np.testing.assert_allclose(preprocess(x), preprocess(mnist_test[0][0]), atol=1e-6)


# ----------------------------------------------------------------------------- bad inputs


def test_non_image_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(PredictError, match=r"notes\.png: not an image"):
        load_image(bad)


def test_truncated_png_is_a_clear_error(tmp_path, mnist_test):
    data = encode(digit_page(mnist_test), "PNG")
    bad = tmp_path / "cut.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PredictError, match=r"cut\.png: corrupt or truncated"):
        load_image(bad)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PredictError, match="no such file"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_image_is_no_digit_found(value):
    img = Image.fromarray(np.full((50, 80), value, np.uint8))
    with pytest.raises(PredictError, match="no digit found"):
        preprocess(load_image(encode(img, "PNG")))


@pytest.mark.parametrize("value", [0, 255])
def test_blank_image_is_answered_no_digit_where_the_model_can_refuse(value):
    img = Image.fromarray(np.full((50, 80), value, np.uint8))
    res = Predictor.load().predict_image(encode(img, "PNG"))  # the default, with its reject option
    assert res["label"] is None and res["verdict"] == "no digit"
    assert res["reason"] == "no digit: nothing stands out from the background"
    with pytest.raises(BlankImage, match="no digit found"):
        Predictor.load(reject=False).predict_image(encode(img, "PNG"))


def test_faint_noise_only_is_no_digit_found():
    rng = np.random.default_rng(0)
    img = Image.fromarray(np.clip(240 + rng.normal(0, 3, (100, 100)), 0, 255).astype(np.uint8))
    with pytest.raises(PredictError, match="no digit found"):
        preprocess(load_image(encode(img, "JPEG")))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``: decoding it would be a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_oversize_image_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(10_000, 5_000))  # 50 Mpx claimed, 100 bytes on disk
    with pytest.raises(PredictError, match=r"bomb\.png: image is 10000x5000 .*over the limit"):
        load_image(bomb)
    with pytest.raises(PredictError, match="decompression"):  # Pillow's own guard, far above ours
        load_image(png_header_only(100_000, 100_000), max_pixels=10**12)


def test_max_pixels_is_adjustable(mnist_test):
    data = encode(digit_page(mnist_test), "PNG")
    with pytest.raises(PredictError, match="over the limit"):
        load_image(data, max_pixels=1000)


def test_wrong_array_shapes_are_clear_errors(predictor):
    with pytest.raises(PredictError, match="expected"):
        preprocess(np.zeros((4, 5, 6, 7)))
    with pytest.raises(PredictError, match=r"\(N, 28, 28\)"):
        predictor.predict(np.zeros((3, 32, 32), np.float32))


# ----------------------------------------------------------------------------- prediction


def test_predict_result_layout(predictor, mnist_test):
    x = mnist_test[0][:4].astype(np.float32) / 255
    res = predictor.predict(x, top_k=3)
    assert len(res) == 4
    for r, y in zip(res, mnist_test[1][:4]):
        assert r["label"] == int(y)
        assert len(r["probs"]) == 10 and sum(r["probs"]) == pytest.approx(1.0, abs=1e-5)
        assert len(r["top_k"]) == 3 and r["top_k"][0] == [r["label"], max(r["probs"])]
        assert r["top_k"][0][1] >= r["top_k"][1][1] >= r["top_k"][2][1]
        assert r["posterior"] == "softmax"
    assert predictor.predict(x[0])[0]["label"] == res[0]["label"]  # a single (28, 28) works too


def test_rbf_probabilities_are_the_map_posterior():
    torch.manual_seed(0)
    model = create_model("lenet5-1998")
    with torch.no_grad():  # F6 near the 3's prototype: a distance of about 1, not hundreds
        target = 0.9 * model.rbf.prototypes[3]
        model.f6.weight.mul_(0.01)
        model.f6.bias.copy_(torch.atanh(target / 1.7159) * 1.5)
    meta = {"normalization": Normalization.make("paper").to_dict(), "head": "rbf", "model": "lenet5-1998"}
    pred = Predictor(model, meta, "untrained-1998")
    x = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    res = pred.predict(x, top_k=10)
    y = np.array([r["distances"] for r in res])
    j = model.config.map_j
    expected = np.exp(-y) / (np.exp(-j) + np.exp(-y).sum(1, keepdims=True))
    assert expected[:, 3].min() > 0.1 and expected.sum(1).max() < 0.9  # both terms matter
    np.testing.assert_allclose([r["probs"] for r in res], expected, rtol=1e-4, atol=1e-7)
    for r, row in zip(res, expected):
        assert r["posterior"] == "map-rbf"
        assert r["rubbish"] == pytest.approx(1 - row.sum(), abs=1e-6)
        assert r["label"] == int(np.argmin(r["distances"]))
        # -log P(label) is exactly the MAP loss of that sample for that label.
        loss = map_loss(torch.tensor([r["distances"]]), torch.tensor([r["label"]]), j)
        assert -np.log(r["probs"][r["label"]]) == pytest.approx(float(loss), rel=1e-5)


def test_non_finite_outputs_are_an_error_never_nan(predictor):
    x = np.zeros((2, 28, 28), np.float32)
    x[1, 3, 3] = np.nan  # an array handed over directly, past the image checks
    with pytest.raises(PredictError, match="not finite"):
        predictor.predict(x)
    blank = predictor.predict(x[:1])[0]  # a digit, or "no digit" where the model can refuse
    assert blank["label"] in range(10) or blank["verdict"] == "no digit"


def test_features_of_every_layer(predictor, mnist_test):
    f = predictor.features(mnist_test[0][0].astype(np.float32) / 255)
    assert list(f) == list(LAYERS)
    w1, w3, w5, w6 = getattr(predictor.model.config, "widths", (6, 16, 120, 84))
    assert f["C1"].shape == (w1, 28, 28) and f["S2"].shape == (w1, 14, 14)
    assert f["C3"].shape == (w3, 10, 10) and f["S4"].shape == (w3, 5, 5)
    assert f["C5"].shape == (w5, 1, 1) and f["F6"].shape == (w6,)
    assert all(np.isfinite(v).all() and v.std() > 0 for v in f.values())
    batch = predictor.features(mnist_test[0][:2].astype(np.float32) / 255)
    assert batch["C1"].shape == (2, w1, 28, 28)
    # The server's one-pass path gives the same answers and maps as the two separate calls.
    x = mnist_test[0][:5]
    preds, maps = predictor.predict_with_features(x, top_k=2)
    assert preds == predictor.predict(x, top_k=2)
    for name, v in predictor.features(x).items():
        np.testing.assert_array_equal(maps[name], v)


@pytest.mark.slow  # 300 pages written, read back and cleaned: 14-24 s
def test_rendered_digits_accuracy(predictor, mnist_test, tmp_path):
    # Real MNIST test digits handed over the way a user would: dark ink on a light, larger,
    # shaded and noisy page, off-centre and rescaled; a third saved as JPEG, a third grey PNG.
    rng = np.random.default_rng(1998)
    idx = rng.choice(len(mnist_test[1]), 300, replace=False)
    batch = []
    for n, i in enumerate(idx):
        page = render(mnist_test[0][i], rng)
        if n % 3 == 0:
            path = tmp_path / f"{n}.jpg"
            page.save(path, "JPEG", quality=int(rng.integers(60, 95)))
        else:
            path = tmp_path / f"{n}.png"
            (page.convert("L") if n % 3 == 1 else page).save(path, compress_level=1)
        batch.append(preprocess(load_image(path)))
    labels = np.array([r["label"] for r in predictor.predict(np.stack(batch))])
    accuracy = (labels == mnist_test[1][idx]).mean()
    print(f"rendered-digit accuracy {accuracy:.4f} on {len(idx)}")
    assert accuracy >= 0.97, accuracy


def test_predict_image_accepts_paths_bytes_and_images(predictor, mnist_test, tmp_path):
    page = digit_page(mnist_test, 0)
    path = tmp_path / "d.png"
    page.save(path)
    a = predictor.predict_image(path)
    assert a == predictor.predict_image(path.read_bytes()) == predictor.predict_image(page)
    assert a["label"] == int(mnist_test[1][0])


# ----------------------------------------------------------------------------- CLI


def test_cli_predict_reports_bad_files_and_keeps_going(tmp_path, mnist_test, capsys):
    good = tmp_path / "seven.jpg"
    digit_page(mnist_test, 0).save(good, "JPEG")  # test image 0 is a 7
    junk = tmp_path / "junk.gif"
    junk.write_bytes(b"GIF89a garbage")
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    good2 = tmp_path / "two.bmp"
    digit_page(mnist_test, 1).save(good2, "BMP")  # test image 1 is a 2
    assert main(["predict", str(good), str(junk), str(blank), str(good2), "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    assert f"{good}: 7 " in out and f"{good2}: 2 " in out
    assert f"{junk}: not an image" in err and "junk" not in out
    # A blank page is an answer where the model can refuse: "no digit", not an error.
    assert f"{blank}: no digit   (no digit: nothing stands out from the background" in out and "blank" not in err

    assert main(["predict", str(good), str(blank), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["posterior"] == "softmax" and doc["model"] == "lenet5-robust"
    first, second = doc["results"]
    assert first["label"] == 7 and len(first["top_k"]) == 3
    assert second["label"] is None and second["verdict"] == "no digit"
    assert second["reason"] == "no digit: nothing stands out from the background" and "error" not in second

    # Told always to answer a digit, it cannot for a blank page: one line, exit 1.
    assert main(["predict", str(good), str(blank), "--json", "--no-reject"]) == 1
    second = json.loads(capsys.readouterr().out)["results"][1]
    assert "no digit found" in second["error"] and "label" not in second
    assert main(["predict", str(good)]) == 0


def test_cli_predict_unknown_bundled_model(tmp_path, mnist_test, capsys):
    good = tmp_path / "d.png"
    digit_page(mnist_test).save(good)
    assert main(["predict", str(good), "--model", "no-such-model"]) == 1
    assert "no bundled model 'no-such-model'" in capsys.readouterr().err

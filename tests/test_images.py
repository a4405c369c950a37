"""Reading users' images (``lenet5.inference.images``): what is refused and how, what a bounded
decode gives, and properties over random and damaged inputs (Hypothesis)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from lenet5.inference.images import PredictError, load_image, preprocess
from lenet5.inference.predict import Predictor
from tests.serve_support import as_photo_png, bundled_checkpoint, mnist_test_digits


@pytest.fixture(scope="module")
def digits(data_root):
    return mnist_test_digits(data_root, 12)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(bundled_checkpoint()[1], name="modern")


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def one_line_error(fn, pattern: str) -> str:
    with pytest.raises(PredictError, match=pattern) as err:
        fn()
    assert "\n" not in str(err.value)
    return str(err.value)


# ----------------------------------------------------------------------------- what a path may be


@pytest.mark.timeout(20)
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would wait forever
    t0 = time.monotonic()
    msg = one_line_error(lambda: load_image(fifo), "not a regular file")
    assert "named pipe" in msg and msg.startswith(str(fifo)) and time.monotonic() - t0 < 5


@pytest.mark.parametrize("kind", ["directory", "character device", "missing", "link loop"])
def test_paths_that_are_not_image_files(tmp_path, kind):
    if kind == "directory":
        path, pattern = tmp_path, "not a regular file \\(a directory\\)"
    elif kind == "character device":
        path, pattern = Path("/dev/null"), "not a regular file \\(a character device\\)"
    elif kind == "missing":
        path, pattern = tmp_path / "nope.png", "no such file"
    else:
        path = tmp_path / "loop.png"
        os.symlink(path, path)
        pattern = "cannot open"
    one_line_error(lambda: load_image(path), pattern)


def test_a_regular_file_through_a_symlink_is_read(tmp_path, digits):
    png = tmp_path / "digit.png"
    png.write_bytes(as_photo_png(digits[0][0]))
    (tmp_path / "link.png").symlink_to(png)
    assert load_image(tmp_path / "link.png").size == (168, 168)


@pytest.mark.timeout(60)
def test_predict_command_names_each_bad_input_in_one_line(tmp_path, digits, capsys):
    from lenet5.cli import main

    fifo, nan, good = tmp_path / "pipe.png", tmp_path / "nan.tif", tmp_path / "good.png"
    os.mkfifo(fifo)
    a = 1.0 - digits[0][0]
    a[0, 0] = np.nan
    Image.fromarray(a, "F").save(nan)
    good.write_bytes(as_photo_png(digits[0][0]))
    assert main(["predict", str(fifo), str(nan), str(tmp_path), str(good)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"lenet5: error: {fifo}: not a regular file (a named pipe)",
        f"lenet5: error: {nan}: image has 1 NaN or infinite pixel value(s)",
        f"lenet5: error: {tmp_path}: not a regular file (a directory)"]
    assert out.startswith(f"{good}: {digits[1][0]} ")


# ----------------------------------------------------------------------------- float and 16-bit images


def test_a_float_image_with_a_nan_pixel_says_so(tmp_path, digits, predictor):
    ink = digits[0][0].astype(np.float32)
    path = tmp_path / "digit.tif"
    Image.fromarray(1.0 - ink, "F").save(path)  # a float TIFF: dark ink on white
    assert predictor.predict(preprocess(load_image(path)))[0]["label"] == digits[1][0]
    for bad in (np.nan, np.inf, -np.inf):
        a = 1.0 - ink
        a[3, 5] = bad
        Image.fromarray(a, "F").save(path)
        msg = one_line_error(lambda: load_image(path), "1 NaN or infinite pixel")
        assert "blank" not in msg


def test_16_bit_grey_is_read_and_shrunk_alike(digits, predictor):
    x = digits[0][1]
    big = np.kron(65535 - np.round(x * 65535), np.ones((40, 40))).astype(np.uint16)  # 1120x1120
    data = encoded(Image.fromarray(big), "PNG")  # mode I;16
    full, small = load_image(data), load_image(data, work_pixels=200_000)
    assert full.mode == small.mode == "L" and small.size == (374, 374)  # shrunk by 3
    assert predictor.predict(preprocess(full))[0]["label"] == digits[1][1]
    np.testing.assert_allclose(preprocess(small), preprocess(full), atol=0.08)


# ----------------------------------------------------------------------------- bounded decoding


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF"])
def test_a_large_image_is_shrunk_as_it_is_decoded_and_read_the_same(fmt, digits, predictor):
    x, label = digits[0][2], digits[1][2]
    photo = Image.open(io.BytesIO(as_photo_png(x, scale=40))).convert("RGB")  # 1120x1120
    data = encoded(photo, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    full = load_image(data, work_pixels=None)
    small = load_image(data, work_pixels=512 * 512)
    assert full.size == (1120, 1120) and small.width * small.height <= 512 * 512
    assert small.width >= 1120 // 4  # a whole factor: 3 (JPEG: decoded at 1/2, then halved)
    # By default a file is read at about WORK_PIXELS (1120x1120 is 1.25 megapixels: halved).
    assert load_image(data).width == 560
    a, b = preprocess(full), preprocess(small)
    assert predictor.predict(a)[0]["label"] == predictor.predict(b)[0]["label"] == label
    assert np.abs(a - b).max() < 0.15 and np.abs(a - b).mean() < 0.01


def test_exif_rotation_is_applied_with_or_without_shrinking(digits):
    x = digits[0][3]
    photo = Image.open(io.BytesIO(as_photo_png(x, scale=30))).convert("L")  # 840x840
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    data = encoded(photo, "JPEG", quality=95, exif=exif.tobytes())
    upright = np.asarray(photo.transpose(Image.Transpose.ROTATE_270), np.float64)
    for work in (None, 100_000):
        got = load_image(data, work_pixels=work)
        want = upright if work is None else np.asarray(
            Image.fromarray(upright.astype(np.uint8)).reduce(840 // got.width), np.float64)
        assert got.size == want.shape[::-1]
        assert np.abs(np.asarray(got, np.float64) - want).mean() < 4  # JPEG noise only


def bomb_png(side: int) -> bytes:
    """A valid PNG of side x side 1-bit pixels: a small file, a huge image once decoded."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = zlib.compress((b"\x00" + b"\xff" * (side // 8)) * side, 6)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0]))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, pattern", [
    (5000, "5000x5000 = 25,000,000 pixels, over the limit of 16,000,000"),
    # Pillow's own guard fires first (at twice its 89 MP): said as ours, with our limit
    (14_000, r"over the limit of 16,000,000 pixels \(decompression-bomb guard\)"),
])
def test_pixel_bound_is_read_from_the_header_before_decoding(side, pattern):
    png = bomb_png(side)  # 5000: 4 kB of file, 25 MP; 14000: 25 kB, 196 MP
    t0 = time.perf_counter()
    one_line_error(lambda: load_image(png, max_pixels=16_000_000), pattern)
    assert time.perf_counter() - t0 < 0.5  # nothing was inflated


def test_formats_outside_the_allowlist_are_not_opened(digits):
    data = encoded(Image.open(io.BytesIO(as_photo_png(digits[0][0]))), "TGA")
    assert load_image(data, formats=("TGA",)).size == (168, 168)  # asked for: read
    one_line_error(lambda: load_image(data), "not an image.*accepted: PNG, JPEG, GIF")
    one_line_error(lambda: load_image(data, formats=("PNG", "JPEG")),
                   "not an image.*accepted: PNG, JPEG")
    # PostScript is never handed to Ghostscript, installed or not.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n0 0 moveto 28 28 lineto stroke\n"
    one_line_error(lambda: load_image(eps), "not an image.*accepted")


def test_damaged_files_are_one_line_errors(digits):
    png = as_photo_png(digits[0][0])
    one_line_error(lambda: load_image(png[: len(png) // 2]), "corrupt or truncated")
    one_line_error(lambda: load_image(b"just some text"), "not an image")
    one_line_error(lambda: load_image(b"", name="upload"), "^upload: not an image")


# ----------------------------------------------------------------------------- properties

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00",
         b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P5\n", b"P6\n"]


def valid_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    a = (rng.random((24, 20, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(a)
    out = [encoded(img, f) for f in ("PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")]
    out += [encoded(img, "JPEG", quality=80), encoded(img, "JPEG", progressive=True),
            encoded(img.convert("LA"), "PNG"), encoded(img.convert("P"), "PNG", transparency=3),
            encoded(Image.fromarray(rng.random((16, 16)).astype(np.float32), "F"), "TIFF"),
            encoded(Image.fromarray(a[..., 0].astype(np.uint16) * 257), "PNG")]
    return out


VALID = valid_images()


def read_or_refuse(data: bytes, **kw) -> None:
    """The property: an image (L or RGB, non-empty) or a one-line PredictError, nothing else."""
    try:
        img = load_image(data, **kw)
    except PredictError as e:
        assert "\n" not in str(e)
        return
    assert img.mode in ("L", "RGB") and img.width > 0 and img.height > 0
    try:
        x = preprocess(img)
    except PredictError as e:
        assert "\n" not in str(e)
        return
    assert x.shape == (28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=400))
def test_random_bytes_are_an_image_or_a_predict_error(magic, body):
    read_or_refuse(magic + body, max_pixels=4_000_000, work_pixels=65_536)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(VALID), data=st.data())
def test_damaged_images_are_an_image_or_a_predict_error(base, data):
    """Real files of every accepted kind, with bytes flipped, cut off or inserted."""
    b = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
            if not b:
                break
        else:
            b[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    read_or_refuse(bytes(b), max_pixels=4_000_000, work_pixels=65_536)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    shape=st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                    st.tuples(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 3, 4, 5])),
                    hnp.array_shapes(min_dims=0, max_dims=4, max_side=6))))
def test_random_arrays_preprocess_or_raise_predict_error(a):
    try:
        x = preprocess(a)
    except PredictError as e:
        assert "\n" not in str(e)
        return
    assert x.shape == (28, 28) and x.dtype == np.float32 and np.isfinite(x).all()
    assert 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("side", [300, 3000])
def test_a_shade_counts_as_light_only_where_it_reaches_the_border(side):
    """The shadow path's guard (``images._shade_reaches_border``), on a photo's size and on one
    ten times larger (where it works on a pooled mask, so its flood fill stays small)."""
    from lenet5.inference.images import _shade_reaches_border

    page = np.zeros((side, side * 3 // 4))
    page[:, : side // 3] = 0.5  # a shadow over the left third: light, not ink
    assert _shade_reaches_border(page)
    page[side // 2 : side // 2 + side // 10, side // 2 : side // 2 + side // 20] = 0.9
    assert not _shade_reaches_border(page)  # a thick stroke the opening kept, inside

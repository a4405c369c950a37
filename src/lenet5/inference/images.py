"""Users' images in, MNIST-style 28x28 digits out (LeCun et al. 1998, Section III-A).

MNIST's digits were size-normalised to fit a 20x20 box keeping their aspect ratio (grey levels
from anti-aliasing), then centred by centre of mass in a 28x28 field. :func:`preprocess` does
the same to a photo, scan or canvas drawing:

1. greyscale (alpha composited onto the detected background by :func:`load_image`);
2. background = a smooth surface fitted to the border ring (light falling off across a photo is
   not ink); invert if it is light, so ink is bright on 0; ruled lines across the page dropped;
3. contrast stretched so the strongest ink is 1; faint noise (< ``NOISE`` of it) set to 0;
4. crop to the ink's bounding box with a margin for the resampling filter;
5. the box's longer side scaled to 20 px, aspect kept, anti-aliased (area averaging); strokes
   that end up under 1.5 px wide (a fine pen on a large page; MNIST's are 2 to 4 px, 1st to
   95th percentile) are thickened by one 3x3 grey dilation, a step MNIST did not need;
6. pasted into 28x28 with its centre of mass on pixel (14, 14), as in MNIST's own test set
   (mean centre of mass 14.0 +- 0.3 in pixel-index coordinates).

The CLI, the Python API and the web demo all read images through these functions.
"""


from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFilter, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # decompression-bomb guard: a 40-megapixel photo is still accepted
WORK_PIXELS = 1024 * 1024  # ... and shrunk as it is decoded to about this many (20 px are kept)
# What is decoded: raster formats Pillow reads itself (JPEG covers MPO, PPM covers PGM and PBM).
# Never every format Pillow knows: EPS, for one, would hand the file to Ghostscript.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
BOX = 20  # MNIST: the digit's longer side
FIELD = 28  # MNIST: the field it is centred in
NOISE = 0.12  # ink weaker than this fraction of the strongest is noise
MIN_CONTRAST = 0.08  # strongest ink vs background, in [0, 1] grey levels: below is blank
GRAINY = 0.02  # a page whose grain (robust sigma, grey levels) exceeds this is median-filtered
SPECK = 6  # ... and ink with fewer inked pixels than this in its 5x5 square is grain, dropped
EDGED = 0.15  # one stretch of the outer ring this long off the fitted page: light with an edge?
FITS = 0.02  # ... if the page read by an opening leaves no stretch longer than this off
ASKEW = 8.0  # ruled lines or a box turned up to this many degrees off the picture's axes are found
THIN = 1.5  # strokes thinner than this many output pixels are thickened (MNIST's: 2 to 4)
# EXIF orientation -> the transpose that puts the picture upright (as ImageOps.exif_transpose).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
FILE_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISSOCK, "a socket")]


class PredictError(ValueError):
    """An input cannot be turned into a digit (unreadable, blank, too large, wrong shape)."""


class BlankImage(PredictError):
    """A readable image with no ink on it: no digit to show the model. Where the model can
    refuse (its reject option), that is an answer, "no digit", not an error."""


def load_image(src: str | Path | bytes, max_pixels: int = MAX_PIXELS, *,
               work_pixels: int | None = WORK_PIXELS, formats: tuple[str, ...] = FORMATS,
               name: str | None = None) -> Image.Image:
    """Open an image file or its bytes as an ``L`` or ``RGB`` image with no alpha.

    PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM/PBM (:data:`FORMATS`, or only ``formats``); the first
    frame of animations. A path must name a regular file: a directory, named pipe or device is
    refused before it is opened (reading a pipe could wait forever). The pixel count is checked
    from the header, before any decoding. EXIF rotation is applied. Transparency is composited
    onto the detected background (:func:`flatten_alpha`).

    ``work_pixels`` bounds what decoding costs: a larger image is shrunk by a whole factor
    (box averaging) as it is decoded (JPEG decodes at 1/2, 1/4 or 1/8 scale directly), so that
    what follows works on at most about that many pixels (``None``: the full size). A problem
    is a :class:`PredictError` whose message starts with ``name`` (default: the path, or
    ``<bytes>``).
    """
    if name is None:
        name = "<bytes>" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            return _read(io.BytesIO(bytes(src)), max_pixels, work_pixels, formats)
        with open_regular_file(src) as fp:
            return _read(fp, max_pixels, work_pixels, formats)
    except PredictError as e:
        raise PredictError(f"{name}: {e}") from None


def open_regular_file(path: str | Path):
    """``path`` opened for reading in binary, if it is a regular file; else a PredictError.

    Checked before opening (``os.stat``) and again on what was opened (``os.fstat``), which
    is opened without blocking: a named pipe swapped in between cannot hang the caller."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise PredictError(f"not a regular file ({_file_kind(st.st_mode)})")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise PredictError("no such file") from None
    except PermissionError:
        raise PredictError("permission denied") from None
    except OSError as e:  # a name too long, a loop of links, a file where a folder should be
        raise PredictError(f"cannot open ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise PredictError(f"not a regular file ({_file_kind(mode)})")
    return os.fdopen(fd, "rb")


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in FILE_KINDS if test(mode)), "not a plain file")


def _read(fp, max_pixels: int, work_pixels: int | None, formats) -> Image.Image:
    """Decode what ``fp`` holds (see :func:`load_image`); every failure is a PredictError."""
    if formats:
        Image.init()  # every plugin registered (Image.open looks each named format up)
    try:
        with Image.open(fp, formats=formats) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise PredictError(f"image is {w}x{h} = {w * h:,} pixels, over the limit of "
                                   f"{max_pixels:,} (decompression-bomb guard)")
            if w == 0 or h == 0:
                raise PredictError(f"empty image ({w}x{h})")
            orientation = img.getexif().get(ExifTags.Base.Orientation)
            out = to_8bit(_decoded(img, work_pixels))
            if orientation in UPRIGHT:
                out = out.transpose(UPRIGHT[orientation])
            out = flatten_alpha(out)
            return out.copy() if out is img else out  # independent of the closed file
    except PredictError:
        raise
    except UnidentifiedImageError:
        allowed = f" (accepted: {', '.join(formats)})" if formats else ""
        raise PredictError(f"not an image (format not recognised){allowed}") from None
    except Image.DecompressionBombError:  # Pillow's own guard, at twice its limit: ours is lower
        raise PredictError(f"image is over the limit of {max_pixels:,} pixels "
                           "(decompression-bomb guard)") from None
    except MemoryError:
        raise PredictError("image too large to decode in the memory available") from None
    except Exception as e:
        # Truncated or corrupt data surfaces from Pillow's decoders and plugins as OSError,
        # SyntaxError, ValueError, EOFError, struct.error, IndexError, ...: all one answer.
        raise PredictError(f"corrupt or truncated image ({type(e).__name__}: {e})") from None


def _decoded(img: Image.Image, work_pixels: int | None) -> Image.Image:
    """The image decoded, shrunk by a whole factor to at most about ``work_pixels``."""
    w, h = img.size
    factor = _shrink_factor(w * h, work_pixels)
    if factor > 1:  # JPEG: decode at a reduced scale (no-op for other formats)
        img.draft(None, (-(-w // factor), -(-h // factor)))
    img.load()
    factor = _shrink_factor(img.width * img.height, work_pixels)
    if factor == 1:
        return img
    if img.mode.startswith("I;16"):
        return _from_16bit(img.convert("I").reduce(factor))
    if img.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        return img.reduce(factor)
    return to_8bit(img).reduce(factor)  # palette and other modes: colours first


def _shrink_factor(pixels: int, work_pixels: int | None) -> int:
    """The least whole f with pixels / f**2 <= work_pixels (1 when no bound is set)."""
    if not work_pixels or pixels <= work_pixels:
        return 1
    f = max(1, math.isqrt(pixels // work_pixels))
    while pixels > work_pixels * f * f:
        f += 1
    return f


def to_8bit(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``L``, ``LA``, ``RGB`` or ``RGBA`` (16-bit and float grey rescaled).

    A float image with a NaN or infinite pixel is refused: it has no grey level to give."""
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if img.mode.startswith("I;16"):
        return _from_16bit(img)
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise PredictError(f"image has {bad:,} NaN or infinite pixel value(s)")
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray((a + 0.5).astype(np.uint8), "L")
    has_alpha = img.mode in ("PA", "La") or "transparency" in img.info
    if img.mode in ("1", "P", "PA") and not has_alpha:
        return img.convert("L") if _is_grey_palette(img) else img.convert("RGB")
    return img.convert("RGBA" if has_alpha or img.mode.endswith("A") else "RGB")


def _from_16bit(img: Image.Image) -> Image.Image:
    """16-bit grey (``I;16`` or ``I`` holding 0..65535) -> ``L``."""
    a = np.asarray(img, dtype=np.float64) / 257.0
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")


def _is_grey_palette(img: Image.Image) -> bool:
    """Whether every colour the image uses is a grey (read from its palette and histogram,
    never from a full-size copy: that took 5 s and 200 MB for a 16-megapixel upload)."""
    if img.mode == "1":
        return True
    palette = img.getpalette("RGB")
    if palette is None:
        return False
    used = np.flatnonzero(np.asarray(img.histogram()[:256]))
    rgb = np.asarray(palette, np.int16).reshape(-1, 3)
    used = used[used < len(rgb)]
    return bool((rgb[used].max(-1) == rgb[used].min(-1)).all())


def flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an ``LA``/``RGBA`` image onto its background; other modes pass through.

    If the border is mostly transparent, transparency *is* the background and the opaque
    pixels are the ink: they go onto white if they are dark, onto black if they are light
    (a white digit drawn on a transparent canvas stays visible). Otherwise the opaque border
    is the page, and the image goes onto that page's median colour.
    """
    if img.mode not in ("LA", "RGBA"):
        return img
    a = np.asarray(img, dtype=np.float64) / 255.0
    alpha, color = a[..., -1:], a[..., :-1]
    if alpha.min() >= 1.0:
        return img.convert(img.mode[:-1])
    ring = _border(alpha[..., 0])
    if (ring < 0.5).mean() > 0.5:
        opaque = alpha[..., 0] >= 0.5
        ink = _luma(color)[opaque] if opaque.any() else np.zeros(1)
        bg = np.full(color.shape[-1], 1.0 if np.median(ink) < 0.5 else 0.0)
    else:
        border_px = np.concatenate([_border(color[..., c])[:, None] for c in range(color.shape[-1])], 1)
        bg = np.median(border_px[ring >= 0.5], axis=0)
    out = color * alpha + bg * (1 - alpha)
    out = np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out, img.mode[:-1])


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (Pillow's ``convert("L")``) of ``(..., 1 or 3)`` values."""
    if rgb.shape[-1] == 1:
        return rgb[..., 0]
    return rgb[..., :3] @ np.array([0.299, 0.587, 0.114])


def _ring_width(h: int, w: int) -> int:
    """How many pixels wide the border ring of an ``h`` x ``w`` image is: 1, more on large ones."""
    return max(1, min(h, w) // 50)


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of a 2-D array's outer ring (:func:`_ring_width` wide)."""
    h, w = a.shape
    k = _ring_width(h, w)
    if h <= 2 * k or w <= 2 * k:  # all ring
        return a.ravel()
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])


# ----------------------------------------------------------------------------- preprocessing


def to_grey(img: Image.Image | np.ndarray) -> np.ndarray:
    """``(H, W)`` float64 grey levels in [0, 1] (1 = white) from an image or array.

    Arrays: ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8 is divided by 255, floats are
    taken as [0, 1] when their maximum is at most 1, else as 0..255.
    """
    if isinstance(img, Image.Image):
        img = flatten_alpha(to_8bit(img))
        return _luma(np.asarray(img, dtype=np.float64)[..., None] if img.mode == "L"
                     else np.asarray(img, dtype=np.float64)) / 255.0
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (3, 4) or a.ndim == 2:
        pass
    else:
        raise PredictError(f"expected an image array (H, W) or (H, W, 3|4), got shape {a.shape}")
    if a.size == 0:
        raise PredictError("empty image array")
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 255.0
    elif a.dtype == bool:
        a = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.number):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise PredictError("image array contains NaN or infinity")
        if a.max() > 1.0:
            a = a / 255.0
        a = np.clip(a, 0.0, 1.0)
    else:
        raise PredictError(f"unsupported image array dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 4:
        rgba = Image.fromarray(np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8), "RGBA")
        return to_grey(rgba)
    return _luma(a[..., None] if a.ndim == 2 else a)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Background 0, strongest ink 1, faint noise removed. Raises :class:`BlankImage` on a
    blank image.

    The page is a smooth surface fitted to the border ring (:func:`page_surface`), not one
    grey level, so light falling off across a photo is not taken for ink; what stands out of
    it by less than ``NOISE`` of the strongest ink, or by less than 4 sigma of the ring's own
    grain (a noisy sensor: then a 3x3 median filter first), is dropped; and ruled lines
    crossing the whole page are taken out (:func:`drop_ruled_lines`). When no smooth surface
    fits the ring (one stretch of it, ``EDGED`` of its length or more, off the fit) but the page
    read from the image itself (:func:`page_by_opening`) does (no stretch over ``FITS`` off),
    the light has an edge, a shadow's: that page is used, and on a light page the ink is
    measured against the light falling on it (a shadowed stroke is as dark a stroke as a lit
    one), provided the shade it finds reaches the border (a patch of "page" inside, cut off
    from the border, is a stroke too thick for the opening: a tight crop of a bold 1). Ink
    touching the edge of a tight crop leaves stretches off both pages."""
    light = float(np.median(_border(grey))) >= 0.5
    dark = 1.0 - grey if light else grey  # ink bright, on whatever the page is
    page, grain = page_surface(dark)
    ink = dark - page
    if min(dark.shape) >= 32 and longest_off_stretch(ink, grain) >= EDGED:
        opened = page_by_opening(dark)
        if longest_off_stretch(dark - opened, grain) <= FITS and _shade_reaches_border(opened):
            ink = dark - opened
            if light:
                ink /= np.maximum(1.0 - opened, 0.05)
    grainy = grain > GRAINY
    if grainy:  # a noisy photo: a 3x3 median first, which keeps strokes' edges
        ink = np.asarray(Image.fromarray(ink.astype(np.float32), "F").filter(
            ImageFilter.MedianFilter(3)), np.float64)
        ring = _border(ink)
        grain = 1.4826 * float(np.median(np.abs(ring - np.median(ring))))
    ink = np.clip(ink, 0.0, None)
    peak = float(ink.max())
    if peak < max(MIN_CONTRAST, 4 * grain):
        raise BlankImage("no digit found (blank image)")
    ink /= peak
    ink[ink < max(NOISE, 4 * grain / peak)] = 0.0
    if grainy:  # specks of grain left above the floor, far from the digit, would widen its box
        specks = (ink > 0) & (_count_around(ink > 0, 5) < SPECK)
        if specks.sum() < (ink > 0).sum():
            ink[specks] = 0.0
    ink = drop_neighbours(drop_lines(ink))
    return ink / ink.max()  # the strongest ink left is 1 again (never empty: see there)


def _count_around(mask: np.ndarray, k: int) -> np.ndarray:
    """How many pixels of ``mask`` lie in the ``k`` x ``k`` square round each pixel."""
    r = k // 2
    c = np.pad(mask.astype(np.int32), r).cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = mask.shape
    return c[k : k + h, k : k + w] - c[:h, k : k + w] - c[k : k + h, :w] + c[:h, :w]


def page_surface(a: np.ndarray) -> tuple[np.ndarray, float]:
    """The page under the ink: a quadratic surface in x and y fitted to the border ring of
    ``a`` (ink bright), refitted twice without the ring pixels that stand out (ink touching
    the edge, a line crossing it); and the page's grain, the robust sigma of the steps from
    pixel to pixel round the image's edge (over sqrt 2), which ink crossing the edge hardly
    moves. A uniform ring gives a flat surface at its median, as a plain median would. When
    the ring spreads about the fit by far more than its grain, the spread is ink, not light
    (a digit cropped so tight that strokes run along the edge): the page is then flat, at
    the level of the ring's lightest tenth."""
    h, w = a.shape
    walk = _walk(a)
    steps = np.abs(np.diff(walk))
    grain = 1.4826 * float(np.median(steps)) / np.sqrt(2) if len(steps) else 0.0
    k = _ring_width(h, w)
    ring = np.zeros((h, w), bool)
    ring[:k], ring[-k:], ring[:, :k], ring[:, -k:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    if len(ys) > 4000:  # the fit needs a few thousand points, not a photo's whole ring
        pick = np.linspace(0, len(ys) - 1, 4000).astype(int)
        ys, xs = ys[pick], xs[pick]
    v = a[ys, xs]
    med = float(np.median(v))
    if h < 8 or w < 8 or np.all(v == med):  # too small to fit, or a flat page: its level
        return np.full_like(a, med), grain
    u, t = xs / max(w - 1, 1) - 0.5, ys / max(h - 1, 1) - 0.5
    basis = np.stack([np.ones_like(u), u, t, u * u, u * t, t * t], 1)
    keep = np.abs(v - med) <= max(3 * 1.4826 * float(np.median(np.abs(v - med))), 0.02)
    for _ in range(3):
        coef = np.linalg.lstsq(basis[keep], v[keep], rcond=None)[0]
        r = v - basis @ coef
        sigma = 1.4826 * float(np.median(np.abs(r[keep])))
        keep = np.abs(r) <= max(3 * sigma, 0.02)
    if sigma > max(4 * grain, GRAINY):
        return np.full_like(a, float(np.quantile(walk, 0.1))), grain
    uu = np.linspace(-0.5, 0.5, w)[None, :]
    tt = np.linspace(-0.5, 0.5, h)[:, None]
    surface = coef[0] + coef[1] * uu + coef[2] * tt + coef[3] * uu * uu + coef[4] * uu * tt \
        + coef[5] * tt * tt
    return surface, grain


def _walk(a: np.ndarray) -> np.ndarray:
    """The pixels of the image's outer edge, one pixel wide, in order round it."""
    return np.concatenate([a[0, :], a[1:, -1], a[-1, -2::-1], a[-2:0:-1, 0]])


def longest_off_stretch(residual: np.ndarray, grain: float) -> float:
    """The longest unbroken stretch of the image's outer ring (walked round, one pixel wide)
    whose ``residual`` (image less fitted page) stands out of the grain, as a share of the
    ring. A shadow across a side or a corner of the page makes one long stretch, and so can
    ink touching the edge of a tight crop (up to a third of the ring on MNIST digits cropped
    to their ink)."""
    off = np.abs(_walk(residual)) > max(3 * grain, 0.02)
    if off.all():
        return 1.0
    off = np.roll(off, -int(np.flatnonzero(~off)[0]))  # start on the page: no run wraps round
    return max((b - a for a, b in _runs(off)), default=0) / len(off)


def page_by_opening(a: np.ndarray) -> np.ndarray:
    """The page under bright ink read from ``a`` itself: a grey-level opening (a minimum, then
    a maximum, over a square a quarter of the shorter side wide) takes away every mark
    narrower than the square, strokes among them, and keeps what is wider, a shadow's edge
    among that."""
    k = max(3, min(a.shape) // 4) | 1
    low = _running(_running(a, k, 0, np.minimum), k, 1, np.minimum)
    return _running(_running(low, k, 0, np.maximum), k, 1, np.maximum)


def _shade_reaches_border(page: np.ndarray) -> bool:
    """Whether every part of the darker half of ``page`` (ink bright: its shade) is joined to
    the image's border (flood fills from the border, Pillow's)."""
    lo, hi = float(page.min()), float(page.max())
    # Pillow's flood fill runs in Python: at most 256 px a side, a block shade if all of it is
    # (so a thin link may break: then the answer is no, the safe side).
    mask = _pooled((page - lo) > 0.5 * (hi - lo), 256, np.all)
    # A copy: Pillow's image of an array can be a read-only view, which floodfill leaves as is.
    shade = Image.fromarray(mask.astype(np.uint8) * 255, "L").copy()
    h, w = mask.shape
    for y, x in [(0, c) for c in range(w)] + [(h - 1, c) for c in range(w)] + \
                [(r, 0) for r in range(h)] + [(r, w - 1) for r in range(h)]:
        if shade.getpixel((x, y)) == 255:
            ImageDraw.floodfill(shade, (x, y), 128)
    return not (np.asarray(shade) == 255).any()


def _running(a: np.ndarray, k: int, axis: int, op: np.ufunc) -> np.ndarray:
    """``op`` (``np.minimum`` or ``np.maximum``) over a centred window of ``k`` (odd) pixels
    along ``axis``, the image's edge not counted: van Herk and Gil-Werman's running extremum,
    three passes whatever ``k`` is (a prefix and a suffix extremum within blocks of ``k``)."""
    a = np.moveaxis(a, axis, -1)
    n, r = a.shape[-1], k // 2
    blocks = -(-(n + 2 * r) // k)
    p = np.full((*a.shape[:-1], blocks * k), np.inf if op is np.minimum else -np.inf)
    p[..., r : r + n] = a
    b = p.reshape(*a.shape[:-1], blocks, k)
    prefix = op.accumulate(b, axis=-1).reshape(p.shape)
    suffix = op.accumulate(b[..., ::-1], axis=-1)[..., ::-1].reshape(p.shape)
    return np.moveaxis(op(suffix[..., :n], prefix[..., k - 1 : k - 1 + n]), -1, axis)


def drop_ruled_lines(ink: np.ndarray, span: float = 0.9, thin: float = 0.04,
                     room: np.ndarray | None = None, pad: int = 0, least: int = 2,
                     margins: bool = False) -> np.ndarray:
    """``ink`` without the ruled lines of lined or squared paper: bands of rows (or columns)
    inked across at least ``span`` of the page, each at most ``thin`` of it deep, when there
    are at least two (one full-width band is more likely a digit's own bar, as in a tightly
    cropped 7). Small images (under 32 px a side) and images that would be left with no ink
    at all (a hairline box drawn as a 0) are returned as they are. ``room``: where the page
    is (a turned picture's corners are not), so spans are shares of it; ``pad``: rows either
    side of a band cleared with it (a line turned straight is blurred a little); ``least``:
    how many bands make ruled paper; ``margins``: only bands with rows two away on both sides
    inked across at most 3/4 of ``span`` (a ruled line crosses a page; a digit's bar, cut
    close and turned, has its stroke's curve beside it)."""
    if min(ink.shape) < 32:
        return ink
    out = ink.copy()
    room = np.ones(ink.shape, bool) if room is None else room
    found = [_lines(m > 0, r, span, thin, margins)  # rows, columns: found before either is cleared
             for m, r in ((ink, room), (ink.T, room.T))]
    for m, lines in zip((out, out.T), found):  # views: clearing them clears ``out``
        if len(lines) >= least:
            for a, b in lines:
                m[max(0, a - pad) : b + pad] = 0.0
    return out if out.any() else ink


def _lines(m: np.ndarray, room: np.ndarray, span: float, thin: float,
           margins: bool) -> list[tuple[int, int]]:
    """Bands of rows of ``m`` inked across ``span`` of their room, at most ``thin`` of the
    height deep (and with ``margins``, rows two away on both sides inked across at most 3/4
    of ``span``)."""
    cover = m.sum(axis=1) / np.maximum(room.sum(axis=1), 1)
    n = len(cover)
    return [(a, b) for a, b in _thin_bands(_across(m, room, span), thin * n)
            if not margins or max(cover[max(a - 2, 0)], cover[min(b + 1, n - 1)]) <= 0.75 * span]


def _across(m: np.ndarray, room: np.ndarray, span: float) -> np.ndarray:
    """Per row of ``m``: inked across at least ``span`` of the row's ``room`` (and that room at
    least half the width)."""
    width = room.sum(axis=1)
    return (m.sum(axis=1) >= span * width) & (width >= m.shape[1] / 2)


def _thin_bands(rows: np.ndarray, deepest: float) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of true ``rows`` at most ``deepest`` (and 1) long."""
    return [(a, b) for a, b in _runs(rows) if b - a <= max(1, deepest)]


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of true ``flags``."""
    edges = np.diff(np.concatenate(([0], flags, [0])).astype(np.int8))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _extent(ink: np.ndarray) -> tuple[int, int, int, int]:
    """``y0, y1, x0, x1``: the rows and columns the ink spans (it must have some)."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def line_angle(ink: np.ndarray, span: float = 0.8) -> float:
    """The turn (degrees, within ``ASKEW`` either way) that brings the most thin bands of the
    ink's extent straight (rows or columns inked across ``span`` of it: ruled lines or a box,
    photographed askew), the most fully inked at that; 0 when no turn brings four. Searched in
    whole degrees on the ink pooled to at most 64 px a side, then in tenths round the best on
    at most 512 px, so it costs milliseconds whatever the size."""
    y0, y1, x0, x1 = _extent(ink)
    m = ink[y0:y1, x0:x1] > 0
    if min(m.shape) < 32:
        return 0.0
    n, a = _best_turn(_pooled(m, 64), np.arange(-ASKEW, ASKEW + 0.5, 1.0), span)
    if n < 4:  # ruled paper shows four lines or more, a box four edges; a digit seldom has four
        return 0.0
    return _best_turn(_pooled(m, 512), np.arange(a - 1.0, a + 1.05, 0.1), span)[1]


def _pooled(m: np.ndarray, side: int, block=np.any) -> np.ndarray:
    """``m`` shrunk by a whole factor to at most ``side`` px a side, a block true if ``block``
    of it is (``np.any``: thin lines survive; ``np.all``). Past the edge counts as false."""
    f = -(-max(m.shape) // side)
    if f == 1:
        return m
    h, w = (-(-n // f) * f for n in m.shape)
    padded = np.zeros((h, w), bool)
    padded[: m.shape[0], : m.shape[1]] = m
    return block(padded.reshape(h // f, f, w // f, f), axis=(1, 3))


def _best_turn(m: np.ndarray, angles: np.ndarray, span: float) -> tuple[int, float]:
    """Of ``angles``, the turn of ``m`` with the most thin inked-across bands (then the most
    ink in them, then the least turn), and that count."""
    mask = Image.fromarray(m.astype(np.uint8) * 255, "L")
    whole = Image.new("L", mask.size, 255)
    best = (0, 0.0, 0.0)
    for a in np.round(angles, 2):
        t = np.asarray(mask.rotate(a, Image.Resampling.NEAREST)) > 0
        r = np.asarray(whole.rotate(a, Image.Resampling.NEAREST)) > 0
        n, inked = 0, 0.0
        for tm, rm in ((t, r), (t.T, r.T)):
            cover = tm.sum(axis=1) / np.maximum(rm.sum(axis=1), 1)
            bands = _thin_bands(_across(tm, rm, span), 0.1 * tm.shape[0])
            n += len(bands)
            inked += sum(float(cover[b0:b1].sum()) for b0, b1 in bands)
        if (n, inked, -abs(a)) > (best[0], best[1], -abs(best[2])):
            best = (n, inked, float(a))
    return best[0], best[2]


def drop_lines(ink: np.ndarray) -> np.ndarray:
    """:func:`drop_ruled_lines`, then :func:`drop_frame`, straight or, where the lines run askew
    (:func:`line_angle`), found on the ink turned to bring them straight: the rows and columns
    they clear there, drawn across the whole picture, 2 px wider each side, turned back and
    cleared from the ink as it was (the digit is not turned). Lines found straight are taken
    out first; the turn is looked for in what is left."""
    ink = drop_frame(drop_ruled_lines(ink))
    if min(ink.shape) < 32 or not ink.any():
        return ink
    a = line_angle(ink)  # what is left may still run askew
    if a == 0.0:
        return ink
    turn = Image.fromarray(ink.astype(np.float32), "F").rotate(a, Image.Resampling.BILINEAR)
    room = np.asarray(Image.new("L", turn.size, 255).rotate(a, Image.Resampling.NEAREST)) > 0
    turned = np.clip(np.asarray(turn, np.float64), 0.0, None)
    turned[turned < NOISE * turned.max()] = 0.0
    gone = (turned > 0) & (drop_frame(drop_ruled_lines(turned, span=0.8, room=room, least=4,
                                                          margins=True)) == 0)
    if not gone.any():
        return ink
    lines = np.zeros(gone.shape, bool)
    lines[gone.sum(axis=1) >= 0.5 * np.maximum(room.sum(axis=1), 1)] = True
    lines[:, gone.sum(axis=0) >= 0.5 * np.maximum(room.sum(axis=0), 1)] = True
    lines = dilate3(dilate3(lines.astype(np.float64))) > 0
    back = Image.fromarray(lines.astype(np.uint8) * 255, "L").rotate(-a, Image.Resampling.NEAREST)
    out = ink.copy()
    out[np.asarray(back) > 0] = 0.0
    return out if out.any() else ink


def drop_frame(ink: np.ndarray, span: float = 0.9, thin: float = 0.1) -> np.ndarray:
    """``ink`` without a box drawn round the digit (a form's field, a cheque's amount box): the
    ink's extent edged on all four sides by a band inked across at least ``span`` of it, each
    band within ``thin`` of the extent from its edge and followed by a margin (a row or column
    at most 30% inked, as strokes touching the box leave it). All four or nothing: no digit is
    edged so (a 0 drawn as a box leaves nothing once its frame is gone, and is returned as it
    is, as are images under 32 px a side). A box drawn askew: :func:`drop_lines`."""
    if min(ink.shape) < 32:
        return ink
    y0, y1, x0, x1 = _extent(ink)
    box = ink[y0:y1, x0:x1] > 0
    cuts = []
    for m in (box, box.T):  # rows (top, bottom), then columns (left, right)
        n = m.shape[0]
        if n < 8:
            return ink
        full = m.mean(axis=1) >= span
        part = m.mean(axis=1) >= 0.5  # a line's soft edge
        reach = max(2, int(thin * n))
        for idx in (np.arange(reach), np.arange(n - 1, n - 1 - reach, -1)):  # from each edge in
            f, p = full[idx], part[idx]
            hit = np.flatnonzero(f)
            if not len(hit):
                return ink
            end = hit[0]
            while end < reach and f[end]:  # the line
                end += 1
            while end < reach and p[end]:  # its soft edge
                end += 1
            if end >= reach or m[idx[end]].mean() > 0.3:  # no way in, or no margin inside:
                return ink  # a stroke as wide as the extent (a 1), or a digit's own curve
            cuts.append(idx[:end])
    out = ink.copy()
    inner = out[y0:y1, x0:x1]  # a view
    inner[np.concatenate(cuts[:2])] = 0.0
    inner[:, np.concatenate(cuts[2:])] = 0.0
    return out if out.any() else ink


def drop_neighbours(ink: np.ndarray) -> np.ndarray:
    """``ink`` without the pieces of neighbouring digits a photo of one digit of a number cuts
    at its edges: marks (8-connected) that touch the picture's edge and lie wholly left or
    right of the marks that do not, when those hold at least a third of the ink. A digit's own
    piece over or under the rest of it (a 5's bar, a broken 1) is kept, and so is everything
    when the digit itself reaches the edge."""
    from scipy import ndimage

    if min(ink.shape) < 32:
        return ink
    lab, n = ndimage.label(ink > 0, structure=np.ones((3, 3), bool))
    if n < 2:
        return ink
    edge = np.unique(_walk(lab))
    edge = edge[edge > 0]
    inner = (lab > 0) & ~np.isin(lab, edge)
    if not len(edge) or ink[inner].sum() < ink.sum() / 3:
        return ink
    cols = np.flatnonzero(inner.any(axis=0))
    x0, x1 = cols[0], cols[-1] + 1
    out = ink.copy()
    boxes = ndimage.find_objects(lab)
    for k in edge:
        xs = boxes[k - 1][1]
        if xs.stop <= x0 or xs.start >= x1:
            out[lab == k] = 0.0
    return out


def preprocess(img: Image.Image | np.ndarray) -> np.ndarray:
    """An image of one digit -> ``(28, 28)`` float32 in [0, 1], ink bright, MNIST-style.

    An array that already looks like MNIST (28x28, ink bright on 0) takes the same path and
    comes out nearly unchanged.
    """
    ink = ink_map(to_grey(img))
    y0, y1, x0, x1 = _extent(ink)
    scale = BOX / max(y1 - y0, x1 - x0)
    # A margin of two output pixels keeps the resampling filter's support inside the crop.
    m = int(np.ceil(2 / scale))
    y0, x0 = max(0, y0 - m), max(0, x0 - m)
    y1, x1 = min(ink.shape[0], y1 + m), min(ink.shape[1], x1 + m)
    crop = Image.fromarray(ink[y0:y1, x0:x1].astype(np.float32), "F")
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(crop.resize(size, resample), dtype=np.float64), 0.0, None)
    width = stroke_width(ink[y0:y1, x0:x1]) * scale  # in output pixels
    if width < THIN:
        # A fine pen on a large page: area averaging leaves a faint hairline. A pixel the line
        # crosses is covered about `width`, so dividing by it restores full ink; one 3x3
        # dilation then brings the stroke towards MNIST's width.
        small = dilate3(np.clip(small / min(1.0, width), 0.0, 1.0))
    if small.max() <= 0:
        raise BlankImage("no digit found (ink vanished when scaled)")
    return center_of_mass_paste(small / small.max()).astype(np.float32)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels, 2 * area / boundary of the ink mask (saturates near 2)."""
    m = ink > 0.5
    p = np.pad(m, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return 2.0 * m.sum() / max(int((m & ~interior).sum()), 1)


def dilate3(a: np.ndarray) -> np.ndarray:
    """Grey-level dilation by a 3x3 square (each pixel takes its neighbourhood's maximum)."""
    p = np.pad(a, 1)
    h, w = a.shape
    return np.max([p[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


def center_of_mass_paste(patch: np.ndarray, field: int = FIELD) -> np.ndarray:
    """Place ``patch`` in a ``field``-square canvas with its centre of mass on pixel field/2."""
    h, w = patch.shape
    mass = patch.sum()
    cy = (patch.sum(1) @ np.arange(h)) / mass
    cx = (patch.sum(0) @ np.arange(w)) / mass
    top, left = int(round(field / 2 - cy)), int(round(field / 2 - cx))
    out = np.zeros((field, field))
    ys, xs = slice(max(0, top), min(field, top + h)), slice(max(0, left), min(field, left + w))
    out[ys, xs] = patch[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
    return out

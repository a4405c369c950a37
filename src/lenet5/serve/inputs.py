"""From a request to the model's 28x28 input.

Two ways in, one way to the model:

- an image (a multipart upload in field ``image`` or ``file``, or a raw ``image/*`` body) goes
  through :func:`~lenet5.inference.images.load_image` and
  :func:`~lenet5.inference.images.preprocess`, the path of ``lenet5 predict``: the demo page
  uploads its canvas as a PNG, so a drawing and a photo are read alike. What one upload may
  cost is bounded: common formats only, at most ``MAX_IMAGE_PIXELS`` by its header (checked
  before decoding), and one over ``WORK_PIXELS`` is shrunk by a whole factor as it is decoded
  (JPEG at a reduced scale), so preprocessing never works on more than about 0.3 megapixels;
- JSON ``{"pixels": 28x28 numbers in [0, 1]}`` is taken as the model's input itself (MNIST
  convention: ink 1, background 0), or, with ``"preprocess": true``, a small drawing that still
  needs centring and scaling, which then goes through the same ``preprocess``.

Everything a client can get wrong raises :class:`~lenet5.serve.errors.APIError` (4xx).
:func:`cheap_to_decode` tells the app which uploads the model's thread may decode with their
batch (a drawing: about a millisecond) and which are decoded aside first.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydantic_core import from_json

from ..inference.images import FIELD, FORMATS, BlankImage, PredictError, load_image, preprocess
from .errors import APIError

SIZE = 28
IMAGE_FIELDS = ("image", "file")
# A 2 MB body can still hold a decompression bomb: refuse images with more pixels than this
# (read from the header, before decoding), and work on at most about WORK_PIXELS of them.
MAX_IMAGE_PIXELS = 16_000_000
WORK_PIXELS = 512 * 512
# Uploads at most this large in bytes and in pixels are decoded by the model's thread with
# their batch (the page's canvas: 112x112, a few kB); larger ones are decoded aside first.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 256 * 256


@dataclass
class Payload:
    """What a request asked for, read but not yet decoded (decoding is CPU work)."""

    image: bytes | None = None
    pixels: np.ndarray | None = None
    preprocess: bool = False
    model: str | None = None


@dataclass
class Options:
    """What the query string asked for (``?model=&features=&encoding=&top_k=``)."""

    model: str | None = None
    features: bool = False
    encoding: str = "lists"
    top_k: int = 3


ENCODINGS = ("lists", "uint8")
TOP_K = (1, 10)
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}

# The query parameters as /docs shows them. They are read by read_options rather than declared
# as FastAPI parameters: FastAPI's per-request machinery for them cost 0.1-0.2 ms of the event
# loop per request, as much as reading a JSON body (docs/results.md).
QUERY_PARAMETERS = [
    {"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "a name from /api/models (default: the first)"},
    {"name": "features", "in": "query", "required": False,
     "schema": {"type": "boolean", "default": False},
     "description": "add the 28x28 input as the model saw it and the C1, C3 feature maps"},
    {"name": "encoding", "in": "query", "required": False,
     "schema": {"type": "string", "enum": list(ENCODINGS), "default": "lists"},
     "description": "how input and maps are sent: nested lists (3 decimals) or uint8 (one "
                    "byte a number in base64, about 5x shorter; what the page uses)"},
    {"name": "top_k", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": TOP_K[0], "maximum": TOP_K[1], "default": 3},
     "description": "how many of the likeliest classes to list"},
]


def read_options(query) -> Options:
    """The query string's options, each checked (a 422 saying which and why); others ignored."""
    opts = Options(model=query.get("model") or None)
    if "features" in query:
        v = query["features"].strip().lower()
        if v not in _TRUE | _FALSE:
            raise APIError(422, f"query.features: expected true or false (1 or 0), got {query['features']!r}")
        opts.features = v in _TRUE
    if "encoding" in query:
        if query["encoding"] not in ENCODINGS:
            raise APIError(422, f"query.encoding: expected 'lists' or 'uint8', got {query['encoding']!r}")
        opts.encoding = query["encoding"]
    if "top_k" in query:
        v = query["top_k"].strip()
        if not (v.isdecimal() and len(v) <= 3 and TOP_K[0] <= int(v) <= TOP_K[1]):
            raise APIError(422, f"query.top_k: expected a whole number from {TOP_K[0]} to "
                                f"{TOP_K[1]}, got {query['top_k']!r}")
        opts.top_k = int(v)
    return opts


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def read_payload(request) -> Payload:
    """Read the body by its content type; unsupported types are a 415."""
    kind = media_type(request.headers.get("content-type"))
    if kind == "application/json":
        return parse_json(await request.body())
    if kind == "multipart/form-data":
        return await read_form(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return Payload(image=await request.body())
    raise APIError(415, f"unsupported content type {kind or '(none)'!r}: send multipart/form-data "
                        "with an image file, an image/* body, or application/json with 'pixels'")


async def read_form(request) -> Payload:
    try:
        form = await request.form(max_files=2, max_fields=8)
    except (AssertionError, ValueError) as e:  # python-multipart's own parse errors
        raise APIError(400, f"malformed multipart body: {e}") from e
    try:
        upload = next((form[f] for f in IMAGE_FIELDS if f in form), None)
        if upload is None:
            raise APIError(422, "missing field 'image': upload the digit as a file in field 'image'")
        if isinstance(upload, str):
            raise APIError(422, "field 'image' must be a file upload, not a text value")
        model = form.get("model")
        if model is not None and not isinstance(model, str):
            raise APIError(422, "field 'model' must be text")
        return Payload(image=await upload.read(), model=model or None)
    finally:
        await form.close()  # the uploads' spooled temporary files


def parse_json(body: bytes) -> Payload:
    try:
        doc = from_json(body)  # pydantic's Rust parser: a quarter of json.loads's time here
    except ValueError as e:  # malformed, not UTF-8, or nested too deeply
        raise APIError(400, f"body is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise APIError(422, "JSON body must be an object with a 'pixels' field")
    if "pixels" not in doc:
        raise APIError(422, "missing field 'pixels': a 28x28 array of numbers in [0, 1]")
    model, prep = doc.get("model"), doc.get("preprocess", False)
    if model is not None and not isinstance(model, str):
        raise APIError(422, "field 'model' must be a string")
    if not isinstance(prep, bool):
        raise APIError(422, "field 'preprocess' must be true or false")
    return Payload(pixels=check_pixels(doc["pixels"]), preprocess=prep, model=model)


def check_pixels(value) -> np.ndarray:
    """A (28, 28) float32 array of finite numbers in [0, 1], or a 422 saying what is wrong."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged rows
        raise APIError(422, f"pixels must be a 28x28 array of numbers: {e}") from e
    if arr.dtype.kind not in "iuf":  # strings, null, objects, booleans
        raise APIError(422, f"pixels must be numbers, found {first_non_number(value)}")
    if arr.shape != (SIZE, SIZE):
        raise APIError(422, f"pixels must have shape [28, 28], got {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise APIError(422, "pixels contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise APIError(422, f"pixels must lie in [0, 1]; got values from {lo:g} to {hi:g}")
    return arr.astype(np.float32)


def first_non_number(value) -> str:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(reversed(v))
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            return json.dumps(v)[:40]
    return "none"  # pragma: no cover - numpy found a non-number


def model_input(p: Payload, blank_ok: bool = False) -> np.ndarray:
    """The (28, 28) float32 input the model sees; bad images are 422s. So are blank ones
    (no ink), unless ``blank_ok`` (a model with a reject option): then the empty field, which
    the model answers "no digit"."""
    try:
        if p.image is not None:
            return image_input(p.image)
        if p.preprocess:
            return preprocess(p.pixels)
    except BlankImage as e:
        if not blank_ok:
            raise APIError(422, str(e)) from e
        return np.zeros((FIELD, FIELD), np.float32)
    except PredictError as e:
        raise APIError(422, str(e)) from e
    if not p.pixels.any() and not blank_ok:
        raise APIError(422, "no digit found: every pixel is 0")
    return p.pixels


def image_input(data: bytes) -> np.ndarray:
    """An upload's (28, 28) input, within the bounds above (a PredictError if it cannot be)."""
    if not data:
        raise PredictError("the uploaded image is empty (0 bytes)")
    img = load_image(data, MAX_IMAGE_PIXELS, work_pixels=WORK_PIXELS, formats=FORMATS,
                     name="image")
    return preprocess(img)


def cheap_to_decode(data: bytes) -> bool:
    """Whether an upload is small in bytes and, by its header, in pixels (read without
    decoding, in tens of microseconds). Unreadable headers count as cheap: they fail at once."""
    if len(data) > INLINE_BYTES:
        return False
    Image.init()
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            w, h = img.size
    except Exception:  # not an image, or a broken one: the decoder says which, quickly
        return True
    return w * h <= INLINE_PIXELS

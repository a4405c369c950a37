"""The draw-a-digit demo (README "Web demo"): a FastAPI app over :class:`lenet5.inference.predict.Predictor`.

Routes:

- ``GET /``: the page (``static/``: plain HTML, CSS and JS, no CDN, no external fonts);
- ``POST /api/predict``: an image or 28x28 pixels in, label, probabilities, top-k, latency and
  model name out (``label`` null with a ``verdict`` and ``reason`` when the model's reject
  option finds no digit, or no clear one); ``?features=1`` adds the 28x28 input as the model saw it and the C1 and C3
  feature maps (the page draws them, like LeCun's 1993 demo), as nested lists or, with
  ``&encoding=uint8`` (what the page asks for), one byte a number in base64;
- ``GET /api/models``, ``GET /healthz``, and the OpenAPI docs at ``/docs`` (offline: :mod:`.docs`).

Models are loaded once, before the app is made (:func:`create_app` takes them ready and runs
each once to warm it up). The model runs in one :class:`~.batching.Batcher` thread per model,
which decodes and preprocesses the requests that arrive together and gives them one forward
pass. Only small uploads are decoded there (:func:`~.inputs.cheap_to_decode`: small in bytes
and, by the header, in pixels); any other is decoded first by one thread of its own, so a
large or hostile image never holds up the batch, and at most one such decode runs at a time
(a bound on memory). The event loop only reads requests and writes answers, so it keeps
accepting connections.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from pydantic_core import to_json

from .. import __version__
from .batching import Batcher
from .docs import install_docs
from .errors import MAX_BODY_BYTES, APIError, BodySizeLimit, install_error_handlers
from .inputs import QUERY_PARAMETERS, cheap_to_decode, model_input, read_options, read_payload

STATIC = Path(__file__).with_name("static")
# Uploads that are not cheap to decode (photos, and small files that declare many pixels) are
# decoded by this many threads, one at a time each: a 16-megapixel image takes up to ~100 MB
# while it is decoded.
DECODE_THREADS = 1
DECODE_NICE = 10  # and at a lower CPU priority than the threads that answer everyone else
MAX_WAITING_DECODES = 32  # more than this many waiting to be decoded aside: 429, try later
# The page loads nothing from elsewhere; the browser enforces it.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'")


class PageFiles(StaticFiles):
    """The page's files, each with the page's Content-Security-Policy (also index.html)."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Content-Security-Policy"] = PAGE_CSP
        return response


class EncodedArray(BaseModel):
    """An array in one byte a number (``encoding=uint8``): value = lo + (hi - lo) * byte / 255."""

    shape: list[int]
    lo: float
    hi: float
    data: str = Field(description="row-major uint8 bytes, base64")


class PredictResponse(BaseModel):
    model: str
    label: int | None = Field(description="the digit; null when the reject option refuses the "
                                          "image (see verdict and reason)")
    probs: list[float]
    top_k: list[tuple[int, float]]
    digit_probs: list[float] | None = None  # over the ten digits alone (rubbish left out)
    verdict: str | None = None  # "no digit" or "unsure" when refused
    reason: str | None = None  # why, in words
    guess: int | None = None  # refused: the digit the model would have answered
    posterior: str | None = None  # "softmax", or "map-rbf" for the 1998 RBF head
    rubbish: float | None = None  # map-rbf: the posterior mass of "none of these"
    distances: list[float] | None = None  # map-rbf: the RBF outputs (distance to each prototype)
    latency_ms: float
    input: list[list[float]] | EncodedArray | None = None
    features: dict[str, list[list[list[float]]] | EncodedArray] | None = None


class ModelInfo(BaseModel):
    name: str
    default: bool
    architecture: str | None = None
    dataset: str | None = None
    test_error: float | None = None
    maps: dict[str, int] = {}  # feature maps of the layers the page draws (C1, C3)


PREDICT_DOC = {"parameters": QUERY_PARAMETERS, "requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary", "description": "a digit image (PNG, JPEG, ...)"},
        "model": {"type": "string", "description": "a name from /api/models"},
    }}},
    "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {
        "pixels": {"type": "array", "description": "28 rows of 28 numbers in [0, 1], ink 1",
                   "items": {"type": "array", "items": {"type": "number"}}},
        "preprocess": {"type": "boolean", "default": False,
                       "description": "centre and scale the drawing first, like an image"},
        "model": {"type": "string"},
    }}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
}}}


PAGE_LAYERS = ("C1", "C3")  # the feature maps the page draws (``?features=1``)


def create_app(predictors, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app serving ``predictors`` (a Predictor, a list of them, or a name -> Predictor
    dict; the first is the default)."""
    models = by_name(predictors)
    default = next(iter(models))
    maps = {}  # feature maps per layer the page shows, per model (its placeholders, its grid)
    for name, p in models.items():  # the first real request should not pay for torch's warm-up
        feats = p.features(np.zeros((28, 28), np.float32))
        maps[name] = {k: int(feats[k].shape[0]) for k in PAGE_LAYERS if k in feats}
        p.predict(np.zeros((28, 28), np.float32))
    refuses = {name: getattr(p, "rejector", None) is not None for name, p in models.items()}
    batchers = {name: Batcher(p, partial(model_input, blank_ok=refuses[name]))
                for name, p in models.items()}
    decoders: list[ThreadPoolExecutor] = []  # images are decoded here: started on first use
    waiting = 0  # uploads being decoded aside or queued for it

    async def decode_image(payload, blank_ok: bool):
        nonlocal waiting
        if waiting >= MAX_WAITING_DECODES:
            raise APIError(429, f"{waiting} large images are already waiting to be decoded; "
                                "try again shortly")
        if not decoders:
            decoders.append(ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode",
                                               initializer=lower_priority))
        waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(decoders[0], decode_aside, payload, blank_ok)
        finally:
            waiting -= 1

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            b.close()
        while decoders:
            decoders.pop().shutdown(wait=False)

    app = FastAPI(title="lenet5: draw a digit", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # offline ones instead: install_docs
                  description="LeNet-5 reads a handwritten digit. Errors are 4xx JSON "
                              f"`{{\"error\": ..., \"status\": ...}}`; bodies over "
                              f"{max_body_bytes:,} bytes are refused (413).")
    app.state.models = models
    install_error_handlers(app)
    install_docs(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/api/models", response_model=list[ModelInfo])
    def list_models() -> list[dict]:
        return [describe(name, p, name == default, maps[name]) for name, p in models.items()]

    @app.post("/api/predict", response_model=PredictResponse, openapi_extra=PREDICT_DOC,
              responses={c: {"description": d} for c, d in [
                  (400, "malformed body"), (408, "request not received in time"),
                  (413, "body too large"), (415, "unsupported content type"),
                  (422, "not an image, no digit, wrong shape or values, unknown model"),
                  (429, "too many large images waiting to be decoded")]})
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        opts = read_options(request.query_params)
        payload = await read_payload(request)
        name = payload.model or opts.model or default
        if name not in models:
            raise APIError(422, f"unknown model {name!r}; loaded: {', '.join(models)}")
        item = payload  # decoded with its batch, in the model's thread; a photo, aside first
        if payload.image is not None and not cheap_to_decode(payload.image):
            item = await decode_image(payload, refuses[name])  # blank: "no digit" if it can
        out = await batchers[name](item, opts.top_k, opts.encoding if opts.features else None)
        out.update(model=name, latency_ms=round((time.perf_counter() - t0) * 1e3, 3))
        out = {k: out.get(k) for k in PredictResponse.model_fields}  # the documented keys, always
        # Built from checked inputs, so it is not validated again against PredictResponse (which
        # documents it): that took 2 ms for the feature maps, more than the model itself.
        return Response(to_json(out), media_type="application/json")

    app.mount("/static", PageFiles(directory=STATIC), name="static")
    return app


def decode_aside(payload, blank_ok: bool) -> np.ndarray:
    """:func:`~.inputs.model_input` for an upload that is not cheap to decode; then the memory
    its decoding took goes back to the system (without it, glibc kept 61 MB after four
    16-megapixel RGBA uploads; with it, 6 MB)."""
    try:
        return model_input(payload, blank_ok)
    finally:
        release_memory()


def lower_priority() -> None:
    """Make the calling thread yield the CPU to the event loop and the model's thread (on Linux,
    a thread's nice value is its own): a large decode then takes longer, not everyone else."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE)
        except OSError:  # pragma: no cover - refused by a sandbox
            pass


def release_memory() -> None:
    """Return freed heap memory to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 - absent from musl
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def by_name(predictors) -> dict:
    if isinstance(predictors, dict):
        models = dict(predictors)
    else:
        seq = list(predictors) if isinstance(predictors, (list, tuple)) else [predictors]
        models = {}
        for p in seq:
            name, n = p.name, 2
            while name in models:  # two checkpoints of the same model: keep both, apart
                name, n = f"{p.name}-{n}", n + 1
            models[name] = p
    if not models:
        raise ValueError("create_app needs at least one model")
    return models


def describe(name: str, p, default: bool, maps: dict[str, int] | None = None) -> dict:
    meta = getattr(p, "meta", None) or {}
    metrics = meta.get("metrics") or {}
    err = metrics.get("test_error") if isinstance(metrics, dict) else None
    return {"name": name, "default": default, "architecture": meta.get("model"),
            "dataset": meta.get("dataset"), "test_error": err, "maps": maps or {}}

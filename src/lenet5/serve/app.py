"""The draw-a-digit demo (README "Web demo"): a FastAPI app over :class:`lenet5.inference.predict.Predictor`.

Routes:

- ``GET /``: the page (``static/``: plain HTML, CSS and JS, no CDN, no external fonts);
- ``POST /api/predict``: an image or 28x28 pixels in, label, probabilities, top-k, latency and
  model name out; ``?features=1`` adds the 28x28 input as the model saw it and the C1 and C3
  feature maps (the page draws them, like LeCun's 1993 demo), as nested lists or, with
  ``&encoding=uint8`` (what the page asks for), one byte a number in base64;
- ``GET /api/models``, ``GET /healthz``, and the OpenAPI docs at ``/docs``.

Models are loaded once, before the app is made (:func:`create_app` takes them ready and runs
each once to warm it up). The model runs in one :class:`~.batching.Batcher` thread per model,
which decodes and preprocesses the requests that arrive together and gives them one forward
pass; large uploads are decoded first in a small thread pool. The event loop only reads
requests and writes answers, so it keeps accepting connections.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from pydantic_core import to_json

from .. import __version__
from .batching import Batcher
from .errors import MAX_BODY_BYTES, APIError, BodySizeLimit, install_error_handlers
from .inputs import QUERY_PARAMETERS, model_input, read_options, read_payload

STATIC = Path(__file__).with_name("static")
# Uploads up to this size (a drawing: a few kB) are decoded by the model's thread with their
# batch; larger ones (photos, up to tens of ms to decode) first, by these threads.
INLINE_DECODE_BYTES = 64 * 1024
DECODE_THREADS = 4
# The page loads nothing from elsewhere; the browser enforces it.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'")


class EncodedArray(BaseModel):
    """An array in one byte a number (``encoding=uint8``): value = lo + (hi - lo) * byte / 255."""

    shape: list[int]
    lo: float
    hi: float
    data: str = Field(description="row-major uint8 bytes, base64")


class PredictResponse(BaseModel):
    model: str
    label: int
    probs: list[float]
    top_k: list[tuple[int, float]]
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


def create_app(predictors, *, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app serving ``predictors`` (a Predictor, a list of them, or a name -> Predictor
    dict; the first is the default)."""
    models = by_name(predictors)
    default = next(iter(models))
    for p in models.values():  # the first real request should not pay for torch's warm-up
        p.features(np.zeros((28, 28), np.float32))
        p.predict(np.zeros((28, 28), np.float32))
    batchers = {name: Batcher(p, model_input) for name, p in models.items()}
    decoders: list[ThreadPoolExecutor] = []  # images are decoded here: started on first use

    def decode_image(payload):
        if not decoders:
            decoders.append(ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode"))
        return asyncio.get_running_loop().run_in_executor(decoders[0], model_input, payload)

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            b.close()
        while decoders:
            decoders.pop().shutdown(wait=False)

    app = FastAPI(title="lenet5: draw a digit", version=__version__, lifespan=lifespan,
                  description="LeNet-5 reads a handwritten digit. Errors are 4xx JSON "
                              f"`{{\"error\": ..., \"status\": ...}}`; bodies over "
                              f"{max_body_bytes:,} bytes are refused (413).")
    app.state.models = models
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "models": list(models)}

    @app.get("/api/models", response_model=list[ModelInfo])
    def list_models() -> list[dict]:
        return [describe(name, p, name == default) for name, p in models.items()]

    @app.post("/api/predict", response_model=PredictResponse, openapi_extra=PREDICT_DOC,
              responses={c: {"description": d} for c, d in [
                  (400, "malformed body"), (413, "body too large"), (415, "unsupported content type"),
                  (422, "not an image, no digit, wrong shape or values, unknown model")]})
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        opts = read_options(request.query_params)
        payload = await read_payload(request)
        name = payload.model or opts.model or default
        if name not in models:
            raise APIError(422, f"unknown model {name!r}; loaded: {', '.join(models)}")
        item = payload  # decoded with its batch, in the model's thread; a photo, aside first
        if payload.image is not None and len(payload.image) > INLINE_DECODE_BYTES:
            item = await decode_image(payload)
        out = await batchers[name](item, opts.top_k, opts.encoding if opts.features else None)
        out.update(model=name, latency_ms=round((time.perf_counter() - t0) * 1e3, 3))
        out = {k: out.get(k) for k in PredictResponse.model_fields}  # the documented keys, always
        # Built from checked inputs, so it is not validated again against PredictResponse (which
        # documents it): that took 2 ms for the feature maps, more than the model itself.
        return Response(to_json(out), media_type="application/json")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


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


def describe(name: str, p, default: bool) -> dict:
    meta = getattr(p, "meta", None) or {}
    metrics = meta.get("metrics") or {}
    err = metrics.get("test_error") if isinstance(metrics, dict) else None
    return {"name": name, "default": default, "architecture": meta.get("model"),
            "dataset": meta.get("dataset"), "test_error": err}

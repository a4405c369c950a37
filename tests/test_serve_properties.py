"""Properties of the prediction API over random input (Hypothesis): whatever a client sends
(JSON of any shape, any bytes under any content type, any query string, any upload), the
answer is a prediction or one of the documented 4xx JSON errors; never a 5xx."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lenet5.inference.predict import Predictor
from lenet5.serve import create_app
from lenet5.serve.app import PredictResponse
from tests.serve_support import bundled_checkpoint

DOCUMENTED = {400, 413, 415, 422, 429}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client():
    torch.set_num_threads(1)
    with TestClient(create_app(Predictor.load(bundled_checkpoint()[1], name="bn"))) as c:
        yield c


def check(r) -> None:
    """A prediction with every documented key, or a documented 4xx saying what was wrong."""
    assert r.status_code == 200 or r.status_code in DOCUMENTED, (r.status_code, r.text[:300])
    body = r.json()
    if r.status_code == 200:
        assert list(body) == list(PredictResponse.model_fields)
        # A digit, or (the reject option) null with a verdict and the model's guess.
        label = body["guess"] if body["label"] is None else body["label"]
        assert body["label"] is not None or body["verdict"] in ("no digit", "unsure")
        assert 0 <= label <= 9 and np.isfinite(body["probs"]).all()
    else:
        assert body["status"] == r.status_code and isinstance(body["error"], str) and body["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=60)
rows = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=26, max_size=30)
near_pixels = st.lists(rows, min_size=26, max_size=30) | st.lists(
    st.lists(st.floats(0, 1), min_size=28, max_size=28), min_size=28, max_size=28)
documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"pixels": near_pixels},
                          optional={"preprocess": json_values, "model": json_values}),
    st.fixed_dictionaries({"pixels": json_values}))
queries = st.dictionaries(st.sampled_from(["model", "features", "encoding", "top_k", "x"]),
                          st.text(max_size=12), max_size=4)


@SETTINGS
@given(doc=documents, query=queries)
def test_any_json_is_a_prediction_or_a_4xx(client, doc, query):
    body = json.dumps(doc, allow_nan=True)  # NaN and Infinity too, as some clients send them
    check(client.post("/api/predict", params=query, content=body,
                      headers={"content-type": "application/json"}))


@SETTINGS
@given(body=st.binary(max_size=2000),
       ctype=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream",
                              "application/json", "multipart/form-data", "text/plain", "",
                              "multipart/form-data; boundary=x", "image/gif; charset=utf-8"]))
def test_any_bytes_are_a_prediction_or_a_4xx(client, body, ctype):
    check(client.post("/api/predict", content=body, headers={"content-type": ctype}))


def picture(a: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


@SETTINGS
@given(data=st.data(), fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]),
       h=st.integers(1, 300), w=st.integers(1, 300), channels=st.sampled_from([0, 3]))
def test_any_picture_upload_is_a_prediction_or_a_4xx(client, data, fmt, h, w, channels):
    """Real pictures of random sizes and content, some with bytes damaged, as uploads."""
    shape = (h, w, channels) if channels else (h, w)
    seed = data.draw(st.integers(0, 2**32 - 1))
    a = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    if data.draw(st.booleans()):  # a blob of ink on a plain page
        a[...] = 255
        a[h // 4: 3 * h // 4 + 1, w // 3: 2 * w // 3 + 1] = 0
    raw = bytearray(picture(a, fmt))
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    check(client.post("/api/predict", files={"image": ("p", bytes(raw), f"image/{fmt.lower()}")},
                      params=data.draw(queries)))

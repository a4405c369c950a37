"""The prediction API in process (FastAPI's TestClient): answers, and a 4xx JSON for every bad
input. The real server and the browser are in test_serve_e2e.py."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from lenet5.data.transforms import Normalization
from lenet5.inference.predict import Predictor, load_image, preprocess
from lenet5.models import create_model, get_entry
from lenet5.serve import create_app
from lenet5.serve.app import PredictResponse
from lenet5.serve.batching import decode
from lenet5.serve.errors import DRAIN_FACTOR, BodySizeLimit
from lenet5.serve.inputs import MAX_IMAGE_PIXELS
from tests.serve_support import as_photo_png, bundled_checkpoint, mnist_test_digits

LIMIT = 2 * 1024 * 1024


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    # As `lenet5 serve` runs: one intra-op thread. Batch-1 requests from the app's worker
    # threads slow down ten-fold on a busy 2-core machine with two.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(bundled_checkpoint()[1], name="bn")


@pytest.fixture(scope="module")
def client(predictor):
    second = Predictor(predictor.model, predictor.meta, "second")
    with TestClient(create_app([predictor, second])) as c:
        yield c


@pytest.fixture(scope="module")
def digits(data_root):
    return mnist_test_digits(data_root, 40)


def png_bytes(a: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode).save(buf, "PNG")
    return buf.getvalue()


def assert_error(r, status: int, pattern: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status and re.search(pattern, body["error"], re.I), body


# ----------------------------------------------------------------------------- answers


def test_health_and_models(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok", "models": ["bn", "second"]}
    models = client.get("/api/models").json()
    assert [(m["name"], m["default"]) for m in models] == [("bn", True), ("second", False)]
    assert models[0]["architecture"] == "lenet5-modern" and models[0]["dataset"] == "mnist"
    assert 0 < models[0]["test_error"] < 0.05
    feats = predictor.features(np.zeros((28, 28), np.float32))  # the page lays its tiles out by
    want = {"C1": feats["C1"].shape[0], "C3": feats["C3"].shape[0]}  # these counts
    assert [m["maps"] for m in models] == [want, want]


def test_json_pixels_are_the_model_input(client, predictor, digits):
    images, labels = digits
    got = [client.post("/api/predict", json={"pixels": x.tolist()}).json() for x in images]
    direct = predictor.predict(images, top_k=3)
    for g, d in zip(got, direct):
        assert g["label"] == d["label"] and g["model"] == "bn"
        np.testing.assert_allclose(g["probs"], d["probs"], rtol=1e-5, atol=1e-7)
        assert [k for k, _ in g["top_k"]] == [k for k, _ in d["top_k"]]
        assert g["latency_ms"] > 0
    assert np.mean([g["label"] for g in got] == labels) >= 0.9


def test_upload_takes_the_predict_path(client, predictor, digits):
    """A picture goes through load_image + preprocess, exactly as ``lenet5 predict`` does."""
    images, labels = digits
    hits = 0
    for x, y in zip(images[:20], labels[:20]):
        png = as_photo_png(x)
        r = client.post("/api/predict?features=1", files={"image": ("d.png", png, "image/png")})
        assert r.status_code == 200, r.text
        got, x28 = r.json(), preprocess(load_image(png))
        want = predictor.predict(x28)[0]
        assert got["label"] == want["label"]
        np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["input"], x28, atol=5e-4)  # rounded to 3 places
        hits += got["label"] == y
    assert hits >= 18


def test_features_for_the_page(client, predictor, digits):
    x = digits[0][0]
    r = client.post("/api/predict?features=1", json={"pixels": x.tolist()}).json()
    assert set(r["features"]) == {"C1", "C3"}
    c1, c3 = np.array(r["features"]["C1"]), np.array(r["features"]["C3"])
    w1, w3 = getattr(predictor.model.config, "widths", (6, 16))[:2]
    assert c1.shape == (w1, 28, 28) and c3.shape == (w3, 10, 10)
    want = predictor.features(x)
    np.testing.assert_allclose(c1, want["C1"], atol=5e-4)
    np.testing.assert_allclose(c3, want["C3"], atol=5e-4)
    plain = client.post("/api/predict", json={"pixels": x.tolist()}).json()
    assert plain["features"] is None and plain["input"] is None
    compact = client.post("/api/predict?features=1&encoding=uint8", json={"pixels": x.tolist()})
    assert len(compact.content) < len(json.dumps(r)) / 4
    compact = compact.json()
    assert compact["label"] == r["label"] and compact["probs"] == r["probs"]
    for name, enc in [("input", compact["input"]), *compact["features"].items()]:
        exact = x if name == "input" else want[name]
        assert enc["shape"] == list(exact.shape) and enc["lo"] == pytest.approx(exact.min(), abs=1e-6)
        step = (enc["hi"] - enc["lo"]) / 255  # one byte a number: off by half a step at most
        np.testing.assert_allclose(decode(enc), exact, atol=step / 2 + 1e-6)
        if name != "input":  # (an MNIST digit's 256 grey levels survive the bytes exactly)
            assert np.abs(decode(enc) - exact).max() > 1e-4  # the bytes, not the lists
    for answer in (r, plain, compact):  # what /docs documents, key for key (no re-validation)
        assert list(answer) == list(PredictResponse.model_fields)
        PredictResponse.model_validate_json(json.dumps(answer), strict=True)


def test_raw_image_body_json_preprocess_top_k_and_model_choice(client, predictor, digits):
    x = digits[0][0]
    png = as_photo_png(x)
    raw = client.post("/api/predict", content=png, headers={"content-type": "image/png"}).json()
    form = client.post("/api/predict", files={"image": ("d.png", png, "image/png")}).json()
    assert raw["probs"] == form["probs"]

    # A small off-centre drawing sent as pixels, asking for the same preprocessing.
    small = np.zeros((28, 28), np.float32)
    small[2:16, 2:16] = np.asarray(Image.fromarray(x).resize((14, 14), Image.Resampling.BOX))
    small = np.clip(small / small.max(), 0, 1)
    r = client.post("/api/predict", json={"pixels": small.tolist(), "preprocess": True}).json()
    assert r["probs"] == pytest.approx(predictor.predict(preprocess(small))[0]["probs"], rel=1e-5)

    r = client.post("/api/predict?top_k=5&model=second", json={"pixels": x.tolist()}).json()
    assert r["model"] == "second" and len(r["top_k"]) == 5
    for flag, maps in [("true", True), ("on", True), ("Yes", True), ("0", False), ("off", False)]:
        r = client.post(f"/api/predict?features={flag}&top_k=10&other=ignored",
                        json={"pixels": x.tolist()}).json()
        assert (r["features"] is not None) == maps and len(r["top_k"]) == 10, flag
    r = client.post("/api/predict", files={"image": ("d.png", png, "image/png")},
                    data={"model": "second"}).json()
    assert r["model"] == "second"
    r = client.post("/api/predict", json={"pixels": x.tolist(), "model": "second"}).json()
    assert r["model"] == "second"


def test_rbf_head_answers_with_its_map_posterior():
    """The 1998 network (untrained: only the shape of the answer matters here)."""
    entry = get_entry("lenet5-1998")
    torch.manual_seed(0)
    meta = {"model": "lenet5-1998", "head": entry.head,
            "normalization": Normalization.make(entry.normalization).to_dict()}
    with TestClient(create_app(Predictor(create_model("lenet5-1998"), meta, "paper"))) as c:
        r = c.post("/api/predict?features=1", json={"pixels": GOOD}).json()
    assert r["model"] == "paper" and r["posterior"] == "map-rbf"
    assert len(r["distances"]) == 10 and 0 <= r["rubbish"] <= 1
    assert sum(r["probs"]) + r["rubbish"] == pytest.approx(1, abs=1e-5)
    assert np.array(r["features"]["C1"]).shape == (6, 28, 28)
    assert np.array(r["features"]["C3"]).shape == (16, 10, 10)


# ----------------------------------------------------------------------------- bad input

GOOD = np.zeros((28, 28)).tolist()
GOOD[10][10] = 1.0


def truncated_png() -> bytes:
    png = as_photo_png(np.eye(28, dtype=np.float32))
    return png[: len(png) // 2]


def bomb_png(side: int = 5000) -> bytes:
    """A valid PNG header and stream for side x side 1-bit pixels: tiny file, huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    rows = zlib.compress((b"\x00" + b"\xff" * ((side + 7) // 8)) * side, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_bomb_fixture_is_small_and_huge():
    data = bomb_png()
    assert len(data) < LIMIT and 5000 * 5000 > MAX_IMAGE_PIXELS
    assert Image.open(io.BytesIO(data)).size == (5000, 5000)


def upload(data: bytes, ctype: str = "image/png"):
    return {"files": {"image": ("x.png", data, ctype)}}


BAD = {
    # name: (request kwargs, status, what the error must say)
    "not an image": (upload(b"hello, I am text", "text/plain"), 422, "not an image"),
    "truncated image": (upload(truncated_png()), 422, "truncated|corrupt"),
    "empty upload": (upload(b""), 422, "empty"),
    "decompression bomb": (upload(bomb_png()), 422, "pixels|bomb"),
    "raw body not an image": ({"content": b"GIF89a garbage", "headers": {"content-type": "image/gif"}},
                              422, "not an image|corrupt"),
    "upload missing": ({"files": {"other": ("x.png", b"1", "image/png")}}, 422, "missing field 'image'"),
    "upload is text": ({"data": {"image": "not a file"}, "files": {"x": ("x", b"1")}}, 422, "file upload"),
    "pixels missing": ({"json": {"pixel": GOOD}}, 422, "missing field 'pixels'"),
    "wrong shape": ({"json": {"pixels": np.zeros((27, 28)).tolist()}}, 422, r"shape \[28, 28\].*\[27, 28\]"),
    "flat": ({"json": {"pixels": [0.5] * 784}}, 422, r"shape \[28, 28\].*\[784\]"),
    "batch": ({"json": {"pixels": [GOOD, GOOD]}}, 422, r"\[2, 28, 28\]"),
    "ragged": ({"json": {"pixels": GOOD[:27] + [[0.0] * 27]}}, 422, "28x28|shape"),
    "scalar": ({"json": {"pixels": 5}}, 422, "shape"),
    "strings": ({"json": {"pixels": [["0.5"] * 28] * 28}}, 422, "numbers"),
    "nulls": ({"json": {"pixels": [[None] * 28] * 28}}, 422, "numbers"),
    "booleans": ({"json": {"pixels": [[True] * 28] * 28}}, 422, "numbers"),
    "NaN": ({"content": json.dumps({"pixels": [[float("nan")] * 28] * 28}),
             "headers": {"content-type": "application/json"}}, 422, "NaN"),
    "infinity": ({"content": '{"pixels": [' + ",".join(["[" + ",".join(["Infinity"] * 28) + "]"] * 28) + "]}",
                  "headers": {"content-type": "application/json"}}, 422, "NaN or infinite"),
    "above 1": ({"json": {"pixels": [[1.5] * 28] * 28}}, 422, r"\[0, 1\].*1\.5"),
    "below 0": ({"json": {"pixels": [[-0.1] * 28] * 28}}, 422, r"\[0, 1\]"),
    "0..255 scale": ({"json": {"pixels": [[255] * 28] * 28}}, 422, r"\[0, 1\]"),
    "not an object": ({"json": [GOOD]}, 422, "object"),
    "bad preprocess flag": ({"json": {"pixels": GOOD, "preprocess": "yes"}}, 422, "preprocess"),
    "model not a string": ({"json": {"pixels": GOOD, "model": 3}}, 422, "model"),
    "unknown model": ({"json": {"pixels": GOOD, "model": "nope"}}, 422, "unknown model 'nope'.*bn, second"),
    "invalid JSON": ({"content": b'{"pixels": [', "headers": {"content-type": "application/json"}},
                     400, "not valid JSON"),
    "not UTF-8": ({"content": b'\xff\xfe{"', "headers": {"content-type": "application/json"}},
                  400, "not valid JSON"),
    "deeply nested": ({"content": b"[" * 100_000 + b"]" * 100_000,
                       "headers": {"content-type": "application/json"}}, 400, "nested|not valid"),
    "text/plain": ({"content": b"1 2 3", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
    "no content type": ({"content": b"1 2 3"}, 415, "unsupported content type"),
    "bad top_k": ({"json": {"pixels": GOOD}, "params": {"top_k": 0}}, 422, "top_k.*from 1 to 10, got '0'"),
    "top_k not a number": ({"json": {"pixels": GOOD}, "params": {"top_k": "3.5"}}, 422, "top_k"),
    "top_k superscript": ({"json": {"pixels": GOOD}, "params": {"top_k": "\u00b2"}}, 422, "top_k"),
    "top_k 5,000 digits": ({"json": {"pixels": GOOD}, "params": {"top_k": "9" * 5000}}, 422, "top_k"),
    "bad features flag": ({"json": {"pixels": GOOD}, "params": {"features": "maybe"}}, 422, "features"),
    "bad encoding": ({"json": {"pixels": GOOD}, "params": {"features": 1, "encoding": "png"}}, 422,
                     "encoding.*'lists' or 'uint8'"),
    "over 2 MB": ({"content": b"\x00" * (LIMIT + 1), "headers": {"content-type": "image/png"}},
                  413, "2,097,153 bytes is over the 2,097,152-byte limit"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_json_error(client, case):
    kwargs, status, pattern = BAD[case]
    assert_error(client.post("/api/predict", **kwargs), status, pattern)


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/api/nope"), 404, "not found")
    assert_error(client.get("/api/predict"), 405, "method not allowed")
    assert client.get("/healthz").status_code == 200  # and the server is still fine


# ----------------------------------------------------------------------------- the size limit


def run_asgi(app, headers: list, chunks: list[bytes], answer_headers: dict | None = None):
    """Drive an ASGI app by hand: ``(status, json body, chunks the app pulled)``; the answer's
    headers go into ``answer_headers``."""
    pulled, sent = 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        if pulled > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/predict", "raw_path": b"/api/predict", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    status = start["status"]
    if answer_headers is not None:
        answer_headers.update((k.decode(), v.decode()) for k, v in start["headers"])
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def test_declared_oversize_is_refused_without_reading(predictor):
    app = create_app(predictor)
    for size, close in ((LIMIT + 1, False), (DRAIN_FACTOR * LIMIT + 1, True)):
        headers = [(b"content-type", b"image/png"), (b"content-length", str(size).encode())]
        answer: dict = {}
        status, body, pulled = run_asgi(app, headers, [b"x" * 65536] * 320, answer)
        assert (status, pulled) == (413, 0), body
        # Up to DRAIN_FACTOR x the limit the server may discard the rest and keep the connection.
        assert (answer.get("connection") == "close") == close, answer
    status, body, pulled = run_asgi(app, [(b"content-type", b"image/png"), (b"content-length", b"-5")], [b""])
    assert (status, pulled) == (400, 0) and "Content-Length" in body["error"]


def test_streamed_oversize_stops_at_the_limit(predictor):
    """Chunked (no Content-Length) or lying about it: counted as it arrives, cut off early."""
    app = create_app(predictor, max_body_bytes=100_000)
    chunks = [b"x" * 10_000] * 1000  # 10 MB on offer
    for headers in ([(b"content-type", b"image/png")],
                    [(b"content-type", b"image/png"), (b"content-length", b"50")]):
        status, body, pulled = run_asgi(app, headers, chunks)
        assert status == 413 and "stopped reading at 110,000 bytes" in body["error"], body
        assert pulled == 11


def test_body_size_limit_passes_small_bodies_untouched():
    seen = []

    async def echo(scope, receive, send):
        msg = await receive()
        seen.append(msg["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    status, _, _ = run_asgi(BodySizeLimit(echo, max_bytes=10), [(b"content-length", b"10")], [b"0123456789"])
    assert status == 200 and seen == [b"0123456789"]


# ----------------------------------------------------------------------------- page and docs


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    texts = [html]
    for a in assets:
        assert not re.match(r"(https?:)?//", a), f"external asset {a}"
        if a.startswith("/static/"):
            asset = client.get(a)
            assert asset.status_code == 200, a
            texts.append(asset.text)
    for text in texts:  # no CDN, no web fonts, no absolute URLs at all
        assert not re.search(r"https?://|@import|@font-face|url\(", text), text[:200]
    for needed in ('id="pad"', 'id="undo"', 'id="clear"', '<label for="model">', 'name="viewport"'):
        assert needed in html


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/predict"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(post["requestBody"]["content"])
    assert [q["name"] for q in post["parameters"]] == ["model", "features", "encoding", "top_k"]
    assert {"/api/models", "/healthz"} <= set(spec["paths"])


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_elsewhere(client, page):
    """Swagger UI and ReDoc come from this server (a CDN is a blank page offline)."""
    r = client.get(page)
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]
    assert not re.search(r"https?://", r.text), r.text[:300]
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', r.text)
    assert any(a.endswith(".js") for a in assets), assets
    for a in assets:
        got = client.get(a)
        assert got.status_code == 200 and len(got.content) > 1000, a
    assert re.search(r"url: '/openapi\.json'|spec-url=\"/openapi\.json\"", r.text)


def test_head_and_the_page_policy_on_every_path_to_the_page(client):
    head = client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-security-policy"] == client.get("/").headers["content-security-policy"]
    for path in ("/static/index.html", "/static/app.js", "/static/style.css"):
        r = client.get(path)
        assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"], path


# ----------------------------------------------------------------------------- batching


class SlowFirstCall:
    """A Predictor stand-in that records batch sizes; its first call dawdles so others queue."""

    def __init__(self, predictor):
        self.inner, self.name, self.meta, self.batches = predictor, "slow", predictor.meta, []

    def _record(self, x):
        self.batches.append(len(x) if np.ndim(x) == 3 else 1)
        if len(self.batches) == 2:  # the first call after create_app's warm-up
            time.sleep(0.3)

    def predict(self, x, top_k=3):
        self._record(x)
        return self.inner.predict(x, top_k)

    def predict_with_features(self, x, top_k=3):  # one forward pass for answers and maps
        self._record(x)
        return self.inner.predict_with_features(x, top_k)

    def features(self, x):
        return self.inner.features(x)


def test_concurrent_requests_share_a_forward_pass_with_the_same_answers(predictor, digits):
    images = digits[0][:24]
    slow = SlowFirstCall(predictor)
    app = create_app(slow)

    async def all_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(*(
                http.post("/api/predict", params={"features": str(i % 2), "top_k": 1 + i % 4},
                          json={"pixels": x.tolist()}) for i, x in enumerate(images)))

    answers = [r.json() for r in asyncio.run(all_at_once())]
    assert max(slow.batches[1:]) > 1 and sum(slow.batches[1:]) == len(images), slow.batches
    for i, (x, a) in enumerate(zip(images, answers)):
        alone = predictor.predict(x, top_k=1 + i % 4)[0]
        assert a["label"] == alone["label"] and len(a["top_k"]) == 1 + i % 4
        np.testing.assert_allclose(a["probs"], alone["probs"], rtol=1e-4, atol=1e-6)
        assert (a["features"] is not None) == bool(i % 2)
        if i % 2:
            np.testing.assert_allclose(a["features"]["C3"], predictor.features(x)["C3"], atol=2e-3)


# ----------------------------------------------------------------------------- the command


def test_serve_command_loads_checkpoints_and_bundled_models(tmp_path, capsys):
    from lenet5.cli import main
    from lenet5.serve.server import load_predictors
    from lenet5.weights import bundled_models, default_name

    run = tmp_path / "my-run"  # a run directory, as `lenet5 train --out my-run` leaves it
    run.mkdir()
    shutil.copy(bundled_checkpoint()[1], run / "checkpoint.safetensors")
    bundled = [m["name"] for m in bundled_models()]
    got = load_predictors([str(run), str(run / "checkpoint.safetensors")], bundled[:1])
    assert [p.name for p in got] == ["my-run", "my-run", *bundled[:1]]
    assert list(create_app(got).state.models) == ["my-run", "my-run-2", *bundled[:1]]
    # Default: every bundled model, the one `lenet5 models` calls the default first (served
    # as the page's default), whatever the alphabet says.
    everything = [p.name for p in load_predictors([], [])]
    assert everything[0] == default_name() == "lenet5-robust" and sorted(everything) == sorted(bundled)

    (tmp_path / "empty").mkdir()
    assert main(["serve", "--checkpoint", str(tmp_path / "empty")]) == 1
    assert "no checkpoint found" in capsys.readouterr().err
    assert main(["serve", "--model", "no-such-model"]) == 1
    assert "no bundled model 'no-such-model'" in capsys.readouterr().err
    assert main(["serve", "--workers", "0"]) == 1
    assert "--workers must be from 1 to " in capsys.readouterr().err
    # A process each: an absurd count is refused before any starts (it once forked until the
    # machine stalled), and so are absurd thread counts.
    assert main(["serve", "--workers", "100000"]) == 1
    err = capsys.readouterr().err
    assert "--workers must be from 1 to " in err and "got 100000" in err and err.count("\n") == 1
    assert main(["serve", "--threads", "100000"]) == 1
    assert "--threads must be from 1 to 1024, got 100000" in capsys.readouterr().err
    # Checkpoints are opened through the front door, which checks them: one line, no traceback.
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}")
    assert main(["serve", "--checkpoint", str(tmp_path / "bad.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: ") and err.count("\n") == 1 and "bad.safetensors" in err
    assert main(["serve", "--idle-timeout", "0"]) == 1
    assert "idle timeout must be a positive number of seconds, got 0.0" in capsys.readouterr().err


def test_a_batch_reads_each_upload_and_answers_each_request_alone(predictor, digits):
    """Uploads are decoded with their batch, in the model's thread; one that cannot be read
    gets its own 422 and the rest of its batch is answered; a photo over INLINE_BYTES is
    decoded aside first and answered the same."""
    from lenet5.serve.inputs import INLINE_BYTES, image_input

    images = digits[0][:12]
    slow = SlowFirstCall(predictor)
    app = create_app(slow)
    pngs = [as_photo_png(x) for x in images]
    big = as_photo_png(images[0], scale=60)
    big = png_bytes(np.asarray(Image.open(io.BytesIO(big)).convert("RGB")), "RGB")  # more bytes
    assert len(big) > INLINE_BYTES
    bodies = [{"files": {"image": ("d.png", p, "image/png")}} for p in pngs]
    bodies[3] = {"files": {"image": ("d.png", pngs[3][: len(pngs[3]) // 2], "image/png")}}
    bodies[7] = {"files": {"image": ("d.png", b"not a picture", "image/png")}}
    bodies.append({"content": big, "headers": {"content-type": "image/png"}})

    async def all_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await asyncio.gather(*(http.post("/api/predict", **b) for b in bodies))

    answers = asyncio.run(all_at_once())
    assert max(slow.batches[1:]) > 1, slow.batches
    for i, r in enumerate(answers):
        if i in (3, 7):
            assert_error(r, 422, "corrupt or truncated" if i == 3 else "not an image")
            continue
        assert r.status_code == 200, r.text
        src = big if i == len(pngs) else pngs[i]
        want = predictor.predict(image_input(src))[0]  # the big one: shrunk as it is decoded
        assert r.json()["label"] == want["label"] == predictor.predict(preprocess(load_image(src)))[0]["label"]
        np.testing.assert_allclose(r.json()["probs"], want["probs"], rtol=1e-4, atol=1e-6)

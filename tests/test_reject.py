"""The reject option: generated non-digits, the calibrated "no digit" / "unsure" answers in
the Python API, ``lenet5 predict`` and the web API, and readable confidence."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from lenet5.cli import main
from lenet5.data.datasets import load_split
from lenet5.data.nondigits import KINDS, SIDE, pages
from lenet5.inference.images import PredictError, preprocess
from lenet5.inference.predict import Predictor
from lenet5.inference.reject import Rejector, ink_facts, path_for
from lenet5.weights import bundled_models

CALIBRATED = [m["name"] for m in bundled_models() if path_for(m["path"]).is_file()]


@pytest.fixture(scope="module")
def test_digits(data_root):
    x, y = load_split("mnist", "test", str(data_root))
    return np.stack([preprocess(a) for a in x[:400]]), y[:400]


def fresh_pages(n: int, seed: int = 7):
    """Non-digit pages from a seed neither calibration (1) nor the benchmark (2) uses."""
    imgs, kinds = pages(n, seed=seed)
    out = []
    for im, k in zip(imgs, kinds):
        try:
            out.append((preprocess(im), k))
        except PredictError:
            out.append((None, k))  # refused as blank already: a reject too
    return out


def test_non_digit_pages_are_seeded_and_of_every_kind():
    a, ka = pages(10, seed=3)
    b, _ = pages(10, seed=3)
    assert ka == list(KINDS) * 2
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert all(im.size == (SIDE, SIDE) and im.mode == "L" for im in a)
    with pytest.raises(ValueError, match="unknown non-digit"):
        pages(3, kinds=("noise", "cat"))


def test_ink_facts_tell_a_stroke_from_a_blob_and_from_noise():
    stroke = np.zeros((28, 28), np.float32)
    stroke[4:24, 13:15] = 1
    blob = np.zeros((28, 28), np.float32)
    blob[4:24, 4:24] = 1
    noise = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    (cs, ws, _), (cb, wb, _), (_, _, gn) = ink_facts(np.stack([stroke, blob, noise]))
    assert cs < 0.06 < 0.5 < cb and ws < 2.5 < 8 < wb and gn > 0.4


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibrated_models_refuse_non_digits_and_answer_digits(name, test_digits):
    p = Predictor.load(name)
    assert p.rejector is not None
    x, y = test_digits
    res = p.predict(x)
    refused = np.mean([r["label"] is None for r in res])
    assert refused <= 0.03, refused
    answered = [(r["label"], t) for r, t in zip(res, y) if r["label"] is not None]
    assert np.mean([a == t for a, t in answered]) >= 0.985
    seen = fresh_pages(100)
    xs = np.stack([im for im, _ in seen if im is not None])
    rp = iter(p.predict(xs))
    caught = [True if im is None else next(rp)["label"] is None for im, _ in seen]
    assert np.mean(caught) >= 0.85, np.mean(caught)
    for r in p.predict(xs[:20]):
        if r["label"] is None:
            assert r["verdict"] in ("no digit", "unsure") and r["reason"].startswith(r["verdict"])
            assert 0 <= r["guess"] <= 9


@pytest.mark.parametrize("shares", [(0.02, 0.01), (0.05, 0.0), (0.004, 0.002)])
def test_thresholds_refuse_the_share_asked_of_the_digits_they_are_set_on(shares, test_digits):
    # What bench_reject.py's --unseen-twin search rests on: the two shares add up.
    p = Predictor.load("lenet5-robust")
    ev, dp = p.evidence(test_digits[0])
    rej = Rejector(**json.loads(p.rejector.to_json()))
    rej.set_thresholds(ev, dp, *shares)
    n = len(ev)
    assert abs(rej.refused(ev, dp).sum() - sum(shares) * n) <= 2 + 0.002 * n
    assert (rej.score(ev) > rej.no_digit).sum() <= shares[0] * n + 1


def test_without_a_calibration_or_with_reject_off_every_image_gets_a_digit(test_digits):
    page = next(p for p, _ in fresh_pages(10) if p is not None)  # a non-digit page
    for p in (Predictor.load(CALIBRATED[0], reject=False),):
        assert p.rejector is None and p.predict(page)[0]["label"] in range(10)


def test_rbf_confidence_is_over_the_ten_digits_with_the_rubbish_apart(test_digits):
    p = Predictor.load("lenet5-1998", reject=False)
    for r in p.predict(test_digits[0][:20]):
        assert sum(r["digit_probs"]) == pytest.approx(1, abs=1e-5)
        assert sum(r["probs"]) + r["rubbish"] == pytest.approx(1, abs=1e-5)
        assert max(r["digit_probs"]) >= max(r["probs"])
        assert int(np.argmax(r["digit_probs"])) == r["label"]


def test_rejector_file_round_trip_and_refusal(tmp_path):
    d = 4
    r = Rejector([0.0] * d, [1.0] * d, [[0.1] * 32] * d, [0.0] * 32, [1.0] * 32, -1.0, 0.5, 0.6,
                 {"digit_ink": {"cover_max": 0.4, "width_max": 7.0, "grey_max": 0.6}})
    f = tmp_path / "m.reject.json"
    f.write_text(r.to_json())
    back = Rejector.from_file(f)
    ev = np.array([[0.8, 3, 0.2, 0.0], [0.05, 0, 0, 0], [0.1, 2, 0.1, -50], [0.0, 0, 0, -50]])
    dp = np.array([[0.9] + [0.1 / 9] * 9, [0.9] + [0.1 / 9] * 9, [0.5, 0.4] + [0.0125] * 8,
                   [0.9] + [0.1 / 9] * 9])
    verdicts = back.decide(ev, dp)
    assert verdicts[0][0] == "no digit" and "covers 80%" in verdicts[0][1]
    assert verdicts[1] == (None, None)
    assert verdicts[2][0] == "unsure" and "0 at 50% or 1 at 40%" in verdicts[2][1]
    assert verdicts[3] == ("no digit", "no digit: nothing stands out from the background")  # no ink, whatever the score
    f.write_text("{}")
    with pytest.raises(ValueError, match="not a reject calibration"):
        Rejector.from_file(f)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_cli_predict_json_gives_label_null_and_a_reason(tmp_path, capsys, data_root):
    name = CALIBRATED[0]
    noise = tmp_path / "noise.png"
    pages(1, seed=11, kinds=("dot",))[0][0].save(noise)
    x, y = load_split("mnist", "test", str(data_root))
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - x[0]).save(digit)
    assert main(["predict", str(noise), str(digit), "--model", name, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (rn, rd) = doc["results"]
    assert rn["label"] is None and rn["verdict"] == "no digit" and rn["reason"]
    assert rd["label"] == int(y[0])
    assert doc["reject"]["calibration"]["no_digit_share"] > 0
    assert main(["predict", str(noise), "--model", name]) == 0
    assert "no digit" in capsys.readouterr().out
    assert main(["predict", str(noise), "--model", name, "--no-reject", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["label"] in range(10)


def test_api_answers_no_digit_for_noise():
    from fastapi.testclient import TestClient

    from lenet5.serve.app import create_app

    p = Predictor.load(CALIBRATED[0])
    with TestClient(create_app(p)) as client:
        noise = pages(1, seed=12, kinds=("dot",))[0][0]
        r = client.post("/api/predict", files={"image": ("n.png", png(noise), "image/png")})
        assert r.status_code == 200
        d = r.json()
        assert d["label"] is None and d["verdict"] == "no digit" and d["guess"] in range(10)
        assert d["reason"].startswith("no digit")


def test_a_blank_image_is_no_digit_in_every_door():
    """A page with no ink is the plainest non-digit: where the model can refuse, the Python
    API, the web API (upload or pixels) and an all-zero field all answer "no digit", "the image
    is blank", never an error; without the reject option it stays a clear 422."""
    from fastapi.testclient import TestClient

    from lenet5.serve.app import create_app

    p = Predictor.load(CALIBRATED[0])
    empty = p.predict(np.zeros((28, 28), np.float32))[0]
    assert (empty["label"], empty["verdict"], empty["reason"]) == (
        None, "no digit", "no digit: nothing stands out from the background")
    page = Image.new("L", (60, 40), 255)
    bare = Predictor(p.model, p.meta, "bare")  # the same model, no reject option
    with TestClient(create_app([p, bare])) as client:
        for req in (dict(files={"image": ("b.png", png(page), "image/png")}),
                    dict(json={"pixels": np.zeros((28, 28)).tolist()}),
                    dict(json={"pixels": np.zeros((28, 28)).tolist(), "preprocess": True})):
            d = client.post("/api/predict", **req).json()
            assert (d["label"], d["verdict"], d["reason"]) == (
                None, "no digit", "no digit: nothing stands out from the background"), d
            r = client.post("/api/predict?model=bare", **req)
            assert r.status_code == 422 and "no digit" in r.json()["error"], r.text

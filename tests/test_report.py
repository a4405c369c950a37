"""The HTML report: self-contained, every section present, every picture a real image."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from lenet5 import checkpoint as ckpt
from lenet5.cli import main
from lenet5.config import resolve_config
from lenet5.reporting.report import build_report
from lenet5.training.loop import train


class Refs(HTMLParser):
    """Every URL-bearing attribute, and the text of headings and table rows."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.headings, self._h = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "data", "action", "poster", "srcset") and v is not None:
                self.urls.append((tag, k, v))
        self._h = tag in ("h1", "h2")

    def handle_data(self, data):
        if self._h:
            self.headings.append(data.strip())
            self._h = False


def check_report(text: str) -> tuple[Refs, list[Image.Image]]:
    refs = Refs()
    refs.feed(text)
    assert not re.search(r"https?://", text), "the report must reference no external URLs"
    assert "script" not in refs.tags and "link" not in refs.tags
    images = []
    for tag, attr, url in refs.urls:
        assert tag == "img" and attr == "src", (tag, attr)
        assert url.startswith("data:image/png;base64,"), url[:40]
        raw = base64.b64decode(url.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(raw))
        img.load()
        grey = np.asarray(img.convert("L"), np.float64)
        assert img.format == "PNG" and min(img.size) >= 100 and grey.std() > 10
        images.append(img)
    return refs, images


def test_report_on_bundled_weights(data_root):
    text = build_report("lenet5-modern", str(data_root), limit=300)
    refs, images = check_report(text)
    assert {"Plots", "Metrics by epoch", "Classification report", "Model", "Config"} <= set(refs.headings)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", text)
    assert captions == ["Training curves", "Confusion matrix", "Per-class accuracy",
                        "Misclassified test digits", "C1 kernels", "Feature maps of test digit 0",
                        "Accuracy against corruption severity"]
    assert "Robustness" in refs.headings and "mean of the ten" in text
    assert images[0].size == (700, 450)  # training curves: 7 x 4.5 inches at 100 dpi
    assert "first 300 images only" in text
    assert text.count("<tr>") >= 15 + 12 + 8  # epochs, classes + averages, layers + total
    assert "61,932" in text  # the model summary's parameter total (batch-norm LeNet-5)
    assert '"preset": "best"' in html.unescape(text)  # the config, escaped


@pytest.mark.slow
def test_report_command_on_a_trained_1998_run(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = resolve_config(overrides=dict(model="lenet5-1998", data_dir=str(data_root), out=str(run),
                                        epochs=2, limit_train=2000, batch_size=32, progress=False,
                                        threads=1))
    train(cfg, log=lambda *a: None)
    assert main(["report", str(run), "--data-dir", str(data_root)]) == 0
    text = (run / "report.html").read_text()
    refs, images = check_report(text)
    assert "RBF prototypes" in text and "map-rbf" in text
    # The whole test split, and the same count of errors as training measured.
    meta = ckpt.read_checkpoint(run)[2]
    errors = meta["metrics"]["test_errors"]
    assert f"{errors} errors</b> in 10,000 images" in text
    rows = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and text.count("<tr>") >= 2 + 12 + 8
    assert len(images) == 8  # curves, confusion, per class, errors, kernels, maps, prototypes, robustness

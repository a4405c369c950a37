"""End to end: the real ``lenet5 serve`` on a free 127.0.0.1 port, and the page driven in a real
headless Chromium (Debian's ``chromium``) with mouse and touch strokes; the API docs rendered
with every request elsewhere refused, as offline.

Screenshots go to ``test-artifacts/serve/`` (git-ignored); ``docs/web-demo.png`` is one of them.
In CI a missing browser is a failure, never a skip.
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve_support import ServerProcess, bundled_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "serve"

# Strokes in pad coordinates (0..1 across, 0..1 down), drawn as a person would.
DIGITS = {
    "1": [[(0.52, 0.15), (0.48, 0.85)]],
    "0": [[(0.5 + 0.22 * math.sin(2 * math.pi * t / 36), 0.5 - 0.33 * math.cos(2 * math.pi * t / 36))
           for t in range(37)]],
    "7": [[(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]],
}
SEVEN_IN_TWO = [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.42, 0.85)]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``lenet5 serve --model NAME``: the bundled model (the page's default)."""
    name = bundled_checkpoint()[0]
    with ServerProcess(["--model", name], tmp_path_factory.mktemp("serve") / "server.log") as s:
        s.model = name
        s.maps = httpx.get(s.url + "/api/models").json()[0]["maps"]  # e.g. {"C1": 6, "C3": 16}
        yield s


def grid_rows_full(page, layer: str) -> bool:
    """The maps' grid has no row part empty: its column count divides the number of tiles."""
    cols, tiles = page.locator(f"#{layer}").evaluate(
        "e => [getComputedStyle(e).gridTemplateColumns.split(' ').length, e.children.length]")
    return tiles > 0 and tiles % cols == 0


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} not found (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI must run the browser test")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


def watch(page, base_url: str) -> dict:
    """Collect what must not happen: console errors, page errors, requests to other origins."""
    seen = {"errors": [], "foreign": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: r.url.startswith(base_url) or seen["foreign"].append(r.url))
    return seen


def draw_with_mouse(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for pts in strokes:
        (x, y), rest = pts[0], pts[1:]
        steps = 6 if len(rest) < 4 else 1  # intermediate moves along long straight segments
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=steps)
        page.mouse.up()


def draw_with_touch(page, strokes) -> None:
    """Real touch events through the DevTools protocol (Playwright's touchscreen only taps)."""
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)
    for pts in strokes:
        for i, (x, y) in enumerate(pts):
            point = {"x": box["x"] + x * box["width"], "y": box["y"] + y * box["height"]}
            if i == 0:
                cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
                continue
            (x0, y0) = pts[i - 1]
            for k in range(1, 6):  # in small steps, like a finger
                f = k / 5
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{
                    "x": box["x"] + (x0 + f * (x - x0)) * box["width"],
                    "y": box["y"] + (y0 + f * (y - y0)) * box["height"]}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def settled(page) -> str:
    """Wait for the answer to the latest drawing; the page's state: done, error or idle."""
    page.wait_for_selector("body:not([data-state=pending])", state="attached", timeout=15_000)
    return page.locator("body").get_attribute("data-state")


def shown_label(page) -> str:
    assert settled(page) == "done", page.locator("#status").text_content()
    return page.locator("#prediction").text_content()


@pytest.mark.slow
def test_real_server_answers_oversize_before_the_body_arrives(server):
    """Content-Length says 3 MB, 10 bytes are sent: the 413 comes at once, body unread."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 3000000\r\n\r\n0123456789")
        t0, reply = time.monotonic(), b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"over the 2,097,152-byte limit" in reply and time.monotonic() - t0 < 5
    assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.slow
def test_real_server_client_sending_oversize_body_gets_its_413(server):
    """A client that sends all 3 MB before reading still gets the 413 (no reset), and its
    keep-alive connection goes on to serve the next request."""
    with httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(3):
            r = http.post("/api/predict", content=b"\0" * 3_000_000, headers={"content-type": "image/png"})
            assert r.status_code == 413 and "over the 2,097,152-byte limit" in r.json()["error"]
            assert http.post("/api/predict", json={"pixels": [[0.5] * 28] * 28}).status_code == 200


@pytest.mark.slow
@pytest.mark.browser
def test_draw_digits_with_a_mouse(server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    seen = watch(page, server.url)
    page.goto(server.url + "/")
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model").input_value() == server.model
    assert page.locator("#clear").is_disabled() and page.locator("#undo").is_disabled()

    for digit, strokes in DIGITS.items():
        page.keyboard.press("Escape")  # clears the pad
        assert settled(page) == "idle"
        draw_with_mouse(page, strokes)
        assert shown_label(page) == digit, f"drew a {digit}"
        assert page.locator("#bars li.top .digit").all_text_contents() == [digit]
        assert page.locator("#c1 canvas").count() == server.maps["C1"]
        assert page.locator("#c3 canvas").count() == server.maps["C3"]
        assert grid_rows_full(page, "c1") and grid_rows_full(page, "c3")
        # The 28x28 input as the model saw it has ink in it.
        ink = page.locator("#input28").evaluate(
            "c => Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)"
            ".filter((v, i) => i % 4 === 0 && v > 128).length")
        assert 20 < ink < 400, ink
        # The maps arrive as bytes (encoding=uint8); decoded and drawn, each layer spans black
        # to white on its own scale, and its maps differ (a ReLU map may be all 0 for a digit).
        for layer, size in (("c1", 28), ("c3", 10)):
            greys = page.locator(f"#{layer} canvas").evaluate_all(
                f"cs => cs.map(c => Array.from(c.getContext('2d').getImageData(0, 0, {size}, {size})"
                ".data).filter((v, i) => i % 4 === 0))")
            greys = np.array(greys)
            assert greys.min() == 0 and greys.max() == 255, layer
            assert len({g.tobytes() for g in greys}) > len(greys) // 2, layer
        page.screenshot(path=str(ARTIFACTS / f"digit-{digit}.png"))

    # Clear, with the keyboard: focus the button and press Enter.
    page.focus("#clear")
    page.keyboard.press("Enter")
    assert settled(page) == "idle"
    assert page.locator("#prediction").text_content() == "–"
    assert page.locator("#bars li.top").count() == 0 and page.locator("#c1 canvas").count() == 0
    assert page.locator("#c1 .placeholder").count() == server.maps["C1"]  # light tiles, not an empty row
    assert page.locator("#clear").is_disabled()
    blank = page.locator("#pad").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).every(v => v === 255)")
    assert blank

    # Undo takes strokes back one at a time: a 7 in two strokes, then nothing.
    draw_with_mouse(page, SEVEN_IN_TWO)
    assert shown_label(page) == "7"
    page.click("#undo")
    assert settled(page) == "done"  # the top bar alone is still a drawing
    page.keyboard.press("Control+z")
    assert settled(page) == "idle" and page.locator("#undo").is_disabled()

    assert seen == {"errors": [], "foreign": []}
    page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_draw_with_a_finger_on_a_phone(server, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                              is_mobile=True, has_touch=True)
    page = ctx.new_page()
    seen = watch(page, server.url)
    page.goto(server.url + "/")
    page.wait_for_selector("#model option", state="attached")
    draw_with_touch(page, DIGITS["1"])
    assert shown_label(page) == "1"
    # Nothing sticks out sideways; the pad and buttons fit the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("#pad").bounding_box()["width"] <= 390
    assert page.locator("#clear").bounding_box()["height"] >= 44  # a finger-sized target
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    assert seen == {"errors": [], "foreign": []}
    ctx.close()


@pytest.mark.slow
@pytest.mark.browser
def test_docs_render_the_api_offline(server, browser):
    """/docs is Swagger UI from this server: with every other host unreachable it still lists
    the API, and the predict operation opens to its parameters."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    seen = watch(page, server.url)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url)
               else route.abort("internetdisconnected"))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=20_000)
    paths = page.locator(".opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
    assert {"/api/predict", "/api/models", "/healthz"} <= set(paths), paths
    page.locator(".opblock-summary-path[data-path='/api/predict']").click()
    page.wait_for_selector(".parameters", timeout=10_000)
    names = page.locator(".parameters .parameter__name").all_text_contents()
    assert {"model", "features", "encoding", "top_k"} <= {n.split()[0].strip() for n in names}, names
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
    assert seen == {"errors": [], "foreign": []}
    page.close()


def input_pixels(page) -> np.ndarray:
    """The 28x28 input canvas as grey levels 0..255."""
    return np.array(page.locator("#input28").evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)"
        ".filter((v, i) => i % 4 === 0)"), np.float64).reshape(28, 28)


def ink_centre(img: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(img.shape)
    return np.array([(xs * img).sum(), (ys * img).sum()]) / img.sum()


@pytest.mark.slow
@pytest.mark.browser
def test_idle_page_looks_finished_and_the_transform_panel_moves_the_digit(server, browser):
    """Idle: no black squares, a light tile for every map. Drawn: each slider of the panel
    changes the 28x28 input the model reads, and the answer and maps follow; Reset restores."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    seen = watch(page, server.url)
    page.goto(server.url + "/")
    page.wait_for_selector("#model option", state="attached")
    assert settled(page) == "idle"
    idle = input_pixels(page)
    assert idle.min() > 128  # a light square, not a black one
    assert page.locator("#c1 .placeholder").count() == server.maps["C1"]
    assert page.locator("#c3 .placeholder").count() == server.maps["C3"]
    assert grid_rows_full(page, "c1") and grid_rows_full(page, "c3")
    tiles = page.locator(".maps .placeholder").evaluate_all(
        "els => els.map(e => [e.getBoundingClientRect().height, getComputedStyle(e).backgroundColor])")
    assert all(h > 10 and bg not in ("rgb(0, 0, 0)", "rgba(0, 0, 0, 0)") for h, bg in tiles)
    page.screenshot(path=str(ARTIFACTS / "idle.png"))

    draw_with_mouse(page, DIGITS["7"])
    assert shown_label(page) == "7"
    plain = input_pixels(page)
    # Turned 30 degrees: the same ink, moved; the answer and maps are asked for again.
    page.locator("#t-rotate").fill("30")
    assert settled(page) == "done"
    assert page.locator("#t-rotate-v").text_content() == "30°"
    turned = input_pixels(page)
    assert np.abs(turned - plain).mean() > 5
    assert abs(turned.sum() / plain.sum() - 1) < 0.2
    assert page.locator("#prediction").text_content() == "7"  # still a 7
    assert page.locator("#c1 canvas").count() == server.maps["C1"]
    page.locator("#t-rotate").fill("0")
    # Shifted 3 px right and 3 px up (the digit stays inside the field): so is its ink.
    page.locator("#t-dx").fill("3")
    page.locator("#t-dy").fill("-3")
    assert settled(page) == "done"
    assert np.allclose(ink_centre(input_pixels(page)) - ink_centre(plain), [3, -3], atol=0.7)
    page.locator("#t-dx").fill("0")
    page.locator("#t-dy").fill("0")
    # Thicker strokes: more ink; noise: the background lights up.
    page.locator("#t-stroke").fill("1.5")
    assert settled(page) == "done"
    assert input_pixels(page).sum() > 1.5 * plain.sum()
    page.locator("#t-stroke").fill("0")
    page.locator("#t-noise").fill("0.4")
    assert settled(page) == "done"
    noisy = input_pixels(page)
    assert (noisy[plain == 0] > 30).mean() > 0.2
    page.screenshot(path=str(ARTIFACTS / "transform-noise.png"))
    # Reset brings back the digit as drawn.
    page.click("#t-reset")
    assert settled(page) == "done"
    assert np.abs(input_pixels(page) - plain).max() <= 2
    assert page.locator("#prediction").text_content() == "7"
    assert seen == {"errors": [], "foreign": []}
    page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_a_dot_is_no_digit_when_the_model_can_refuse(server, browser):
    from lenet5.inference.predict import Predictor

    if Predictor.load(server.model).rejector is None:
        pytest.skip(f"{server.model} has no reject calibration")
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    seen = watch(page, server.url)
    page.goto(server.url + "/")
    page.wait_for_selector("#model option", state="attached")
    draw_with_mouse(page, [[(0.3, 0.3)]])  # one tap: a single round dot
    assert settled(page) == "done"
    page.screenshot(path=str(ARTIFACTS / "no-digit.png"))
    assert page.locator("#prediction").get_attribute("data-verdict") == "no digit"
    assert page.locator("#prediction").text_content() == "no digit"
    assert page.locator("#confidence").text_content().startswith("no digit")
    assert page.locator("#bars li.top").count() == 0 and page.locator("#bars li.guess").count() == 1
    assert seen == {"errors": [], "foreign": []}
    page.close()

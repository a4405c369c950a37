"""Connection deadlines (``lenet5.serve.timeouts``), tried with raw sockets on 127.0.0.1 against
the app under uvicorn with short deadlines: a silent connection, headers a byte at a time, a
chunked body that never ends, a body that stops half way, an idle keep-alive connection and
endless headers are all closed in time; a slow but steady client is still answered."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch
import uvicorn

from lenet5.inference.predict import Predictor
from lenet5.serve import create_app
from lenet5.serve.server import bind, uvicorn_options
from lenet5.serve.timeouts import Timeouts
from tests.serve_support import bundled_checkpoint

LIMITS = Timeouts(idle=0.6, header=1.2, body=1.2, header_bytes=8 * 1024)
SLACK = 1.5  # seconds a loaded machine may add to a deadline
pytestmark = pytest.mark.slow  # about 10 s of waiting for deadlines
PIXELS = ('{"pixels": ' + str(np.eye(28)[::-1].tolist()) + ', "preprocess": true}').encode()


@pytest.fixture(scope="module")
def server():
    torch.set_num_threads(1)
    app = create_app(Predictor.load(bundled_checkpoint()[1], name="bn"))
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(LIMITS, "warning")))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield sock.getsockname()[1]
    srv.should_exit = True
    thread.join(10)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def until_closed(s: socket.socket, trickle: bytes = b"", every: float = 0.15) -> tuple[bytes, float]:
    """Send ``trickle`` a byte every ``every`` s (if any) and read until the server closes;
    returns what it sent and when it closed (seconds from the call)."""
    t0, got = time.monotonic(), b""
    s.settimeout(every if trickle else 10)
    i = 0
    while time.monotonic() - t0 < 10:
        if trickle:
            try:
                s.send(trickle[i % len(trickle): i % len(trickle) + 1])
                i += 1
            except OSError:  # reset: it closed
                break
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - t0


def post_head(length: bytes | None = None) -> bytes:
    size = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: " + length + b"\r\n"
    return b"POST /api/predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n" + size + b"\r\n"


def test_a_silent_connection_is_closed_after_the_idle_time(server):
    with connect(server) as s:
        got, t = until_closed(s)
    assert got == b"" and LIMITS.idle - 0.1 < t < LIMITS.idle + SLACK


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    with connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        got, t = until_closed(s, trickle=b"x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
    assert got.startswith(b"HTTP/1.1 408 ") and t < LIMITS.header + SLACK


def test_a_chunked_body_that_never_ends_is_cut_off(server):
    with connect(server) as s:
        s.sendall(post_head() + b"4\r\n{\"pi\r\n")
        got, t = until_closed(s, trickle=b"1\r\nx\r\n")
    assert got.startswith(b"HTTP/1.1 408 ") and t < LIMITS.body + SLACK


def test_a_body_that_stops_half_way_is_cut_off(server):
    with connect(server) as s:
        s.sendall(post_head(str(len(PIXELS)).encode()) + PIXELS[:100])
        got, t = until_closed(s)
    assert got.startswith(b"HTTP/1.1 408 ") and LIMITS.body - 0.1 < t < LIMITS.body + SLACK


def test_endless_headers_are_refused(server):
    line = b"x-big: " + b"a" * 1000 + b"\r\n"
    for pieces in (1, 3):  # at once, and in three reads
        with connect(server) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
            for _ in range(pieces):
                s.sendall(line * (12 // pieces))
                time.sleep(0.05)
            got, t = until_closed(s)
        assert got.startswith(b"HTTP/1.1 431 ") and t < SLACK


def test_a_slow_but_steady_client_is_answered_then_idles_out(server):
    """A body in pieces within the deadline is answered; the connection then stays open for
    the next request until the idle time passes."""
    with connect(server) as s:
        s.sendall(post_head(str(len(PIXELS)).encode()))
        third = len(PIXELS) // 3
        for piece in (PIXELS[:third], PIXELS[third: 2 * third], PIXELS[2 * third:]):
            time.sleep(0.25)
            s.sendall(piece)
        s.settimeout(10)
        reply = b""
        while b"latency_ms" not in reply:
            reply += s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")  # the same connection, again
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        got, t = until_closed(s)
    assert got == b"" and LIMITS.idle - 0.1 < t < LIMITS.idle + SLACK
    with connect(server) as s:  # and the server is fine
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        assert until_closed(s)[0].startswith(b"HTTP/1.1 200 ")


def test_timeouts_must_be_positive_seconds():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="body timeout must be a positive number of seconds"):
            Timeouts(body=bad)

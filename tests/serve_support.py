"""Helpers shared by the web-demo tests: the bundled model, MNIST digits as images, and a real
``lenet5 serve`` process on a free local port."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from lenet5.data.datasets import load_split
from lenet5.weights import get_bundled


def bundled_checkpoint() -> tuple[str, Path]:
    """The default bundled model: ``(name, path of its .safetensors checkpoint)``."""
    entry = get_bundled()
    return entry["name"], Path(entry["path"])


def mnist_test_digits(data_root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` MNIST test images as (n, 28, 28) float32 in [0, 1], and their labels."""
    images, labels = load_split("mnist", "test", data_root, download=False)
    return images[:n].astype(np.float32) / 255.0, labels[:n].astype(int)


def as_photo_png(x28: np.ndarray, scale: int = 6) -> bytes:
    """A 28x28 MNIST digit as a user's picture would be: dark ink on white, larger, PNG."""
    img = Image.fromarray(np.uint8(255 - np.round(x28 * 255)), "L")
    buf = io.BytesIO()
    img.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``lenet5 serve`` in a subprocess on 127.0.0.1; ``with`` waits until it says it is serving
    (every worker ready) and /healthz answers, then stops it."""

    def __init__(self, args: list[str], log: Path, timeout: float = 90.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "lenet5", "serve", *args,
                    "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.log, self.timeout = log, timeout

    def __enter__(self) -> ServerProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"lenet5 serve exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if ("lenet5 serve: " in self.log_text()
                        and httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"lenet5 serve not up after {self.timeout:.0f} s:\n{self.log_text()}")

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

"""Dynamic batching: requests that arrive while the model is busy share its next forward pass.

One worker thread per model takes every request waiting (up to ``max_batch``), makes each one's
28x28 input (``prepare``: decode and preprocess an upload, check pixels), and runs them as one
forward pass: ``Predictor.predict``, or ``predict_with_features`` when any asked for maps. A
LeNet-5 forward pass on 16 digits costs about twice one on a single digit, so under load each
request pays a fraction of a pass; alone, a request goes through at once, with no added wait.
Decoding here rather than in a pool of its own saves each upload two thread hand-offs, and
measurably lowered the server's CPU per request (docs/results.md); large uploads (photos) are
still decoded aside by the app, so a batch never waits for one.
"""

from __future__ import annotations

import asyncio
import base64
import queue
import threading

import numpy as np

SHOWN_FEATURES = ("C1", "C3")


class Batcher:
    def __init__(self, predictor, prepare=None, max_batch: int = 64):
        self.predictor = predictor
        self.prepare = prepare
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def __call__(self, item, top_k: int, features: str | None) -> dict:
        """The prediction for ``item``, a (28, 28) input or a request for ``prepare`` to turn
        into one: label, probs, top_k; with ``features`` (an encoding: ``"lists"`` or
        ``"uint8"``, see :func:`encode`) also the input and feature maps."""
        with self._lock:  # started on first use, again after close()
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True,
                                                name=f"batcher-{self.predictor.name}")
                self._thread.start()
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._jobs.put((item, top_k, features, loop, done))
        return await done

    def close(self) -> None:
        """Stop the worker once the requests already queued are answered."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join(10)
                self._thread = None

    def _serve(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while batch[-1] is not None and len(batch) < self.max_batch:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            batch = [job for job in batch if job is not None]
            batch = self._prepared(batch)
            if batch:
                try:
                    results = self._run(batch)
                except Exception as e:  # a bug, not bad input (inputs are checked): a 500 each
                    results = [e] * len(batch)
                for (*_, loop, done), result in zip(batch, results):
                    loop.call_soon_threadsafe(_settle, done, result)
            if stop:
                return

    def _prepared(self, batch: list) -> list:
        """Each job's (28, 28) input: made here by ``prepare`` if the job brought a request
        (decode + preprocess), given as is if it brought an array. A request that cannot be
        read is answered at once with its error (a 4xx) and left out of the batch."""
        ready = []
        for job in batch:
            try:
                x = job[0] if isinstance(job[0], np.ndarray) else self.prepare(job[0])
            except Exception as e:
                job[3].call_soon_threadsafe(_settle, job[4], e)
                continue
            ready.append((x, *job[1:]))
        return ready

    def _run(self, batch: list) -> list[dict]:
        xs = np.stack([job[0] for job in batch])  # (N, 28, 28)
        top_k = max(job[1] for job in batch)
        if any(job[2] for job in batch):  # one forward pass gives the maps and the answer
            preds, maps = self.predictor.predict_with_features(xs, top_k)
        else:
            preds, maps = self.predictor.predict(xs, top_k), {}
        out = []
        for i, (x, top_k, features, *_) in enumerate(batch):
            r = jsonable(preds[i])
            r["top_k"] = r["top_k"][:top_k]
            if features:
                r["input"] = encode(x, features)
                r["features"] = {k: encode(maps[k][i], features) for k in SHOWN_FEATURES}
            out.append(r)
        return out


def encode(a, encoding: str):
    """An array for JSON: ``"lists"``, nested lists rounded to 3 decimals (easy to read, about
    5 bytes a number); or ``"uint8"``, what the page asks for, one byte a number:
    ``{"shape", "lo", "hi", "data"}`` with ``data`` the row-major bytes in base64 and each value
    ``lo + (hi - lo) * byte / 255`` (error at most (hi - lo) / 510; one scale for the whole
    array, so a layer's weak maps stay weak)."""
    if encoding == "lists":
        return rounded(a)
    if encoding != "uint8":
        raise ValueError(f"unknown encoding {encoding!r}; expected 'lists' or 'uint8'")
    a = np.asarray(a, np.float32)
    lo, hi = float(a.min()), float(a.max())
    q = np.rint((a - lo) * (255.0 / (hi - lo))) if hi > lo else np.zeros(a.shape)
    return {"shape": list(a.shape), "lo": lo, "hi": hi,
            "data": base64.b64encode(q.astype(np.uint8).tobytes()).decode("ascii")}


def decode(enc) -> np.ndarray:
    """The inverse of :func:`encode` (for clients and tests): a float32 array."""
    if isinstance(enc, list):
        return np.asarray(enc, np.float32)
    q = np.frombuffer(base64.b64decode(enc["data"]), np.uint8).reshape(enc["shape"])
    return (enc["lo"] + (enc["hi"] - enc["lo"]) * (q.astype(np.float32) / 255)).astype(np.float32)


def rounded(a) -> list:
    """Three decimals, as nested lists. Rounded in float64: a float32 0.123 would print as
    0.12300000339746475 and make the JSON three times longer."""
    return np.round(np.asarray(a, np.float64), 3).tolist()


def _settle(done: asyncio.Future, result) -> None:
    if done.cancelled():  # the client went away
        return
    if isinstance(result, Exception):
        done.set_exception(result)
    else:
        done.set_result(result)


def jsonable(v):
    """NumPy scalars and arrays inside dicts and lists -> plain Python, for JSON."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v

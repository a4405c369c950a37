"""lenet5.data.download against a real HTTP server on 127.0.0.1 that misbehaves on request.

The server serves small synthetic IDX files (made with ``write_idx``) under ``/<mode>/<name>``;
``mode`` picks the behaviour (good, 404, 500, wrong bytes, garbage, cut mid-transfer, ignoring
Range, stalling, a gzip bomb, an endless body, a lying Content-Length). Every request's path
and Range header is recorded so tests can assert what went over the wire, including that
nothing did.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import lenet5.data.datasets
from lenet5.cli import main
from lenet5.data import download
from lenet5.data.datasets import DATASETS, DataError, download_dataset, load_split
from lenet5.data.download import DownloadError, download_file, max_download_bytes
from lenet5.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    nbytes,
    read_idx,
    sha256_decompressed,
    write_idx,
)

from .test_idx import ZEROS_MEMBER, header

STEM = "train-images-idx3-ubyte"
NAME = STEM + ".gz"


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> dict[str, tuple[np.ndarray, bytes]]:
    """stem -> (array, gzip bytes) for a tiny fake MNIST (6 train, 4 test images)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 6, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4, dtype=np.uint8),
    }
    folder = tmp_path_factory.mktemp("payload")
    out = {}
    for stem, array in arrays.items():
        write_idx(folder / stem, array)
        out[stem] = (array, (folder / stem).read_bytes())
    return out


class _Server:
    def __init__(self, files: dict[str, bytes]):
        self.files = files  # "<stem>.gz" -> bytes
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.sent: dict[str, int] = {}  # path -> bytes sent by the unbounded modes
        self.release = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        # A short poll interval: shutdown() waits for it, and the default 0.5 s adds up.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/"

    def ranges(self, mode: str, name: str = NAME) -> list[str | None]:
        return [r for path, r in self.requests if path == f"/{mode}/{name}"]


def _handler(server: _Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            server.requests.append((self.path, rng))
            _, mode, name = self.path.split("/", 2)
            body = server.files.get(name)
            first = len(server.ranges(mode, name)) == 1
            if mode == "404" or body is None:
                return self.send_error(404)
            if mode == "500":
                return self.send_error(500)
            if mode == "stall":
                server.release.wait(5)  # longer than the client's timeout
                return
            if mode == "wrong":  # a valid gzip of other content
                return self._send(200, gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07"))
            if mode == "garbage":  # an HTML error page served with 200
                return self._send(200, b"<html>Service unavailable</html>")
            if mode == "truncgz":  # gzip magic, stream cut short, length consistent
                return self._send(200, body[: len(body) // 2])
            if mode == "bomb":  # the right header, then 20 MiB of zeros in about 20 kB
                head = header(6, 28, 28) if "images" in name else header(6)
                return self._send(200, gzip.compress(head) + ZEROS_MEMBER * 20)
            if mode == "huge":  # announces 100 MB
                self.send_response(200)
                self.send_header("Content-Length", str(100_000_000))
                self.end_headers()
                return self._write_until_closed(b"\x1f\x8b" + b"\0" * (1 << 16), 2)
            if mode == "endless":  # no Content-Length: the body ends when the server closes
                self.send_response(200)
                self.end_headers()
                return self._write_until_closed(b"\x1f\x8b" + b"\0" * (1 << 16), 1600)
            if mode in ("cut", "norange-cut") and first:
                return self._send(200, body, cut=len(body) // 2)
            if rng and mode != "norange-cut":
                start = int(rng.removeprefix("bytes=").removesuffix("-"))
                if start >= len(body):
                    return self.send_error(416)
                span = f"bytes {start}-{len(body) - 1}/{len(body)}"
                return self._send(206, body[start:], {"Content-Range": span})
            return self._send(200, body)

        def _send(self, status, body, headers=None, cut=None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            # `cut`: promise the whole body, deliver part of it, hang up.
            self.wfile.write(body if cut is None else body[:cut])
            self.wfile.flush()
            self.close_connection = True

        def _write_until_closed(self, chunk: bytes, times: int) -> None:
            """Send ``chunk`` up to ``times`` times (100 MB for 1600); stop when the client hangs
            up, and count what went out."""
            self.close_connection = True
            try:
                for _ in range(times):
                    self.wfile.write(chunk)
                    server.sent[self.path] = server.sent.get(self.path, 0) + len(chunk)
            except OSError:
                pass

    return Handler


@pytest.fixture
def server(payload):
    srv = _Server({f"{stem}.gz": gz for stem, (_, gz) in payload.items()})
    srv.thread.start()
    yield srv
    srv.release.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(5)


@pytest.fixture
def spec(payload, server):
    sums = {
        stem: hashlib.sha256(gzip.decompress(gz)).hexdigest()
        for stem, (_, gz) in payload.items()
    }
    return dataclasses.replace(DATASETS["mnist"], sha256=sums, mirrors=(server.url("good"),),
                               counts={"train": 6, "test": 4})


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _get(urls, dest, payload, **kw) -> Path:
    kw = {"retries": 3, "backoff": 0, "timeout": 5, "progress": False,
          "size": nbytes((6, 28, 28))} | kw
    sha = hashlib.sha256(gzip.decompress(payload[STEM][1])).hexdigest()
    return download_file(urls, dest, sha256=sha, **kw)


# 1. a normal download


def test_download_dataset_fetches_all_four_verified_files(spec, payload, tmp_path):
    directory = tmp_path / "new" / "mnist"  # created on demand
    got = download_dataset(spec, directory, progress=False, backoff=0)
    assert sorted(got) == sorted(directory / f"{stem}.gz" for stem in spec.stems())
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.gz" for s in spec.stems())
    for stem, (array, _) in payload.items():
        path = directory / f"{stem}.gz"
        assert sha256_decompressed(path) == spec.sha256[stem]
        magic = IMAGES_MAGIC if "images" in stem else LABELS_MAGIC
        np.testing.assert_array_equal(read_idx(path, expect_magic=magic), array)


def test_load_split_downloads_only_its_split(spec, server, payload, tmp_path, monkeypatch):
    monkeypatch.setitem(lenet5.data.datasets.DATASETS, "mnist", spec)
    images, labels = load_split("mnist", "test", data_dir=tmp_path)  # progress bar on
    np.testing.assert_array_equal(images, payload["t10k-images-idx3-ubyte"][0])
    np.testing.assert_array_equal(labels, payload["t10k-labels-idx1-ubyte"][0])
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert sorted(path for path, _ in server.requests) == [
        "/good/t10k-images-idx3-ubyte.gz", "/good/t10k-labels-idx1-ubyte.gz"]


# 2. failover


def test_fails_over_from_404_and_500_to_a_good_mirror(server, payload, tmp_path):
    urls = [server.url(m) + NAME for m in ("404", "500", "good")]
    dest = _get(urls, tmp_path / NAME, payload, retries=2)
    assert dest.read_bytes() == payload[STEM][1]
    # 404 is permanent (asked once); 500 is transient (asked `retries` times).
    assert [len(server.ranges(m)) for m in ("404", "500", "good")] == [1, 2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_retries_back_off_exponentially(server, payload, tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    with pytest.raises(DownloadError, match="HTTP 500"):
        _get([server.url("500") + NAME], tmp_path / NAME, payload, retries=4, backoff=0.5)
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(server.ranges("500")) == 4


def test_connection_refused_and_timeout_are_reported(server, payload, tmp_path):
    urls = [_closed_port_url() + NAME, server.url("stall") + NAME]
    with pytest.raises(DownloadError) as info:
        _get(urls, tmp_path / NAME, payload, retries=1, timeout=0.3)
    message = str(info.value)
    assert urls[0] in message and urls[1] in message
    assert "refused" in message.lower() and "timed out" in message.lower()
    assert list(tmp_path.iterdir()) == []


def test_unresolvable_host_is_not_retried(payload, tmp_path, monkeypatch):
    import urllib.error

    calls = []

    def no_dns(request, timeout):
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(download.urllib.request, "urlopen", no_dns)
    urls = ["http://a.invalid/" + NAME, "http://b.invalid/" + NAME]
    with pytest.raises(DownloadError, match="Name or service not known"):
        _get(urls, tmp_path / NAME, payload, retries=3, backoff=10)  # would sleep 30 s
    assert calls == urls  # once per mirror: offline, retrying only keeps the user waiting


def test_download_error_is_one_line(server, payload, tmp_path):
    urls = [server.url(m) + NAME for m in ("404", "500")]
    with pytest.raises(DownloadError) as info:
        _get(urls, tmp_path / NAME, payload, retries=1)
    assert "\n" not in str(info.value) and all(u in str(info.value) for u in urls)


def test_no_mirrors_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match="no mirrors"):
        download_file([], tmp_path / NAME, sha256=None)


# 3. corrupt content


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("wrong", "checksum mismatch"), ("garbage", "not a gzip file"), ("truncgz", "corrupt")],
)
def test_corrupt_content_is_rejected_and_leaves_nothing(spec, server, tmp_path, mode, reason):
    mirrors = [server.url("404"), server.url(mode)]
    with pytest.raises(DownloadError) as info:
        download_dataset(spec, tmp_path, mirrors=mirrors, progress=False, backoff=0)
    message = str(info.value)
    assert all(m in message for m in mirrors) and reason in message and "HTTP 404" in message
    assert list(tmp_path.iterdir()) == []  # no final file, no .part
    assert len(server.ranges(mode, f"{spec.stems()[0]}.gz")) == 1  # bad content: no retry


def test_a_failed_download_into_a_new_folder_leaves_no_folders(spec, server, tmp_path):
    """A mistyped data root (``--data-dir dat/``) whose download fails leaves nothing behind;
    a folder that was there already stays."""
    root = tmp_path / "typo" / "mnist"
    with pytest.raises(DownloadError):
        download_dataset(spec, root, mirrors=[server.url("404")], progress=False, backoff=0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(DownloadError):
        download_dataset(spec, tmp_path / "kept", mirrors=[server.url("404")], progress=False,
                         backoff=0)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


# 3b. hostile mirrors: nothing past the size a gzip of the file can take


def test_gzip_bomb_from_a_mirror_is_refused_without_inflating_it(spec, server, tmp_path):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(DownloadError) as info:
            download_dataset(spec, tmp_path, mirrors=[server.url("bomb")], progress=False,
                             backoff=0, stems=[STEM])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"decompresses to more than {nbytes((6, 28, 28))} bytes" in str(info.value)
    assert peak < 2 << 20  # 20 MiB would inflate; well under 2 MiB was spent
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mode", "reason"), [("huge", "announces 100000000 bytes"),
                                              ("endless", "sent more than")])
def test_oversized_body_is_cut_off(server, payload, tmp_path, mode, reason):
    limit = max_download_bytes(nbytes((6, 28, 28)))
    with pytest.raises(DownloadError, match=reason) as info:
        _get([server.url(mode) + NAME], tmp_path / NAME, payload, retries=1)
    assert str(limit) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing kept: not even a .part to resume
    # The client hung up: the server got nowhere near its 100 MB out (socket buffers aside).
    assert server.sent.get(f"/{mode}/{NAME}", 0) < 10_000_000


def test_max_download_bytes_holds_a_stored_gzip():
    import os
    import zlib

    data = os.urandom(300_000)  # incompressible: deflate falls back to stored blocks
    for level in (0, 9):
        z = zlib.compressobj(level, zlib.DEFLATED, 31)
        assert len(z.compress(data) + z.flush()) <= max_download_bytes(len(data))


# 3c. offline: a failed download says where it looked and how to point at the data


def _offline(monkeypatch, spec, mirrors):
    monkeypatch.setitem(lenet5.data.datasets.DATASETS, "mnist",
                        dataclasses.replace(spec, mirrors=tuple(mirrors)))
    monkeypatch.setattr(download.time, "sleep", lambda s: None)


def test_offline_load_names_the_folder_and_the_ways_to_point_at_data(
    spec, server, tmp_path, monkeypatch
):
    _offline(monkeypatch, spec, [_closed_port_url(), server.url("404")])
    with pytest.raises(DataError) as info:
        load_split("mnist", "test", tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "mnist") in message
    assert "--data-dir DIR" in message and "LENET5_DATA_DIR" in message
    assert "refused" in message.lower() and "HTTP 404" in message
    # Only the test split was wanted: the training files were never asked for.
    assert {path.rsplit("/", 1)[1] for path, _ in server.requests} == {"t10k-images-idx3-ubyte.gz"}


@pytest.mark.parametrize("argv", [["viz", "confusion"], ["train", "--epochs", "1"]])
def test_offline_commands_say_how_to_point_at_data(spec, server, tmp_path, monkeypatch, capsys,
                                                   argv):
    _offline(monkeypatch, spec, [server.url("404")])
    monkeypatch.setenv("LENET5_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # where a command writes its outputs by default
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lenet5: error: "), err
    assert str(tmp_path / "data" / "mnist") in err[0] and "--data-dir DIR" in err[0]
    assert "LENET5_DATA_DIR" in err[0]
    wanted = {path.rsplit("/", 1)[1] for path, _ in server.requests}
    if argv[0] == "viz":  # the confusion matrix needs the test split only
        assert wanted == {"t10k-images-idx3-ubyte.gz"}
    else:
        assert wanted == {"train-images-idx3-ubyte.gz"}


# 4. cut mid-transfer, resumed


def test_cut_transfer_is_resumed_with_range(server, payload, tmp_path):
    dest = _get([server.url("cut") + NAME], tmp_path / NAME, payload)
    size = len(payload[STEM][1])
    assert server.ranges("cut") == [None, f"bytes={size // 2}-"]
    assert dest.read_bytes() == payload[STEM][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    dest = _get([server.url("norange-cut") + NAME], tmp_path / NAME, payload)
    size = len(payload[STEM][1])
    assert server.ranges("norange-cut") == [None, f"bytes={size // 2}-"]  # answered 200
    assert dest.read_bytes() == payload[STEM][1]


def test_partial_file_is_kept_and_resumed_by_a_later_run(server, payload, tmp_path):
    part = tmp_path / (NAME + ".part")
    with pytest.raises(DownloadError, match="kept and will be resumed"):
        _get([server.url("cut") + NAME], tmp_path / NAME, payload, retries=1)
    assert not (tmp_path / NAME).exists() and part.stat().st_size == len(payload[STEM][1]) // 2
    dest = _get([server.url("good") + NAME], tmp_path / NAME, payload)  # "next run"
    assert server.ranges("good") == [f"bytes={len(payload[STEM][1]) // 2}-"]
    assert dest.read_bytes() == payload[STEM][1] and not part.exists()


def test_stale_part_that_does_not_splice_is_refetched_from_zero(server, payload, tmp_path):
    (tmp_path / (NAME + ".part")).write_bytes(b"\x1f\x8b" + b"x" * 100)  # another mirror's bytes
    dest = _get([server.url("good") + NAME], tmp_path / NAME, payload, retries=1)
    assert server.ranges("good") == ["bytes=102-", None]
    assert dest.read_bytes() == payload[STEM][1]


def test_complete_part_answered_416_is_verified_and_used(server, payload, tmp_path):
    gz = payload[STEM][1]
    (tmp_path / (NAME + ".part")).write_bytes(gz)  # a run that died before the rename
    dest = _get([server.url("good") + NAME], tmp_path / NAME, payload)
    assert server.ranges("good") == [f"bytes={len(gz)}-"]
    assert dest.read_bytes() == gz


# 5. files present: no network


def test_present_files_touch_no_network(spec, server, payload, tmp_path):
    for stem, (array, gz) in payload.items():
        if "labels" in stem:
            write_idx(tmp_path / stem, array, compress=False)  # raw files count as present
        else:
            (tmp_path / f"{stem}.gz").write_bytes(gz)
    mirrors = [_closed_port_url(), server.url("good")]
    assert download_dataset(spec, tmp_path, mirrors=mirrors, progress=False) == []
    assert server.requests == []


def test_only_missing_files_are_fetched(spec, server, payload, tmp_path):
    for stem in spec.stems()[1:]:
        (tmp_path / f"{stem}.gz").write_bytes(payload[stem][1])
    assert download_dataset(spec, tmp_path, progress=False) == [tmp_path / NAME]
    assert [path for path, _ in server.requests] == [f"/good/{NAME}"]

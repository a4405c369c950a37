"""Datasets: MNIST and Fashion-MNIST from IDX files, checksummed, cached, offline-first.

The data root holds one folder per dataset (``<root>/mnist/``, ``<root>/fashion-mnist/``).
It is, in order: the ``data_dir`` argument (``--data-dir``), ``$LENET5_DATA_DIR``, then the
user cache directory. Files present and verified touch no network; missing files are fetched
by :mod:`lenet5.data.download` from the mirrors below, only those of the split asked for.

Every file's shape (count, rows, cols) is part of its spec, so its decompressed size is known
before a byte is inflated: a file (or a download) that would inflate past it is refused.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import IMAGES_MAGIC, LABELS_MAGIC, IDXError, nbytes, read_idx_checked

SPLITS = ("train", "test")
ENV_VAR = "LENET5_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    # file stem (decompressed name) -> SHA-256 of the decompressed bytes
    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    # pixel mean/std of the training images scaled to [0, 1] (measured by `lenet5 data info`)
    mean: float
    std: float
    files: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    )
    # images per split and their size: with them, each file's exact decompressed size
    counts: dict[str, int] = field(default_factory=lambda: {"train": 60_000, "test": 10_000})
    image_size: tuple[int, int] = (28, 28)

    def stems(self, splits: tuple[str, ...] | None = None) -> list[str]:
        return [stem for split, pair in self.files.items() if splits is None or split in splits
                for stem in pair]

    def shape(self, stem: str) -> tuple[int, ...]:
        """The array a file holds: ``(count, 28, 28)`` for images, ``(count,)`` for labels."""
        for split, (images, labels) in self.files.items():
            if stem == images:
                return (self.counts[split], *self.image_size)
            if stem == labels:
                return (self.counts[split],)
        raise KeyError(f"{stem!r} is not a file of {self.name}")

    def nbytes(self, stem: str) -> int:
        """The exact decompressed size of a file (IDX header included)."""
        return nbytes(self.shape(stem))


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        classes=tuple(str(d) for d in range(10)),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        mean=0.2860,
        std=0.3530,
    ),
}


class DataError(RuntimeError):
    """A dataset cannot be loaded: missing, corrupt, mismatched or failing its checksum."""


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def resolve_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, then ``$LENET5_DATA_DIR``, then the user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lenet5")) / "data"


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``ROOT/NAME``. A root that holds the dataset's files itself (``--data-dir .../mnist``,
    an easy slip) is refused, naming the folder meant, rather than searched and downloaded
    into ``mnist/mnist``."""
    spec = get_spec(name)
    root = resolve_data_root(data_dir)
    directory = root / spec.name
    stems = spec.stems()
    if (not any(find_file(directory, s) for s in stems)
            and any(find_file(root, s) for s in stems)):
        raise DataError(
            f"{root} holds the {spec.name} files itself: --data-dir (or ${ENV_VAR}) names the "
            f"folder above it, {root.parent}, whose {spec.name}/ holds them"
        )
    return directory


def find_file(directory: Path, stem: str) -> Path | None:
    """The gzip file if present, else the raw one, else None."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def missing_files(
    name: str, data_dir: str | os.PathLike | None = None, splits: tuple[str, ...] | None = None
) -> list[str]:
    """Stems of the files (of ``splits``, default all) not present in the dataset's folder."""
    directory = dataset_dir(name, data_dir)
    return [stem for stem in get_spec(name).stems(splits) if find_file(directory, stem) is None]


def ensure_downloaded(
    name: str,
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    splits: tuple[str, ...] | None = None,
) -> Path:
    """Fetch the missing files of ``splits`` (default all); no network when they are present.

    A failed download is one line naming the folder looked in and how to point at the data.
    """
    directory = dataset_dir(name, data_dir)
    missing = missing_files(name, data_dir, splits)
    if missing:
        from .download import DownloadError

        try:
            download_dataset(get_spec(name), directory, progress=progress, stems=missing)
        except DownloadError as e:
            raise DataError(
                f"{directory}: {', '.join(missing)} not found there and the download failed "
                f"({e}). Point --data-dir DIR or ${ENV_VAR} at a folder whose {name}/ holds the "
                f"IDX files, or run `lenet5 data download --dataset {name}` where the network "
                "is reachable"
            ) from None
    return directory


def download_dataset(
    spec: DatasetSpec,
    directory: str | os.PathLike,
    *,
    mirrors: Sequence[str] | None = None,
    stems: Sequence[str] | None = None,
    **options,
) -> list[Path]:
    """Download every missing ``<stem>.gz`` of ``spec`` (or of ``stems``) into ``directory``;
    return those fetched.

    A file already present (gzip or raw, see :func:`find_file`) is not touched and costs no
    network request. ``mirrors`` (base URLs) overrides ``spec.mirrors``, e.g. for an internal
    copy; ``options`` (``progress``, ``retries``, ``backoff``, ``timeout``) go to
    :func:`lenet5.data.download.download_file`. Each file is capped at its spec's size.
    """
    from .download import download_file

    directory = Path(directory)
    bases = [b if b.endswith("/") else b + "/" for b in (spec.mirrors if mirrors is None else mirrors)]
    missing = [stem for stem in (spec.stems() if stems is None else stems)
               if find_file(directory, stem) is None]
    made = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    if missing:
        directory.mkdir(parents=True, exist_ok=True)
    try:
        return [
            download_file([base + f"{stem}.gz" for base in bases], directory / f"{stem}.gz",
                          sha256=spec.sha256.get(stem), size=spec.nbytes(stem), **options)
            for stem in missing
        ]
    except BaseException:
        for p in made:  # a mistyped --data-dir leaves no empty folders behind
            try:
                p.rmdir()
            except OSError:  # not empty (a file came), or not ours to remove
                break
        raise


@functools.lru_cache(maxsize=8)
def _load(
    path: Path, mtime_ns: int, magic: int, shape: tuple[int, ...], fewer_ok: bool
) -> tuple[np.ndarray, str]:
    """(read-only array, SHA-256 of the decompressed content); never inflates past ``shape``."""
    try:
        array, digest = read_idx_checked(path, magic, shape=shape, fewer_ok=fewer_ok)
    except IDXError as e:
        raise DataError(str(e)) from None
    array.setflags(write=False)
    return array, digest


def _load_file(spec: DatasetSpec, path: Path, stem: str, exact: bool) -> tuple[np.ndarray, str]:
    """One file of ``spec`` and its digest: exactly the published shape, or (``exact=False``) at
    most as many items."""
    magic = IMAGES_MAGIC if stem in {images for images, _ in spec.files.values()} else LABELS_MAGIC
    return _load(path, path.stat().st_mtime_ns, magic, spec.shape(stem), not exact)


def _check_sum(spec: DatasetSpec, path: Path, stem: str, digest: str) -> None:
    if digest != spec.sha256[stem]:
        raise DataError(
            f"{path}: checksum mismatch (SHA-256 of decompressed content {digest[:16]}..., "
            f"expected {spec.sha256[stem][:16]}...); the file is corrupt or not the published "
            f"one. Delete it and run `lenet5 data download --dataset {spec.name}` (with the same "
            "--data-dir) to fetch it again"
        )


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) uint8`` of one split, validated.

    Needs (and downloads, if ``download``) only that split's two files. ``verify=False`` skips
    the checksum and accepts fewer images than published, never more.
    """
    spec = get_spec(name)
    if split not in spec.files:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    directory = dataset_dir(name, data_dir)
    if download:
        ensure_downloaded(name, data_dir, splits=(split,))
    arrays = []
    for stem in spec.files[split]:
        path = find_file(directory, stem)
        if path is None:
            raise DataError(
                f"{directory / (stem + '.gz')}: not found (run `lenet5 data download "
                f"--dataset {name}` or point --data-dir DIR or ${ENV_VAR} at a folder whose "
                f"{name}/ holds it)"
            )
        array, digest = _load_file(spec, path, stem, exact=verify)
        if verify:
            _check_sum(spec, path, stem, digest)
        arrays.append(array)
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{directory}: {split} split has {images.shape[0]} images but {labels.shape[0]} labels "
            "(files from different splits or datasets?)"
        )
    if images.shape[1:] != (28, 28):
        raise DataError(f"{directory}: images are {images.shape[1:]}, expected (28, 28)")
    if labels.size and labels.max() >= len(spec.classes):
        raise DataError(f"{directory}: label {int(labels.max())} out of range for {name}")
    return images, labels


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Counts, class histograms, pixel statistics and checksum status (``lenet5 data info``)."""
    spec = get_spec(name)
    directory = dataset_dir(name, data_dir)
    info: dict = {"dataset": name, "directory": str(directory), "files": {}, "splits": {}}
    for stem in spec.stems():
        path = find_file(directory, stem)
        entry = {"path": str(path) if path else None, "sha256_expected": spec.sha256[stem]}
        if path is None:
            entry.update(present=False, verified=False)
        else:
            got = _load_file(spec, path, stem, exact=True)[1]
            entry.update(present=True, sha256=got, verified=got == spec.sha256[stem])
        info["files"][stem] = entry
    for split in SPLITS:
        images, labels = load_split(name, split, data_dir, download=False, verify=True)
        mean, std = _pixel_stats(images)
        info["splits"][split] = {
            "images": int(images.shape[0]),
            "labels": int(labels.shape[0]),
            "shape": list(images.shape[1:]),
            "class_counts": np.bincount(labels, minlength=len(spec.classes)).tolist(),
            "pixel_mean": round(mean, 5),
            "pixel_std": round(std, 5),
        }
    info["all_verified"] = all(f["verified"] for f in info["files"].values())
    return info


def _pixel_stats(images: np.ndarray, block: int = 1 << 20) -> tuple[float, float]:
    """Mean and standard deviation of the pixels scaled to [0, 1], from exact integer sums
    taken a block at a time (a float copy of the training images would be 376 MB)."""
    flat, n = images.reshape(-1), images.size
    total = int(flat.sum(dtype=np.uint64))
    squares = sum(int(np.square(flat[i : i + block], dtype=np.uint32).sum(dtype=np.uint64))
                  for i in range(0, n, block))
    return total / n / 255, math.sqrt(max(squares * n - total * total, 0)) / n / 255

"""Datasets: MNIST and Fashion-MNIST from IDX files, checksummed, cached, offline-first.

The data root holds one folder per dataset (``<root>/mnist/``, ``<root>/fashion-mnist/``).
It is, in order: the ``data_dir`` argument (``--data-dir``), ``$LENET5_DATA_DIR``, then the
user cache directory. Files present and verified touch no network; missing files are fetched
by :mod:`lenet5.data.download` from the mirrors below.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import IMAGES_MAGIC, LABELS_MAGIC, IDXError, parse, read_bytes

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

    def stems(self) -> list[str]:
        return [stem for pair in self.files.values() for stem in pair]


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
    return resolve_data_root(data_dir) / get_spec(name).name


def find_file(directory: Path, stem: str) -> Path | None:
    """The gzip file if present, else the raw one, else None."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def missing_files(name: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    directory = dataset_dir(name, data_dir)
    return [stem for stem in get_spec(name).stems() if find_file(directory, stem) is None]


def ensure_downloaded(
    name: str, data_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Fetch whatever files are missing; no network at all when everything is present."""
    directory = dataset_dir(name, data_dir)
    if missing_files(name, data_dir):
        from .download import download_dataset

        download_dataset(get_spec(name), directory, progress=progress)
    return directory


@functools.lru_cache(maxsize=8)
def _load_verified(path: Path, mtime_ns: int, expect_magic: int, sha256: str | None) -> np.ndarray:
    import hashlib

    data = read_bytes(path)
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise DataError(
                f"{path}: checksum mismatch (SHA-256 of decompressed content {got[:16]}..., "
                f"expected {sha256[:16]}...); the file is corrupt or not the published one. "
                "Delete it to re-download, or pass verify=False / --no-verify to load anyway."
            )
    array = parse(data, name=str(path), expect_magic=expect_magic)
    array.setflags(write=False)
    return array


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) uint8`` of one split, validated."""
    spec = get_spec(name)
    if split not in spec.files:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    directory = dataset_dir(name, data_dir)
    image_stem, label_stem = spec.files[split]
    if download and (find_file(directory, image_stem) is None or find_file(directory, label_stem) is None):
        ensure_downloaded(name, data_dir)
    arrays = []
    for stem, magic in ((image_stem, IMAGES_MAGIC), (label_stem, LABELS_MAGIC)):
        path = find_file(directory, stem)
        if path is None:
            raise DataError(
                f"{directory / (stem + '.gz')}: not found (run `lenet5 data download "
                f"--dataset {name}` or point --data-dir / ${ENV_VAR} at a folder holding it)"
            )
        try:
            arrays.append(
                _load_verified(path, path.stat().st_mtime_ns, magic, spec.sha256[stem] if verify else None)
            )
        except IDXError as e:
            raise DataError(str(e)) from None
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
    import hashlib

    spec = get_spec(name)
    directory = dataset_dir(name, data_dir)
    info: dict = {"dataset": name, "directory": str(directory), "files": {}, "splits": {}}
    for stem in spec.stems():
        path = find_file(directory, stem)
        entry = {"path": str(path) if path else None, "sha256_expected": spec.sha256[stem]}
        if path is None:
            entry.update(present=False, verified=False)
        else:
            got = hashlib.sha256(read_bytes(path)).hexdigest()
            entry.update(present=True, sha256=got, verified=got == spec.sha256[stem])
        info["files"][stem] = entry
    for split in SPLITS:
        images, labels = load_split(name, split, data_dir, download=False, verify=True)
        scaled = images.astype(np.float64) / 255.0
        info["splits"][split] = {
            "images": int(images.shape[0]),
            "labels": int(labels.shape[0]),
            "shape": list(images.shape[1:]),
            "class_counts": np.bincount(labels, minlength=len(spec.classes)).tolist(),
            "pixel_mean": round(float(scaled.mean()), 5),
            "pixel_std": round(float(scaled.std()), 5),
        }
    info["all_verified"] = all(f["verified"] for f in info["files"].values())
    return info

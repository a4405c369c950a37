"""The photo generator for ``bench_photos.py``, taken from this checkout's package even when
the benchmark measures an older commit (which may not have it): the same pages either way."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_lenet5_photos", Path(__file__).resolve().parent.parent / "src" / "lenet5" / "data" / "photos.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
KINDS, photo_page = _mod.KINDS, _mod.photo_page

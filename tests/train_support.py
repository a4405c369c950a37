"""Shared by the resume tests: the same run trained straight through, and cut and resumed."""

from __future__ import annotations

from pathlib import Path

from lenet5.training.loop import train


def train_straight_and_resumed(make_cfg, tmp_path: Path, epochs: int = 2, **kw):
    """``make_cfg(out, **kw)`` trained ``epochs`` straight, and ``epochs - 1`` then resumed to
    ``epochs``; returns ``(straight_dir, split_dir, straight_last_row)``."""
    quiet = lambda *a: None  # noqa: E731
    straight, split = tmp_path / "straight", tmp_path / "split"
    row = train(make_cfg(straight, epochs=epochs, **kw), log=quiet)
    train(make_cfg(split, epochs=epochs - 1, **kw), log=quiet)
    train(make_cfg(split, epochs=epochs, resume=str(split), **kw), log=quiet)
    return straight, split, row

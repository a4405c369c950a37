"""The run directory: which one a run writes to, and that nothing in it is lost.

- A run directory is written by one run at a time: the run holds an exclusive ``flock`` on
  ``DIR/.lock`` from before it reads anything until it returns (then the file goes), and a
  second run into the same directory stops at once, naming the directory and the process that
  holds it.
- A finished (or interrupted) run is never replaced by accident: a new run refuses a directory
  that holds a checkpoint or metrics, unless it is told ``--overwrite`` (then those files go
  first) or continues the run with ``--resume``.
- A checkpoint that cannot be written (a full disk) stops the run with one line; the atomic
  writes of :mod:`lenet5.checkpoint` leave the previous checkpoint as it was.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from .. import checkpoint as ckpt

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the other checks still hold
    fcntl = None

LOCK_NAME = ".lock"
METRICS_NAME = "metrics.jsonl"
RUN_FILES = (ckpt.CHECKPOINT_NAME, "checkpoint.json", METRICS_NAME, "config.json")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: in use, or it holds a run already."""


def run_directory(resume: str | None, out: str | None, default: Path) -> Path:
    """Where the run writes: the resumed run's directory (given as the directory or as its
    ``checkpoint.safetensors``), else ``out``, else ``default``."""
    if resume:
        path = Path(resume)
        if path.is_file():
            if path.name != ckpt.CHECKPOINT_NAME:
                raise RunDirError(f"--resume {resume}: give a run directory or its "
                                  f"{ckpt.CHECKPOINT_NAME}, not another file")
            return path.parent
        return path
    return Path(out) if out else default


class RunLock:
    """``with RunLock(dir):`` holds ``dir/.lock`` exclusively (creating ``dir``), else raises
    :class:`RunDirError` at once. The lock file holds the holder's process id while it runs
    and is removed when it is done; if the holder dies, the kernel releases the lock and the
    next run takes it over. A directory the lock created and that is empty afterwards (the run
    failed before writing anything) is removed again."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        if self.dir.exists() and not self.dir.is_dir():
            raise RunDirError(f"{self.dir} is a file, not a run directory")
        self.created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
                os.close(fd)
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise RunDirError(f"{self.dir} is in use by another training run{who}; wait "
                                  "for it to finish or choose another --out") from None
            if self._is_current(fd):
                break
            os.close(fd)  # its holder removed that file between our open and our lock: again
        else:
            raise RunDirError(f"{self.dir}: could not take {self.path.name}")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _is_current(self, fd: int) -> bool:
        """The file we hold is still the one at ``self.path`` (not one removed meanwhile)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it, then release it
            os.close(self.fd)
            self.fd = None
        if self.created and not any(self.dir.iterdir()):
            self.dir.rmdir()


def claim_for_new_run(run_dir: Path, overwrite: bool) -> None:
    """Refuse a directory holding a run unless ``overwrite``; with it, remove that run's files
    (only those) so nothing of it mixes with the new one. Call it holding the lock."""
    held = [name for name in (ckpt.CHECKPOINT_NAME, METRICS_NAME) if (run_dir / name).exists()]
    if held and not overwrite:
        raise RunDirError(f"{run_dir} already holds a run ({', '.join(held)}); continue it "
                          f"with --resume {run_dir}, or replace it with --overwrite")
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)


@contextmanager
def saving(run_dir: Path, epoch: int, last_saved: int | None):
    """Turn a failed write of epoch ``epoch``'s files into one :class:`OSError` line that says
    what happened and which checkpoint survives. (:func:`lenet5.checkpoint.save_checkpoint`
    reports its own failures in one line already; a full disk is said in plain words here.)"""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError, ckpt.CheckpointError) as e:
        if isinstance(e, ckpt.CheckpointError) and not _disk_full(e):
            raise
        kept = (f"the checkpoint of epoch {last_saved} there is intact" if last_saved
                else "no checkpoint had been saved yet")
        raise OSError(f"could not save epoch {epoch} in {run_dir}: {_reason(e)}; {kept}") from None


def _disk_full(e: BaseException) -> bool:
    """Whichever library saw it: an errno, or Rust's ``StorageFull`` from safetensors."""
    text = str(e)
    return (getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or "StorageFull" in text or "No space left on device" in text)


def _reason(e: BaseException) -> str:
    if _disk_full(e):
        return "no space left on device"
    if getattr(e, "strerror", None):
        return e.strerror
    text = " ".join(str(e).split())
    return text or type(e).__name__

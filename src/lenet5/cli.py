"""``lenet5`` command line: a thin dispatcher over :mod:`lenet5.commands`.

Each module in ``lenet5/commands/`` defines ``register(subparsers)`` that adds its
sub-command(s) with ``set_defaults(func=...)``; the work itself lives in library functions.
Errors a user can cause (bad file, bad option) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="lenet5",
        description="LeNet-5 (LeCun et al., 1998) on MNIST: train, reproduce, inspect, use.",
    )
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser = sub.add_parser

    def with_description(name, **kwargs):  # `lenet5 CMD --help` opens with the line `lenet5 -h` shows
        kwargs.setdefault("description", kwargs.get("help"))
        return add_parser(name, **kwargs)

    sub.add_parser = with_description
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    as_process = argv is None  # the ``lenet5`` command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = int(args.func(args) or 0)
        if as_process and rc == 0 and getattr(args, "quick_exit", False):
            quick_exit()
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``lenet5 ... | head``): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, RuntimeError) as e:
        # Expected failures (bad data, bad checkpoint, bad option): one clear line.
        print(f"lenet5: error: {error_line(e)}", file=sys.stderr)
        return 1


def error_line(e: BaseException) -> str:
    """The one line an expected failure prints. The system's own errors name the path and say
    what is wrong with it in words ("runs/x: a file is in the way of a directory"), not as
    "[Errno 17] File exists: 'runs'"; every other error is its message."""
    import errno

    if not isinstance(e, OSError) or e.errno is None or e.filename is None:
        return str(e)
    path = os.fsdecode(e.filename)
    if e.errno in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder is needed?
        blocker = next((p for p in [path, *map(str, Path(path).parents)] if os.path.isfile(p)),
                       None)
        if blocker is not None:
            return f"{blocker}: a file is in the way of a directory" + (
                f" ({path})" if blocker != path else "")
    why = {
        errno.EEXIST: "already exists",
        errno.ENOTDIR: "a part of this path is a file, not a directory",
        errno.EISDIR: "is a directory, not a file",
        errno.ENOENT: "no such file or directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "not permitted",
        errno.EROFS: "on a read-only file system",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "over the disk quota",
        errno.ENAMETOOLONG: "the name is too long",
    }.get(e.errno, (e.strerror or str(e)).lower())
    return f"{path}: {why}"


def quick_exit() -> None:
    """End the process now, without the interpreter's teardown of its modules: PyTorch's and
    Numba's take 0.5-1 s here. Only for a command that has finished its work (every file
    written atomically and closed, no child process or server left) and asks for it
    (``quick_exit`` in its defaults), run as ``lenet5`` in one process, not under torchrun."""
    if "WORLD_SIZE" in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

"""``lenet5 train --nproc N``: re-run the same command under torchrun on this machine.

No process pool of our own: torchrun (``python -m torch.distributed.run``) starts the N ranks,
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, and kills the survivors when
one rank fails. :func:`lenet5.train.train` reads those variables, wraps the model in
DistributedDataParallel (gloo on CPU, NCCL on GPUs) and shards every global batch.
"""

from __future__ import annotations

import socket
import subprocess
import sys

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it) for the rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, so the ranks do not launch again."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, argv: list[str], port: int | None = None) -> list[str]:
    """The command line that runs ``lenet5 train <argv>`` in ``nproc`` local ranks."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", LOCALHOST, "--master-port", str(port or free_port()),
        "-m", "lenet5", "train", *strip_nproc(argv),
    ]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``lenet5 train <argv>`` (``--nproc`` removed) in ``nproc`` ranks; torchrun's status."""
    return subprocess.run(torchrun_command(nproc, argv), check=False).returncode

"""What every benchmark records about where it ran: command, commit, CPU, load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def machine_info(threads: int) -> dict:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": commit,
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        # Other processes skew CPU timings; the 1-minute load average says how busy it was.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }

"""Where a benchmark ran: the source checkout's commit and the machine."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_state(root: Path = REPO_ROOT) -> dict:
    """Short commit hash and the number of uncommitted changes of the source checkout."""
    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.rstrip() if done.returncode == 0 else None

    commit = git("log", "-1", "--format=%h")
    status = git("status", "--porcelain")
    changed = [line[3:] for line in status.splitlines()] if status else []
    return {"commit": commit, "uncommitted_changes": len(changed), "changed_files": changed[:50]}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    """CPU, cores, memory, package versions and the load average at the start."""
    import onnxruntime as ort

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        total = None
    torch_version = None
    if importlib.util.find_spec("torch") is not None:
        from importlib.metadata import PackageNotFoundError, version

        with contextlib.suppress(PackageNotFoundError):
            torch_version = version("torch")
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "memory_gib": round(total, 1) if total else None,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()),
    }


def yuzu_onnx_version() -> str:
    """The version of the yuzu-onnx package benchmarked."""
    from yuzu_onnx import __version__

    return __version__

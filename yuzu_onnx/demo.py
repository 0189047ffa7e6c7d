"""The ``demo`` command's work: the shipped motif model on the shipped sequences.

Convert ``demo_motifs.onnx``, run it on ``demo_sequences.fa``, find each sequence's most
important position (the largest mean drop of the output when it is mutated), say whether it
lies in a planted motif site (``demo_motifs.tsv``), and plot the first sequence. The three
files are package data (``yuzu_onnx/demo_data/``, written by ``tools/train_demo.py``), so
the demo runs from any folder once the package is installed.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputError, YuzuWarning, install_hint

DEMO_DATA = "demo_data"  # the package data folder beside this module
DEMO_MODEL = "demo_motifs.onnx"
DEMO_SEQUENCES = "demo_sequences.fa"
DEMO_SITES = "demo_motifs.tsv"

# package data read from a zip (zipimport) is copied to temporary files, removed at exit
_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


@dataclass(frozen=True)
class DemoRun:
    """A finished demo run: ``importance`` has shape (N, Lw), one row per sequence in ``names``."""

    out: Path
    output: str
    names: list[str]
    window_start: int
    importance: np.ndarray


@dataclass(frozen=True)
class ImportantPosition:
    """A sequence's most important position; ``note`` places it among the planted sites."""

    name: str
    position: int
    drop: float
    note: str


def demo_data_file(name: str) -> Path | None:
    """The path of the package data file ``yuzu_onnx/demo_data/<name>`` (``None`` when it is missing)."""
    try:
        resource = resources.files(f"{__package__}.{DEMO_DATA}") / name
    except ModuleNotFoundError:  # an install without the demo_data package
        return None
    if not resource.is_file():
        return None
    return _EXTRACTED.enter_context(resources.as_file(resource))


def find_demo_files() -> tuple[Path, Path, Path | None]:
    """The demo model, sequences and (optional) planted-site table, from the installed package."""
    model, seqs = demo_data_file(DEMO_MODEL), demo_data_file(DEMO_SEQUENCES)
    if model is None or seqs is None:
        missing = ", ".join(name for name, path in ((DEMO_MODEL, model), (DEMO_SEQUENCES, seqs)) if path is None)
        raise InputError(
            f"the demo data ({missing}) is missing from the installed package in "
            f"{Path(__file__).resolve().parent / DEMO_DATA}; reinstall yuzu-onnx "
            "(pip uninstall yuzu-onnx, then pip install '.[plot]' in the yuzu-onnx repository)"
        )
    return model, seqs, demo_data_file(DEMO_SITES)


def read_sites(path: Path | None) -> dict[str, list[tuple[str, int, int]]]:
    """Sequence name → planted ``(motif, start, end)`` sites, from the sites TSV (empty without one)."""
    sites: dict[str, list[tuple[str, int, int]]] = {}
    if path is None:
        return sites
    lines = path.read_text("utf-8").splitlines()
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) >= 4:
            sites.setdefault(fields[0], []).append((fields[1], int(fields[2]), int(fields[3])))
    return sites


def demo_folder(out: str | os.PathLike) -> Path:
    """The demo's output folder, created when its parent exists."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"demo output {str(folder)!r} exists and is not a folder")
    if not folder.parent.is_dir() and str(folder.parent):
        raise InputError(f"folder {str(folder.parent)!r} does not exist (for the demo output {str(folder)!r})")
    folder.mkdir(exist_ok=True)
    return folder


def convert_demo(model: Path, folder: Path):
    """Convert the demo model into ``folder``; returns the conversion and the ISM model's path."""
    from .convert import convert_model
    from .sidecar import save_conversion

    conv = convert_model(model)
    ism_path = folder / "demo_motifs.ism.onnx"
    save_conversion(conv, ism_path)
    return conv, ism_path


def run_demo(ism_path: Path, model: Path, sequences: Path, folder: Path, *, quiet: bool = False) -> DemoRun:
    """Run the converted demo model on the demo sequences into ``folder/demo_ism.npz``."""
    from .partial_store import file_sha256, partial_path
    from .pipeline import load_sequences, run_to_files
    from .progress import Progress, summary_line
    from .runners import ConvertedRunner
    from .session import ISMSession

    runner = ConvertedRunner(ISMSession(ism_path))
    batch = load_sequences(sequences, runner.sequence_spec)
    out = folder / "demo_ism.npz"
    partial = partial_path(out)
    if partial.exists():  # a demo run is cheap: start over instead of asking for --resume
        shutil.rmtree(partial)
    progress = Progress(len(batch), quiet=quiet, label=runner.kind)
    report = run_to_files(runner, batch, out, model_sha256=file_sha256(ism_path),
                          input_sha256=file_sha256(sequences),
                          metadata={"command": "demo", "model": str(model), "input": str(sequences)},
                          progress=progress, keep_arrays=True)
    progress.summary(summary_line(n_sequences=report.n_sequences, seconds=report.seconds, path=report.path,
                                  provider=report.provider, what=runner.kind))
    name = runner.output_names[0]
    ism = report.arrays[name].reshape(len(batch), *report.arrays[name].shape[1:3], -1).sum(axis=3)
    if runner.layout == "nlc":
        ism = ism.transpose(0, 2, 1)
    # importance of a position: how much the output drops, on average, when it is mutated
    importance = -ism.sum(axis=1) / (ism.shape[1] - 1)  # (N, Lw)
    return DemoRun(out, name, list(batch.names), runner.window[0], importance)


def important_positions(run: DemoRun, sites: dict[str, list[tuple[str, int, int]]]) -> list[ImportantPosition]:
    """Each sequence's most important position, placed among its planted ``sites``."""
    found = []
    for i, seq_name in enumerate(run.names):
        j = int(np.argmax(run.importance[i]))
        pos = run.window_start + j
        planted = sites.get(seq_name, [])
        inside = [f"{m} site {s}-{e}" for m, s, e in planted if s <= pos < e]
        note = f"inside the planted {inside[0]}" if inside else (
            "planted: " + ", ".join(f"{m} {s}-{e}" for m, s, e in planted) if planted else "")
        found.append(ImportantPosition(seq_name, pos, float(run.importance[i, j]), note))
    return found


def plot_demo(run: DemoRun, folder: Path) -> Path | None:
    """Plot the first sequence's ISM to ``folder/demo_ism.png`` (``None``, with a warning, without matplotlib)."""
    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn(f"no plot: matplotlib is missing; {install_hint('matplotlib', 'plot')}", YuzuWarning,
                      stacklevel=2)
        return None
    from .plot import plot_from_npz

    fig = folder / "demo_ism.png"
    plot_from_npz(run.out, index=0, path=fig)
    return fig

"""The partial store of a run: finished chunks kept next to the output until it is written.

``OUT.partial/`` holds one ``chunk-NNNNNN-oK.npy`` per finished chunk of sequences and
output (stores of earlier versions: one ``chunk-NNNNNN.npz`` per chunk, still read) and
``progress.json``, the record of what the chunks belong to: the SHA-256 of the model, of
the input file and of the encoded sequences, the options, and the finished chunks. A run
with ``resume=True`` continues from the store and refuses when the model, the input or
an option that changes the results differs (batch size, device, threads and memory
budget may change); one without it refuses to overwrite a store. Every file is written
atomically, so an interruption at any moment leaves a readable store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import write_json
from .errors import InputError, YuzuWarning, option
from .progress import plural
from .results import write_npy_in_rows
from .sequences import SequenceBatch

PARTIAL_FORMAT = "yuzu-onnx-partial/1"
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"
#: the entries of the record that must match for a run to resume, and what differs when not
IDENTITY_KEYS = (("model_sha256", "the model differs"), ("input_sha256", "the input file differs"),
                 ("sequences_sha256", "the input sequences differ"), ("options", "the options differ"))
#: recorded options that do not change the results: a run may resume with other values
#: (a smaller batch after running out of memory, another device, fewer threads)
RESULT_NEUTRAL_OPTIONS = frozenset({"batch_size", "sequences_per_call", "provider", "device", "threads",
                                    "max_memory", "quiet", "progress"})


def partial_path(out: Path) -> Path:
    """The partial store of an output: ``OUT.partial`` beside it."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sequences_sha256(batch: SequenceBatch) -> str:
    """SHA-256 of the encoded sequences and their names."""
    digest = hashlib.sha256()
    x = np.ascontiguousarray(batch.x, dtype=np.float32)
    digest.update(repr(x.shape).encode())
    digest.update(memoryview(x).cast("B"))
    digest.update("\n".join(batch.names).encode())
    return digest.hexdigest()


def recorded_batch_size(folder: Path) -> int | None:
    """The batch size an interrupted run used (``None`` when there is no readable record)."""
    try:
        record = json.loads((folder / PROGRESS_FILE).read_text("utf-8"))
        return int(record["options"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class PartialStore:
    """``OUT.partial/``: finished chunks and the record that says what they belong to."""

    def __init__(self, folder: Path, record: dict) -> None:
        self.folder = folder
        self.record = record

    @property
    def chunks(self) -> list[dict]:
        return self.record["chunks"]

    @property
    def rows_done(self) -> int:
        return self.chunks[-1]["stop"] if self.chunks else 0

    @classmethod
    def open(cls, folder: Path, identity: dict, *, resume: bool) -> PartialStore:
        """Create the store, or continue the one there (``resume``) after checking it matches.

        Parameters
        ----------
        folder: ``OUT.partial``.
        identity: the record's entries that identify the run (:data:`IDENTITY_KEYS`, and
            ``n_sequences`` and ``outputs``).
        resume: continue a store that is there (without it, a store there is refused).
        """
        if folder.exists():
            old = _read_record(folder)
            _check_resumable(folder, old, identity, resume=resume)
            store = cls(folder, old)
            store._keep_valid_chunks()
            return store
        if resume:
            warnings.warn(f"nothing to resume: {str(folder)!r} does not exist; starting from the first sequence",
                          YuzuWarning, stacklevel=3)
        folder.mkdir()
        store = cls(folder, {"format": PARTIAL_FORMAT, **identity, "chunks": []})
        store.save_record()
        return store

    def _keep_valid_chunks(self) -> None:
        good, expect = [], 0
        for chunk in self.chunks:
            files = chunk.get("files") or [chunk.get("file", "")]
            if chunk.get("start") != expect or not all(f and (self.folder / f).is_file() for f in files):
                break
            good.append(chunk)
            expect = chunk["stop"]
        self.record["chunks"] = good

    def save_record(self) -> None:
        """Write ``progress.json``."""
        write_json(self.folder / PROGRESS_FILE, self.record, sort_keys=True)

    def add_chunk(self, start: int, stop: int, parts: Mapping[str, Sequence[np.ndarray]], order: Sequence[str]) -> None:
        """Store the results of sequences ``start:stop``: ``parts[name]``, the blocks of rows
        of each output in ``order``, written one after another into one ``.npy`` per output
        (not concatenated first; read back memory-mapped)."""
        files = [f"chunk-{len(self.chunks):06d}-o{i}.npy" for i in range(len(order))]
        for file, out in zip(files, order):
            write_npy_in_rows(self.folder / file, parts[out], (stop - start, *np.shape(parts[out][0])[1:]))
        self.chunks.append({"files": files, "start": start, "stop": stop})
        self.save_record()

    def load_chunk(self, chunk: dict, order: Sequence[str]) -> dict[str, np.ndarray]:
        """The arrays of one stored chunk, by output name."""
        return {out: self.load_output(chunk, i) for i, out in enumerate(order)}

    def load_output(self, chunk: dict, index: int) -> np.ndarray:
        """Output number ``index`` (in the store's order) of one stored chunk (memory-mapped,
        read-only; an array for a chunk of an earlier version's ``.npz``)."""
        file = chunk["files"][index] if "files" in chunk else chunk["file"]
        try:
            if "files" in chunk:
                return np.load(self.folder / file, mmap_mode="r", allow_pickle=False)
            with np.load(self.folder / file, allow_pickle=False) as data:
                return data[f"o{index}"]
        except Exception as exc:
            raise InputError(
                f"cannot read {file!r} in the partial store {str(self.folder)!r} "
                f"({type(exc).__name__}); delete the folder to start over"
            ) from None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_record(folder: Path):
    """The store's record, or ``None`` when it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((folder / PROGRESS_FILE).read_text("utf-8"))
    return None


def _check_resumable(folder: Path, old, identity: dict, *, resume: bool) -> None:
    """Refuse a store that is there without ``resume``, or one that is not this run's."""
    if not resume:
        done = ""
        if isinstance(old, dict) and old.get("chunks"):
            total = old.get("n_sequences")
            of = plural(total, "sequence") if isinstance(total, int) else "? sequences"
            done = f" ({old['chunks'][-1]['stop']} of {of} done)"
        raise InputError(
            f"{str(folder)!r} holds the partial results of an interrupted run{done}; rerun with "
            f"{option('resume', True)} to continue it, or delete that folder to start over"
        )
    if not isinstance(old, dict) or old.get("format") != PARTIAL_FORMAT:
        raise InputError(
            f"{str(folder)!r} is not a yuzu-onnx partial store (no readable {PROGRESS_FILE}); "
            "delete it to start over"
        )
    for key, what in IDENTITY_KEYS:
        before, now = old.get(key), identity[key]
        if key == "options":
            before, now = result_options(before), result_options(now)
        if before != now:
            detail = _options_difference(before, now) if key == "options" else ""
            raise InputError(
                f"cannot resume from {str(folder)!r}: {what} from the interrupted run's{detail}; "
                "rerun with the same model, input and options, or delete the folder to start over"
            )


def result_options(options) -> dict:
    """The recorded options that change the results (all but :data:`RESULT_NEUTRAL_OPTIONS`)."""
    if not isinstance(options, Mapping):
        return {}
    return {k: v for k, v in options.items() if k not in RESULT_NEUTRAL_OPTIONS}


def _options_difference(old: Mapping, new: Mapping) -> str:
    """`` (window: was [0, 64], now [0, 32])``: the options that differ."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return " (" + ", ".join(f"{k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in diff) + ")"

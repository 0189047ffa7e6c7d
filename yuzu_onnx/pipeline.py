"""Runs that lose nothing: ISM of a sequence file written to result files.

This is the logic shared by the ``run``, ``ism`` and ``naive`` commands:

* the output path is checked before any computation;
* the memory estimate is checked up front: a run whose single sequence cannot fit the
  budget is refused with the estimate and the option that fixes it;
* sequences run in batches; finished batches are gathered into *chunks* that go to a
  partial store next to the output (``OUT.partial/``: one ``chunk-NNNNNN.npz`` per chunk
  and ``progress.json`` holding the SHA-256 of the input file, of the encoded sequences
  and of the model, the options and the finished chunks). ``resume=True`` continues
  from it without recomputing finished sequences and refuses when the input, the model
  or the options differ. Batch boundaries are the same in both runs, so the result is
  identical to an uninterrupted run. The store is removed after success;
* every ISM value is checked to be finite: a model that produces NaN or inf is refused
  with a message naming the output and the sequence (the converted model has no
  separate reference output, so the check runs on the ISM values; when nearly all of a
  sequence's values are non-finite the reference output itself is the culprit, and the
  message says so);
* results are written to temporary files and renamed into place only when complete
  (:mod:`yuzu_onnx.results`), so an interrupted run never leaves a file that looks
  finished.

A runner computes ISM for a batch of sequences: :class:`ConvertedRunner` runs a
converted model, :class:`NaiveRunner` the naive oracle on the original model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError, ModelError, SequenceError, YuzuError, YuzuWarning
from .importer import NCL, ModelSpec
from .layout import SequenceSpec
from .progress import format_bytes
from .results import NpyStreamWriter, check_output_path, read_npy_dir, write_npz
from .sequences import SequenceBatch, read_sequences

PARTIAL_FORMAT = "yuzu-onnx-partial/1"
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"
FORMATS = ("npz", "npy")
RESERVED_KEYS = ("x", "names")
#: a chunk goes to the partial store after this many seconds of computing, or when full
CHUNK_SECONDS = float(os.environ.get("YUZU_CHUNK_SECONDS", "1.0"))
CHUNK_MAX_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- inputs


def load_sequences(path, spec: SequenceSpec | ModelSpec, *, genome=None, strand: bool = False) -> SequenceBatch:
    """Read ``path`` (NPY, NPZ, FASTA or BED with ``genome``); refuse an empty input."""
    batch = read_sequences(path, spec, genome=genome, strand=strand)
    if len(batch) == 0:
        raise SequenceError(f"{str(path)!r} holds no sequences")
    return batch


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


def memory_option(n_bytes: float) -> str:
    """A ``--max-memory`` value a little above ``n_bytes``: ``800K``, ``13M``, ``2.5G``."""
    need = n_bytes * 1.1
    if need < 2**20:
        return f"{-(-int(need) // 2**10)}K"
    if need < 2**30:
        return f"{-(-int(need) // 2**20)}M"
    return f"{-(-int(need * 10) // 2**30) / 10:g}G"


# --------------------------------------------------------------------------- reductions


def reduce_ism(ism: np.ndarray, how: str, *, reference: np.ndarray | None = None,
               sum_axis: int | None = None) -> np.ndarray:
    """Apply a reduction to a ``none`` ISM array, as the converted model does.

    Parameters
    ----------
    ism: shape=(N, A, Lw, *odims) or (N, Lw, A, *odims), reduction ``none``.
    how: ``none``, ``l2`` (norm over odims), ``sum`` (over odims axis ``sum_axis``,
        counted in the output's own axes, batch = 0) or ``raw`` (mutant outputs: the
        delta plus ``reference`` of shape (N, *odims)).
    """
    if how == "none":
        return ism
    if how == "l2":
        if ism.ndim == 3:
            return np.abs(ism)
        axes = tuple(range(3, ism.ndim))
        return np.sqrt(np.square(ism.astype(np.float64)).sum(axis=axes)).astype(np.float32)
    if how == "sum":
        if sum_axis is None:
            raise InputError("--reduce sum needs an output with a positional axis; use none or l2")
        return ism.sum(axis=3 + sum_axis - 1, dtype=np.float64).astype(np.float32)
    if how == "raw":
        if reference is None:
            raise ValueError("raw needs the reference outputs")
        ref = reference.astype(np.float32)[:, None, None]
        return (ism + ref).astype(np.float32)
    raise InputError(f"unknown reduction {how!r}; use none, l2, sum or raw")


# --------------------------------------------------------------------------- runners


class ConvertedRunner:
    """ISM with a converted model (:class:`yuzu_onnx.session.ISMSession`)."""

    kind = "ISM"

    def __init__(self, session) -> None:
        self.session = session
        info = session.info
        self.output_names = list(session.output_names)
        self.layout = info.layout
        self.alphabet = info.alphabet
        self.seq_len = info.seq_len
        self.window = tuple(info.window)
        self.reductions = {name: spec.get("reduce", "none") for name, spec in info.outputs.items()}
        self.source_sha256 = info.source_sha256
        self.peak_bytes_per_sequence = info.peak_bytes_per_sequence

    @property
    def provider(self) -> str:
        return self.session.provider

    @property
    def sequence_spec(self) -> SequenceSpec:
        return SequenceSpec(self.layout, self.alphabet, self.seq_len)

    def plan_batches(self, batch_size: int | None, max_memory) -> int:
        """Sequences per batch; refuses up front when one sequence cannot fit ``max_memory``."""
        from .session import default_memory_budget, parse_memory

        if batch_size is not None and batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        budget = parse_memory(max_memory) if max_memory is not None else default_memory_budget()
        need = max(self.peak_bytes_per_sequence, 1)
        if need > budget:
            raise InputError(
                f"one sequence needs about {format_bytes(need)} of memory but the budget is "
                f"{format_bytes(budget)}; raise --max-memory to at least {memory_option(need)} "
                "or convert with a narrower --window"
            )
        self.rows_per_batch = int(batch_size) if batch_size is not None else self.session.batch_size_for(budget)
        return self.rows_per_batch

    def batch_options(self) -> dict:
        return {"batch_size": self.rows_per_batch}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run_batch(x)
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values, strict=True)}


class NaiveRunner:
    """Naive ISM (:func:`yuzu_onnx.oracle.naive_ism`) on the original model.

    Parameters
    ----------
    spec: the imported model.
    outputs: output names (default all).
    window: ``(start, end)`` of the mutated positions.
    reductions: output → ``none``/``l2``/``sum``/``raw`` (default ``none``).
    mutant_batch_size: mutants per forward pass (default from ``max_memory``).
    """

    kind = "naive ISM"

    def __init__(self, spec: ModelSpec, *, outputs: Sequence[str] | None = None, window=None,
                 reductions: Mapping[str, str] | None = None, mutant_batch_size: int | None = None,
                 max_memory=None, device: str = "auto", threads: int | None = None) -> None:
        from .analysis.region import analyse_region
        from .convert import resolve_outputs, resolve_reductions
        from .plan import parse_window
        from .runtime import make_session

        self.spec = spec
        self.output_names = list(resolve_outputs(spec, outputs))
        self.reductions = resolve_reductions(reductions, self.output_names)
        self.window = parse_window(window, spec.seq_len)
        self.layout, self.alphabet, self.seq_len = spec.layout, spec.alphabet, spec.seq_len
        self.source_sha256 = spec.source_sha256
        self.sum_axes: dict[str, int | None] = {}
        if "sum" in self.reductions.values():
            region = analyse_region(spec)
            for name, how in self.reductions.items():
                if how == "sum":
                    m = region.maps.get(name)
                    if m is None:
                        raise InputError(
                            f"--reduce sum needs a positional output axis, but output {name!r} has none "
                            "(it is computed after the local region); use none or l2"
                        )
                    self.sum_axes[name] = m.axis
        if mutant_batch_size is not None and mutant_batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {mutant_batch_size}")
        self.mutant_batch_size = mutant_batch_size
        self.max_memory = max_memory
        self.session = make_session(spec.model, device=device, threads=threads)
        self.providers = self.session.get_providers()

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def sequence_spec(self) -> SequenceSpec:
        return SequenceSpec(self.layout, self.alphabet, self.seq_len)

    def plan_batches(self, batch_size: int | None, max_memory) -> int:
        """Sequences per call of ``naive_ism`` (``batch_size`` counts mutants here)."""
        from .oracle import auto_batch_size, bytes_per_sample
        from .session import parse_memory

        budget = parse_memory(max_memory) if max_memory is not None else None
        need = bytes_per_sample(self.spec)
        if budget is not None and need > budget:
            raise InputError(
                f"one mutant needs about {format_bytes(need)} of memory but the budget is "
                f"{format_bytes(budget)}; raise --max-memory to at least {memory_option(need)}"
            )
        self.max_memory = budget
        mutants = batch_size if batch_size is not None else auto_batch_size(self.spec, budget)
        self.mutant_batch_size = int(mutants)
        per_sequence = (self.spec.alphabet_size - 1) * (self.window[1] - self.window[0])
        self.rows_per_batch = max(1, min(64, int(mutants) // max(per_sequence, 1)))
        return self.rows_per_batch

    def batch_options(self) -> dict:
        return {"batch_size": self.mutant_batch_size, "sequences_per_call": self.rows_per_batch}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from .oracle import naive_ism, reference_outputs

        result = naive_ism(self.spec, x, outputs=self.output_names, window=self.window,
                           batch_size=self.mutant_batch_size, providers=self.providers)
        refs = None
        if "raw" in self.reductions.values():
            refs = reference_outputs(self.session, x, spec=self.spec, outputs=self.output_names)
        return {
            name: reduce_ism(result[name], self.reductions[name],
                             reference=None if refs is None else refs[name], sum_axis=self.sum_axes.get(name))
            for name in self.output_names
        }


# --------------------------------------------------------------------------- checks


def check_finite(name: str, values: np.ndarray, *, first_row: int, names: Sequence[str], layout: str,
                 window_start: int, alphabet: str) -> None:
    """Refuse non-finite ISM values, naming the output and the sequence."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))
    row = int(rows[0])
    per_row = bad[row].reshape(-1)
    seq = names[first_row + row]
    count, size = int(per_row.sum()), per_row.size
    more = f" (and {len(rows) - 1} more sequences in this batch)" if len(rows) > 1 else ""
    if _reference_not_finite(bad[row], len(alphabet)):
        cause = ("the model's output for the sequence itself is not finite, so no difference is; "
                 "check the model and this input")
    else:
        idx = np.argwhere(bad[row])[0]
        a, j = (idx[0], idx[1]) if layout == NCL else (idx[1], idx[0])
        cause = (f"the first is the mutant with {alphabet[a]} at position {window_start + int(j)}; "
                 "the model gives non-finite outputs for some mutants")
    raise ModelError(
        f"output {name!r} has {count} of {size} non-finite ISM values (NaN or inf) for sequence "
        f"{seq!r} (#{first_row + row}){more}: {cause}"
    )


def _reference_not_finite(bad: np.ndarray, alphabet_size: int) -> bool:
    """Whether some output value is non-finite for (nearly) every mutant of a sequence.

    ``bad``: shape (A, Lw, ...) or (Lw, A, ...). A non-finite reference output makes every
    difference non-finite except at the reference bases, which are set to exactly 0.
    """
    per_value = bad.reshape(bad.shape[0] * bad.shape[1], -1).sum(axis=0)
    mutants = bad.shape[0] * bad.shape[1] * (alphabet_size - 1) // alphabet_size
    return bool(per_value.max() >= mutants)


def partial_path(out: Path) -> Path:
    """The partial store of an output: ``OUT.partial`` beside it."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


# --------------------------------------------------------------------------- the run


@dataclass
class RunReport:
    """What a finished run wrote."""

    path: Path
    n_sequences: int
    seconds: float
    provider: str
    resumed: int = 0
    arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)
    metadata: dict = field(default_factory=dict, repr=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        """Create the store, or continue the one there (``resume``) after checking it matches."""
        record_path = folder / PROGRESS_FILE
        if folder.exists():
            old = None
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(record_path.read_text("utf-8"))
            if not resume:
                done = ""
                if isinstance(old, dict) and old.get("chunks"):
                    done = f" ({old['chunks'][-1]['stop']} of {old.get('n_sequences', '?')} sequences done)"
                raise InputError(
                    f"{str(folder)!r} holds the partial results of an interrupted run{done}; rerun with "
                    "--resume to continue it, or delete that folder to start over"
                )
            if not isinstance(old, dict) or old.get("format") != PARTIAL_FORMAT:
                raise InputError(
                    f"{str(folder)!r} is not a yuzu-onnx partial store (no readable {PROGRESS_FILE}); "
                    "delete it to start over"
                )
            for key, what in (("model_sha256", "the model"), ("input_sha256", "the input file"),
                              ("sequences_sha256", "the input sequences"), ("options", "the options")):
                if old.get(key) != identity[key]:
                    detail = ""
                    if key == "options":
                        diff = sorted(k for k in set(old[key]) | set(identity[key])
                                      if old[key].get(k) != identity[key].get(k))
                        detail = " (" + ", ".join(
                            f"{k}: was {old[key].get(k)!r}, now {identity[key].get(k)!r}" for k in diff) + ")"
                    raise InputError(
                        f"cannot resume from {str(folder)!r}: {what} differ from the interrupted run's{detail}; "
                        "rerun with the same model, input and options, or delete the folder to start over"
                    )
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
            if chunk.get("start") != expect or not (self.folder / chunk.get("file", "")).is_file():
                break
            good.append(chunk)
            expect = chunk["stop"]
        self.record["chunks"] = good

    def save_record(self) -> None:
        text = json.dumps(self.record, indent=1, sort_keys=True).encode("utf-8")
        _atomic_write(self.folder / PROGRESS_FILE, lambda fh: fh.write(text))

    def add_chunk(self, start: int, stop: int, arrays: Mapping[str, np.ndarray], order: Sequence[str]) -> None:
        name = f"chunk-{len(self.chunks):06d}.npz"
        payload = {f"o{i}": np.ascontiguousarray(arrays[out]) for i, out in enumerate(order)}
        _atomic_write(self.folder / name, lambda fh: np.savez(fh, **payload))
        self.chunks.append({"file": name, "start": start, "stop": stop})
        self.save_record()

    def load_chunk(self, chunk: dict, order: Sequence[str]) -> dict[str, np.ndarray]:
        try:
            with np.load(self.folder / chunk["file"], allow_pickle=False) as data:
                return {out: data[f"o{i}"] for i, out in enumerate(order)}
        except Exception as exc:
            raise InputError(
                f"cannot read {chunk['file']!r} in the partial store {str(self.folder)!r} "
                f"({type(exc).__name__}); delete the folder to start over"
            ) from None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_to_files(
    runner,
    batch: SequenceBatch,
    out: str | os.PathLike,
    *,
    fmt: str = "npz",
    batch_size: int | None = None,
    max_memory=None,
    resume: bool = False,
    model_sha256: str,
    input_sha256: str,
    options: Mapping | None = None,
    metadata: Mapping | None = None,
    progress=None,
    keep_arrays: bool = False,
) -> RunReport:
    """Compute ISM for every sequence of ``batch`` and write it to ``out``.

    Parameters
    ----------
    runner: a :class:`ConvertedRunner` or :class:`NaiveRunner`.
    batch: the sequences (``x`` in the runner's layout, ``names``, ``coords``).
    out: an ``.npz`` file (``fmt="npz"``) or a folder of ``.npy`` files (``fmt="npy"``,
        written in constant memory).
    batch_size: sequences per batch for a converted model, mutants per forward pass for
        the naive runner (default from ``max_memory``).
    resume: continue the interrupted run whose partial store is ``OUT.partial``.
    model_sha256, input_sha256: identify the run in the partial store.
    options: further options that must match on resume.
    metadata: extra entries of the result's ``__metadata__``.
    progress: called as ``progress(done, total)`` in sequences; may have ``restart_at``.
    keep_arrays: return the arrays in the report (NPZ) for follow-up steps.

    Returns
    -------
    RunReport
    """
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = check_output_path(out, folder=(fmt == "npy"))
    if fmt == "npz" and out.suffix.lower() != ".npz":
        raise InputError(f"output {str(out)!r} must end in .npz (or use --format npy for a folder)")
    clash = [n for n in runner.output_names if n in RESERVED_KEYS]
    if clash:
        raise InputError(f"model output {clash[0]!r} clashes with the stored array of the same name "
                         "(x = input, names); convert with --outputs to leave it out")
    n = len(batch)
    if n == 0:
        raise SequenceError("the input holds no sequences")
    folder = partial_path(out)
    if resume and batch_size is None:
        batch_size = recorded_batch_size(folder)
    rows_per_batch = runner.plan_batches(batch_size, max_memory)
    x = batch.x
    names = list(batch.names)
    identity = {
        "model_sha256": model_sha256,
        "input_sha256": input_sha256,
        "sequences_sha256": sequences_sha256(batch),
        "options": {**dict(options or {}), **runner.batch_options(), "provider": runner.provider,
                    "runner": runner.kind},
        "n_sequences": n,
        "outputs": list(runner.output_names),
    }
    start_time = time.perf_counter()
    store = PartialStore.open(folder, identity, resume=resume)
    order = list(runner.output_names)
    resumed = store.rows_done
    if progress is not None:
        if hasattr(progress, "restart_at"):
            progress.restart_at(resumed)
        progress(resumed, n)
    writer: NpyStreamWriter | None = None

    def open_writer(sample: Mapping[str, np.ndarray]) -> NpyStreamWriter:
        shapes = {name: (n, *sample[name].shape[1:]) for name in order}
        shapes["x"] = tuple(x.shape)
        w = NpyStreamWriter(out, shapes, dtype=np.float32)
        for lo in range(0, n, 4096):
            w.write("x", lo, x[lo : lo + 4096])
        return w

    try:
        if fmt == "npy":
            for chunk in store.chunks:
                block = store.load_chunk(chunk, order)
                writer = writer or open_writer(block)
                for name in order:
                    writer.write(name, chunk["start"], block[name])
        try:
            pending: dict[str, list[np.ndarray]] = {name: [] for name in order}
            begin = pending_start = resumed
            pending_bytes = 0
            last_flush = time.perf_counter()
            while begin < n:
                stop = min(n, begin + rows_per_batch)
                values = runner.run(x[begin:stop])
                for name in order:
                    check_finite(name, values[name], first_row=begin, names=names, layout=runner.layout,
                                 window_start=runner.window[0], alphabet=runner.alphabet)
                    pending[name].append(values[name])
                    pending_bytes += values[name].nbytes
                begin = stop
                if begin == n or pending_bytes >= CHUNK_MAX_BYTES or time.perf_counter() - last_flush >= CHUNK_SECONDS:
                    block = {name: np.concatenate(pending[name]) for name in order}
                    store.add_chunk(pending_start, begin, block, order)
                    if fmt == "npy":
                        writer = writer or open_writer(block)
                        for name in order:
                            writer.write(name, pending_start, block[name])
                    pending = {name: [] for name in order}
                    pending_start, pending_bytes = begin, 0
                    last_flush = time.perf_counter()
                if progress is not None:
                    progress(begin, n)
        except YuzuError:
            store.remove()  # deterministic failure: rerunning the same chunk fails the same way
            raise
        meta = {
            **dict(metadata or {}),
            "yuzu_onnx_version": __version__,
            "layout": runner.layout,
            "alphabet": runner.alphabet,
            "seq_len": runner.seq_len,
            "window": list(runner.window),
            "reductions": dict(runner.reductions),
            "outputs": order,
            "source_sha256": runner.source_sha256,
            "provider": runner.provider,
            "method": runner.kind,
            "n_sequences": n,
        }
        if batch.coords is not None:
            meta["coords"] = [list(c) for c in batch.coords]
        arrays = None
        if fmt == "npy":
            if writer is None:  # pragma: no cover - n > 0 always writes a chunk
                raise InputError("no results to write")
            writer.finish(metadata=meta)
            writer = None
            _add_names_to_npy_dir(out, names, meta)
        else:
            parts: dict[str, list[np.ndarray]] = {name: [] for name in order}
            for chunk in store.chunks:
                block = store.load_chunk(chunk, order)
                for name in order:
                    parts[name].append(block[name])
            arrays = {name: np.concatenate(parts[name]) for name in order}
            write_npz(out, {**arrays, "x": x, "names": np.asarray(names, dtype=str)}, metadata=meta)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    store.remove()
    seconds = time.perf_counter() - start_time
    return RunReport(out, n, seconds, runner.provider, resumed=resumed,
                     arrays=arrays if keep_arrays else None, metadata=meta)


def recorded_batch_size(folder: Path) -> int | None:
    """The batch size an interrupted run used (``None`` when there is no readable record)."""
    try:
        record = json.loads((folder / PROGRESS_FILE).read_text("utf-8"))
        return int(record["options"]["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _add_names_to_npy_dir(folder: Path, names: Sequence[str], metadata: Mapping) -> None:
    """Add ``names.npy`` to a finished NPY folder and list it in ``metadata.json``."""
    from .results import MANIFEST

    arr = np.asarray(list(names), dtype=str)
    _atomic_write(folder / "names.npy", lambda fh: np.save(fh, arr, allow_pickle=False))
    manifest = folder / MANIFEST
    doc = json.loads(manifest.read_text("utf-8"))
    doc["arrays"]["names"] = {"file": "names.npy", "shape": list(arr.shape), "dtype": str(arr.dtype)}
    text = json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")
    _atomic_write(manifest, lambda fh: fh.write(text))


def read_results(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read a result written by :func:`run_to_files` (an ``.npz`` or an NPY folder)."""
    from .results import read_npz

    p = Path(path)
    if p.is_dir():
        return read_npy_dir(p, mmap=True)
    return read_npz(p)


# --------------------------------------------------------------------------- follow-ups


def parse_modisco(value: str | None, output_names: Sequence[str]) -> tuple[str, int | None] | None:
    """``OUTPUT[:TARGET]`` → ``(output, target)``, checked against the outputs."""
    if value is None:
        return None
    name, _, target_text = value.partition(":")
    if name not in output_names:
        raise InputError(f"--modisco names output {name!r}; outputs: {', '.join(output_names)}")
    target = None
    if target_text:
        try:
            target = int(target_text)
        except ValueError:
            raise InputError(f"--modisco target must be an integer index, got {target_text!r}") from None
    return name, target


def modisco_prefix(out: Path, fmt: str) -> Path:
    """Where the MoDISco files go: ``OUT`` without ``.npz`` (or ``OUT/modisco`` for a folder)."""
    if fmt == "npy":
        return out / "modisco"
    return out.with_suffix("") if out.suffix.lower() == ".npz" else out


def write_followups(report: RunReport, batch: SequenceBatch, *, fmt: str,
                    modisco: tuple[str, int | None] | None = None,
                    variants: str | os.PathLike | None = None) -> list[str]:
    """Write the MoDISco arrays and the variant table of a finished run; returns lines to print."""
    if modisco is None and variants is None:
        return []
    arrays = report.arrays if report.arrays is not None else read_results(report.path)[0]
    meta = report.metadata
    layout, window = meta["layout"], meta["window"]
    lines: list[str] = []
    if modisco is not None:
        from .attributions import modisco_arrays, write_modisco

        name, target = modisco
        if meta["reductions"].get(name) == "raw":
            raise InputError(f"--modisco needs ISM differences, but output {name!r} was converted with --reduce raw")
        mod = modisco_arrays(arrays[name], batch.x, layout=layout, target=target, window_start=window[0])
        files = write_modisco(modisco_prefix(report.path, fmt), mod)
        lines.append(f"MoDISco inputs: {files.sequences}, {files.attributions} (contributions: {files.contrib})")
        lines.append(f"  run: {files.command()}")
    if variants is not None:
        from .variants import write_variants_tsv

        usable = {k: arrays[k] for k in meta["outputs"] if meta["reductions"].get(k) != "raw"}
        if not usable:
            raise InputError("--variants needs ISM differences, but every output was converted with --reduce raw")
        rows = write_variants_tsv(
            variants, usable, batch.x, layout=layout, alphabet=meta["alphabet"],
            names=list(batch.names), window_start=window[0], coords=batch.coords,
        )
        lines.append(f"variant table: {rows} rows -> {variants}")
    return lines

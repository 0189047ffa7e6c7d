"""Runs that lose nothing: ISM of a sequence file written to result files.

This is the logic shared by the ``run``, ``ism``, ``naive`` and ``demo`` commands:

* the output path is checked before any computation;
* the memory estimate is checked up front: a run whose single sequence cannot fit the
  budget is refused with the estimate and the option that fixes it
  (:meth:`yuzu_onnx.runners.Runner.plan_batches`);
* sequences run in batches; finished batches are gathered into *chunks* that go to a
  partial store next to the output (:mod:`yuzu_onnx.partial_store`). ``resume=True``
  continues from it without recomputing finished sequences and refuses when the input,
  the model or an option that changes the results differs (the batch size, the device,
  the threads and the memory budget may change: a run killed for memory resumes with a
  smaller batch). The store is removed after success;
* every ISM value is checked to be finite: a model that produces NaN or inf is refused
  with a message naming the output and the sequence (the converted model has no
  separate reference output, so the check runs on the ISM values; when nearly all of a
  sequence's values are non-finite the reference output itself is the culprit, and the
  message says so);
* results are written to temporary files and renamed into place only when complete
  (:mod:`yuzu_onnx.results`), so an interrupted run never leaves a file that looks
  finished.

A runner (:mod:`yuzu_onnx.runners`) computes ISM for a batch of sequences:
:class:`ConvertedRunner` runs a converted model, :class:`NaiveRunner` the naive oracle on
the original model. :func:`run_job` is a whole ``run``/``ism``/``naive`` command: read the
sequences, run, write the result and its follow-ups (MoDISco inputs, variant table).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_file, write_json
from .errors import InputError, ModelError, SequenceError, YuzuError, option
from .extra_inputs import (
    ExtraValues,
    check_extra_values,
    extra_values_sha256,
    load_extra_files,
    take_rows,
)
from .importer import NCL, ModelSpec
from .partial_store import (
    PartialStore,
    file_sha256,
    partial_path,
    recorded_batch_size,
    sequences_sha256,
)
from .progress import plural
from .results import NpyStreamWriter, check_output_path, read_npy_dir, write_npz, write_npz_in_rows
from .runners import ConvertedRunner, NaiveRunner, Runner, SequenceSpec
from .sequences import SequenceBatch, read_sequences

__all__ = [
    "ConvertedRunner",
    "JobOptions",
    "NaiveRunner",
    "RunReport",
    "check_finite",
    "check_job_outputs",
    "check_source",
    "load_sequences",
    "read_results",
    "run_job",
    "run_to_files",
    "write_followups",
]

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


def check_source(source: str | os.PathLike, ism_model: str | os.PathLike, source_sha256: str) -> None:
    """Refuse when ``source`` is not the model ``ism_model`` was converted from (``source_sha256``)."""
    if not Path(source).is_file():
        raise InputError(f"{option('check_source')} model {str(source)!r} does not exist")
    sha = file_sha256(source)
    if sha != source_sha256:
        raise InputError(
            f"{str(source)!r} (sha256 {sha[:12]}...) is not the model {str(ism_model)!r} was converted from "
            f"(sha256 {source_sha256[:12] or 'unknown'}...); convert it again"
        )


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
    more = f" (and {plural(len(rows) - 1, 'more sequence')} in this batch)" if len(rows) > 1 else ""
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


def run_to_files(
    runner: Runner,
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
    extra: ExtraValues | None = None,
) -> RunReport:
    """Compute ISM for every sequence of ``batch`` and write it to ``out``.

    Parameters
    ----------
    runner: a :class:`~yuzu_onnx.runners.Runner` (:class:`ConvertedRunner`, :class:`NaiveRunner`).
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
    extra: the model's inputs besides the sequence (``runner.extra_inputs``), name →
        one row per sequence of ``batch`` or one row for all.

    Returns
    -------
    RunReport
    """
    out = _check_run_target(runner, batch, out, fmt)
    extra = check_extra_values(getattr(runner, "extra_inputs", ()), extra, len(batch))
    if extra:  # a resumed run must use the same values
        options = {**dict(options or {}), "extra_inputs_sha256": extra_values_sha256(extra)}
    folder = partial_path(out)
    if resume and batch_size is None and max_memory is None:
        # the interrupted run's batches, so the result is bit for bit an uninterrupted run's;
        # a new --max-memory (a run killed for memory) sizes the batches afresh
        batch_size = recorded_batch_size(folder)
    rows_per_batch = runner.plan_batches(batch_size, max_memory)
    identity = _run_identity(runner, batch, model_sha256=model_sha256, input_sha256=input_sha256,
                             options={**dict(options or {}), "format": fmt})
    start_time = time.perf_counter()
    store = PartialStore.open(folder, identity, resume=resume)
    resumed = store.rows_done
    if progress is not None:
        if hasattr(progress, "restart_at"):
            progress.restart_at(resumed)
        progress(resumed, len(batch))
    sink = _ResultSink(out, fmt, batch, list(runner.output_names))
    try:
        sink.write_stored(store)
        _compute_chunks(runner, batch, rows_per_batch, store, sink, progress, extra)
        meta = _result_metadata(runner, batch, metadata)
        arrays = sink.finish(store, meta, keep_arrays=keep_arrays)
    except BaseException:
        sink.abort()
        raise
    store.remove()
    seconds = time.perf_counter() - start_time
    return RunReport(out, len(batch), seconds, runner.provider, resumed=resumed,
                     arrays=arrays if keep_arrays else None, metadata=meta)


def _check_run_target(runner: Runner, batch: SequenceBatch, out: str | os.PathLike, fmt: str) -> Path:
    """Check the format, the output path and the output names before any work."""
    if fmt not in FORMATS:
        raise InputError(f"{option('fmt', fmt)} is not one of {', '.join(FORMATS)}")
    out = check_output_path(out, folder=(fmt == "npy"))
    if fmt == "npz" and out.suffix.lower() != ".npz":
        raise InputError(f"output {str(out)!r} must end in .npz (or use {option('fmt', 'npy')} for a folder)")
    clash = [n for n in runner.output_names if n in RESERVED_KEYS]
    if clash:
        raise InputError(f"model output {clash[0]!r} clashes with the stored array of the same name "
                         f"(x = input, names); convert with {option('outputs')} to leave it out")
    if len(batch) == 0:
        raise SequenceError("the input holds no sequences")
    return out


def _run_identity(runner: Runner, batch: SequenceBatch, *, model_sha256: str, input_sha256: str,
                  options: Mapping | None) -> dict:
    """What the partial store records to recognise this run on resume."""
    return {
        "model_sha256": model_sha256,
        "input_sha256": input_sha256,
        "sequences_sha256": sequences_sha256(batch),
        "options": {**dict(options or {}), "window": list(runner.window), "reductions": dict(runner.reductions),
                    "outputs": list(runner.output_names), **runner.batch_options(),
                    "provider": runner.provider, "runner": runner.kind},
        "n_sequences": len(batch),
        "outputs": list(runner.output_names),
    }


class _PendingChunk:
    """Finished batches not yet in the partial store."""

    def __init__(self, start: int, order: Sequence[str]) -> None:
        self.start = start
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in order}
        self.nbytes = 0
        self.since = time.perf_counter()

    def add(self, values: Mapping[str, np.ndarray]) -> None:
        for name, parts in self.parts.items():
            parts.append(values[name])
            self.nbytes += values[name].nbytes

    def due(self, stop: int, n: int) -> bool:
        """Whether to store now: the last batch, a full chunk, or ``CHUNK_SECONDS`` of work."""
        return stop == n or self.nbytes >= CHUNK_MAX_BYTES or time.perf_counter() - self.since >= CHUNK_SECONDS


def _compute_chunks(runner: Runner, batch: SequenceBatch, rows_per_batch: int, store: PartialStore,
                    sink: _ResultSink, progress, extra: ExtraValues | None = None) -> None:
    """Run the sequences the store lacks, batch by batch, storing chunks as they fill."""
    order = list(runner.output_names)
    x, names, n = batch.x, list(batch.names), len(batch)
    begin = store.rows_done
    pending = _PendingChunk(begin, order)
    try:
        while begin < n:
            stop = min(n, begin + rows_per_batch)
            rows = slice(begin, stop)
            # runners of single-input models may take the sequences alone
            values = runner.run(x[rows], take_rows(extra, rows)) if extra else runner.run(x[rows])
            for name in order:
                check_finite(name, values[name], first_row=begin, names=names, layout=runner.layout,
                             window_start=runner.window[0], alphabet=runner.alphabet)
            pending.add(values)
            begin = stop
            if pending.due(begin, n):
                store.add_chunk(pending.start, begin, pending.parts, order)
                sink.write_parts(pending.start, pending.parts)
                pending = _PendingChunk(begin, order)
            if progress is not None:
                progress(begin, n)
    except YuzuError:
        store.remove()  # deterministic failure: rerunning the same chunk fails the same way
        raise


def _result_metadata(runner: Runner, batch: SequenceBatch, extra: Mapping | None) -> dict:
    """The result's ``__metadata__``: ``extra``, then what the run was."""
    meta = {**dict(extra or {}), **runner_metadata(runner), "provider": runner.provider, "n_sequences": len(batch)}
    if batch.coords is not None:
        meta["coords"] = [list(c) for c in batch.coords]
    return meta


def runner_metadata(runner: Runner) -> dict:
    """What every result file records of the runner that computed it: version, layout,
    window, reductions, outputs, ``forms`` (output → ``dense``/``banded``) and ``bands`` (the
    band record of each banded output, what :func:`yuzu_onnx.densify` needs), ``targets``
    (output → the ``--select``/``--aggregate`` records its values were computed with, as in
    the converted model's metadata; ``{}`` when none), the source model's hash and the method."""
    bands = dict(getattr(runner, "bands", None) or {})
    return {
        "yuzu_onnx_version": __version__,
        "layout": runner.layout,
        "alphabet": runner.alphabet,
        "seq_len": runner.seq_len,
        "window": list(runner.window),
        "reductions": dict(runner.reductions),
        "outputs": list(runner.output_names),
        "forms": {name: "banded" if name in bands else "dense" for name in runner.output_names},
        "bands": bands,
        "targets": {name: [dict(r) for r in records] for name, records in (getattr(runner, "targets", None) or {}).items()},
        "source_sha256": runner.source_sha256,
        "method": runner.kind,
    }


class _ResultSink:
    """Where results go: an NPY folder filled chunk by chunk, or one NPZ written at the end."""

    def __init__(self, out: Path, fmt: str, batch: SequenceBatch, order: list[str]) -> None:
        self.out, self.fmt, self.batch, self.order = out, fmt, batch, order
        self.writer: NpyStreamWriter | None = None

    def write_stored(self, store: PartialStore) -> None:
        """Copy the chunks a resumed run finished earlier (NPY only)."""
        if self.fmt == "npy":
            for chunk in store.chunks:
                self.write(chunk["start"], store.load_chunk(chunk, self.order))

    def write(self, start: int, block: Mapping[str, np.ndarray]) -> None:
        """Write rows ``start:`` of every output (NPY only; NPZ reads the store at the end)."""
        if self.fmt != "npy":
            return
        if self.writer is None:
            self.writer = self._open_writer(block)
        for name in self.order:
            self.writer.write(name, start, block[name])

    def write_parts(self, start: int, parts: Mapping[str, Sequence[np.ndarray]]) -> None:
        """:meth:`write` for blocks of rows that follow one another from row ``start``."""
        for k in range(len(parts[self.order[0]])):
            self.write(start, {name: parts[name][k] for name in self.order})
            start += len(parts[self.order[0]][k])

    def _open_writer(self, sample: Mapping[str, np.ndarray]) -> NpyStreamWriter:
        x, n = self.batch.x, len(self.batch)
        shapes = {name: (n, *sample[name].shape[1:]) for name in self.order}
        shapes["x"] = tuple(x.shape)
        writer = NpyStreamWriter(self.out, shapes, dtype=np.float32)
        for lo in range(0, n, 4096):
            writer.write("x", lo, x[lo : lo + 4096])
        return writer

    def finish(self, store: PartialStore, meta: dict, *, keep_arrays: bool) -> dict[str, np.ndarray] | None:
        """Write the result; returns the arrays when ``keep_arrays`` (NPZ; ``None`` for NPY).

        Without ``keep_arrays`` each NPZ array is streamed from the stored chunks, a chunk at
        a time, instead of being concatenated in memory first (a dense profile ISM is ~32 MB
        per sequence)."""
        names = list(self.batch.names)
        if self.fmt == "npy":
            if self.writer is None:  # pragma: no cover - n > 0 always writes a chunk
                raise InputError("no results to write")
            self.writer.finish(metadata=meta)
            self.writer = None
            _add_names_to_npy_dir(self.out, names, meta)
            return None
        if not keep_arrays and store.chunks:
            n = len(self.batch)
            shapes = {name: (n, *np.shape(store.load_output(store.chunks[0], i))[1:])
                      for i, name in enumerate(self.order)}

            def blocks(index: int):
                return lambda: (store.load_output(chunk, index) for chunk in store.chunks)

            write_npz_in_rows(self.out, {name: blocks(i) for i, name in enumerate(self.order)}, shapes,
                              {"x": self.batch.x, "names": np.asarray(names, dtype=str)}, metadata=meta)
            return None
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.order}
        for chunk in store.chunks:
            block = store.load_chunk(chunk, self.order)
            for name in self.order:
                parts[name].append(block[name])
        arrays = {name: np.concatenate(parts[name]) for name in self.order}
        write_npz(self.out, {**arrays, "x": self.batch.x, "names": np.asarray(names, dtype=str)}, metadata=meta)
        return arrays

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _add_names_to_npy_dir(folder: Path, names: Sequence[str], metadata: Mapping) -> None:
    """Add ``names.npy`` to a finished NPY folder and list it in ``metadata.json``."""
    import json

    from .results import MANIFEST

    arr = np.asarray(list(names), dtype=str)
    with atomic_file(folder / "names.npy") as fh:
        np.save(fh, arr, allow_pickle=False)
    manifest = folder / MANIFEST
    doc = json.loads(manifest.read_text("utf-8"))
    doc["arrays"]["names"] = {"file": "names.npy", "shape": list(arr.shape), "dtype": str(arr.dtype)}
    write_json(manifest, doc, sort_keys=True)


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
        raise InputError(f"{option('modisco')} names output {name!r}; outputs: {', '.join(output_names)}")
    target = None
    if target_text:
        try:
            target = int(target_text)
        except ValueError:
            raise InputError(f"{option('modisco')} target must be an integer index, got {target_text!r}") from None
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
            raise InputError(f"{option('modisco')} needs ISM differences, but output {name!r} was converted with "
                             f"{option('reduce', 'raw')}")
        mod = modisco_arrays(arrays[name], batch.x, layout=layout, target=target, window_start=window[0],
                             band=(meta.get("bands") or {}).get(name))
        files = write_modisco(modisco_prefix(report.path, fmt), mod)
        lines.append(f"MoDISco inputs: {files.sequences}, {files.attributions} (contributions: {files.contrib})")
        lines.append(f"  run: {files.command()}")
    if variants is not None:
        from .variants import write_variants_file

        usable = {k: arrays[k] for k in meta["outputs"] if meta["reductions"].get(k) != "raw"}
        if not usable:
            raise InputError(f"{option('variants')} needs ISM differences, but every output was converted with "
                             f"{option('reduce', 'raw')}")
        rows = write_variants_file(
            variants, usable, batch.x, layout=layout, alphabet=meta["alphabet"],
            names=list(batch.names), window_start=window[0], coords=batch.coords,
        )
        lines.append(f"variant table: {rows} rows -> {variants}")
    return lines


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class JobOptions:
    """What a ``run``, ``ism`` or ``naive`` command asks for, besides the model.

    ``input``: sequences (NPY, NPZ, FASTA, BED with ``genome``); ``out``: the result
    (``.npz``, or a folder with ``fmt="npy"``); ``command``: recorded in the metadata;
    ``modisco``: ``OUTPUT[:TARGET]``; ``variants``: a TSV path; ``quiet``: no progress
    bar and no summary line; ``extra_inputs``: ``NAME=FILE.npy`` values of the model's
    inputs besides the sequence. The rest as in :func:`run_to_files`.
    """

    input: str
    out: str
    command: str
    fmt: str = "npz"
    batch_size: int | None = None
    max_memory: str | None = None
    genome: str | None = None
    strand: bool = False
    resume: bool = False
    modisco: str | None = None
    variants: str | None = None
    quiet: bool = False
    extra_inputs: tuple[str, ...] = ()


def check_job_outputs(job: JobOptions) -> tuple[Path, Path | None]:
    """Check the result path and the ``variants`` path before any work."""
    out = check_output_path(job.out, folder=(job.fmt == "npy"))
    variants = check_output_path(job.variants) if job.variants else None
    return out, variants


def run_job(runner: Runner, job: JobOptions, *, model_path: str, model_sha256: str) -> list[str]:
    """Run ``job`` with ``runner``: progress bar and summary on stderr, result files written.

    Returns
    -------
    The lines that describe the follow-up files (MoDISco inputs, variant table).
    """
    from .progress import Progress, summary_line

    out, variants = check_job_outputs(job)
    modisco = parse_modisco(job.modisco, runner.output_names)
    batch = load_sequences(job.input, runner.sequence_spec, genome=job.genome, strand=job.strand)
    extra = load_extra_files(job.extra_inputs)
    progress = Progress(len(batch), quiet=job.quiet, label=runner.kind)
    options = {"genome": job.genome, "strand": bool(job.strand)}
    metadata = {"command": job.command, "model": model_path, "input": job.input}
    report = run_to_files(
        runner, batch, out, fmt=job.fmt, batch_size=job.batch_size, max_memory=job.max_memory,
        resume=job.resume, model_sha256=model_sha256, input_sha256=file_sha256(job.input),
        options=options, metadata=metadata, progress=progress, keep_arrays=bool(modisco or variants), extra=extra,
    )
    progress.summary(summary_line(n_sequences=report.n_sequences, seconds=report.seconds, path=report.path,
                                  provider=report.provider, resumed=report.resumed, what=runner.kind))
    return write_followups(report, batch, fmt=job.fmt, modisco=modisco, variants=variants)

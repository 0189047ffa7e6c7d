"""Engines of a sharded run: the options, one shard's work, and the local engine.

Both engines compute a shard the same way (:func:`compute_block`: the shard's sequences
in batches, every value checked to be finite) and write it with a
:class:`~yuzu_onnx.shards.ShardWriter`; the local engine (:func:`run_local`) does it
here, one shard after the other, the Ray engine (:mod:`yuzu_onnx.ray_engine`) in an
actor pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoding import SequenceBatch
from .errors import InputError, option
from .partial_store import file_sha256
from .pipeline import check_finite
from .runners import Runner
from .shards import ShardStore
from .sources import SequenceSource

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """Where and how a sharded run computes.

    Attributes
    ----------
    engine: ``local`` (this process) or ``ray`` (an actor pool on a Ray cluster).
    address: Ray only: ``None`` starts a local Ray on this machine; ``auto`` joins the
        cluster this machine belongs to; ``ray://HOST:10001`` joins a remote one.
    workers: Ray only: ISM actors, each holding one ONNX Runtime session.
    gpus_per_worker: Ray only: GPUs per actor (> 0 runs the CUDA provider and fails
        loudly when an actor cannot create a CUDA session).
    cpus_per_worker: Ray only: CPUs per actor (also its ONNX Runtime threads).
    shard_size: sequences per shard (default 256; on resume, the folder's).
    worker_class: Ray only, advanced: a subclass of
        :class:`yuzu_onnx.ray_engine.ISMWorker` to run in the actors (default that class).
    """

    engine: str = "local"
    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    shard_size: int | None = None
    worker_class: type | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"{option('engine')} must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.workers < 1:
            raise InputError(f"{option('workers')} must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise InputError(f"{option('gpus_per_worker')} must be >= 0 and {option('cpus_per_worker')} > 0, got "
                             f"{self.gpus_per_worker} and {self.cpus_per_worker}")

    def run_info(self) -> dict:
        """What is recorded in the manifest's ``run`` entry (never compared on resume)."""
        info: dict = {"engine": self.engine}
        if self.engine == "ray":
            info.update(address=self.address or "local", workers=self.workers,
                        gpus_per_worker=self.gpus_per_worker, cpus_per_worker=self.cpus_per_worker)
        return info


# --------------------------------------------------------------------------- one shard


def compute_block(runner: Runner, batch: SequenceBatch, rows_per_batch: int) -> dict[str, np.ndarray]:
    """ISM of every sequence of ``batch``, ``rows_per_batch`` at a time, checked to be finite.

    Returns
    -------
    output name → shape=(len(batch), A, Lw, ...) (ncl) or (len(batch), Lw, A, ...) (nlc).
    """
    order = list(runner.output_names)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in order}
    names = list(batch.names)
    for begin in range(0, len(batch), rows_per_batch):
        values = runner.run(batch.x[begin : begin + rows_per_batch])
        for name in order:
            check_finite(name, values[name], first_row=begin, names=names, layout=runner.layout,
                         window_start=runner.window[0], alphabet=runner.alphabet)
            parts[name].append(values[name])
    return {name: np.concatenate(parts[name]) for name in order}


def variant_part(folder: Path, index: int) -> Path:
    """The Parquet part of shard ``index`` in a sharded variant table folder."""
    return folder / f"part-{index:06d}.parquet"


def write_variant_part(path: Path, arrays: Mapping[str, np.ndarray], batch: SequenceBatch,
                       metadata: Mapping) -> dict:
    """Write one shard's variant rows to ``path`` (Parquet); returns the record entry."""
    from .variants import VariantFileWriter

    usable = {k: arrays[k] for k in metadata["outputs"] if metadata["reductions"].get(k) != "raw"}
    writer = VariantFileWriter(path)
    try:
        rows = writer.write(usable, batch.x, layout=metadata["layout"], alphabet=metadata["alphabet"],
                            names=list(batch.names), window_start=metadata["window"][0], coords=batch.coords)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"path": str(path), "sha256": file_sha256(path), "rows": rows}


# --------------------------------------------------------------------------- the local engine


def finished_shards(store: ShardStore, done: Mapping[int, dict] | None,
                    progress: Callable[[int, int], None] | None) -> tuple[dict[int, dict], int]:
    """The records of the shards already finished (``done``, default
    :meth:`ShardStore.done_shards`) and how many sequences they hold; ``progress`` is
    restarted there, so a resumed run's bar counts from the shards it keeps."""
    records = dict(store.done_shards() if done is None else done)
    finished = sum(r["stop"] - r["start"] for r in records.values())
    if progress is not None:
        if hasattr(progress, "restart_at"):
            progress.restart_at(finished)
        progress(finished, store.manifest["n_sequences"])
    return records, finished


def run_local(runner: Runner, source: SequenceSource, store: ShardStore, *, batch_size: int | None,
              max_memory, progress: Callable[[int, int], None] | None = None,
              done: Mapping[int, dict] | None = None) -> dict[int, dict]:
    """Compute the shards ``store`` lacks in this process; returns every shard's record.

    ``done``: the shards already finished (default: :meth:`ShardStore.done_shards`).
    """
    rows_per_batch = runner.plan_batches(batch_size, max_memory)
    records, done_rows = finished_shards(store, done, progress)
    n = store.manifest["n_sequences"]
    for index, start, stop in store.plan:
        if index in records:
            continue
        batch = source.read(start, stop)
        arrays = compute_block(runner, batch, rows_per_batch)
        records[index] = store.writer.write(index, start, stop, arrays, batch)
        done_rows += stop - start
        if progress is not None:
            progress(done_rows, n)
    return records

"""Genome-wide ISM from Python: the sharded run on the local engine or on Ray.

::

    import yuzu_onnx
    from yuzu_onnx import distributed

    distributed.run("model.ism.onnx", "peaks.bed", "out/", genome="hg38.fa",
                    engine="ray", workers=8, gpus_per_worker=1, variants="snvs.parquet")
    res = yuzu_onnx.load_results("out/")          # lazy, memory-mapped
    res["y"][12]                                   # ISM of sequence 12

The options are those of ``yuzu-onnx run --engine ray``; see
:class:`~yuzu_onnx.engines.EngineOptions` for the engine's and
:mod:`yuzu_onnx.shard_jobs` for the run itself. Ray is imported only when
``engine="ray"``.
"""

from __future__ import annotations

import os

from .engines import ENGINES, EngineOptions
from .shards import Results, load_results

__all__ = ["ENGINES", "EngineOptions", "Results", "load_results", "run"]


def run(
    model: str | os.PathLike,
    input: str | os.PathLike,
    out: str | os.PathLike,
    *,
    engine: str = "ray",
    fmt: str = "shards",
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    shard_size: int | None = None,
    batch_size: int | None = None,
    max_memory: str | int | None = None,
    genome: str | os.PathLike | None = None,
    strand: bool = False,
    resume: bool = False,
    variants: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int | None = None,
    worker_class: type | None = None,
    quiet: bool = True,
) -> Results:
    """ISM of every sequence of ``input`` with a converted model, written to ``out``.

    Parameters
    ----------
    model: a converted ISM model (``yuzu-onnx convert``).
    input: ``.npy``/``.npz`` (shape=(N, A, L) or (N, L, A)), FASTA, or BED with ``genome``.
    out: a folder (``fmt="shards"``), an ``.npz`` file or an NPY folder.
    engine: ``ray`` (default) or ``local``.
    fmt: ``shards`` (default), ``npz`` or ``npy`` (gathered into one result).
    address, workers, gpus_per_worker, cpus_per_worker, worker_class: the
        Ray engine's options (:class:`~yuzu_onnx.engines.EngineOptions`).
    shard_size: sequences per shard (default 256).
    batch_size, max_memory: sequences per ONNX Runtime call, or the memory budget (per worker).
    genome, strand: BED input: the genome FASTA; reverse-complement ``-`` strand regions.
    resume: skip the shards of an interrupted run that are present and verified.
    variants: also write the variant table: ``.parquet`` (a folder of parts with Ray) or ``.tsv``.
    device, threads: the local engine's ONNX Runtime device and threads.
    quiet: no progress bar and no summary line.

    Returns
    -------
    Results: the result, opened with :func:`~yuzu_onnx.shards.load_results`.
    """
    from .partial_store import file_sha256
    from .pipeline import JobOptions
    from .runners import ConvertedRunner
    from .session import ISMSession
    from .shard_jobs import run_sharded_job

    options = EngineOptions(engine=engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                            cpus_per_worker=cpus_per_worker, shard_size=shard_size,
                            worker_class=worker_class)
    job = JobOptions(input=os.fspath(input), out=os.fspath(out), command="distributed.run", fmt=fmt,
                     batch_size=batch_size, max_memory=max_memory, genome=None if genome is None else os.fspath(genome),
                     strand=strand, resume=resume, variants=None if variants is None else os.fspath(variants),
                     quiet=quiet)
    ray_side = engine == "ray"
    session = ISMSession(model, device="cpu" if ray_side else device, threads=1 if ray_side else threads)
    run_sharded_job(ConvertedRunner(session), job, options, model_path=os.fspath(model),
                    model_sha256=file_sha256(model), ray_model=model if ray_side else None)
    return load_results(out)

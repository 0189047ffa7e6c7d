"""Sharded runs: ISM of a genome-scale input, shard by shard, on the local or the Ray engine.

A sharded run splits the input into shards of ``shard_size`` sequences
(:mod:`yuzu_onnx.sources`), computes each shard on its own and writes it to a sharded
result folder (:mod:`yuzu_onnx.shards`) as soon as it is done. The *local* engine
computes the shards one after the other in this process; the *Ray* engine
(:mod:`yuzu_onnx.ray_engine`) spreads them over an actor pool. Both write the same
files, so a run started on one engine can be resumed on the other, and both give the
same arrays in the same order as :func:`yuzu_onnx.pipeline.run_to_files`.

``--format shards`` keeps the folder as the result. ``--format npz``/``npy`` runs into
``OUT.partial-shards`` and gathers the shards into the single file (or NPY folder) the
local engine writes, for jobs small enough for one file. ``--resume`` skips the shards
present and verified by checksum; it refuses a different model, input or result-changing
options, but not a different engine, worker count or batch size.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .encoding import SequenceBatch
from .engines import EngineOptions, run_local, variant_part
from .errors import InputError, YuzuError, option
from .partial_store import file_sha256, partial_path
from .pipeline import (
    JobOptions,
    RunReport,
    _add_names_to_npy_dir,
    parse_modisco,
    runner_metadata,
    write_followups,
)
from .results import NpyStreamWriter, check_output_path, write_npz
from .runners import Runner
from .shards import Results, ShardStore, load_results
from .sources import open_source

WORK_SUFFIX = ".partial-shards"


# --------------------------------------------------------------------------- the job


def genome_fingerprint(genome: str | os.PathLike | None) -> str | None:
    """A cheap identity of a genome FASTA: the SHA-256 of its ``.fai`` index (names, lengths, offsets)."""
    if genome is None:
        return None
    fai = Path(f"{os.fspath(genome)}.fai")
    return file_sha256(fai) if fai.is_file() else os.fspath(genome)


def run_metadata(runner: Runner, job: JobOptions, *, model_path: str, engine: EngineOptions) -> dict:
    """The result's metadata (as :func:`yuzu_onnx.pipeline.run_to_files` writes it, without coords)."""
    return {
        "command": job.command, "model": model_path, "input": job.input, **runner_metadata(runner),
        "provider": runner.provider if engine.engine == "local" else f"ray ({engine.workers} workers)",
        "engine": engine.engine,
    }


def run_sharded_job(runner: Runner, job: JobOptions, engine: EngineOptions, *, model_path: str,
                    model_sha256: str, ray_model: str | os.PathLike | None = None,
                    threads: int | None = None) -> list[str]:
    """A ``run``/``ism`` command with ``--format shards`` or ``--engine ray``.

    Parameters
    ----------
    runner: computes ISM here (the local engine), and describes the model.
    job: the command's options (``fmt`` may be ``shards``, ``npz`` or ``npy``).
    engine: the engine and its options.
    model_path, model_sha256: recorded, and part of the run's identity.
    ray_model: the converted model the Ray actors load (needed for ``engine="ray"``).
    threads: local engine: ONNX Runtime threads (already set in ``runner``).

    Returns
    -------
    The lines that describe the follow-up files (MoDISco inputs, variant table).
    """
    from .progress import Progress, summary_line

    if engine.engine == "ray":
        from .ray_engine import import_ray

        import_ray()  # refuse up front, with the install hint, when Ray is missing
    sharded = job.fmt == "shards"
    out = check_output_path(job.out, folder=sharded or job.fmt == "npy")
    if job.fmt == "npz" and out.suffix.lower() != ".npz":
        raise InputError(f"output {str(out)!r} must end in .npz (or use {option('fmt', 'npy')} or shards for a folder)")
    variants = check_output_path(job.variants, folder=_variant_parts(job, engine)) if job.variants else None
    if sharded and job.modisco:
        raise InputError(f"{option('modisco')} needs the whole result in one file; use {option('fmt', 'npz')} or npy, "
                         "or write MoDISco inputs from the shards with the Python API")
    modisco = parse_modisco(job.modisco, runner.output_names)
    if engine.engine == "ray" and ray_model is None:
        raise InputError(f"{option('engine', 'ray')} runs a converted model; give one to `yuzu-onnx run` or use `yuzu-onnx ism`")
    folder = out if sharded else partial_path(out).with_name(out.name + WORK_SUFFIX)
    source = open_source(job.input, runner.sequence_spec, genome=job.genome, strand=job.strand)
    identity = {
        "model_sha256": model_sha256,
        "input_sha256": file_sha256(job.input),
        "options": {"genome": genome_fingerprint(job.genome), "strand": bool(job.strand), "method": runner.kind},
    }
    metadata = run_metadata(runner, job, model_path=model_path, engine=engine)
    store = ShardStore.open(folder, identity=identity, n_sequences=len(source), outputs=runner.output_names,
                            shard_size=engine.shard_size, metadata=metadata,
                            run={**engine.run_info(), "batch_size": job.batch_size}, resume=job.resume)
    parts = variants if _variant_parts(job, engine) else None
    done = store.done_shards()
    if parts is not None:  # a shard whose table part is missing or damaged is computed again
        done = {i: r for i, r in done.items() if r.get("variants", {}).get("path") == str(variant_part(parts, i))}
    done_before = sum(r["stop"] - r["start"] for r in done.values())
    progress = Progress(len(source), quiet=job.quiet, label=runner.kind)
    start_time = time.perf_counter()
    try:
        if engine.engine == "ray":
            from .ray_engine import run_ray

            records = run_ray(ray_model, source, store, engine, batch_size=job.batch_size,
                              max_memory=job.max_memory, progress=progress, variants=parts, done=done)
        else:
            records = run_local(runner, source, store, batch_size=job.batch_size, max_memory=job.max_memory,
                                progress=progress, done=done)
    except YuzuError:
        progress.close()
        raise
    store.finish(records)
    seconds = time.perf_counter() - start_time
    results = load_results(folder)
    lines: list[str] = []
    if not sharded:
        report = gather(results, out, job.fmt)
        store.remove()
        batch = SequenceBatch(x=np.asarray(results["x"]), names=tuple(str(s) for s in results.names),
                              coords=None if results.coords is None else tuple(tuple(c) for c in results.coords))
        lines += write_followups(report, batch, fmt=job.fmt, modisco=modisco,
                                 variants=variants if not _variant_parts(job, engine) else None)
    elif variants is not None and not _variant_parts(job, engine):
        rows = write_variants_from_results(results, variants)
        lines.append(f"variant table: {rows} rows -> {variants}")
    if variants is not None and _variant_parts(job, engine):
        rows = sum(r["variants"]["rows"] for r in records.values())
        lines.append(f"variant table: {rows} rows in {len(records)} Parquet parts -> {variants}")
    provider = metadata["provider"]
    progress.summary(summary_line(n_sequences=len(source), seconds=seconds, path=out, provider=provider,
                                  resumed=done_before, what=runner.kind))
    return lines


def _variant_parts(job: JobOptions, engine: EngineOptions) -> bool:
    """Whether the variant table is a folder of Parquet parts written by the Ray workers."""
    from .variants import is_parquet

    return bool(job.variants) and engine.engine == "ray" and is_parquet(job.variants)


# --------------------------------------------------------------------------- gathering and tables


def gather(results: Results, out: Path, fmt: str) -> RunReport:
    """Write a sharded result as the single NPZ file or NPY folder of the local engine.

    NPY folders are written shard by shard in constant memory; NPZ files hold everything.
    """
    meta = {**results.metadata, "n_sequences": len(results)}
    if results.coords is not None:
        meta["coords"] = [list(c) for c in results.coords]
    order = results.outputs
    if fmt == "npy":
        shapes = {name: tuple(results[name].shape) for name in [*order, "x"]}
        writer = NpyStreamWriter(out, shapes, dtype=np.float32)
        try:
            for lo, _, arrays, _, _ in results.blocks():
                for name in [*order, "x"]:
                    writer.write(name, lo, arrays[name])
            writer.finish(metadata=meta)
        except BaseException:
            writer.abort()
            raise
        _add_names_to_npy_dir(out, list(results.names), meta)
        arrays = None
    else:
        arrays = {name: np.asarray(results[name]) for name in order}
        write_npz(out, {**arrays, "x": np.asarray(results["x"]), "names": np.asarray(results.names, dtype=str)},
                  metadata=meta)
    return RunReport(out, len(results), 0.0, str(meta.get("provider", "")), arrays=arrays, metadata=meta)


def write_variants_from_results(results: Results | str | os.PathLike, path: str | os.PathLike) -> int:
    """Write the variant table of a result (sharded folder, NPY folder or NPZ), shard by shard.

    Parameters
    ----------
    results: :func:`~yuzu_onnx.shards.load_results` of the result, or its path.
    path: ``.parquet`` (needs pyarrow), ``.tsv`` or ``.tsv.gz``.

    Returns
    -------
    int: the number of rows.
    """
    from .variants import VariantFileWriter

    if not isinstance(results, Results):
        results = load_results(results)
    meta = results.metadata
    usable = [k for k in results.outputs if (meta.get("reductions") or {}).get(k) != "raw"]
    if not usable:
        raise InputError(f"the variant table needs ISM differences, but every output was converted with {option('reduce', 'raw')}")
    writer = VariantFileWriter(check_output_path(path))
    try:
        for _, _, arrays, names, coords in results.blocks():
            writer.write({k: arrays[k] for k in usable}, arrays["x"], layout=meta["layout"],
                         alphabet=meta["alphabet"], names=names, window_start=(meta.get("window") or [0])[0],
                         coords=coords)
        return writer.close()
    except BaseException:
        writer.abort()
        raise

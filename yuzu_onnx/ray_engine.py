"""The Ray engine: a Ray Data pipeline of shards, encoded by CPU tasks, run by an actor pool.

The pipeline (no hand-written queues, sockets or process pools)::

    from_items(one row per shard to compute)        the shard's slice of the input
      → map_batches(encode_shards)                  CPU tasks: genome reads, one-hot encoding
      → map_batches(ISMWorker, ActorPoolStrategy)   actors, each with one ISMSession,
                                                    writing the shard's files
      → iter_rows()                                 the driver collects shard records only

Each actor loads the converted model once, computes the shards it is given with the
same :func:`~yuzu_onnx.engines.compute_block` as the local engine, and writes them into
the result folder itself, so results never travel back to the driver: the driver holds
the shard list and one small record per shard. A dead actor is restarted by Ray and its
shard retried (Ray Data's actor pools restart actors and retry their tasks without
limit: ``max_restarts=-1``, ``max_task_retries=-1``); shard files are written
atomically and the record last, so a retried shard overwrites nothing half-written.

Ray is imported only here and only when the engine runs; ``import yuzu_onnx`` and the
local engine work without it. On a cluster, every node needs yuzu-onnx installed, and
the model, the input files and the output folder must be on a filesystem every node
sees at the same path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from .encoding import SequenceBatch
from .engines import EngineOptions, compute_block, finished_shards, variant_part, write_variant_part
from .errors import InputError, ModelError, YuzuError, install_hint, option
from .shards import ShardStore, ShardWriter
from .sources import SequenceSource

RAY_INSTALL_HINT = install_hint("'ray[data]' pyarrow", "ray")
#: CPUs reserved by one encoding task: none, so the actors may take every CPU of a node
#: (encoding is light) ...
ENCODE_CPUS = 0
#: ... and so the number of encoding tasks at once is capped: this many per ISM worker
ENCODE_TASKS_PER_WORKER = 2
_RAISED = re.compile(r"yuzu_onnx\.errors\.(\w+): ([^\n]*)")


def import_ray():
    """Import Ray (with Ray Data), or refuse with the install hint."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(f"{option('engine', 'ray')} needs Ray, which is not installed: {RAY_INSTALL_HINT} "
                         f"(Ray Data and pyarrow), or use {option('engine', 'local')}") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator:
    """Connect to Ray for the block: the running one, a new local one, or ``address``.

    Parameters
    ----------
    address: ``None``: start a local Ray on this machine (shut down at the end);
        ``auto``: the cluster this machine belongs to; ``ray://HOST:10001``: a remote one.
        When Ray is already initialised in this process, that connection is used as is.
    num_cpus: CPUs of a new local Ray (default all).
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address is None:
                ray.init(num_cpus=num_cpus, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "a local Ray" if address is None else f"the Ray cluster at {address!r}"
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot start or join {where}: {text}; check {option('address')} "
                             "(auto, ray://HOST:10001, or leave it out for a local Ray)") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- the stages


def encode_shards(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data CPU task: read and one-hot encode the shards of ``batch``.

    ``batch``: columns ``shard``, ``start``, ``stop`` and ``source`` (a pickled
    :class:`~yuzu_onnx.sources.SequenceSource` part). Returns one row per shard with
    ``x`` (the encoded array as NPY bytes), ``names`` and ``coords`` (JSON).
    """
    out: dict[str, list] = {"shard": [], "start": [], "stop": [], "x": [], "names": [], "coords": []}
    for shard, start, stop, blob in zip(batch["shard"], batch["start"], batch["stop"], batch["source"]):
        source: SequenceSource = pickle.loads(blob)
        seqs = source.read(int(start), int(stop))
        buffer = io.BytesIO()
        np.save(buffer, seqs.x, allow_pickle=False)
        out["shard"].append(int(shard))
        out["start"].append(int(start))
        out["stop"].append(int(stop))
        out["x"].append(buffer.getvalue())
        out["names"].append(json.dumps(list(seqs.names)))
        out["coords"].append(json.dumps(None if seqs.coords is None else [list(c) for c in seqs.coords]))
    return {"shard": np.asarray(out["shard"], np.int64), "start": np.asarray(out["start"], np.int64),
            "stop": np.asarray(out["stop"], np.int64), "x": np.asarray(out["x"], dtype=object),
            "names": np.asarray(out["names"], dtype=object), "coords": np.asarray(out["coords"], dtype=object)}


class ISMWorker:
    """Ray Data actor: one ONNX Runtime session; computes and writes whole shards.

    Parameters
    ----------
    model: the converted model's path (on a filesystem the worker sees).
    folder: the sharded result folder (on a filesystem the worker sees).
    outputs: the output names, in result order.
    batch_size, max_memory: sequences per ONNX Runtime call, or the memory budget that sets it.
    threads: ONNX Runtime intra-op threads.
    cuda: run the CUDA provider; refuse to start when it cannot be had.
    variants: a folder for the shards' Parquet variant table parts, or ``None``.
    metadata: the result's metadata (layout, alphabet, window, reductions, outputs).
    """

    def __init__(self, model: str, *, folder: str, outputs: list[str], batch_size: int | None, max_memory,
                 threads: int, cuda: bool, variants: str | None, metadata: dict) -> None:
        from .runners import ConvertedRunner
        from .runtime import CUDA
        from .session import ISMSession

        session = ISMSession(model, device="cuda" if cuda else "cpu", threads=threads)
        if cuda and session.provider != CUDA:
            raise ModelError(
                f"a Ray worker on {socket.gethostname()} cannot create a CUDA session (ONNX Runtime gave "
                f"{session.provider}); install onnxruntime-gpu and the CUDA libraries on the GPU nodes, "
                f"or run without {option('gpus_per_worker')}"
            )
        self.runner = ConvertedRunner(session)
        self.rows_per_batch = self.runner.plan_batches(batch_size, max_memory)
        self.writer = ShardWriter(folder, outputs)
        self.variants = Path(variants) if variants else None
        self.metadata = metadata

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Compute and write the shards of ``batch``; returns their records (JSON)."""
        records = []
        for i in range(len(batch["shard"])):
            index, start, stop = int(batch["shard"][i]), int(batch["start"][i]), int(batch["stop"][i])
            coords = json.loads(batch["coords"][i])
            seqs = SequenceBatch(x=np.load(io.BytesIO(batch["x"][i]), allow_pickle=False),
                                 names=tuple(json.loads(batch["names"][i])),
                                 coords=None if coords is None else tuple(tuple(c) for c in coords))
            records.append(json.dumps(self.compute(index, start, stop, seqs)))
        return {"record": np.asarray(records, dtype=object)}

    def compute(self, index: int, start: int, stop: int, seqs: SequenceBatch) -> dict:
        """ISM of one shard, written with its record (and its variant table part)."""
        arrays = compute_block(self.runner, seqs, self.rows_per_batch)
        extra = {}
        if self.variants is not None:
            extra["variants"] = write_variant_part(variant_part(self.variants, index), arrays, seqs, self.metadata)
        return self.writer.write(index, start, stop, arrays, seqs, extra=extra)


# --------------------------------------------------------------------------- the driver


def run_ray(model: str | os.PathLike, source: SequenceSource, store: ShardStore, engine: EngineOptions, *,
            batch_size: int | None = None, max_memory=None, progress: Callable[[int, int], None] | None = None,
            variants: str | os.PathLike | None = None, done: Mapping[int, dict] | None = None) -> dict[int, dict]:
    """Compute the shards ``store`` lacks on Ray; returns every shard's record.

    Parameters
    ----------
    model: the converted ISM model (each actor loads it from this path).
    source: the input, located (:func:`yuzu_onnx.sources.open_source`).
    store: the sharded result folder (:meth:`yuzu_onnx.shards.ShardStore.open`).
    engine: address, workers, GPUs and CPUs per worker.
    batch_size, max_memory: per actor, as for the local engine.
    progress: called as ``progress(done, total)`` in sequences as shards finish.
    variants: a folder for per-shard Parquet variant tables (``part-NNNNNN.parquet``).
    done: the shards already finished (default: :meth:`ShardStore.done_shards`).
    """
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"converted model {str(path)!r} does not exist")
    records, finished = finished_shards(store, done, progress)
    n = store.manifest["n_sequences"]
    todo = [(i, lo, hi) for i, lo, hi in store.plan if i not in records]
    if not todo:
        return records
    if variants is not None:
        Path(variants).mkdir(parents=True, exist_ok=True)
    with ray_cluster(engine.address) as ray:
        _check_gpus(ray, engine)
        rows = [{"shard": i, "start": lo, "stop": hi, "source": pickle.dumps(source.part(lo, hi))}
                for i, lo, hi in todo]
        dataset = _pipeline(ray, rows, str(path.resolve()), store, engine, batch_size=batch_size,
                            max_memory=max_memory, variants=variants)
        try:
            for row in dataset.iter_rows():
                record = json.loads(row["record"])
                records[record["index"]] = record
                finished += record["stop"] - record["start"]
                if progress is not None:
                    progress(finished, n)
        except YuzuError:
            raise
        except Exception as exc:
            raise _yuzu_error_of(exc) from None
    return records


def _check_gpus(ray, engine: EngineOptions) -> None:
    """Refuse GPU workers a local Ray cannot place (they would wait forever); warn on a cluster."""
    need = float(engine.gpus_per_worker)
    if need <= 0:
        return
    have = float(ray.cluster_resources().get("GPU", 0))
    if have >= need:
        return
    text = (f"--gpus-per-worker {need:g} but the Ray cluster has {have:g} GPUs")
    if engine.address is None:
        raise InputError(f"{text}; run on a machine with GPUs (and onnxruntime-gpu), join a GPU cluster with "
                         f"{option('address')}, or leave out {option('gpus_per_worker')}")
    import warnings

    from .errors import YuzuWarning

    warnings.warn(f"{text} now; the workers wait until the autoscaler adds GPU nodes", YuzuWarning, stacklevel=3)


def _pipeline(ray, rows: list[dict], model: str, store: ShardStore, engine: EngineOptions, *,
              batch_size, max_memory, variants):
    """The Ray Data dataset of shard records (lazy: nothing runs until it is iterated)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    worker = engine.worker_class or ISMWorker
    if not (isinstance(worker, type) and issubclass(worker, ISMWorker)):
        raise InputError(f"worker_class must be a subclass of ISMWorker, got {worker!r}")
    gpus = float(engine.gpus_per_worker)
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    dataset = dataset.map_batches(encode_shards, batch_size=1, batch_format="numpy", num_cpus=ENCODE_CPUS,
                                  compute=ray.data.TaskPoolStrategy(size=ENCODE_TASKS_PER_WORKER * engine.workers))
    return dataset.map_batches(
        worker,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=engine.workers),
        num_cpus=engine.cpus_per_worker,
        num_gpus=gpus if gpus > 0 else None,
        fn_constructor_kwargs={
            "model": model, "folder": str(store.folder.resolve()), "outputs": list(store.manifest["outputs"]),
            "batch_size": batch_size, "max_memory": max_memory,
            "threads": max(1, int(engine.cpus_per_worker)), "cuda": gpus > 0,
            "variants": None if variants is None else str(Path(variants).resolve()),
            "metadata": store.manifest["metadata"],
        },
    )


def _yuzu_error_of(exc: BaseException) -> YuzuError:
    """The :class:`YuzuError` a worker raised, found in Ray's wrapping; else a one-line error."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, YuzuError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    from . import errors

    found = _RAISED.findall(str(exc))  # an actor's constructor error arrives as text only
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, YuzuError):
            return kind(message.strip())
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    return YuzuError(f"the Ray run failed: {type(exc).__name__}: {text} (finished shards are kept; rerun with "
                     "--resume to continue)")

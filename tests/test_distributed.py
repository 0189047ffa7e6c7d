"""The Ray engine on a local 2-CPU Ray cluster: equal to the local engine, resumable, retried.

One Ray instance serves the whole module (``ray_cluster``); each run starts its own actor
pool, so the module keeps to a handful of runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest

import yuzu_onnx
from yuzu_onnx import distributed
from yuzu_onnx.errors import ModelError
from yuzu_onnx.ray_engine import ISMWorker
from yuzu_onnx.shards import MANIFEST_FILE, load_results
from yuzu_onnx.testing import build_tiny_cnn

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("pyarrow")
pytest.importorskip("pyfaidx")

RNG = np.random.default_rng(11)
CHROMS = {"chr1": "".join(RNG.choice(list("ACGT"), 3000)), "chr2": "".join(RNG.choice(list("ACGT"), 900))}


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with 2 CPUs for the whole session, shut down at the end."""
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    # the test workers below travel by value: the workers cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _write_genome(folder: Path, n_regions: int) -> dict:
    genome = folder / "genome.fa"
    genome.write_text("".join(f">{c}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                              for c, s in CHROMS.items()))
    rng = np.random.default_rng(n_regions)
    lines = []
    for i in range(n_regions):
        chrom = "chr1" if i % 4 else "chr2"
        start = int(rng.integers(0, len(CHROMS[chrom]) - 20))
        lines.append(f"{chrom}\t{start}\t{start + 20}\tr{i}\t0\t{'-' if i % 3 == 0 else '+'}")
    bed = folder / "regions.bed"
    bed.write_text("\n".join(lines) + "\n")
    return {"genome": genome, "bed": bed, "n": n_regions}


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_ism):
    """23 BED regions on a genome, the tiny model converted, and the local engine's shards."""
    folder = tmp_path_factory.mktemp("rayjob")
    files = _write_genome(folder, 23)
    ref = folder / "local"
    distributed.run(tiny_ism, files["bed"], ref, engine="local", genome=files["genome"], strand=True, shard_size=5,
                    variants=folder / "local.parquet")
    return {**files, "ism": tiny_ism, "ref": ref, "ref_table": folder / "local.parquet"}


def _assert_same(a, b, *, exact: bool = True) -> None:
    assert a.outputs == b.outputs and list(a.names) == list(b.names) and a.coords == b.coords
    for name in [*a.outputs, "x"]:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            scale = max(float(np.abs(x).max()), 1e-30)
            assert float(np.abs(x - y).max()) <= 1e-6 * scale


def _shard_files(folder: Path) -> dict[str, str]:
    """Every file of a sharded folder but the manifest, with its checksum."""
    from yuzu_onnx.partial_store import file_sha256

    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST_FILE}


def test_ray_engine_equals_the_local_engine_with_bed_genome_and_parquet(ray_cluster, job, tmp_path, cli):
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    out = tmp_path / "ray"
    r = cli("run", job["ism"], job["bed"], "--genome", job["genome"], "--strand", "-o", out, "--format", "shards",
            "--engine", "ray", "--workers", "2", "--shard-size", "5", "--variants", tmp_path / "v.parquet")
    assert r.rc == 0, r.err
    assert "Parquet parts" in r.err
    ray_res, local_res = load_results(out, verify=True), load_results(job["ref"], verify=True)
    _assert_same(ray_res, local_res)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["run"]["engine"] == "ray" and manifest["run"]["workers"] == 2
    assert [s["index"] for s in manifest["shards"]] == list(range(5))
    # the shard files are the local engine's, byte for byte (records name their own variant parts)
    assert {k: v for k, v in _shard_files(out).items() if k.endswith(".npy") or k.endswith("coords.json")} == \
        {k: v for k, v in _shard_files(job["ref"]).items() if k.endswith(".npy") or k.endswith("coords.json")}
    parts = sorted((tmp_path / "v.parquet").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:06d}.parquet" for i in range(5)]
    table = pds.dataset([str(p) for p in parts], format="parquet").to_table()
    assert table.equals(pq.read_table(job["ref_table"]))


def test_ray_npz_gathers_the_local_engine_s_file(ray_cluster, job, tmp_path, cli):
    common = ("run", job["ism"], job["bed"], "--genome", job["genome"], "--strand", "--quiet")
    assert cli(*common, "-o", tmp_path / "local.npz").rc == 0
    r = cli(*common, "-o", tmp_path / "ray.npz", "--engine", "ray", "--workers", "2", "--shard-size", "4",
            "--variants", tmp_path / "ray.tsv")
    assert r.rc == 0, r.err
    _assert_same(yuzu_onnx.load_results(tmp_path / "ray.npz"), yuzu_onnx.load_results(tmp_path / "local.npz"))
    assert not (tmp_path / "ray.npz.partial-shards").exists()
    r = cli("variants", tmp_path / "local.npz", "-o", tmp_path / "local.tsv")
    assert (tmp_path / "ray.tsv").read_text() == (tmp_path / "local.tsv").read_text()


class KillOnce(ISMWorker):
    """Kills its own actor process on its first shard, once per marker file."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.marker_path = Path(kwargs["folder"]).parent / "killed.marker"

    def compute(self, index, start, stop, seqs):
        if not self.marker_path.exists():
            self.marker_path.write_text(f"{os.getpid()} {index}")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute(index, start, stop, seqs)


def test_a_killed_worker_is_retried_and_the_folder_equals_an_uninterrupted_run(ray_cluster, job, tmp_path):
    out = tmp_path / "killed"
    distributed.run(job["ism"], job["bed"], out, engine="ray", workers=2, genome=job["genome"], strand=True,
                    shard_size=5, worker_class=KillOnce)
    assert (tmp_path / "killed.marker").is_file()  # a worker did die mid-run
    _assert_same(load_results(out, verify=True), load_results(job["ref"]))
    assert _shard_files(out).keys() == {k for k in _shard_files(job["ref"]) if "variants" not in k}
    shards = json.loads((out / MANIFEST_FILE).read_text())["shards"]
    ref = json.loads((job["ref"] / MANIFEST_FILE).read_text())["shards"]
    assert [s["files"] for s in shards] == [s["files"] for s in ref]


def test_resume_on_ray_keeps_the_local_engine_s_shards(ray_cluster, job, tmp_path, cli):
    import shutil

    out = tmp_path / "mixed"
    shutil.copytree(job["ref"], out)
    for index in (1, 4):
        (out / "shards" / f"{index:06d}.json").unlink()
    kept = (out / "shards" / "000002" / "y.npy").stat().st_mtime_ns
    r = cli("run", job["ism"], job["bed"], "--genome", job["genome"], "--strand", "-o", out, "--format", "shards",
            "--engine", "ray", "--workers", "1", "--resume", "--batch-size", "2")
    assert r.rc == 0, r.err
    assert (out / "shards" / "000002" / "y.npy").stat().st_mtime_ns == kept
    _assert_same(load_results(out, verify=True), load_results(job["ref"]))
    r = cli("run", job["ism"], job["bed"], "--genome", job["genome"], "-o", out, "--format", "shards",
            "--engine", "ray", "--resume")
    assert r.rc == 2 and "options differ" in r.error_lines[0]


class NoCuda(ISMWorker):
    """Asks every actor for a CUDA session, which this machine cannot give."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **{**kwargs, "cuda": True})


def test_a_worker_without_cuda_fails_loudly(ray_cluster, job, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError, match="cannot create a CUDA session"):
            distributed.run(job["ism"], job["bed"], tmp_path / "o", engine="ray", genome=job["genome"],
                            worker_class=NoCuda)


def test_gpu_workers_on_a_cluster_without_gpus_are_refused(ray_cluster, job, tmp_path, cli):
    r = cli("run", job["ism"], job["bed"], "--genome", job["genome"], "-o", tmp_path / "o", "--format", "shards",
            "--engine", "ray", "--gpus-per-worker", "1")
    assert r.rc == 2 and "has 0 GPUs" in r.error_lines[0]


def test_the_driver_never_holds_the_results(ray_cluster, tmp_path):
    """2,000 regions in 20 shards: the driver's Python allocations stay far below the results' size."""
    from yuzu_onnx.convert import convert, save_model

    files = _write_genome(tmp_path, 2000)
    model = tmp_path / "tiny256.onnx"
    onnx.save(build_tiny_cnn(seq_len=256, seed=3), str(model))
    ism = tmp_path / "tiny256.ism.onnx"
    save_model(convert(model), ism)
    out = tmp_path / "big"
    tracemalloc.start()
    try:
        distributed.run(ism, files["bed"], out, engine="ray", workers=2, genome=files["genome"], shard_size=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    res = load_results(out)
    result_bytes = sum(res[name].shape[0] * int(np.prod(res[name].shape[1:])) * 4 for name in [*res.outputs, "x"])
    assert len(res) == 2000 and result_bytes > 30 * 2**20
    assert peak < result_bytes / 8, f"driver peak {peak / 2**20:.1f} MiB for {result_bytes / 2**20:.1f} MiB of results"

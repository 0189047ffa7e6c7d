"""Benchmark of the Ray engine: sequences/s of the local engine vs Ray with 1 and 2 workers.

Usage::

    python tools/bench_ray.py                        # 200 Basset-size sequences (L=600), mini Basset
    python tools/bench_ray.py --model basset         # the published Basset (needs torch, slow on CPU)
    python tools/bench_ray.py --regions 100000       # driver memory over 100,000 BED regions (tiny model)
    python tools/bench_ray.py --json out.json

Every run computes the same sequences with ``--format shards`` and the same shard size;
the local engine runs in this process, the Ray engine on a local Ray started before the
clock starts (as on a cluster that is already up; its start time is reported apart).
Reported per run: wall seconds, sequences/s, the ratio to the local engine and, for one
worker, the overhead per shard, ``(wall_ray1 - wall_local) / shards``: encoding tasks,
the actor's start and the object store. ``--regions`` streams a BED file of that many
regions through ``--engine ray --format shards`` with a small model and samples the
driver's resident memory: it stays flat while the results grow on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yuzu_onnx import distributed  # noqa: E402
from yuzu_onnx.convert import convert, save_model  # noqa: E402
from yuzu_onnx.testing import build_basset_like, build_tiny_cnn, random_onehot  # noqa: E402

BASSET_LENGTH = 600


def _rss_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples the resident memory every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def build_model(kind: str, folder: Path) -> Path:
    """The converted benchmark model: ``mini`` (testing builder) or ``basset`` (torch)."""
    source = folder / f"{kind}.onnx"
    if kind == "mini":
        onnx.save(build_basset_like(seq_len=BASSET_LENGTH, seed=0), str(source))
    elif kind == "basset":
        from tools.torch_models import build, export  # needs torch

        export(build("basset", seq_len=BASSET_LENGTH), source, seq_len=BASSET_LENGTH)
    else:
        raise SystemExit(f"unknown --model {kind!r}; use mini or basset")
    ism = folder / f"{kind}.ism.onnx"
    save_model(convert(source), ism)
    return ism


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(args, folder: Path) -> dict:
    """Local engine vs Ray with each worker count on the same sequences."""
    import ray

    ism = build_model(args.model, folder)
    seqs = folder / "seqs.npy"
    np.save(seqs, random_onehot(args.n, BASSET_LENGTH, seed=1))
    shards = -(-args.n // args.shard_size)
    threads = args.cpus
    rows = []
    out = folder / "local"
    wall = _timed(lambda: distributed.run(ism, seqs, out, engine="local", shard_size=args.shard_size,
                                          batch_size=args.batch_size, threads=threads, device="cpu"))
    local = wall
    rows.append({"engine": "local", "workers": 0, "threads": threads, "wall_s": wall, "seq_per_s": args.n / wall})
    reference = distributed.load_results(out)
    ray_start = _timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                                        logging_level="WARNING"))
    try:
        for workers in args.workers:
            out = folder / f"ray{workers}"
            cpus = max(1, args.cpus // workers)
            wall = _timed(lambda o=out, w=workers, c=cpus: distributed.run(
                ism, seqs, o, engine="ray", workers=w, cpus_per_worker=c, shard_size=args.shard_size,
                batch_size=args.batch_size))
            got = distributed.load_results(out)
            same = all(np.array_equal(np.asarray(got[k]), np.asarray(reference[k])) for k in reference.outputs)
            row = {"engine": "ray", "workers": workers, "threads": cpus, "wall_s": wall, "seq_per_s": args.n / wall,
                   "vs_local": local / wall, "identical_to_local": same}
            if workers == 1:
                row["overhead_per_shard_s"] = (wall - local) / shards
            rows.append(row)
    finally:
        ray.shutdown()
    return {"kind": "throughput", "model": args.model, "n": args.n, "seq_len": BASSET_LENGTH,
            "shard_size": args.shard_size, "shards": shards, "cpus": args.cpus, "ray_start_s": ray_start,
            "runs": rows}


def driver_memory(args, folder: Path) -> dict:
    """Driver RSS while ``--regions`` BED regions go through Ray with a small model."""
    import ray

    genome = folder / "genome.fa"
    rng = np.random.default_rng(0)
    chrom = "".join(rng.choice(list("ACGT"), 200_000))
    genome.write_text(">chr1\n" + "\n".join(chrom[i : i + 80] for i in range(0, len(chrom), 80)) + "\n")
    source = folder / "tiny.onnx"
    onnx.save(build_tiny_cnn(seq_len=64, seed=1), str(source))
    ism = folder / "tiny.ism.onnx"
    save_model(convert(source), ism)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    rows = []
    try:
        for n in sorted({max(1, args.regions // 10), args.regions}):
            bed = folder / f"regions{n}.bed"
            starts = rng.integers(0, len(chrom) - 100, n)
            bed.write_text("".join(f"chr1\t{s}\t{s + 50}\n" for s in starts))
            out = folder / f"mem{n}"
            before = _rss_bytes()
            with RssSampler() as sampler:
                wall = _timed(lambda b=bed, o=out: distributed.run(
                    ism, b, o, engine="ray", workers=args.cpus, genome=genome, shard_size=args.shard_size * 20))
            res = distributed.load_results(out)
            result_bytes = sum(int(np.prod(res[k].shape)) * 4 for k in [*res.outputs, "x"])
            rows.append({"regions": n, "wall_s": wall, "seq_per_s": n / wall, "result_mib": result_bytes / 2**20,
                         "driver_rss_before_mib": before / 2**20, "driver_rss_peak_mib": sampler.peak / 2**20,
                         "driver_rss_growth_mib": (sampler.peak - before) / 2**20})
            shutil.rmtree(out)
    finally:
        ray.shutdown()
    return {"kind": "driver_memory", "model": "tiny (L=64)", "cpus": args.cpus, "runs": rows}


def table(report: dict) -> str:
    lines = []
    if report["kind"] == "throughput":
        lines.append(f"{report['n']} sequences, L={report['seq_len']}, model {report['model']}, "
                     f"{report['shards']} shards of {report['shard_size']}, {report['cpus']} CPUs; "
                     f"Ray started in {report['ray_start_s']:.1f} s (not counted)")
        lines.append(f"{'engine':<8} {'workers':>7} {'threads':>7} {'wall s':>8} {'seq/s':>8} {'vs local':>8} "
                     f"{'overhead/shard s':>16}")
        for r in report["runs"]:
            vs = f"{r['vs_local']:.2f}" if "vs_local" in r else "1.00"
            over = f"{r['overhead_per_shard_s']:.3f}" if "overhead_per_shard_s" in r else ""
            lines.append(f"{r['engine']:<8} {r['workers']:>7} {r['threads']:>7} {r['wall_s']:>8.2f} "
                         f"{r['seq_per_s']:>8.1f} {vs:>8} {over:>16}")
    else:
        lines.append(f"driver memory, model {report['model']}, {report['cpus']} CPUs")
        lines.append(f"{'regions':>8} {'wall s':>8} {'seq/s':>8} {'results MiB':>12} {'RSS before':>11} "
                     f"{'RSS peak':>9} {'growth':>7}")
        for r in report["runs"]:
            lines.append(f"{r['regions']:>8} {r['wall_s']:>8.1f} {r['seq_per_s']:>8.0f} {r['result_mib']:>12.1f} "
                         f"{r['driver_rss_before_mib']:>11.0f} {r['driver_rss_peak_mib']:>9.0f} "
                         f"{r['driver_rss_growth_mib']:>7.0f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mini", help="mini (no torch, default) or basset (needs torch)")
    parser.add_argument("-n", type=int, default=200, help="sequences (default 200)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts (default 1,2)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs for both engines (default all)")
    parser.add_argument("--shard-size", type=int, default=25, help="sequences per shard (default 25)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per ONNX Runtime call (default 8)")
    parser.add_argument("--regions", type=int, help="measure driver memory over this many BED regions instead")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in str(args.workers).split(",")]
    with tempfile.TemporaryDirectory(prefix="yuzu-bench-ray-") as tmp:
        report = driver_memory(args, Path(tmp)) if args.regions else throughput(args, Path(tmp))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark yuzu-onnx against naive ISM (and, with --peers, tangermeme and the original Yuzu).

Usage (from the repository root)::

    python tools/bench.py                                  # every model, 2 threads
    python tools/bench.py --models toynet,basset600 --threads 2 --repeats 3 --batch 32
    python tools/bench.py --peers --reuse-exports /tmp/exports
    python tools/bench.py --quick                          # toynet and bpnet4 at L=200
    python tools/bench.py --profile deepsea                # where the converted model spends its time
    python tools/bench.py --device cuda --quick

Results go to ``tools/bench_results/`` (``bench_results.json``, ``bench_results.md``) unless
``--out`` says otherwise. The logic lives in :mod:`yuzu_onnx.bench` (also ``yuzu-onnx bench``);
models are built and exported by ``tools/torch_models.py`` (needs torch) and cached.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from yuzu_onnx.bench import main  # noqa: E402

DEFAULT_OUT = ROOT / "tools" / "bench_results"


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(DEFAULT_OUT)]
    sys.exit(main(argv))

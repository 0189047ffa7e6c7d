"""Benchmark yuzu-onnx against naive ISM (and, with --peers, tangermeme and the original Yuzu).

Usage (from a source checkout; named models need PyTorch: ``pip install torch==2.13.0``)::

    python tools/bench.py                                  # every model, 2 threads
    python tools/bench.py --models toynet,basset600 --threads 2 --repeats 3 --batch 32
    python tools/bench.py --peers --reuse-exports /tmp/exports
    python tools/bench.py --quick                          # toynet and bpnet4 at L=200
    python tools/bench.py --models a.onnx,b.onnx --quick   # your own files (no PyTorch needed)
    python tools/bench.py --profile deepsea                # where the converted model spends its time
    python tools/bench.py --device cuda --quick

Results go to ``tools/bench_results/`` (``bench_results.json``, ``bench_results.md``) unless
``--out`` says otherwise. The logic is the package ``tools/bench/`` (also ``python -m tools.bench``).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

"""One sequence of one model, measured in fresh processes: the memory estimate against the
peak RSS, and (optionally) the time against naive ISM extrapolated from a sample.

    python tools/measure_one_sequence.py MODEL.onnx [--window S:E] [--max-memory 4G]
                                          [--reduce l2] [--select ...] [--aggregate ...]
                                          [--naive-sample K] [--threads 2] [--device cpu]

Three processes: one converts (with the budget and options given) and saves the model; one
loads it and runs one random sequence (its ``ru_maxrss`` is the measured peak, beside the
estimate ``peak_bytes_per_sequence + fixed_bytes`` of the metadata); with ``--naive-sample
K``, one times naive ISM on ``K`` positions in the middle of the window and scales the time
to the window, both on ``--device`` (default the CPU, whose memory the estimate is of). Prints
one JSON line. This is how the long-context figures in the README and
the closing notes of issue #13 were measured; ``tools/bench.py`` is the full benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONVERT = """
import json, sys, warnings
warnings.simplefilter("ignore")
from yuzu_onnx import convert_model, save_model
kwargs = json.loads(sys.argv[1])
conversion = convert_model(kwargs.pop("model"), **kwargs)
save_model(conversion.model, sys.argv[2])
plan = conversion.plan
print(json.dumps({"chunks": len(plan.chunks), "chunk_width": plan.chunk_width, "window": list(plan.window),
                  "expected_speedup": plan.expected_speedup, "bound_speedup": plan.bound_speedup}))
"""

RUN = """
import json, resource, sys, time
from yuzu_onnx import ISMSession
from yuzu_onnx.encoding import random_one_hot
session = ISMSession(sys.argv[1], threads=int(sys.argv[2]), device=sys.argv[3])
info = session.info
X = random_one_hot(1, info.seq_len, alphabet_size=info.alphabet_size, layout=info.layout, seed=1)
start = time.perf_counter()
session.run(X, max_memory=1 << 40)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "estimate_bytes": info.peak_bytes_per_sequence + info.fixed_bytes}))
"""

NAIVE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
from yuzu_onnx import load_model, naive_ism
from yuzu_onnx.encoding import random_one_hot
args = json.loads(sys.argv[1])
spec = load_model(args["model"])
X = random_one_hot(1, spec.seq_len, alphabet_size=spec.alphabet_size, layout=spec.layout, seed=1)
lo, hi, k = args["start"], args["end"], args["sample"]
naive_ism(spec, X, window=(lo, lo + 1), threads=args["threads"], device=args["device"], **args["targets"])  # warm-up
middle = (lo + hi - k) // 2
start = time.perf_counter()
naive_ism(spec, X, window=(middle, middle + k), threads=args["threads"], device=args["device"], **args["targets"])
seconds = time.perf_counter() - start
print(json.dumps({"sample_seconds": seconds, "extrapolated_seconds": seconds * (hi - lo) / k}))
"""


def _python(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"measure_one_sequence: a measurement failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an original ONNX model")
    p.add_argument("--window", metavar="S:E", help="mutated positions (default: all)")
    p.add_argument("--max-memory", default="4G", help="the conversion's budget (default 4G)")
    p.add_argument("--reduce", help="as for yuzu-onnx convert")
    p.add_argument("--select", action="append", default=[], help="as for yuzu-onnx convert (repeatable)")
    p.add_argument("--aggregate", action="append", default=[], help="as for yuzu-onnx convert (repeatable)")
    p.add_argument("--naive-sample", type=int, default=0, metavar="K",
                   help="also time naive ISM on K positions and extrapolate to the window (default: skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the sequence and the naive sample run (default cpu: the estimate is of host memory)")
    args = p.parse_args(argv)
    targets = {key: value for key, value in (("select", args.select), ("aggregate", args.aggregate)) if value}
    kwargs = {"model": args.model, "window": args.window, "max_memory": args.max_memory, "reduce": args.reduce,
              **targets}
    with tempfile.TemporaryDirectory() as folder:
        converted = str(Path(folder) / "model.ism.onnx")
        plan = _python(CONVERT, json.dumps(kwargs), converted)
        run = _python(RUN, converted, str(args.threads), args.device)
    result = {"model": args.model, "max_memory": args.max_memory, **plan, **run,
              "measured_over_estimate": run["peak_rss_bytes"] / run["estimate_bytes"]}
    if args.naive_sample:
        start, end = plan["window"]
        naive = _python(NAIVE, json.dumps({"model": args.model, "start": start, "end": end, "threads": args.threads,
                                           "device": args.device,
                                           "sample": min(args.naive_sample, end - start), "targets": targets}))
        result.update(naive, speedup=naive["extrapolated_seconds"] / run["seconds"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the ISM rewrite against the naive oracle on random architectures.

    python tools/fuzz_exactness.py --examples 500 [--seed 0] [--out tools/fuzz_failures]
    python tools/fuzz_exactness.py --replay tools/fuzz_failures/seed_123.json

Example ``i`` uses seed ``S + i``: the model is ``random_model(seed)``; the window,
reductions, sequences, first-convolution mode and output form (``dense``, or ``auto``, which
bands the profile outputs it pays to) are drawn from ``numpy.random.default_rng([seed, 1])``. Every
failure is saved as ``<out>/seed_<seed>.onnx`` and ``.json`` (seed, options, errors) with a
one-line reproduction command. Outputs above tolerance are re-checked against a float64
oracle (``onnx.reference``) to tell engine bugs from float32 oracle noise; noise-only
examples are reported but not counted as failures.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

os.environ.setdefault("YUZU_THREADS", "1")

from yuzu_onnx.importer import load_model  # noqa: E402
from yuzu_onnx.testing.exactness import check_exactness, draw_options  # noqa: E402
from yuzu_onnx.testing.random_models import GeneratorError, random_batch, random_model  # noqa: E402


def input_layout(model: onnx.ModelProto) -> tuple[str, int, int]:
    """``(layout, seq_len, alphabet_size)`` of a generated model's input."""
    spec = load_model(model)
    return spec.layout, spec.seq_len, spec.alphabet_size


def example_inputs(model: onnx.ModelProto, seed: int):
    """The window, reductions, sequences and run options of example ``seed``."""
    layout, seq_len, alphabet_size = input_layout(model)
    rng = np.random.default_rng([seed, 1])
    window, reduce = draw_options(model, seq_len, rng)
    n = int(rng.integers(2, 4))
    X = random_batch(n, seq_len, layout=layout, rng=rng, n_unknown=int(rng.integers(1, 4)),
                     alphabet_size=alphabet_size)
    chunk_bytes = int(rng.integers(1, 40000)) if rng.random() < 0.3 else None
    batch_size = 1 if rng.random() < 0.2 else None
    first_conv = "shortcut" if rng.random() < 0.5 else "auto"
    output_form = "auto" if rng.random() < 0.5 else "dense"
    return window, reduce, X, chunk_bytes, batch_size, first_conv, output_form


def run_one(seed: int, out_dir: Path | None, *, model=None, window="draw", reduce=None, X=None,
            chunk_bytes=None, batch_size=None, first_conv="auto", output_form="dense") -> dict:
    """Check one example; returns a JSON-able record (``status`` ok / fail / noise / generator)."""
    started = time.perf_counter()
    record: dict = {"seed": seed}
    if model is None:
        try:
            model, info = random_model(seed)
        except GeneratorError as exc:
            return {**record, "status": "generator", "error": str(exc)}
        except Exception as exc:  # a crash inside the generator is a generator bug too
            return {**record, "status": "generator", "error": f"{type(exc).__name__}: {exc}"}
        record["description"] = info.description
    else:
        record["description"] = model.doc_string
    if window == "draw":
        window, reduce, X, chunk_bytes, batch_size, first_conv, output_form = example_inputs(model, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_exactness(model, X, window=window, reduce=reduce, tail_chunk_bytes=chunk_bytes,
                                 batch_size=batch_size, first_conv=first_conv, output_form=output_form)
    record.update(
        window=list(window) if window else None,
        reduce=report.reduce or reduce,
        tail_chunk_bytes=chunk_bytes,
        batch_size=batch_size,
        first_conv=first_conv,
        output_form=output_form,
        x_shape=list(X.shape),
        report=report.as_dict(),
        summary=report.summary(),
        seconds=round(time.perf_counter() - started, 3),
    )
    record["status"] = "ok" if report.ok and not report.noisy else ("noise" if report.ok else "fail")
    if record["status"] == "fail" and out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = out_dir / f"seed_{seed}"
        onnx.save(model, str(stem) + ".onnx")
        np.save(str(stem) + ".x.npy", X)
        record["model"] = str(stem) + ".onnx"
        record["x"] = str(stem) + ".x.npy"
        Path(str(stem) + ".json").write_text(json.dumps(record, indent=1, default=str))
        record["replay"] = f"python tools/fuzz_exactness.py --replay {stem}.json"
    return record


def replay(path: Path) -> int:
    saved = json.loads(path.read_text())
    model = onnx.load(saved["model"])
    X = np.load(saved["x"])
    window = tuple(saved["window"]) if saved["window"] else None
    record = run_one(saved["seed"], None, model=model, window=window, reduce=saved["reduce"], X=X,
                     chunk_bytes=saved.get("tail_chunk_bytes"), batch_size=saved.get("batch_size"),
                     first_conv=saved.get("first_conv", "auto"), output_form=saved.get("output_form", "dense"))
    print(json.dumps({k: record[k] for k in ("seed", "description", "window", "reduce", "output_form", "status",
                                             "summary")},
                     indent=1, default=str))
    for check in record["report"]["checks"]:
        print(f"  {check['output']:>6} [{check['reduce']}] max_err={check['max_err']:.3e} scale={check['scale']:.3e} "
              f"rel={check['rel']:.2e} f64_err={check['f64_err']} oracle_noise={check['oracle_noise']} "
              f"-> {check['verdict']}")
    return 0 if record["status"] != "fail" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100, help="number of random examples")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--out", type=Path, default=Path("tools/fuzz_failures"), help="where failures go")
    parser.add_argument("--replay", type=Path, help="re-run a saved failure (.json)")
    parser.add_argument("--log", type=Path, help="append one JSON line per example here")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return replay(args.replay)
    counts: collections.Counter = collections.Counter()
    started = time.perf_counter()
    log = args.log.open("a") if args.log else None
    for i in range(args.examples):
        seed = args.seed + i
        record = run_one(seed, args.out)
        counts[record["status"]] += 1
        if record["report"]["fallback"] if "report" in record else False:
            counts["fallback"] += 1
        if log is not None:
            log.write(json.dumps(record, default=str) + "\n")
            log.flush()
        if record["status"] in ("fail", "generator"):
            print(f"FAIL seed={seed} {record.get('description', '')}\n     {record.get('summary') or record.get('error')}"
                  + (f"\n     reproduce: {record['replay']}" if "replay" in record else ""), flush=True)
        elif record["status"] == "noise":
            print(f"noise seed={seed}: {record['summary']}", flush=True)
        if (i + 1) % 50 == 0:
            elapsed = time.perf_counter() - started
            print(f"[{i + 1}/{args.examples}] {elapsed:.0f}s " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
                  flush=True)
    print("done: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    return 1 if counts["fail"] or counts["generator"] else 0


if __name__ == "__main__":
    sys.exit(main())

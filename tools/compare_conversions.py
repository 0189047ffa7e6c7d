"""Check that a change leaves converted models unchanged: convert a corpus, save the outputs,
convert again later and compare.

    python tools/compare_conversions.py save DIR [REPO]    # before the change: models, inputs, outputs
    python tools/compare_conversions.py check DIR [REPO]   # after it: convert DIR's models again, compare

The corpus: the shipped models, the torch exports and fuzz regressions under ``tests/data``,
every ``yuzu_onnx.testing`` builder in both layouts and 60 random architectures (saved as
files under DIR, so a later generator change does not change them), each converted plain,
with ``--reduce l2`` and a window, and with ``--first-conv shortcut``; inputs are seeded by
case name. ``check`` prints the worst relative difference (per output, relative to the saved
output's max) and exits 1 when any output differs by more than 1e-6 of its scale. Uses only
the public API (``yuzu_onnx.convert``, ``ISMSession``), so it runs on both sides of a refactor.
"""
from __future__ import annotations

import json
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx

import yuzu_onnx

REPO = Path(__file__).resolve().parent


def one_hot(n, length, a, layout, seed):
    rng = np.random.default_rng(seed)
    x = np.eye(a, dtype=np.float32)[rng.integers(0, a, (n, length))]
    x[0, length // 3] = 0
    return x if layout == "nlc" else x.transpose(0, 2, 1).copy()


def corpus(repo: Path, out: Path):
    """(name, model file, convert options) of every case; writes generated models to out."""
    cases = []
    for f in sorted((repo / "models").glob("*.onnx")):
        cases.append((f.stem, f, {}))
    manifest = json.loads((repo / "tests/data/torch/manifest.json").read_text())
    for e in manifest["models"]:
        cases.append((Path(e["file"]).stem, repo / "tests/data/torch" / e["file"], {"seq_len": e["seq_len"]}))
    for j in sorted((repo / "tests/data/fuzz").glob("*.json")):
        meta = json.loads(j.read_text())
        opts = {"window": tuple(meta["window"]) if meta["window"] else None, "reduce": meta["reduce"]}
        cases.append((j.stem, j.with_suffix(".onnx"), opts))
    from yuzu_onnx.testing import BUILDERS
    gen = out / "models"
    gen.mkdir(parents=True, exist_ok=True)
    for name, build in sorted(BUILDERS.items()):
        for layout in ("ncl", "nlc"):
            f = gen / f"{name}_{layout}.onnx"
            if not f.exists():
                onnx.save(build(layout=layout), str(f))
            seq = {"seq_len": 100} if name == "dynamic_length" else {}
            cases.append((f.stem, f, seq))
    try:
        from yuzu_onnx.testing.random_models import GeneratorError, random_model
    except ImportError:
        random_model = None
    for seed in range(60):
        f = gen / f"random_{seed}.onnx"
        if not f.exists():
            if random_model is None:
                continue
            try:
                m, _ = random_model(seed)
            except GeneratorError:
                continue
            onnx.save(m, str(f))
        cases.append((f.stem, f, {}))
    variants = []
    for name, f, opts in cases:
        variants.append((name, f, opts))
        variants.append((name + "+l2_win", f, {**opts, "reduce": "l2", "window": opts.get("window") or "win"}))
        variants.append((name + "+shortcut", f, {**opts, "first_conv": "shortcut"}))
    return variants


def run_case(f, opts, seed):
    opts = dict(opts)
    spec = yuzu_onnx.load_model(str(f), seq_len=opts.get("seq_len"))
    if opts.get("window") == "win":
        L = spec.seq_len
        opts["window"] = (L // 4, L // 4 + max(L // 5, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = yuzu_onnx.convert(str(f), **opts)
        x = one_hot(2, spec.seq_len, spec.alphabet_size, spec.layout, seed)
        res = yuzu_onnx.ISMSession(model, device="cpu").run(x)
    return {k: np.asarray(v) for k, v in res.items()}


def main():
    mode, d = sys.argv[1], Path(sys.argv[2])
    repo = Path(sys.argv[3]) if len(sys.argv) > 3 else Path.cwd()
    d.mkdir(parents=True, exist_ok=True)
    worst, bad, n = 0.0, [], 0
    for name, f, opts in corpus(repo, d):
        target = d / "out" / f"{name}.npz"
        try:
            res = run_case(f, opts, zlib.crc32(name.split("+")[0].encode()))
        except Exception as exc:  # recorded: a case that fails must fail the same way
            res = {"__error__": np.array(f"{type(exc).__name__}")}
        if mode == "save":
            target.parent.mkdir(exist_ok=True)
            np.savez(target, **res)
            continue
        if not target.exists():
            continue
        ref = dict(np.load(target))
        n += 1
        if set(ref) != set(res):
            bad.append((name, f"keys {sorted(ref)} vs {sorted(res)} {res.get('__error__', '')}"))
            continue
        for k in ref:
            if k == "__error__":
                continue
            if ref[k].shape != res[k].shape:
                bad.append((name, f"{k} shape {ref[k].shape} vs {res[k].shape}"))
                continue
            scale = max(float(np.nanmax(np.abs(ref[k]))) if ref[k].size else 0.0, 1e-30)
            err = float(np.nanmax(np.abs(ref[k] - res[k]))) if ref[k].size else 0.0
            rel = err / scale
            worst = max(worst, rel)
            if rel > 1e-6 or (np.isnan(ref[k]) != np.isnan(res[k])).any():
                bad.append((name, f"{k} rel err {rel:.3e}"))
    if mode == "check":
        print(f"{n} cases compared; worst relative difference {worst:.3e}; {len(bad)} differ")
        for b in bad:
            print("  DIFF", *b)
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

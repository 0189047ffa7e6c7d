"""Saved fuzz examples (``tests/data/fuzz``) stay exact against the naive oracle.

Each case is a model drawn by ``tools/fuzz_exactness.py`` (``<name>.onnx``), its sequences
(``<name>.x.npy``) and the options it was converted with (``<name>.json``: window,
reductions, the tail chunk budget that forced a multi-chunk tail ``Loop``, the session batch
size). Models are saved as files, not regenerated from seeds, so the cases survive changes
to the generator. The long fuzz runs found no engine bug so far; these are the hardest
architectures they drew (several stages, chunked tails, windows, every reduction, heads
on the raw input and on mid-trunk tensors, protein alphabet). A confirmed engine bug gets
its minimal reproduction added here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx.testing.exactness import TOLERANCE, check_exactness

DATA = Path(__file__).parent / "data" / "fuzz"
CASES = sorted(p.stem for p in DATA.glob("*.json"))


def test_corpus_is_present():
    assert CASES, f"no fuzz cases in {DATA}"
    for name in CASES:
        assert (DATA / f"{name}.onnx").stat().st_size < 50_000


@pytest.mark.parametrize("name", CASES)
def test_saved_fuzz_case_is_exact(name):
    meta = json.loads((DATA / f"{name}.json").read_text())
    model = onnx.load(str(DATA / f"{name}.onnx"))
    X = np.load(DATA / f"{name}.x.npy")
    window = tuple(meta["window"]) if meta["window"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_exactness(model, X, window=window, reduce=meta["reduce"],
                                 tail_chunk_bytes=meta["tail_chunk_bytes"], batch_size=meta["batch_size"])
    context = f"{name} ({meta['description']}), window={window}, reduce={meta['reduce']}"
    assert report.error is None, f"{context}\n{report.stage} failed: {report.error}"
    assert report.fallback is None, f"{context}\nunexpected naive fallback: {report.fallback}"
    for check in report.checks:
        assert not check.nan, f"{context}\n{check.output} has NaN"
        assert check.shape == check.expected_shape, f"{context}\n{check.output}: {check.shape} != {check.expected_shape}"
        assert check.max_err <= TOLERANCE * check.scale, (
            f"{context}\n{check.output}[{check.reduce}]: max|err| {check.max_err:.3e} > "
            f"{TOLERANCE:g} x scale {check.scale:.3e}"
        )


def test_fuzzer_draws_the_output_form_and_replays_it(tmp_path, monkeypatch, capsys):
    """``tools/fuzz_exactness.py`` draws ``dense`` or ``auto`` per example and records it; a
    saved record replays with its form."""
    monkeypatch.setenv("YUZU_THREADS", "1")  # what the tool sets for itself on import
    from tools import fuzz_exactness

    records = [fuzz_exactness.run_one(seed, tmp_path) for seed in range(23000, 23016)]
    drawn = [r for r in records if r["status"] != "generator"]
    assert drawn and all(r["status"] == "ok" for r in drawn), [r.get("summary") for r in drawn]
    assert {r["output_form"] for r in drawn} == {"dense", "auto"}
    record = next(r for r in drawn if r["output_form"] == "auto")
    model, _ = fuzz_exactness.random_model(record["seed"])
    window, reduce, X, *_ = fuzz_exactness.example_inputs(model, record["seed"])
    onnx.save(model, str(tmp_path / "case.onnx"))
    np.save(tmp_path / "case.x.npy", X)
    saved = {**record, "model": str(tmp_path / "case.onnx"), "x": str(tmp_path / "case.x.npy")}
    (tmp_path / "case.json").write_text(json.dumps(saved, default=str))
    assert fuzz_exactness.replay(tmp_path / "case.json") == 0
    out = capsys.readouterr().out
    assert '"status": "ok"' in out and '"output_form": "auto"' in out

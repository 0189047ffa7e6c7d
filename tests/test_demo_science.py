"""The demo model has learned the planted motifs, and ISM finds them.

``yuzu_onnx/demo_data/demo_motifs.onnx`` (package data of the demo) was trained by
``tools/train_demo.py`` to tell sequences with a GATA (``AGATAA``) or AP-1 (``TGASTCA``)
site from random background. On the 16 held-out example sequences, the positions where a
substitution changes the prediction most must be the planted motif bases. ISM here is a
brute-force loop over ONNX Runtime, independent of the rest of yuzu-onnx.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from yuzu_onnx.encoding import random_one_hot

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "yuzu_onnx" / "demo_data"
MODEL = DEMO_DATA / "demo_motifs.onnx"
FASTA = DEMO_DATA / "demo_sequences.fa"
MOTIFS = DEMO_DATA / "demo_motifs.tsv"
ALPHABET = "ACGT"
TOP_K = 10


def read_fasta(path: Path) -> dict[str, str]:
    seqs: dict[str, str] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            seqs[name] = ""
        elif line.strip():
            seqs[name] += line.strip().upper()
    return seqs


def read_motifs(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def one_hot_ncl(seqs: list[str]) -> np.ndarray:
    idx = np.array([[ALPHABET.index(c) for c in s] for s in seqs])
    return np.ascontiguousarray(np.eye(4, dtype=np.float32)[idx].transpose(0, 2, 1))


def brute_force_ism(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """(N, A, L) deltas: every single substitution run explicitly, minus the reference."""
    n, a, length = x.shape
    ref = session.run(None, {"x": x})[0]
    ism = np.zeros((n, a, length), np.float32)
    for i in range(n):
        mutants = np.repeat(x[i : i + 1], a * length, axis=0).reshape(a, length, a, length)
        for base in range(a):
            mutants[base, np.arange(length), :, np.arange(length)] = np.eye(a, dtype=np.float32)[base]
        out = session.run(None, {"x": mutants.reshape(a * length, a, length)})[0]
        ism[i] = out.reshape(a, length) - ref[i]
    return ism


@pytest.fixture(scope="module")
def demo():
    seqs = read_fasta(FASTA)
    names = list(seqs)
    x = one_hot_ncl([seqs[n] for n in names])
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    motifs = read_motifs(MOTIFS)
    return names, seqs, x, session, motifs


def test_files_are_as_documented(demo):
    names, seqs, x, _, motifs = demo
    assert MODEL.stat().st_size < 200_000
    model = onnx.load(str(MODEL))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,) = model.graph.input
    assert inp.name == "x"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [4, 200]
    assert len(names) == 16 and all(len(s) == 200 for s in seqs.values())
    # every planted site is where the table says, with the right letters
    for row in motifs:
        site = seqs[row["name"]][int(row["start"]) : int(row["end"])]
        assert site == row["site"]
        assert row["motif"] in ("GATA", "AP-1")
        assert site == "AGATAA" if row["motif"] == "GATA" else site in ("TGACTCA", "TGAGTCA")
    assert {r["name"] for r in motifs} == set(names)


def test_model_calls_the_examples_positive(demo):
    _, _, x, session, _ = demo
    logits = session.run(None, {"x": x})[0]
    assert logits.shape == (16,)
    assert np.all(logits > 0)
    # and random background (which almost never holds a full site) negative, mostly
    rng = np.random.default_rng(0)
    background = random_one_hot(64, 200, rng=rng)
    assert np.mean(session.run(None, {"x": background})[0] < 0) > 0.8


def test_ism_peaks_on_the_planted_motifs(demo):
    """Top-10 positions by max |delta| fall inside the planted motifs far above chance.

    Each example holds one or two sites of 6-7 bp, 6-13 of 200 positions: a top-10
    position lands in a motif by chance with probability ``motif bases / 200`` (about
    4% here), and at most ``min(10, motif bases)`` of 10 can (118/160 = 74% overall).
    We require >= 50% overall precision — two thirds of the attainable maximum — and
    >= 10x the chance rate, and that each sequence's single strongest position is a
    motif base. A model that had not learned the motifs scores near 4%.
    """
    names, _, x, session, motifs = demo
    ism = brute_force_ism(session, x)
    assert np.all(ism[x == 1] == 0)  # the reference base has delta 0
    length = x.shape[2]
    strength = np.abs(ism).max(axis=1)  # (N, L): max |delta| over the alternatives
    hits = chance = 0.0
    for i, name in enumerate(names):
        inside = np.zeros(length, bool)
        for row in motifs:
            if row["name"] == name:
                inside[int(row["start"]) : int(row["end"])] = True
        top = np.argsort(-strength[i], kind="stable")[:TOP_K]
        assert inside[top[0]], f"{name}: strongest position {top[0]} is outside the motifs"
        hits += inside[top].sum()
        chance += inside.mean() * TOP_K
    total = TOP_K * len(names)
    precision, chance_rate = hits / total, chance / total
    assert precision >= 0.5, f"top-{TOP_K} precision {precision:.2f}"
    assert precision >= 10 * chance_rate, f"precision {precision:.2f} vs chance {chance_rate:.3f}"
    # destroying a motif base lowers the prediction: deltas inside motifs are negative
    inside_all = np.zeros(x.shape[::2], bool)
    for row in motifs:
        inside_all[names.index(row["name"]), int(row["start"]) : int(row["end"])] = True
    mean_in = ism.sum(axis=1)[inside_all].mean() / 3
    mean_out = ism.sum(axis=1)[~inside_all].mean() / 3
    assert mean_in < -1.0 and abs(mean_out) < abs(mean_in) / 10


def test_brute_force_agrees_with_the_oracle(demo):
    """The loop above and yuzu_onnx.oracle.naive_ism compute the same thing."""
    oracle = pytest.importorskip("yuzu_onnx.oracle")
    _, _, x, session, _ = demo
    ours = brute_force_ism(session, x[:3])
    theirs = oracle.naive_ism(MODEL, x[:3], device="cpu")["logit"]
    assert theirs.shape == ours.shape == (3, 4, 200)
    scale = max(np.abs(session.run(None, {"x": x[:3]})[0]).max(), np.abs(ours).max())
    np.testing.assert_allclose(theirs, ours, atol=1e-5 * scale, rtol=0)


@pytest.mark.slow
def test_training_script_reproduces_the_committed_files(tmp_path):
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_demo.py"), "--model", str(tmp_path / "m.onnx"),
         "--fasta", str(tmp_path / "s.fa"), "--motifs", str(tmp_path / "m.tsv")],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy" in out.stdout
    assert (tmp_path / "s.fa").read_bytes() == FASTA.read_bytes()
    assert (tmp_path / "m.tsv").read_bytes() == MOTIFS.read_bytes()
    # same torch build → identical bytes; other builds may round differently
    if hashlib.sha256((tmp_path / "m.onnx").read_bytes()).digest() != hashlib.sha256(MODEL.read_bytes()).digest():
        x = one_hot_ncl(list(read_fasta(FASTA).values()))
        new = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        old = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(new.run(None, {"x": x})[0], old.run(None, {"x": x})[0], atol=1e-3)

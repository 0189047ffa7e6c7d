"""Train the demo model: a small CNN that finds GATA and AP-1 sites in synthetic DNA.

Writes, deterministically (fixed seeds, 2 CPU threads):

* ``yuzu_onnx/demo_data/demo_motifs.onnx`` — the trained CNN, exported with the TorchScript exporter
  (opset 17, input ``x`` of shape ``(batch, 4, 200)``, layout ncl, alphabet ACGT, output
  ``logit`` of shape ``(batch,)``: the log-odds that the sequence holds a motif);
* ``yuzu_onnx/demo_data/demo_sequences.fa`` — 16 held-out positive sequences;
* ``yuzu_onnx/demo_data/demo_motifs.tsv`` — where the motifs were planted in them
  (``name, motif, start, end, site``; 0-based, end exclusive).

The three files are the package data of ``yuzu-onnx demo`` (``pyproject.toml`` ships them).

The data: uniform random background sequences of length 200 that contain neither motif
(re-drawn until they do not). A positive holds a GATA site ``AGATAA`` or an AP-1 site
``TGASTCA`` (``S`` = C or G) at a random position, and a quarter of the positives hold
one of each; negatives hold none. Held-out accuracy and ROC AUC are printed.

Run from the repository root::

    python tools/train_demo.py            # about a minute on 2 CPU cores

Needs ``torch`` (``pip install yuzu-onnx[torch]``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ALPHABET = "ACGT"
SEQ_LEN = 200
MOTIFS: dict[str, tuple[str, ...]] = {
    "GATA": ("AGATAA",),
    "AP-1": ("TGACTCA", "TGAGTCA"),
}
SEED = 20240611
N_TRAIN = 24000
N_VALID = 4000
N_DEMO = 16
EPOCHS = 10
BATCH = 128
FILTERS = 16
KERNEL = 15

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "yuzu_onnx" / "demo_data"  # package data: yuzu-onnx demo reads it from the install


def _contains_motif(seq: str) -> bool:
    return any(site in seq for sites in MOTIFS.values() for site in sites)


def _background(rng: np.random.Generator) -> str:
    while True:
        seq = "".join(rng.choice(list(ALPHABET), SEQ_LEN))
        if not _contains_motif(seq):
            return seq


def _plant(rng: np.random.Generator, seq: str, names: list[str]) -> tuple[str, list[tuple[str, int, int, str]]]:
    """Plant one site of each motif in ``names`` at random, non-overlapping positions."""
    while True:
        chars = list(seq)
        planted: list[tuple[str, int, int, str]] = []
        taken: list[tuple[int, int]] = []
        ok = True
        for name in names:
            site = MOTIFS[name][rng.integers(len(MOTIFS[name]))]
            start = int(rng.integers(0, SEQ_LEN - len(site) + 1))
            end = start + len(site)
            if any(start < e + 2 and s < end + 2 for s, e in taken):
                ok = False
                break
            chars[start:end] = site
            taken.append((start, end))
            planted.append((name, start, end, site))
        if not ok:
            continue
        out = "".join(chars)
        # a planted site must not create a second, unplanned site across its border
        count = sum(out.count(site) for sites in MOTIFS.values() for site in sites)
        if count == len(names):
            return out, sorted(planted, key=lambda p: p[1])


def make_dataset(rng: np.random.Generator, n: int):
    """``n`` sequences, half positive; returns (seqs, labels, plantings)."""
    seqs, labels, plantings = [], [], []
    for i in range(n):
        seq = _background(rng)
        if i % 2 == 0:
            seqs.append(seq)
            labels.append(0)
            plantings.append([])
            continue
        u = rng.random()
        names = ["GATA", "AP-1"] if u < 0.25 else (["GATA"] if u < 0.625 else ["AP-1"])
        seq, planted = _plant(rng, seq, names)
        seqs.append(seq)
        labels.append(1)
        plantings.append(planted)
    return seqs, np.array(labels, dtype=np.float32), plantings


def one_hot(seqs: list[str]) -> np.ndarray:
    """``(N, 4, L)`` float32 one-hot, ncl layout."""
    lookup = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(ALPHABET):
        lookup[ord(c)] = i
    idx = lookup[np.frombuffer("".join(seqs).encode("ascii"), dtype=np.uint8)].reshape(len(seqs), -1)
    x = np.eye(len(ALPHABET), dtype=np.float32)[idx]  # (N, L, 4)
    return np.ascontiguousarray(x.transpose(0, 2, 1))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    from scipy.stats import rankdata

    ranks = rankdata(score)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def build_model():
    import torch
    from torch import nn

    class DemoCNN(nn.Module):
        """Conv(4→16, k=15, same) → ReLU → global max pool → Linear(16→1)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(len(ALPHABET), FILTERS, KERNEL, padding=KERNEL // 2)
            self.act = nn.ReLU()
            self.pool = nn.AdaptiveMaxPool1d(1)
            self.fc = nn.Linear(FILTERS, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.pool(self.act(self.conv(x))).flatten(1)
            return self.fc(h).squeeze(1)

    return DemoCNN()


def train(seed: int = SEED, verbose: bool = True):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    seqs, y, _ = make_dataset(rng, N_TRAIN + N_VALID)
    x = one_hot(seqs)
    x_tr, y_tr = torch.from_numpy(x[:N_TRAIN]), torch.from_numpy(y[:N_TRAIN])
    x_va, y_va = x[N_TRAIN:], y[N_TRAIN:]

    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(N_TRAIN, generator=gen)
        total = 0.0
        for b in range(0, N_TRAIN, BATCH):
            idx = order[b : b + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if verbose:
            acc, auc = evaluate(model, x_va, y_va)
            print(f"epoch {epoch + 1}: train loss {total / N_TRAIN:.4f}  held-out acc {acc:.4f}  AUC {auc:.4f}")
    model.eval()
    return model, rng


def evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    import torch

    model.eval()
    with torch.no_grad():
        logit = model(torch.from_numpy(x)).numpy()
    return float(((logit > 0) == (y == 1)).mean()), roc_auc(y, logit)


def export_onnx(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is intended
        torch.onnx.export(
            model,
            (torch.zeros(1, len(ALPHABET), SEQ_LEN),),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            output_names=["logit"],
            dynamic_axes={"x": {0: "batch"}, "logit": {0: "batch"}},
            do_constant_folding=True,
        )
    import onnx

    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    proto.doc_string = (
        "yuzu-onnx demo: CNN detecting GATA (AGATAA) and AP-1 (TGASTCA) sites in synthetic DNA; "
        "input x (batch, 4, 200) one-hot ACGT (ncl); output logit (batch,). Made by tools/train_demo.py."
    )
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def write_examples(rng: np.random.Generator, fasta: Path, tsv: Path) -> None:
    """Fresh held-out positives: 6 GATA-only, 6 AP-1-only, 4 with both."""
    plans = [["GATA"]] * 6 + [["AP-1"]] * 6 + [["GATA", "AP-1"]] * 4
    fasta.parent.mkdir(parents=True, exist_ok=True)
    fa_lines, rows = [], []
    for i, names in enumerate(plans[:N_DEMO]):
        seq, planted = _plant(rng, _background(rng), names)
        name = f"demo_{i:02d}"
        fa_lines.append(f">{name}\n")
        fa_lines.extend(seq[k : k + 60] + "\n" for k in range(0, len(seq), 60))
        rows.extend((name, motif, start, end, site) for motif, start, end, site in planted)
    fasta.write_text("".join(fa_lines))
    with open(tsv, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["name", "motif", "start", "end", "site"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO_DATA / "demo_motifs.onnx")
    parser.add_argument("--fasta", type=Path, default=DEMO_DATA / "demo_sequences.fa")
    parser.add_argument("--motifs", type=Path, default=DEMO_DATA / "demo_motifs.tsv")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model, rng = train(args.seed)
    elapsed = time.perf_counter() - t0

    # a fresh held-out test set, drawn after training data and validation
    seqs, y, _ = make_dataset(rng, 4000)
    acc, auc = evaluate(model, one_hot(seqs), y)
    print(f"held-out test: accuracy {acc:.4f}  ROC AUC {auc:.4f}  (training took {elapsed:.1f} s)")

    export_onnx(model, args.model)
    write_examples(rng, args.fasta, args.motifs)

    import onnxruntime as ort

    from_fa = [
        "".join(block.splitlines()[1:]) for block in args.fasta.read_text().split(">")[1:]
    ]
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"x": one_hot(from_fa)})[0]
    import torch

    with torch.no_grad():
        expected = model(torch.from_numpy(one_hot(from_fa))).numpy()
    if not np.allclose(logits, expected, atol=1e-4):
        print("ONNX export disagrees with torch", file=sys.stderr)
        return 1
    print(
        f"wrote {args.model} ({args.model.stat().st_size} bytes), {args.fasta}, {args.motifs}; "
        f"demo logits min {logits.min():.2f} max {logits.max():.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

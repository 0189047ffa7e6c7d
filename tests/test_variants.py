"""Variant tables from ISM arrays: rows, values, coordinates, TSV formatting and speed."""

from __future__ import annotations

import csv
import gzip
import io
import time

import numpy as np
import pytest

from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import InputError
from yuzu_onnx.variants import (
    _float_field,
    _int_field,
    variant_rows,
    variant_table,
    write_variants_tsv,
)

A = 4
ALPHABET = "ACGT"
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def _case(n=3, length=40, start=5, lw=30, seed=0):
    """X (ncl), a scalar output and a profile output, exactly 0 at the reference base."""
    rng = np.random.default_rng(seed)
    x = random_one_hot(n, length, alphabet_size=A, rng=rng)
    x[0, :, start + 3] = 0  # an N inside the window
    window = x[:, :, start : start + lw]
    scalar = rng.standard_normal((n, A, lw)).astype(np.float32) * 10.0 ** rng.integers(-6, 3, (n, A, lw))
    profile = rng.standard_normal((n, A, lw, 2, 3)).astype(np.float32)
    scalar[window == 1] = 0
    profile[window == 1] = 0
    names = [f"seq{i}" for i in range(n)]
    return x, {"logit": scalar, "profile": profile}, names, start


def _read_tsv(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_rows_match_the_arrays(tmp_path):
    x, arrays, names, start = _case()
    n, _, lw = arrays["logit"].shape
    path = tmp_path / "variants.tsv"
    count = write_variants_tsv(path, arrays, x, layout="ncl", alphabet=ALPHABET, names=names, window_start=start)
    rows = _read_tsv(path)
    # one-hot positions give A-1 rows, the one N position gives A rows
    assert count == len(rows) == n * lw * (A - 1) + 1
    assert list(rows[0]) == ["name", "position", "ref", "alt", "logit", "profile_l2"]
    l2 = np.sqrt((arrays["profile"].astype(np.float64) ** 2).sum(axis=(3, 4)))
    seen = set()
    for row in rows:
        i = names.index(row["name"])
        p = int(row["position"])
        j = p - start
        a = ALPHABET.index(row["alt"])
        col = x[i, :, p]
        ref = ALPHABET[int(col.argmax())] if col.sum() == 1 else "N"
        assert row["ref"] == ref and row["alt"] != ref
        np.testing.assert_allclose(float(row["logit"]), arrays["logit"][i, a, j], rtol=1e-6, atol=0)
        np.testing.assert_allclose(float(row["profile_l2"]), l2[i, a, j], rtol=1e-6)
        seen.add((i, j, a))
    assert len(seen) == len(rows)
    n_rows = [r for r in rows if r["ref"] == "N"]
    assert len(n_rows) == A and {r["alt"] for r in n_rows} == set(ALPHABET)
    assert {int(r["position"]) for r in n_rows} == {start + 3}


def test_row_count_for_one_hot_input(tmp_path):
    x, arrays, names, start = _case(n=4, length=25, start=0, lw=25, seed=5)
    x[0, :, 3] = np.eye(A)[1]  # restore the N: all positions one-hot
    arrays["logit"][0, 1, 3] = 0.0
    count = write_variants_tsv(tmp_path / "v.tsv", {"logit": arrays["logit"]}, x, layout="ncl", alphabet=ALPHABET, names=names)
    assert count == 4 * 25 * (A - 1)
    assert len(_read_tsv(tmp_path / "v.tsv")) == count


def test_nlc_layout_gives_the_same_table():
    x, arrays, names, start = _case(seed=1)
    ncl = variant_table(arrays, x, layout="ncl", alphabet=ALPHABET, names=names, window_start=start)
    nlc_arrays = {k: np.swapaxes(v, 1, 2) for k, v in arrays.items()}
    nlc = variant_table(nlc_arrays, x.transpose(0, 2, 1), layout="nlc", alphabet=ALPHABET, names=names, window_start=start)
    assert list(ncl) == list(nlc)
    for key in ncl:
        np.testing.assert_array_equal(ncl[key], nlc[key])


def test_variant_rows_agree_with_table_and_file(tmp_path):
    x, arrays, names, start = _case(seed=2)
    kwargs = dict(layout="ncl", alphabet=ALPHABET, names=names, window_start=start)
    rows = list(variant_rows(arrays, x, **kwargs))
    table = variant_table(arrays, x, **kwargs)
    assert len(rows) == len(table["name"])
    assert rows[0] == {k: v[0].item() for k, v in table.items()}
    write_variants_tsv(tmp_path / "v.tsv.gz", arrays, x, **kwargs)
    from_file = _read_tsv(tmp_path / "v.tsv.gz")
    assert [r["alt"] for r in from_file] == [r["alt"] for r in rows]
    assert [int(r["position"]) for r in from_file] == [r["position"] for r in rows]


def test_genomic_coordinates_and_minus_strand(tmp_path):
    x, arrays, names, start = _case(n=3, length=40, start=5, lw=30, seed=3)
    coords = [["chr1", 1000, 1040, "+"], ["chrX", 5000, 5040, "-"], ["chr2", 70, 110, "."]]
    path = tmp_path / "v.tsv"
    write_variants_tsv(path, arrays, x, layout="ncl", alphabet=ALPHABET, names=names, window_start=start, coords=coords)
    rows = _read_tsv(path)
    assert list(rows[0])[:9] == ["name", "position", "chrom", "pos", "strand", "genome_ref", "genome_alt", "ref", "alt"]
    for row in rows:
        i = names.index(row["name"])
        chrom, s, e, strand = coords[i]
        p = int(row["position"])
        assert row["chrom"] == chrom
        if strand == "-":
            # sequence position p is genomic base end-1-p (0-based) = end-p (1-based)
            assert int(row["pos"]) == e - p
            assert row["strand"] == "-"
            assert row["genome_ref"] == COMPLEMENT[row["ref"]]
            assert row["genome_alt"] == COMPLEMENT[row["alt"]]
        else:
            assert int(row["pos"]) == s + p + 1
            assert row["strand"] == "+"
            assert (row["genome_ref"], row["genome_alt"]) == (row["ref"], row["alt"])
    # the first window base of the '-' sequence is the genome's base at 1-based end-start
    first = next(r for r in rows if r["name"] == "seq1")
    assert int(first["pos"]) == 5040 - start


def test_rna_minus_strand_complements_with_u():
    x = np.eye(4, dtype=np.float32)[[[0, 3, 1]]]  # (1, L=3, A=4) nlc: A U C
    ism = np.ones((1, 3, 4), np.float32)
    rows = list(variant_rows({"y": ism}, x, layout="nlc", alphabet="ACGU", names=["r"], coords=[("chr1", 0, 3, "-")]))
    assert {(r["ref"], r["genome_ref"]) for r in rows} == {("A", "U"), ("U", "A"), ("C", "G")}
    assert [r["pos"] for r in rows[:3]] == [3, 3, 3]


def test_errors():
    x, arrays, names, start = _case(seed=4)
    kw = dict(layout="ncl", alphabet=ALPHABET, names=names, window_start=start)
    with pytest.raises(InputError, match="names"):
        variant_table(arrays, x, **{**kw, "names": names[:2]})
    with pytest.raises(InputError, match="spans"):
        variant_table(arrays, x, **kw, coords=[("chr1", 0, 10, "+")] * 3)
    with pytest.raises(InputError, match="does not fit"):
        variant_table(arrays, x, **{**kw, "window_start": 20})
    with pytest.raises(InputError, match="tab or newline"):
        variant_table(arrays, x, **{**kw, "names": ["a\tb", "c", "d"]})
    protein = np.eye(20, dtype=np.float32)[[[0, 1, 2]]]
    with pytest.raises(InputError, match="complement"):
        variant_table({"y": np.zeros((1, 3, 20), np.float32)}, protein, layout="nlc",
                      alphabet="ACDEFGHIKLMNPQRSTVWY", names=["p"], coords=[("c", 0, 3, "-")])


def test_float_formatting_matches_percent_g():
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.standard_normal(5000) * 10.0 ** rng.integers(-40, 40, 5000),
        rng.standard_normal(2000).astype(np.float32),
        [0.0, 1.0, -1.0, 0.5, 0.1, 1e-4, 9.99999e-5, 123456.75, 1234567.0, 9999999.5, 99999995.0,
         1e7, 1e100, -1e-100, 100.0, np.nan, np.inf, -np.inf],
    ])
    for digits in (1, 4, 7, 9):
        field = _float_field(values, digits)
        got = [bytes(r[r != 0]).decode() for r in field]
        expected = [f"%.{digits}g" % v for v in values]
        assert got == expected
    ints = np.array([0, 7, 10, 99, 100, 123456, -42])
    assert [bytes(r[r != 0]).decode() for r in _int_field(ints)] == [str(v) for v in ints]


def test_write_speed(tmp_path):
    rng = np.random.default_rng(8)
    n, lw = 200, 1000  # 600k rows
    x = random_one_hot(n, lw, alphabet_size=A, rng=rng)
    ism = rng.standard_normal((n, A, lw)).astype(np.float32)
    ism[x == 1] = 0
    coords = [("chr1", i * lw, (i + 1) * lw, "+-"[i % 2]) for i in range(n)]
    t0 = time.perf_counter()
    count = write_variants_tsv(tmp_path / "big.tsv", {"logit": ism}, x, layout="ncl", alphabet=ALPHABET,
                               names=[f"s{i}" for i in range(n)], coords=coords)
    elapsed = time.perf_counter() - t0
    assert count == n * lw * (A - 1)
    # several million rows/s on a laptop core; leave ample room for busy CI machines
    assert count / elapsed > 150_000, f"{count / elapsed:.0f} rows/s"
    with open(tmp_path / "big.tsv") as fh:
        head = list(csv.reader(io.StringIO("".join(fh.readline() for _ in range(3))), delimiter="\t"))
    assert head[0][-1] == "logit" and len(head[1]) == len(head[0])

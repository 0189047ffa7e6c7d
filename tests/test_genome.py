"""BED reading and region extraction from a genome FASTA."""

from __future__ import annotations

import gzip
import sys
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.encoding import decode_one_hot
from yuzu_onnx.errors import InputError, SequenceError, YuzuWarning
from yuzu_onnx.genome import BedRegion, extract_regions, read_bed, resize_region
from yuzu_onnx.importer import load_model
from yuzu_onnx.sequences import read_sequences

pytest.importorskip("pyfaidx")

RNG = np.random.default_rng(0)
CHR1 = "".join(RNG.choice(list("ACGT"), 60))
CHR2 = "".join(RNG.choice(list("ACGT"), 25))
COMP = str.maketrans("ACGTN", "TGCAN")


def revcomp(s: str) -> str:
    return s.translate(COMP)[::-1]


@pytest.fixture
def genome(tmp_path):
    path = tmp_path / "genome.fa"
    # chr1 soft-masked in part and wrapped at 16 columns
    chr1 = CHR1[:20] + CHR1[20:30].lower() + CHR1[30:]
    lines = [">chr1 some description"] + [chr1[i : i + 16] for i in range(0, len(chr1), 16)]
    lines += [">chr2"] + [CHR2[i : i + 16] for i in range(0, len(CHR2), 16)]
    path.write_text("\n".join(lines) + "\n")
    return path


def decode(batch, layout="ncl"):
    return decode_one_hot(batch.x, "ACGT", layout)


# --------------------------------------------------------------------------- read_bed


def test_read_bed_skips_headers_and_parses_columns(tmp_path):
    path = tmp_path / "r.bed"
    path.write_text(
        "# a comment\n"
        "track name=test\n"
        "browser position chr1:1-100\n"
        "\n"
        "chr1\t10\t20\n"
        "chr1\t5\t9\tpeak1\t0\t-\n"
        "chr2 3 8 peak2 0 +\n"
        "chr2\t3\t8\t.\t0\t.\n"
    )
    assert read_bed(path) == [
        BedRegion("chr1", 10, 20, None, "."),
        BedRegion("chr1", 5, 9, "peak1", "-"),
        BedRegion("chr2", 3, 8, "peak2", "+"),
        BedRegion("chr2", 3, 8, None, "."),
    ]
    gz = tmp_path / "r.bed.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert len(read_bed(gz)) == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\t10", "line 2: expected at least 3 columns"),
        ("chr1\tten\t20", "line 2: start and end must be integers"),
        ("chr1\t20\t10", "line 2: invalid interval 20-10"),
        ("chr1\t-5\t10", "line 2: invalid interval"),
        ("chr1\t1\t10\tn\t0\tx", "line 2: strand must be +, - or ."),
    ],
)
def test_read_bed_bad_lines(tmp_path, line, message):
    path = tmp_path / "bad.bed"
    path.write_text(f"chr1\t0\t5\n{line}\n")
    with pytest.raises(SequenceError) as info:
        read_bed(path)
    assert message in str(info.value)


def test_read_bed_empty(tmp_path):
    path = tmp_path / "empty.bed"
    path.write_text("# nothing\ntrack name=x\n")
    with pytest.raises(SequenceError, match="no BED regions"):
        read_bed(path)


# --------------------------------------------------------------------------- extract_regions


def test_resize_region_centres():
    assert resize_region(BedRegion("c", 10, 20), 6) == (12, 18)
    assert resize_region(BedRegion("c", 10, 21), 6) == (12, 18)
    assert resize_region(BedRegion("c", 10, 20), 7) == (12, 19)
    assert resize_region(BedRegion("c", 30, 30), 4) == (28, 32)


def test_extract_centres_and_names(genome):
    regions = [BedRegion("chr1", 10, 20), BedRegion("chr1", 20, 41, "peak"), BedRegion("chr2", 0, 25)]
    batch = extract_regions(regions, genome, 8)
    assert batch.x.shape == (3, 4, 8) and batch.x.dtype == np.float32
    assert decode(batch) == [CHR1[11:19], CHR1[26:34], CHR2[8:16]]
    assert batch.names == ("chr1:11-19", "peak", "chr2:8-16")
    assert batch.coords == (("chr1", 11, 19, "+"), ("chr1", 26, 34, "+"), ("chr2", 8, 16, "+"))
    nlc = extract_regions(regions, genome, 8, layout="nlc")
    np.testing.assert_array_equal(nlc.x, batch.x.transpose(0, 2, 1))


def test_extract_minus_strand_reverse_complement(genome):
    regions = [BedRegion("chr1", 30, 40, "m", "-"), BedRegion("chr1", 30, 40, "p", "+")]
    stranded = extract_regions(regions, genome, 10, strand=True)
    assert decode(stranded) == [revcomp(CHR1[30:40]), CHR1[30:40]]
    assert stranded.coords == (("chr1", 30, 40, "-"), ("chr1", 30, 40, "+"))
    unstranded = extract_regions(regions, genome, 10, strand=False)
    assert decode(unstranded) == [CHR1[30:40], CHR1[30:40]]
    assert unstranded.coords[0][3] == "+"


def test_extract_pads_off_chromosome_ends(genome):
    regions = [BedRegion("chr2", 0, 4), BedRegion("chr2", 22, 25, "end"), BedRegion("chr1", 20, 30)]
    with pytest.warns(YuzuWarning, match="2 of 3 regions run off a chromosome end"):
        batch = extract_regions(regions, genome, 10)
    assert decode(batch) == ["NNN" + CHR2[:7], CHR2[18:25] + "NNN", CHR1[20:30]]
    assert batch.coords[0] == ("chr2", -3, 7, "+")
    assert np.all(batch.x[0, :, :3] == 0)
    with pytest.warns(YuzuWarning):  # reverse complement of a padded region keeps the Ns
        minus = extract_regions([BedRegion("chr2", 0, 4, "m", "-")], genome, 10, strand=True)
    assert decode(minus) == [revcomp(CHR2[:7]) + "NNN"]
    big = [BedRegion("chr2", 10, 12)]
    with pytest.warns(YuzuWarning, match="1 of 1"):
        wide = extract_regions(big, genome, 40)
    assert decode(wide) == ["N" * 9 + CHR2 + "N" * 6]


def test_extract_no_warning_when_inside(genome):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extract_regions([BedRegion("chr1", 20, 30)], genome, 10)


def test_extract_unknown_chromosome(genome):
    with pytest.raises(SequenceError) as info:
        extract_regions([BedRegion("chr1", 0, 10), BedRegion("chrX", 5, 9)], genome, 4)
    assert "'chrX'" in str(info.value) and "chr1" in str(info.value)
    with pytest.raises(SequenceError, match="did you mean 'chr1'"):
        extract_regions([BedRegion("1", 0, 10)], genome, 4)


def test_extract_missing_genome_and_pyfaidx(genome, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="does not exist"):
        extract_regions([BedRegion("chr1", 0, 10)], tmp_path / "nope.fa", 4)
    monkeypatch.setitem(sys.modules, "pyfaidx", None)
    with pytest.raises(InputError, match=r"pip install pyfaidx \(or, in a yuzu-onnx checkout, pip install '\.\[genome\]'\)"):
        extract_regions([BedRegion("chr1", 0, 10)], genome, 4)


def test_read_sequences_from_bed(genome, tmp_path):
    in_shape = ["batch", 12, 4]
    w = np.ones((1, 4, 3), np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
            helper.make_node("Conv", ["xt", "W"], ["y"], pads=[1, 1], kernel_shape=[3]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 12])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    spec = load_model(model)
    bed = tmp_path / "regions.bed"
    bed.write_text("chr1\t20\t40\tr1\t0\t-\nchr2\t5\t15\n")
    batch = read_sequences(bed, spec, genome=genome, strand=True)
    assert batch.x.shape == (2, 12, 4)
    assert batch.names == ("r1", "chr2:4-16")
    assert decode_one_hot(batch.x, "ACGT", "nlc") == [revcomp(CHR1[24:36]), CHR2[4:16]]
    assert batch.coords == (("chr1", 24, 36, "-"), ("chr2", 4, 16, "+"))

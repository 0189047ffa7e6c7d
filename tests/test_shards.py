"""Sharded results on the local engine: the folder, resume, lazy reading, tables and plots.

The Ray engine writes the same folders; its tests are in ``test_distributed.py``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import yuzu_onnx
from yuzu_onnx.errors import InputError, YuzuWarning
from yuzu_onnx.results import read_npz
from yuzu_onnx.shards import MANIFEST_FILE, ShardedArray, load_results
from yuzu_onnx.sources import open_source

pytest.importorskip("pyfaidx")

RNG = np.random.default_rng(7)
CHROMS = {"chr1": "".join(RNG.choice(list("ACGT"), 400)), "chr2": "".join(RNG.choice(list("ACGT"), 150))}


@pytest.fixture(scope="module")
def genome_job(tmp_path_factory):
    """A genome FASTA and 23 BED regions (one runs off chr2's end, some on the - strand)."""
    folder = tmp_path_factory.mktemp("genome")
    genome = folder / "genome.fa"
    genome.write_text("".join(f">{c}\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
                              for c, s in CHROMS.items()))
    rows = [f"chr1\t{s}\t{s + 10}\tpeak{i}\t0\t{'-' if i % 3 == 0 else '+'}" for i, s in enumerate(range(40, 360, 16))]
    rows += ["chr2\t50\t60", "chr2\t140\t149\tedge\t0\t+", "chr2\t70\t80\t.\t0\t-"]
    bed = folder / "peaks.bed"
    bed.write_text("\n".join(rows) + "\n")
    return {"genome": genome, "bed": bed, "n": len(rows)}


def _same_arrays(a, b) -> None:
    assert set(a.outputs) == set(b.outputs)
    for name in [*a.outputs, "x"]:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]))
    assert list(a.names) == list(b.names)
    assert a.coords == b.coords


def test_shards_equal_the_npz_run_and_read_lazily(cli, tiny_ism, seq_files, tmp_path):
    assert cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "ref.npz", "--quiet").rc == 0
    r = cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "sh", "--format", "shards", "--shard-size", "2",
            "--quiet")
    assert r.rc == 0, r.err
    ref, _ = read_npz(tmp_path / "ref.npz")
    res = yuzu_onnx.load_results(tmp_path / "sh", verify=True)
    assert res.kind == "shards" and res.bounds == [(0, 2), (2, 4), (4, 5)]
    y = res["y"]
    assert isinstance(y, ShardedArray) and y.shape == ref["y"].shape and len(y) == 5
    assert isinstance(y.part(0), np.memmap)
    np.testing.assert_array_equal(np.asarray(y), ref["y"])
    np.testing.assert_array_equal(y[3], ref["y"][3])
    np.testing.assert_array_equal(y[1:4], ref["y"][1:4])
    np.testing.assert_array_equal(y[-1, 2], ref["y"][-1, 2])
    np.testing.assert_array_equal(np.asarray(res["x"]), ref["x"])
    assert list(res.names) == [f"s{i}" for i in range(5)]
    manifest = json.loads((tmp_path / "sh" / MANIFEST_FILE).read_text())
    assert manifest["complete"] and manifest["shard_size"] == 2 and len(manifest["shards"]) == 3
    assert manifest["identity"]["model_sha256"] and manifest["shapes"]["y"] == list(ref["y"].shape)
    assert all(len(f["sha256"]) == 64 for f in manifest["shards"][0]["files"].values())
    # the same through load_results for the other kinds
    npz = yuzu_onnx.load_results(tmp_path / "ref.npz")
    _same_arrays(npz, res)


def test_bed_with_genome_gives_the_whole_file_reader_s_sequences(genome_job, tiny_model):
    from yuzu_onnx.importer import load_model
    from yuzu_onnx.sequences import read_sequences

    spec = load_model(tiny_model)
    with pytest.warns(YuzuWarning, match="padded with N"):  # one region runs off a chromosome end
        whole = read_sequences(genome_job["bed"], spec, genome=genome_job["genome"], strand=True)
    source = open_source(genome_job["bed"], spec,
                         genome=genome_job["genome"], strand=True)
    assert len(source) == genome_job["n"]
    parts = [source.part(lo, min(lo + 5, len(source))) for lo in range(0, len(source), 5)]
    with pytest.warns(YuzuWarning, match="padded with N"):  # the shard holding that region says so too
        got = [p.read(p.first, p.n) for p in parts]
    np.testing.assert_array_equal(np.concatenate([b.x for b in got]), whole.x)
    assert sum((b.names for b in got), ()) == whole.names
    assert sum((b.coords for b in got), ()) == whole.coords


def test_fasta_and_npz_sources_read_any_rows(tiny_model, seq_files, tmp_path, onehot_ncl):
    from yuzu_onnx.importer import load_model
    from yuzu_onnx.sequences import read_sequences

    spec = load_model(tiny_model)
    np.savez(tmp_path / "in.npz", x=onehot_ncl, names=np.array([f"n{i}" for i in range(5)]))
    for path in (seq_files["fasta"], seq_files["ncl"], tmp_path / "in.npz"):
        whole = read_sequences(path, spec)
        source = open_source(path, spec)
        part = source.read(1, 4)
        np.testing.assert_array_equal(part.x, whole.x[1:4])
        assert part.names == whole.names[1:4]
    with pytest.raises(InputError, match="outside"):
        open_source(seq_files["ncl"], spec).read(3, 9)


def test_resume_skips_verified_shards_and_recomputes_damaged_ones(cli, tiny_ism, genome_job, tmp_path):
    args = ("run", tiny_ism, genome_job["bed"], "--genome", genome_job["genome"], "--strand", "--format", "shards",
            "--shard-size", "4", "--quiet")
    assert cli(*args, "-o", tmp_path / "ref").rc == 0
    out = tmp_path / "sh"
    assert cli(*args, "-o", out).rc == 0
    # damage one shard's file and remove another's record: an interrupted run
    shards = out / "shards"
    y1 = shards / "000001" / "y.npy"
    y1.write_bytes(y1.read_bytes()[:-8] + b"\0" * 8)
    (shards / "000003.json").unlink()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["complete"] = False
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="unfinished"):
        load_results(out)
    r = cli(*args, "-o", out)
    assert r.rc == 2 and "--resume" in r.err
    # batch size is free to change; the shards that verify are kept as they are
    mtime = (shards / "000000" / "y.npy").stat().st_mtime_ns
    r = cli(*args, "-o", out, "--resume", "--batch-size", "3")
    assert r.rc == 0, r.err
    assert (shards / "000000" / "y.npy").stat().st_mtime_ns == mtime
    _same_arrays(load_results(out, verify=True), load_results(tmp_path / "ref"))


def test_resume_refuses_other_options_and_shard_size(cli, tiny_ism, bpnet_model, genome_job, tmp_path):
    common = ("run", tiny_ism, genome_job["bed"], "--genome", genome_job["genome"], "--format", "shards",
              "--quiet", "-o", tmp_path / "sh")
    base = (*common, "--shard-size", "8")
    assert cli(*base).rc == 0
    r = cli(*base, "--strand", "--resume")
    assert r.rc == 2 and "options differ" in r.error_lines[0] and "strand" in r.error_lines[0]
    r = cli(*common, "--shard-size", "5", "--resume")
    assert r.rc == 2 and "--shard-size 8" in r.error_lines[0]
    from yuzu_onnx.convert import convert, save_model

    other = tmp_path / "bpnet.ism.onnx"
    save_model(convert(bpnet_model), other)
    r = cli("run", other, *base[2:], "--resume")
    assert r.rc == 2 and "the model differ" in r.error_lines[0]
    # a finished folder resumed with the same options is left as it is
    assert cli(*base, "--resume").rc == 0


def test_variant_tables_from_shards_equal_the_npz_tables(cli, tiny_ism, genome_job, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    common = ("run", tiny_ism, genome_job["bed"], "--genome", genome_job["genome"], "--strand", "--quiet")
    r = cli(*common, "-o", tmp_path / "ref.npz", "--variants", tmp_path / "ref.tsv")
    assert r.rc == 0, r.err
    r = cli(*common, "-o", tmp_path / "sh", "--format", "shards", "--shard-size", "6", "--variants",
            tmp_path / "v.parquet")
    assert r.rc == 0, r.err
    table = pq.read_table(tmp_path / "v.parquet")
    lines = (tmp_path / "ref.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert table.column_names == header and table.num_rows == len(lines) - 1
    assert table.schema.field("pos").type == pa.int64() and table.schema.field("y_l2").type == pa.float32()
    rows = [line.split("\t") for line in lines[1:]]
    for col in ("name", "chrom", "strand", "genome_ref", "genome_alt", "ref", "alt"):
        assert table.column(col).to_pylist() == [row[header.index(col)] for row in rows]
    assert table.column("pos").to_pylist() == [int(row[header.index("pos")]) for row in rows]
    np.testing.assert_allclose(table.column("y_l2").to_numpy(), [float(row[-1]) for row in rows], rtol=1e-6)
    # the `variants` command reads any result, shards included
    r = cli("variants", tmp_path / "sh", "-o", tmp_path / "again.tsv")
    assert r.rc == 0 and (tmp_path / "again.tsv").read_text() == (tmp_path / "ref.tsv").read_text()


def test_plot_reads_a_sharded_folder(cli, tiny_ism, seq_files, tmp_path):
    pytest.importorskip("matplotlib")
    assert cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "sh", "--format", "shards", "--shard-size",
               "2", "--quiet").rc == 0
    r = cli("plot", tmp_path / "sh", "--name", "s3", "-o", tmp_path / "s3.png")
    assert r.rc == 0, r.err
    assert (tmp_path / "s3.png").read_bytes()[:4] == b"\x89PNG"
    r = cli("plot", tmp_path / "sh", "--name", "nope", "-o", tmp_path / "x.png")
    assert r.rc == 2 and "no sequence named 'nope'" in r.err


def test_shards_refuse_a_foreign_folder_and_modisco(cli, tiny_ism, seq_files, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "busy", "--format", "shards")
    assert r.rc == 2 and "not empty" in r.error_lines[0]
    r = cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "m", "--format", "shards", "--modisco", "y")
    assert r.rc == 2 and "--modisco" in r.error_lines[0]


def test_engine_ray_without_ray_names_the_install(cli, tiny_ism, seq_files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    r = cli("run", tiny_ism, seq_files["fasta"], "-o", tmp_path / "o", "--format", "shards", "--engine", "ray")
    assert r.rc == 2 and "pip install 'ray[data]' pyarrow" in r.error_lines[0] and "'.[ray]'" in r.error_lines[0]
    assert not (tmp_path / "o").exists()


def test_import_and_local_engine_do_not_import_ray(tiny_ism, seq_files, tmp_path):
    import subprocess

    code = ("import sys; sys.modules['ray'] = None; import yuzu_onnx; from yuzu_onnx import distributed; "
            f"r = distributed.run({str(tiny_ism)!r}, {str(seq_files['ncl'])!r}, {str(tmp_path / 'o')!r}, "
            "engine='local', shard_size=2); print(r['y'].shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(5, 4, 64, 3)"


def test_naive_writes_shards_that_match_the_converted_model(cli, tiny_model, tiny_ism, seq_files, tmp_path):
    assert cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "naive", "--format", "shards",
               "--shard-size", "3", "--quiet").rc == 0
    assert cli("run", tiny_ism, seq_files["ncl"], "-o", tmp_path / "conv", "--format", "shards", "--quiet").rc == 0
    naive, conv = load_results(tmp_path / "naive"), load_results(tmp_path / "conv")
    assert naive.metadata["method"] == "naive ISM" and naive.bounds == [(0, 3), (3, 5)]
    a, b = np.asarray(naive["y"]), np.asarray(conv["y"])
    assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), np.abs(b).max())

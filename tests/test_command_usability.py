"""What a new user trips over in the commands (issue #16, part B): converted models where an
original is needed, resuming with other batch settings, the naive runner's memory budget,
one meaning per option name, help texts, messages that say what they mean."""

from __future__ import annotations

import numpy as np
import pytest

import yuzu_onnx
from yuzu_onnx.errors import ModelError
from yuzu_onnx.testing import random_onehot

# --------------------------------------------------------------------------- converted models


@pytest.mark.parametrize("command", [
    ["naive", "{ism}", "{seqs}", "-o", "{out}"],
    ["ism", "{ism}", "{seqs}", "-o", "{out}"],
    ["verify", "{ism}", "-n", "1"],
    ["convert", "{ism}", "-o", "{out_onnx}"],
])
def test_commands_that_need_an_original_model_refuse_a_converted_one(cli, tiny_ism, seq_files, tmp_path,
                                                                      command):
    values = {"ism": tiny_ism, "seqs": seq_files["ncl"], "out": tmp_path / "z.npz",
              "out_onnx": tmp_path / "again.onnx"}
    res = cli(*[part.format(**values) for part in command])
    assert res.rc == 2, res.err
    assert len(res.error_lines) == 1 and "converted ISM model" in res.error_lines[0]
    assert "yuzu-onnx run" in res.error_lines[0]
    assert "ONNXRuntimeError" not in res.err and "warning" not in res.err
    assert not (tmp_path / "z.npz").exists() and not (tmp_path / "again.onnx").exists()


def test_python_entry_points_refuse_a_converted_model(tiny_ism, tmp_path):
    import onnx

    from yuzu_onnx.importer import load_model

    x = random_onehot(1, 64, seed=0)
    for call in (lambda: load_model(tiny_ism), lambda: load_model(onnx.load(str(tiny_ism))),
                 lambda: yuzu_onnx.convert(tiny_ism), lambda: yuzu_onnx.naive_ism(tiny_ism, x),
                 lambda: yuzu_onnx.ism(tiny_ism, x, cache_dir=tmp_path)):
        with pytest.raises(ModelError, match="is a converted ISM model"):
            call()


# --------------------------------------------------------------------------- resume


def _interrupt_after(monkeypatch, runner_class: str, calls: int) -> None:
    """Make ``<runner_class>.run`` raise KeyboardInterrupt on call number ``calls + 1``."""
    import yuzu_onnx.pipeline as pipeline

    cls = getattr(pipeline, runner_class)
    real = cls.run
    count = {"n": 0}

    def run(self, x):
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(pipeline, "CHUNK_SECONDS", 0.0)
    monkeypatch.setattr(cls, "run", run)


def test_resume_accepts_options_that_do_not_change_results(cli, tiny_ism, tmp_path, monkeypatch):
    from yuzu_onnx.results import read_npz

    seqs = tmp_path / "a.npy"
    np.save(seqs, random_onehot(9, 64, seed=1))
    out = tmp_path / "r.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "ConvertedRunner", 2)
        assert cli("run", tiny_ism, seqs, "-o", out, "--batch-size", "2", "--quiet").rc == 130
    res = cli("run", tiny_ism, seqs, "-o", out, "--resume", "--batch-size", "4", "--threads", "1",
              "--max-memory", "1G", "--device", "cpu")
    assert res.rc == 0, res.err
    assert "4 resumed" in res.err
    whole = tmp_path / "whole.npz"
    assert cli("run", tiny_ism, seqs, "-o", whole, "--batch-size", "2").rc == 0
    np.testing.assert_allclose(read_npz(out)[0]["y"], read_npz(whole)[0]["y"], rtol=0, atol=1e-6)


def test_resume_refuses_options_that_change_results(cli, tiny_model, seq_files, tmp_path, monkeypatch):
    out = tmp_path / "n.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "NaiveRunner", 1)
        res = cli("naive", tiny_model, seq_files["ncl"], "-o", out, "--window", "0:32", "--batch-size", "96")
        assert res.rc == 130, res.err
    assert (tmp_path / "n.npz.partial").is_dir()
    for other in (["--window", "0:16"], ["--window", "0:32", "--reduce", "l2"]):
        res = cli("naive", tiny_model, seq_files["ncl"], "-o", out, "--resume", *other)
        assert res.rc == 2 and "the options differ" in res.error_lines[0], res.err
        assert ("window" if "0:16" in other else "reductions") in res.error_lines[0]
    # another mutant batch size is fine
    res = cli("naive", tiny_model, seq_files["ncl"], "-o", out, "--resume", "--window", "0:32",
              "--batch-size", "50")
    assert res.rc == 0, res.err
    whole = tmp_path / "whole.npz"
    assert cli("naive", tiny_model, seq_files["ncl"], "-o", whole, "--window", "0:32").rc == 0
    from yuzu_onnx.results import read_npz

    np.testing.assert_allclose(read_npz(out)[0]["y"], read_npz(whole)[0]["y"], rtol=0, atol=1e-6)


def test_resume_messages_agree_in_number(cli, tiny_ism, tmp_path, monkeypatch):
    seqs, other = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(seqs, random_onehot(8, 64, seed=1))
    np.save(other, random_onehot(8, 64, seed=2))
    out = tmp_path / "r.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "ConvertedRunner", 1)
        assert cli("run", tiny_ism, seqs, "-o", out, "--batch-size", "2").rc == 130
    res = cli("run", tiny_ism, other, "-o", out, "--resume")
    assert res.rc == 2 and "the input file differs from" in res.error_lines[0]


# --------------------------------------------------------------------------- naive memory


def test_naive_counts_its_result_arrays_against_the_budget(cli, bpnet_model, seq_files, tmp_path):
    """bpnet's profile output is (64, 2) per mutant: one sequence's result (130 KiB) is
    far more than one mutant's forward pass (27 KiB)."""
    out = tmp_path / "n.npz"
    res = cli("naive", bpnet_model, seq_files["nlc"], "-o", out, "--max-memory", "100K")
    assert res.rc == 2 and len(res.error_lines) == 1, res.err
    line = res.error_lines[0]
    assert "result arrays" in line and "--max-memory to at least" in line
    assert not out.exists() and not (tmp_path / "n.npz.partial").exists()
    smallest = line.split("--max-memory to at least ")[1].split()[0].rstrip(",;")
    res = cli("naive", bpnet_model, seq_files["nlc"], "-o", out, "--max-memory", smallest)
    assert res.rc == 0, res.err
    with np.load(out) as z:
        assert z["profile"].shape == (5, 64, 4, 64, 2)


def test_naive_with_a_batch_size_counts_the_batch_too(cli, bpnet_model, seq_files, tmp_path):
    res = cli("naive", bpnet_model, seq_files["nlc"], "-o", tmp_path / "n.npz", "--max-memory", "1M",
              "--batch-size", "100")
    assert res.rc == 2 and "lower --batch-size" in res.error_lines[0], res.err


def test_naive_runs_in_pieces_that_fit_the_budget(bpnet_model):
    from yuzu_onnx.importer import load_model
    from yuzu_onnx.oracle import bytes_per_sample
    from yuzu_onnx.runners import NaiveRunner

    runner = NaiveRunner(load_model(bpnet_model), device="cpu")
    per_sequence, per_mutant = runner.result_bytes_per_sequence(), bytes_per_sample(runner.spec)
    budget = 3 * per_sequence + 400 * per_mutant
    rows = runner.plan_batches(None, budget)
    assert 1 <= rows < NaiveRunner.MAX_SEQUENCES_PER_CALL
    assert rows * per_sequence + runner.mutant_batch_size * per_mutant <= budget
    rows = runner.plan_batches(300, budget)
    assert rows * per_sequence + 300 * per_mutant <= budget


# --------------------------------------------------------------------------- one name, one meaning


def test_seed_is_only_the_seed_of_verifys_random_sequences(cli, tiny_model, tmp_path):
    out = tmp_path / "g.onnx"
    res = cli("convert", tiny_model, "-o", out, "--probes", "gaussian", "--seed", "3")
    assert res.rc == 2 and len(res.error_lines) == 1, res.err
    assert "--probe-seed" in res.error_lines[0] and "Traceback" not in res.err
    assert not out.exists()
    for command in (["inspect", tiny_model], ["ism", tiny_model, "x.fa", "-o", tmp_path / "z.npz"]):
        res = cli(*command, "--seed", "3")
        assert res.rc == 2 and "--probe-seed" in res.error_lines[0], res.err
    res = cli("verify", tiny_model, "-n", "1", "--seed", "7")
    assert res.rc == 0 and "seed 7" in res.out, res.err
    help_text = cli("verify", "--help").out
    assert "seed of the random sequences" in help_text


# --------------------------------------------------------------------------- help and messages


def _parsers(parser, path=("yuzu-onnx",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_argument_of_every_command_has_a_help_text():
    import argparse

    from yuzu_onnx.cli import build_parser

    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.metavar or action.dest}")
    assert not missing, "arguments without a help text: " + ", ".join(missing)


def test_naive_and_verify_take_threads(cli, tiny_model, seq_files, tmp_path, monkeypatch):
    import yuzu_onnx.runtime as runtime

    seen = []
    real = runtime.cpu_session_options

    def options(**kwargs):
        if kwargs.get("optimize", True):  # the runs, not the importer's shape measurement
            seen.append(kwargs.get("threads"))
        return real(**kwargs)

    monkeypatch.setattr(runtime, "cpu_session_options", options)
    res = cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "n.npz", "--threads", "1", "--quiet")
    assert res.rc == 0, res.err
    assert seen and set(seen) == {1}
    seen.clear()
    res = cli("verify", tiny_model, "-n", "1", "--threads", "1")
    assert res.rc == 0, res.err
    assert seen and set(seen) == {1}
    res = cli("naive", tiny_model, seq_files["ncl"], "-o", tmp_path / "m.npz", "--threads", "0")
    assert res.rc == 2 and "--threads" in res.error_lines[0]


def test_plot_of_a_model_says_it_wants_an_ism_result_file(cli, tiny_model, seq_files, tmp_path):
    res = cli("plot", tiny_model, "-o", tmp_path / "f.png")
    assert res.rc == 2 and len(res.error_lines) == 1
    line = res.error_lines[0]
    assert "is an ONNX model" in line and "ISM result file" in line and "run" in line
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(tiny_model.read_bytes())
    assert "is an ONNX model" in cli("plot", renamed, "-o", tmp_path / "f.png").error_lines[0]
    res = cli("plot", seq_files["fasta"], "-o", tmp_path / "f.png")
    assert res.rc == 2 and "not an NPZ archive" in res.error_lines[0] and "ISM result file" in res.error_lines[0]
    res = cli("plot", seq_files["ncl"], "-o", tmp_path / "f.png")
    assert res.rc == 2 and "ISM result file" in res.error_lines[0]


def test_ctrl_c_names_the_real_partial_store(cli, tiny_ism, seq_files, tmp_path, monkeypatch):
    out = tmp_path / "r.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "ConvertedRunner", 1)
        res = cli("run", tiny_ism, seq_files["ncl"], "-o", out, "--batch-size", "2")
    assert res.rc == 130
    assert f"kept in {str(tmp_path / 'r.npz.partial')!r}" in res.err and "OUT.partial" not in res.err
    assert "--resume" in res.err


@pytest.fixture(scope="module")
def dynamic_model(tmp_path_factory):
    """A one-convolution model of dynamic length (receptive field 9)."""
    import onnx

    from yuzu_onnx.testing import build_dynamic_length

    path = tmp_path_factory.mktemp("dynamic") / "dyn.onnx"
    onnx.save(build_dynamic_length(seq_len=100), str(path))
    return path


def test_counts_agree_with_their_nouns(cli, tiny_ism, dynamic_model, seq_files, tmp_path):
    from yuzu_onnx.progress import plural

    assert (plural(1, "stage"), plural(2, "stage"), plural(0, "sequence")) == ("1 stage", "2 stages", "0 sequences")
    one = tmp_path / "one.npy"
    np.save(one, np.load(seq_files["ncl"])[:1])
    res = cli("run", tiny_ism, one, "-o", tmp_path / "r.npz")
    assert res.rc == 0 and "ISM of 1 sequence in" in res.err, res.err
    res = cli("convert", dynamic_model, "--seq-len", "64", "-o", tmp_path / "c.onnx")
    assert res.rc == 0 and "1 stage (" in res.out, res.out
    res = cli("verify", dynamic_model, "--seq-len", "64", "-n", "1")
    assert res.rc == 0 and "1 random sequence (" in res.out and "1 probe stage" in res.out, res.out


def test_a_conversion_that_does_not_pay_is_warned_about(cli, dynamic_model, tmp_path):
    model = dynamic_model
    res = cli("convert", model, "--seq-len", "4", "-o", tmp_path / "short.onnx")
    assert res.rc == 0, res.err
    assert len(res.warning_lines) == 1, res.err
    line = res.warning_lines[0]
    assert "does not pay" in line and "receptive field (9 positions)" in line and "4-position window" in line
    assert "naive" in line
    res = cli("convert", model, "--seq-len", "64", "-o", tmp_path / "long.onnx")
    assert res.rc == 0 and not res.warning_lines, res.err


def test_the_demo_folder_is_ignored_by_git():
    from pathlib import Path

    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().split()
    assert "yuzu_demo/" in ignored


def test_a_run_killed_for_memory_resumes_with_a_smaller_budget(cli, bpnet_model, seq_files, tmp_path, monkeypatch):
    """Without --batch-size, --resume reuses the interrupted run's batches, unless a new
    --max-memory is given: then the batches are sized for it."""
    out = tmp_path / "n.npz"
    with monkeypatch.context() as m:
        _interrupt_after(m, "NaiveRunner", 1)
        assert cli("naive", bpnet_model, seq_files["nlc"], "-o", out, "--batch-size", "400").rc == 130
    res = cli("naive", bpnet_model, seq_files["nlc"], "-o", out, "--resume", "--max-memory", "1M")
    assert res.rc == 0, res.err
    whole = tmp_path / "whole.npz"
    assert cli("naive", bpnet_model, seq_files["nlc"], "-o", whole).rc == 0
    from yuzu_onnx.results import read_npz

    np.testing.assert_allclose(read_npz(out)[0]["profile"], read_npz(whole)[0]["profile"], rtol=0, atol=1e-6)

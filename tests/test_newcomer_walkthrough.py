"""A newcomer's first session, scripted: a fresh virtual environment with the built wheel
(not the source tree), the demo from an empty folder, then convert / run / verify / plot /
naive on a model written here, as a user types the commands.

The wheel and the environment are built once for the module (``pip`` fetches what the
wheel needs from the package index or pip's cache, as it does for a user).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx.testing import build_tiny_cnn, random_onehot

REPO = Path(__file__).resolve().parent.parent
SEQ_LEN = 200  # build_tiny_cnn's fixed length


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """``(bin folder of a fresh venv holding only the built wheel, environment, empty home)``."""
    root = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "YUZU_"))}
    env["HOME"] = str(root / "home")
    env["YUZU_CACHE_DIR"] = str(root / "cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    (root / "home").mkdir()
    dist = root / "dist"
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                 cwd=root, env={**env, "HOME": os.environ.get("HOME", str(root))})
    assert build.returncode == 0, f"building the wheel failed:\n{build.stdout}\n{build.stderr}"
    wheels = list(dist.glob("yuzu_onnx-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}"
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / "bin"
    install = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{wheels[0]}[plot]"], cwd=root,
                   env={**env, "HOME": os.environ.get("HOME", str(root))})
    assert install.returncode == 0, f"installing the wheel failed:\n{install.stdout}\n{install.stderr}"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return bin_dir, env, root


def _yuzu(newcomer, *args, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir, env, _ = newcomer
    return _run([str(bin_dir / "yuzu-onnx"), *map(str, args)], cwd=cwd, env=env)


def _empty_folder(newcomer, name: str) -> Path:
    folder = newcomer[2] / name
    folder.mkdir()
    return folder


def test_the_installed_package_is_the_wheel(newcomer):
    bin_dir, env, root = newcomer
    where = _run([str(bin_dir / "python"), "-c", "import yuzu_onnx; print(yuzu_onnx.__file__)"],
                 cwd=_empty_folder(newcomer, "where"), env=env)
    assert where.returncode == 0, where.stderr
    assert str(bin_dir.parent) in where.stdout and str(REPO) not in where.stdout


def test_demo_runs_from_an_empty_folder(newcomer):
    folder = _empty_folder(newcomer, "demo")
    result = _yuzu(newcomer, "demo", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "yuzu_demo" / "demo_ism.npz").is_file()
    assert (folder / "yuzu_demo" / "demo_ism.png").is_file()
    assert "most important position" in result.stdout
    assert "error" not in result.stderr


def test_convert_run_verify_plot_on_a_new_model(newcomer):
    folder = _empty_folder(newcomer, "work")
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN, seed=3), str(folder / "model.onnx"))
    X = random_onehot(3, SEQ_LEN, seed=5)  # (N, 4, L)
    letters = np.array(list("ACGT"))[X.argmax(axis=1)]
    (folder / "seqs.fa").write_text("".join(f">s{i}\n{''.join(row)}\n" for i, row in enumerate(letters)))

    converted = _yuzu(newcomer, "convert", "model.onnx", "-o", "model.ism.onnx", cwd=folder)
    assert converted.returncode == 0, converted.stderr
    assert (folder / "model.ism.onnx").is_file() and (folder / "model.ism.onnx.json").is_file()

    ran = _yuzu(newcomer, "run", "model.ism.onnx", "seqs.fa", "-o", "ism.npz", cwd=folder)
    assert ran.returncode == 0, ran.stderr
    with np.load(folder / "ism.npz") as results:
        assert results["y"].shape == (3, 4, SEQ_LEN, 3)

    verified = _yuzu(newcomer, "verify", "model.onnx", "-n", "2", cwd=folder)
    assert verified.returncode == 0, verified.stderr + verified.stdout

    plotted = _yuzu(newcomer, "plot", "ism.npz", "-o", "fig.png", cwd=folder)
    assert plotted.returncode == 0, plotted.stderr
    assert (folder / "fig.png").stat().st_size > 0


def test_commands_that_need_an_original_model_refuse_a_converted_one(newcomer):
    folder = _empty_folder(newcomer, "refuse")
    onnx.save(build_tiny_cnn(seq_len=SEQ_LEN, seed=3), str(folder / "model.onnx"))
    converted = _yuzu(newcomer, "convert", "model.onnx", "-o", "model.ism.onnx", cwd=folder)
    assert converted.returncode == 0, converted.stderr
    (folder / "seqs.fa").write_text(">s0\n" + "ACGT" * (SEQ_LEN // 4) + "\n")
    for command in (["naive", "model.ism.onnx", "seqs.fa", "-o", "z.npz"],
                    ["ism", "model.ism.onnx", "seqs.fa", "-o", "z.npz"],
                    ["verify", "model.ism.onnx"]):
        result = _yuzu(newcomer, *command, cwd=folder)
        errors = [line for line in result.stderr.splitlines() if line.startswith("yuzu-onnx: error:")]
        assert result.returncode == 2, (command, result.stderr)
        assert len(errors) == 1 and "converted" in errors[0], (command, result.stderr)
        assert "Traceback" not in result.stderr and "ONNXRuntimeError" not in result.stderr

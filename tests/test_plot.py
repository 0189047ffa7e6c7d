"""ISM figures: files are real PNGs with content; NPZ selection; matplotlib is optional."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from yuzu_onnx.encoding import random_one_hot
from yuzu_onnx.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def _result_npz(path, layout="ncl"):
    """A result file: a scalar output and a profile output over window [5, 45) of L=50."""
    rng = np.random.default_rng(0)
    n, a, length, start, end = 3, 4, 50, 5, 45
    x = random_one_hot(n, length, alphabet_size=a, rng=rng)
    x[1, :, 20] = 0
    win = x[:, :, start:end]
    logit = rng.standard_normal((n, a, end - start)).astype(np.float32)
    logit[win == 1] = 0
    logit[:, :, 15:22] -= 4.0  # a "motif"
    logit[win == 1] = 0
    profile = rng.standard_normal((n, a, end - start, 2, 8)).astype(np.float32)
    profile[win == 1] = 0
    arrays = {"logit": logit, "profile": profile, "x": x}
    if layout == "nlc":
        arrays = {k: np.swapaxes(v, 1, 2) for k, v in arrays.items()}
    meta = {"layout": layout, "alphabet": "ACGT", "window": [start, end]}
    np.savez(path, **arrays, names=np.array(["s0", "s1", "s2"]), __metadata__=np.array(json.dumps(meta)))
    return path


def _check_png(path, min_bytes=5000):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    pixels = mpimg.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.01  # not a blank image
    return pixels


def test_plot_ism_writes_a_png(mpl, tmp_path):
    from yuzu_onnx.plot import plot_ism

    rng = np.random.default_rng(1)
    onehot = random_one_hot(1, 60, rng=rng)[0]
    onehot[:, 10] = 0  # an N
    ism = rng.standard_normal((4, 60)) * 0.2
    ism[:, 30:36] -= 3.0
    ism[onehot == 1] = 0
    out = plot_ism(ism, onehot, "ACGT", title="test", start=100, path=tmp_path / "figs" / "a.png")
    assert out == tmp_path / "figs" / "a.png"
    pixels = _check_png(out)
    # the diverging colour map draws strong blue where the deltas are most negative
    rgb = pixels[..., :3]
    assert np.any((rgb[..., 2] > 0.3) & (rgb[..., 0] < 0.15))
    assert not list((tmp_path / "figs").glob(".*tmp"))


def test_plot_ism_span_and_long_windows(mpl, tmp_path):
    from yuzu_onnx.plot import plot_ism

    rng = np.random.default_rng(2)
    onehot = random_one_hot(1, 600, rng=rng)[0]
    ism = rng.standard_normal((4, 600))
    ism[onehot == 1] = 0
    _check_png(plot_ism(ism, onehot, "ACGT", start=0, span=(100, 160), path=tmp_path / "span.png"))
    _check_png(plot_ism(ism, onehot, "ACGT", path=tmp_path / "long.png"))  # bars, not letters
    with pytest.raises(InputError, match="span"):
        plot_ism(ism, onehot, "ACGT", span=(500, 700), path=tmp_path / "bad.png")
    with pytest.raises(InputError, match="alphabet"):
        plot_ism(ism, onehot, "ACG", path=tmp_path / "bad.png")


def test_all_zero_ism_still_plots(mpl, tmp_path):
    from yuzu_onnx.plot import plot_ism

    onehot = np.eye(4, dtype=np.float32)[np.arange(40) % 4].T.copy()
    path = plot_ism(np.zeros((4, 40)), onehot, "ACGT", path=tmp_path / "zero.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("layout", ["ncl", "nlc"])
def test_plot_from_npz(mpl, tmp_path, layout):
    from yuzu_onnx.plot import plot_from_npz

    npz = _result_npz(tmp_path / "res.npz", layout)
    _check_png(plot_from_npz(npz, index=1, output="logit", path=tmp_path / "a.png"))
    _check_png(plot_from_npz(npz, name="s2", output="profile", target=3, span=(10, 30), path=tmp_path / "b.png"))
    _check_png(plot_from_npz(npz, name="s0", output="profile", path=tmp_path / "c.png"))  # sum over out dims
    with pytest.raises(InputError, match="several outputs"):
        plot_from_npz(npz, path=tmp_path / "d.png")
    with pytest.raises(InputError, match="no sequence named"):
        plot_from_npz(npz, name="nope", output="logit", path=tmp_path / "d.png")
    with pytest.raises(InputError, match="not both"):
        plot_from_npz(npz, index=0, name="s0", output="logit", path=tmp_path / "d.png")
    with pytest.raises(InputError, match="no output"):
        plot_from_npz(npz, output="counts", path=tmp_path / "d.png")
    with pytest.raises(InputError, match="out of range"):
        plot_from_npz(npz, output="profile", target=16, path=tmp_path / "d.png")


def test_plot_from_npz_rejects_other_files(mpl, tmp_path):
    from yuzu_onnx.plot import plot_from_npz

    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(InputError, match="not a yuzu-onnx result"):
        plot_from_npz(tmp_path / "other.npz", path=tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        plot_from_npz(tmp_path / "missing.npz", path=tmp_path / "x.png")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(InputError, match="cannot read"):
        plot_from_npz(tmp_path / "text.npz", path=tmp_path / "x.png")


def test_plot_from_npz_follows_metadata_outputs_and_reductions(mpl, tmp_path):
    from yuzu_onnx.plot import plot_from_npz

    npz = _result_npz(tmp_path / "res.npz")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__metadata__")))
    # only "logit" is listed as an output: it is chosen without output=
    listed = {**meta, "outputs": ["logit"], "reductions": {"logit": "none"}}
    np.savez(tmp_path / "one.npz", **arrays, __metadata__=np.array(json.dumps(listed)))
    _check_png(plot_from_npz(tmp_path / "one.npz", path=tmp_path / "one.png"))
    raw = {**listed, "reductions": {"logit": "raw"}}
    np.savez(tmp_path / "raw.npz", **arrays, __metadata__=np.array(json.dumps(raw)))
    with pytest.raises(InputError, match="raw"):
        plot_from_npz(tmp_path / "raw.npz", path=tmp_path / "raw.png")


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    from yuzu_onnx import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    onehot = np.eye(4, dtype=np.float32)[np.arange(8) % 4].T.copy()
    with pytest.raises(InputError, match=r"pip install matplotlib \(or, in a yuzu-onnx checkout, pip install '\.\[plot\]'\)"):
        plot.plot_ism(np.zeros((4, 8)), onehot, "ACGT", path=tmp_path / "x.png")

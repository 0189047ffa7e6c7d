"""Figures of ISM results: a heatmap of every substitution above a letter logo.

The heatmap shows ``ism[a, j]`` (alphabet × position) with a diverging colour map
centred at 0 (red: the substitution raises the output, blue: it lowers it); the
reference base of each position is marked with a dot. Below it, the logo draws the
reference base at each position with a height equal to its mean-centred attribution,
``-mean_b ism[b, j]`` (see :mod:`yuzu_onnx.attributions`): tall letters above the axis
are bases whose loss lowers the output.

matplotlib is optional (``pip install matplotlib``) and imported only here, with
the Agg canvas, so plotting never needs a display or touches pyplot's global state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .attributions import select_target, to_ncl
from .bands import densify
from .errors import InputError, install_hint, option

LETTER_COLOURS = {
    "A": "#109648",  # green
    "C": "#255C99",  # blue
    "G": "#F7B32B",  # orange
    "T": "#D62839",  # red
    "U": "#D62839",
}
OTHER_COLOUR = "#555555"
RESERVED_KEYS = ("x", "names", "__metadata__")


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise InputError(
            f"plotting needs matplotlib, which is not installed; {install_hint('matplotlib', 'plot')}"
        ) from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def plot_ism(
    ism_2d: np.ndarray,
    onehot_2d: np.ndarray,
    alphabet: str,
    *,
    title: str | None = None,
    start: int = 0,
    span: tuple[int, int] | None = None,
    path: str | os.PathLike,
    dpi: int = 150,
) -> Path:
    """Draw one sequence's ISM as a heatmap above a letter logo and save it as PNG.

    Parameters
    ----------
    ism_2d: shape=(A, Lw), the ISM deltas of one sequence and one output value.
    onehot_2d: shape=(A, Lw), the one-hot sequence over the same window (a column that
        is not one-hot, e.g. ``N``, gets no dot and no letter).
    alphabet: the A letters of the one-hot axis.
    title: the figure title.
    start: the sequence position of column 0 (the window start), for the x axis.
    span: ``(lo, hi)`` sequence positions to draw, half-open, within
        ``[start, start + Lw)``; default all.
    path: the PNG file to write (its folder is created).
    dpi: resolution.

    Returns
    -------
    Path: ``path``.
    """
    ism_2d = np.asarray(ism_2d, dtype=np.float64)
    onehot_2d = np.asarray(onehot_2d)
    if ism_2d.ndim != 2 or onehot_2d.shape != ism_2d.shape:
        raise InputError(
            f"ism_2d and onehot_2d must both be (A, Lw), got {ism_2d.shape} and {onehot_2d.shape}"
        )
    a, lw = ism_2d.shape
    if len(alphabet) != a:
        raise InputError(f"alphabet {alphabet!r} has {len(alphabet)} letters but the arrays have A={a}")
    lo, hi = (start, start + lw) if span is None else (int(span[0]), int(span[1]))
    if not start <= lo < hi <= start + lw:
        raise InputError(
            f"span {span} must be (lo, hi) with {start} <= lo < hi <= {start + lw} (the ISM window)"
        )
    ism_2d = ism_2d[:, lo - start : hi - start]
    onehot_2d = onehot_2d[:, lo - start : hi - start]
    width = hi - lo

    _, Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib.colors import TwoSlopeNorm

    is_one = onehot_2d == 1
    onehot = (is_one.sum(axis=0) == 1) & (is_one | (onehot_2d == 0)).all(axis=0)
    ref = np.where(onehot, is_one.argmax(axis=0), -1)
    attribution = -ism_2d.mean(axis=0)  # mean-centred score at the reference base

    fig_width = float(np.clip(2.5 + 0.12 * width, 7.0, 24.0))
    fig = Figure(figsize=(fig_width, 1.6 + 0.32 * a + 1.8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_heat, ax_logo = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [max(1.0, 0.32 * a), 1.8]}
    )

    vmax = float(np.abs(ism_2d).max()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    image = ax_heat.imshow(
        ism_2d,
        aspect="auto",
        cmap="RdBu_r",
        norm=norm,
        interpolation="nearest",
        extent=(lo - 0.5, hi - 0.5, a - 0.5, -0.5),
    )
    cols = np.flatnonzero(ref >= 0)
    if cols.size and width <= 400:
        ax_heat.scatter(lo + cols, ref[cols], s=max(1.0, min(12.0, 1500.0 / width)), c="black", marker=".")
    ax_heat.set_yticks(range(a), list(alphabet))
    ax_heat.set_ylabel("substituted base")
    bar = fig.colorbar(image, ax=ax_heat, pad=0.01, fraction=0.04)
    bar.set_label("ISM Δ (mutant − reference)")
    if title:
        ax_heat.set_title(title)

    _draw_logo(ax_logo, attribution, ref, alphabet, lo)
    ax_logo.set_xlim(lo - 0.5, hi - 0.5)
    ax_logo.set_xlabel("position")
    ax_logo.set_ylabel("attribution\n(reference base)")
    ax_logo.axhline(0.0, color="black", linewidth=0.6)
    # keep the logo as wide as the heatmap: give it an invisible colour bar slot
    spacer = fig.colorbar(image, ax=ax_logo, pad=0.01, fraction=0.04)
    spacer.ax.set_visible(False)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png")
    return path


def _draw_logo(ax, heights: np.ndarray, ref: np.ndarray, alphabet: str, lo: int) -> None:
    """Draw the reference letter at each position, scaled to its height (negative: below 0)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch, Rectangle
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    font = FontProperties(family="DejaVu Sans", weight="bold")
    shapes = {}
    for letter in set(alphabet):
        shape = TextPath((0, 0), letter, size=1, prop=font)
        shapes[letter] = (shape, shape.get_extents())
    use_letters = len(heights) <= 400
    for j, (h, r) in enumerate(zip(heights, ref, strict=True)):
        if r < 0 or h == 0 or not np.isfinite(h):
            continue
        letter = alphabet[r]
        colour = LETTER_COLOURS.get(letter.upper(), OTHER_COLOUR)
        x = lo + j
        if not use_letters:
            ax.add_patch(Rectangle((x - 0.45, min(0.0, h)), 0.9, abs(h), color=colour, linewidth=0))
            continue
        shape, box = shapes[letter]
        transform = (
            Affine2D()
            .translate(-box.x0, -box.y0)
            .scale(0.9 / box.width, abs(h) / box.height)
            .translate(x - 0.45, min(0.0, h))
        )
        ax.add_patch(PathPatch(transform.transform_path(shape), color=colour, linewidth=0))
    finite = heights[np.isfinite(heights) & (ref >= 0)]
    top = float(max(finite.max(initial=0.0), 0.0))
    bottom = float(min(finite.min(initial=0.0), 0.0))
    pad = 0.05 * ((top - bottom) or 1.0)
    ax.set_ylim(bottom - pad, top + pad)


def plot_from_npz(
    npz_path: str | os.PathLike,
    *,
    index: int | None = None,
    name: str | None = None,
    output: str | None = None,
    target: int | Sequence[int] | None = None,
    span: tuple[int, int] | None = None,
    path: str | os.PathLike,
) -> Path:
    """Plot one sequence and one output of a result NPZ with :func:`plot_ism`.

    Parameters
    ----------
    npz_path: a result file (ISM arrays keyed by output name, ``x``, ``names`` and the
        JSON ``__metadata__`` with ``layout``, ``alphabet`` and ``window``), or a result
        folder (NPY or sharded, see :func:`plot_from_folder`).
    index, name: the sequence, by position in the file or by name (not both; default
        the first sequence).
    output: the output to plot; may be left out when the file holds only one.
    target: for an output with extra dims, the index into its flattened out_dims to
        plot (or a list of indices, summed); ``None`` sums over all of them.
    span: ``(lo, hi)`` sequence positions to draw; default the whole ISM window.
    path: the PNG file to write.

    Returns
    -------
    Path: ``path``.
    """
    npz_path = Path(npz_path)
    if npz_path.is_dir():
        return plot_from_folder(npz_path, index=index, name=name, output=output, target=target, span=span,
                                path=path)
    if not npz_path.is_file():
        raise InputError(f"result file {str(npz_path)!r} does not exist")
    try:
        data = np.load(npz_path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("not an NPZ archive")
    except Exception:
        raise InputError(_not_a_result_file(npz_path)) from None
    with data:
        keys = list(data.keys())
        for key in RESERVED_KEYS:
            if key not in keys:
                raise InputError(f"{str(npz_path)!r} is not a yuzu-onnx result file (no {key!r} array)")
        meta = _metadata(data["__metadata__"], npz_path)
        layout, alphabet = meta["layout"], meta["alphabet"]
        window = meta.get("window")
        x = data["x"]
        names = [str(s) for s in data["names"].tolist()]
        n = len(names)
        seq = _pick_sequence(names, index, name)
        xs = to_ncl(x, layout)[seq]  # (A, L)
        a, length = xs.shape
        start, end = (int(window[0]), int(window[1])) if window else (0, length)
        lw = end - start
        expected = (n, a, lw) if layout == "ncl" else (n, lw, a)
        listed = meta.get("outputs")
        candidates = [k for k in listed if k in keys] if isinstance(listed, list) else keys
        outputs = [
            k for k in candidates
            if k not in RESERVED_KEYS and not k.startswith("__") and data[k].shape[:3] == expected
        ]
        if not outputs:
            raise InputError(f"{str(npz_path)!r} holds no ISM arrays of shape {expected}")
        if output is None:
            if len(outputs) > 1:
                raise InputError(
                    f"{str(npz_path)!r} holds several outputs ({', '.join(outputs)}); choose one with {option('plot_output')}"
                )
            output = outputs[0]
        elif output not in outputs:
            raise InputError(f"no output {output!r} in {str(npz_path)!r}; outputs: {', '.join(outputs)}")
        if (meta.get("reductions") or {}).get(output) == "raw":
            raise InputError(
                f"output {output!r} holds raw mutant outputs ({option('reduce', 'raw')}), not ISM differences; "
                "plot needs differences"
            )
        ism = data[output][seq : seq + 1]
        band = (meta.get("bands") or {}).get(output)
        if band is not None:  # a banded result (--output-form banded): its dense form
            ism = densify(ism, band)
    scores = to_ncl(select_target(ism, target), layout)[0]  # (A, Lw)
    label = output if target is None or np.ndim(ism) == 3 else f"{output}[{target}]"
    if target is None and np.ndim(ism) > 3 and int(np.prod(ism.shape[3:])) > 1:
        label = f"{output} (sum over {'×'.join(map(str, ism.shape[3:]))})"
    return plot_ism(
        scores,
        xs[:, start:end],
        alphabet,
        title=f"{names[seq]} — {label}",
        start=start,
        span=span,
        path=path,
    )


def _not_a_result_file(path: Path) -> str:
    """Why ``path`` cannot be plotted: it is an ONNX model, or not an ISM result file at all."""
    expected = ("plot expects an ISM result file, the .npz written by yuzu-onnx run, ism or naive "
                "(e.g. yuzu-onnx run model.ism.onnx seqs.fa -o ism.npz, then plot ism.npz)")
    if _looks_like_onnx(path):
        return f"{str(path)!r} is an ONNX model, not an ISM result; {expected}"
    return f"cannot read {str(path)!r}: it is not an NPZ archive; {expected}"


def _looks_like_onnx(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(model.graph.node) > 0 and len(model.graph.output) > 0


def plot_from_folder(
    folder: str | os.PathLike,
    *,
    index: int | None = None,
    name: str | None = None,
    output: str | None = None,
    target: int | Sequence[int] | None = None,
    span: tuple[int, int] | None = None,
    path: str | os.PathLike,
) -> Path:
    """Plot one sequence of a result folder (``--format npy`` or ``shards``); reads only that sequence.

    Parameters are those of :func:`plot_from_npz`.
    """
    from .shards import load_results

    res = load_results(folder)
    meta = res.metadata
    layout, alphabet, window = meta["layout"], meta["alphabet"], meta.get("window")
    names = [str(s) for s in res.names.tolist()]
    seq = _pick_sequence(names, index, name)
    outputs = res.outputs
    if not outputs:
        raise InputError(f"{str(folder)!r} holds no ISM arrays")
    if output is None:
        if len(outputs) > 1:
            raise InputError(f"{str(folder)!r} holds several outputs ({', '.join(outputs)}); choose one with {option('plot_output')}")
        output = outputs[0]
    elif output not in outputs:
        raise InputError(f"no output {output!r} in {str(folder)!r}; outputs: {', '.join(outputs)}")
    if (meta.get("reductions") or {}).get(output) == "raw":
        raise InputError(f"output {output!r} holds raw mutant outputs ({option('reduce', 'raw')}), not ISM differences; "
                         "plot needs differences")
    xs = to_ncl(np.asarray(res["x"][seq])[None], layout)[0]  # (A, L)
    start, end = (int(window[0]), int(window[1])) if window else (0, xs.shape[1])
    ism = np.asarray(res[output][seq])[None]
    scores = to_ncl(select_target(ism, target), layout)[0]
    label = output if target is None or np.ndim(ism) == 3 else f"{output}[{target}]"
    if target is None and np.ndim(ism) > 3 and int(np.prod(ism.shape[3:])) > 1:
        label = f"{output} (sum over {'×'.join(map(str, ism.shape[3:]))})"
    return plot_ism(scores, xs[:, start:end], alphabet, title=f"{names[seq]} — {label}", start=start, span=span,
                    path=path)


def _metadata(array: np.ndarray, npz_path: Path) -> dict:
    value = array.item() if array.ndim == 0 else array.reshape(-1)[0].item()
    if isinstance(value, bytes):
        value = value.decode()
    try:
        meta = json.loads(value)
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict) or "layout" not in meta or "alphabet" not in meta:
        raise InputError(
            f"{str(npz_path)!r} has no valid __metadata__ (JSON with layout and alphabet)"
        )
    return meta


def _pick_sequence(names: list[str], index: int | None, name: str | None) -> int:
    if index is not None and name is not None:
        raise InputError("choose the sequence by index or by name, not both")
    if name is not None:
        if name not in names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise InputError(f"no sequence named {name!r}; names: {shown}")
        return names.index(name)
    index = 0 if index is None else int(index)
    if not -len(names) <= index < len(names):
        raise InputError(f"sequence index {index} is out of range for {len(names)} sequences")
    return index % len(names)

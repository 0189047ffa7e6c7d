"""Attributions from ISM: hypothetical and actual contribution scores for TF-MoDISco.

An ISM array holds, per sequence, position and base, the change of a model output when
that base is substituted in: ``ism[n, a, j] = f(mutant) - f(X[n])``. Mean-centring
over the alphabet at each position turns it into *hypothetical contribution scores*:

    hypothetical[n, a, j] = ism[n, a, j] - mean_b ism[n, b, j]

(how much base ``a`` at ``j`` contributes relative to the average base), and the
*contribution* of the sequence itself is the hypothetical score at the reference base:

    contrib[n, a, j] = hypothetical[n, a, j] * X[n, a, j]

which equals ``-mean_b ism[n, b, j]`` at the reference base, and 0 elsewhere (and at
positions that are not one-hot, e.g. ``N``).

TF-MoDISco (modisco-lite) conventions, from ``modiscolite/cli.py``
---------------------------------------------------------------------
``modisco motifs -s SEQS -a ATTRS -n MAX_SEQLETS [-w WINDOW] -o out.h5`` loads each of
``SEQS`` and ``ATTRS`` with ``np.load``; for a ``.npz`` file it takes the array stored
under the key ``arr_0`` (what ``np.savez(path, array)`` writes). Both arrays must be
**(N, 4, L)** (channels first, like our ``ncl`` layout); the CLI crops a centred window
``[L//2 - W//2, L//2 + W//2)`` and transposes to ``(N, W, 4)`` before calling
``modiscolite.tfmodisco.TFMoDISco(one_hot=..., hypothetical_contribs=...)``, whose own
Python API therefore wants **(N, L, 4)**. ``-a`` takes the *hypothetical* scores
(every base at every position); MoDISco multiplies them by the one-hot itself. The
window ``-w`` defaults to 400 and must not exceed ``L``: use ``-w L`` for the whole
window, rounded down to an even number (an odd ``W`` loses one position to the
integer halving and is then rejected as longer than the crop). MoDISco scans the
reverse complement by flipping both axes, which assumes the alphabet order ``ACGT``.

:func:`modisco_arrays` returns ``(N, A, Lw)`` arrays (the CLI file layout, whatever the
model's layout); :func:`write_modisco` writes the two files the CLI takes, plus the
contributions, and :attr:`ModiscoFiles.command` gives the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .bands import Band, dense_chunks
from .errors import InputError
from .layout import LAYOUTS


def to_ncl(array: np.ndarray, layout: str) -> np.ndarray:
    """View an ``ncl`` ``(N, A, L, ...)`` or ``nlc`` ``(N, L, A, ...)`` array as ``(N, A, L, ...)``."""
    _check_layout(layout)
    if array.ndim < 3:
        raise InputError(f"expected an array of rank >= 3 (N, A, L, ...), got shape {array.shape}")
    return array if layout == "ncl" else np.swapaxes(array, 1, 2)


def select_target(ism: np.ndarray, target: int | Sequence[int] | None = None) -> np.ndarray:
    """Reduce an ISM array's output dims to one value per mutant.

    Parameters
    ----------
    ism: shape=(N, A, Lw, *out_dims) (or ``(N, Lw, A, *out_dims)``: the first three axes
        are kept as they are).
    target: ``None`` sums over all ``out_dims`` (the natural choice for a profile
        output: the change of the total); an int or a list of ints indexes the
        *flattened* ``out_dims`` (C order, so for out_dims ``(T, P)`` index ``t*P + p``)
        and sums the selected entries. For an output without extra dims (a scalar per
        sequence), ``None`` and ``0`` both select it.

    Returns
    -------
    shape=(N, A, Lw) (first three axes as given), float32.
    """
    ism = np.asarray(ism)
    if ism.ndim < 3:
        raise InputError(f"expected an ISM array of rank >= 3, got shape {ism.shape}")
    flat = ism.reshape(*ism.shape[:3], -1)
    size = flat.shape[3]
    if target is None:
        out = flat.sum(axis=3, dtype=np.float64) if size > 1 else flat[..., 0]
        return np.asarray(out, dtype=np.float32)
    indices = np.atleast_1d(np.asarray(target))
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise InputError(f"target must be an int or a list of ints, got {target!r}")
    bad = [int(i) for i in indices if not -size <= i < size]
    if bad:
        raise InputError(
            f"target {bad[0]} is out of range for an output with {size} value(s) per sequence "
            f"(out_dims {ism.shape[3:]}, flattened); choose 0..{size - 1}"
        )
    picked = flat[..., indices]
    out = picked[..., 0] if indices.size == 1 else picked.sum(axis=3, dtype=np.float64)
    return np.asarray(out, dtype=np.float32)


def modisco_arrays(
    ism: np.ndarray,
    X: np.ndarray,
    *,
    layout: str,
    target: int | Sequence[int] | None = None,
    window_start: int = 0,
    band: Band | Mapping | None = None,
) -> dict[str, np.ndarray]:
    """One-hot, hypothetical and actual contributions from an ISM array, for TF-MoDISco.

    Parameters
    ----------
    ism: shape=(N, A, Lw, *out_dims) for ``layout="ncl"``, (N, Lw, A, *out_dims) for
        ``"nlc"`` — an ISM output with reduction ``none`` (or ``l2``/``sum``, whose
        out_dims are already gone; note an ``l2`` score is not signed, so its
        mean-centred values rank positions but do not say which base helps).
    X: shape=(N, A, L) or (N, L, A), the one-hot input the ISM was computed from; either
        the whole sequence (``L >= window_start + Lw``) or just the window (``L == Lw``).
    layout: ``"ncl"`` or ``"nlc"``, the layout of both ``ism`` and ``X``.
    target: which output value to explain when ``out_dims`` is not empty; see
        :func:`select_target` (``None`` sums over out_dims, e.g. a whole profile).
    window_start: first sequence position covered by the ISM window (the NPZ
        metadata's ``window[0]``); ignored when ``X`` already has length ``Lw``.
    band: for a banded ``ism`` (``--output-form banded``), its band (a
        :class:`~yuzu_onnx.bands.Band` or the metadata record); it is densified a few
        sequences at a time, so the result equals that of the dense array.

    Returns
    -------
    dict with float32 arrays, all shape=(N, A, Lw) whatever ``layout`` is:
    ``one_hot`` (X over the window), ``hypothetical`` (ISM mean-centred over the
    alphabet at each position: sums to 0 over ``A``) and ``contrib``
    (``hypothetical * one_hot``: non-zero only at reference bases).
    """
    ism = np.asarray(ism)
    X = np.asarray(X)
    _check_layout(layout)
    if X.ndim != 3:
        raise InputError(f"X must have shape (N, A, L) or (N, L, A), got {X.shape}")
    if band is None:
        scores = to_ncl(select_target(ism, target), layout)  # (N, A, Lw)
    else:
        scores = to_ncl(np.concatenate([select_target(part, target) for part in dense_chunks(ism, band)]), layout)
    onehot = to_ncl(X, layout)  # (N, A, L)
    n, a, lw = scores.shape
    if onehot.shape[0] != n or onehot.shape[1] != a:
        raise InputError(
            f"ISM array {ism.shape} and X {X.shape} disagree on the number of sequences or the "
            f"alphabet size for layout {layout!r}"
        )
    length = onehot.shape[2]
    if length != lw:
        if not 0 <= window_start <= length - lw:
            raise InputError(
                f"window_start {window_start} with an ISM window of {lw} positions does not fit "
                f"in sequences of length {length}"
            )
        onehot = onehot[:, :, window_start : window_start + lw]
    onehot = np.ascontiguousarray(onehot, dtype=np.float32)
    centred = scores.astype(np.float64)
    centred -= centred.mean(axis=1, keepdims=True)
    hypothetical = np.ascontiguousarray(centred, dtype=np.float32)
    contrib = (hypothetical * onehot).astype(np.float32)
    return {"one_hot": onehot, "hypothetical": hypothetical, "contrib": contrib}


@dataclass(frozen=True)
class ModiscoFiles:
    """Files written by :func:`write_modisco` and the window MoDISco should use."""

    sequences: Path
    attributions: Path
    contrib: Path
    window: int

    def command(self, max_seqlets: int = 2000, output: str = "modisco_results.h5") -> str:
        """The ``modisco motifs`` command line that reads these files."""
        return (
            f"modisco motifs -s {self.sequences} -a {self.attributions} -n {max_seqlets} "
            f"-w {self.window} -o {output}"
        )


def write_modisco(path_prefix: str | os.PathLike, arrays: dict[str, np.ndarray]) -> ModiscoFiles:
    """Write :func:`modisco_arrays` output as the ``.npz`` files ``modisco motifs`` reads.

    Writes ``<prefix>.ohe.npz`` (one-hot, for ``-s``), ``<prefix>.hyp.npz``
    (hypothetical contributions, for ``-a``) and ``<prefix>.contrib.npz`` (actual
    contributions, for plotting or other tools), each holding one ``(N, A, Lw)``
    float32 array under the key ``arr_0``. Files are written atomically.

    Returns
    -------
    ModiscoFiles: the paths and the largest even window ``<= Lw``; ``.command()`` gives
    the command line.
    """
    missing = [k for k in ("one_hot", "hypothetical", "contrib") if k not in arrays]
    if missing:
        raise InputError(f"arrays lack {', '.join(missing)}; pass the result of modisco_arrays()")
    shapes = {k: np.shape(arrays[k]) for k in ("one_hot", "hypothetical", "contrib")}
    if len(set(shapes.values())) != 1 or len(shapes["one_hot"]) != 3:
        raise InputError(f"modisco arrays must share one (N, A, Lw) shape, got {shapes}")
    prefix = str(os.fspath(path_prefix))
    paths = {
        "one_hot": Path(prefix + ".ohe.npz"),
        "hypothetical": Path(prefix + ".hyp.npz"),
        "contrib": Path(prefix + ".contrib.npz"),
    }
    for key, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as fh:
            np.savez_compressed(fh, np.asarray(arrays[key], dtype=np.float32))
    lw = shapes["one_hot"][2]
    return ModiscoFiles(paths["one_hot"], paths["hypothetical"], paths["contrib"], window=lw - lw % 2)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"layout must be 'ncl' or 'nlc', got {layout!r}")

"""Numpy reductions of ISM arrays, each written once.

* :func:`reduce_ism`: the per-output reductions of a converted model (``none``, ``l2``,
  ``sum``, ``raw``; DESIGN §1) applied to naive ISM, so the oracle gives what the
  converted model gives;
* :func:`l2_norm`: the Euclidean norm of a mutant's output change over the output dims
  (the ``l2`` reduction, and the ``<output>_l2`` column of the variant table);
* :func:`pearson_r`: the correlation of two ISM results (``verify`` and the choice of
  the oversampling factor of Gaussian probes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .bands import Band, densify
from .errors import InputError, option


def l2_norm(values: np.ndarray, *, keep: int = 3) -> np.ndarray:
    """The Euclidean norm over every axis after the first ``keep``, in float64.

    Parameters
    ----------
    values: shape=(N, A, Lw, *odims) or (N, Lw, A, *odims), with ``odims`` non-empty.
    keep: the leading axes kept (default the three ISM axes).

    Returns
    -------
    shape=values.shape[:keep], float64.
    """
    values = np.asarray(values)
    flat = values.reshape(*values.shape[:keep], -1).astype(np.float64)
    return np.sqrt(np.square(flat).sum(axis=-1))


def reduce_ism(ism: np.ndarray, how: str, *, reference: np.ndarray | None = None,
               sum_axis: int | None = None, band: Band | Mapping | None = None) -> np.ndarray:
    """Apply a reduction to a ``none`` ISM array, as the converted model does.

    Parameters
    ----------
    ism: shape=(N, A, Lw, *odims) or (N, Lw, A, *odims), reduction ``none``; or a banded
        array (``--output-form banded``) with ``band``.
    how: ``none``, ``l2`` (norm over odims), ``sum`` (over odims axis ``sum_axis``,
        counted in the output's own axes, batch = 0) or ``raw`` (mutant outputs: the
        delta plus ``reference`` of shape (N, *odims)).
    band: the band of a banded ``ism`` (:class:`~yuzu_onnx.bands.Band` or its record).
        ``l2`` and ``sum`` run on the band itself (the dense values outside it are 0;
        ``sum`` over the length axis sums the band); ``raw`` densifies first; ``none``
        returns the banded array.

    Returns
    -------
    The reduced array, float32 (``none`` returns ``ism`` itself).
    """
    if how == "none":
        return ism
    if band is not None and how == "raw":
        ism = densify(ism, band)
    if how == "l2":
        if ism.ndim == 3:
            return np.abs(ism)
        return l2_norm(ism).astype(np.float32)
    if how == "sum":
        if sum_axis is None:
            raise InputError(f"{option('reduce', 'sum')} needs an output with a positional axis; use none or l2")
        return ism.sum(axis=3 + sum_axis - 1, dtype=np.float64).astype(np.float32)
    if how == "raw":
        if reference is None:
            raise ValueError("raw needs the reference outputs")
        ref = reference.astype(np.float32)[:, None, None]
        return (ism + ref).astype(np.float32)
    raise InputError(f"unknown reduction {how!r}; use none, l2, sum or raw")


def pearson_r(got: np.ndarray | Mapping[str, np.ndarray],
              expected: np.ndarray | Mapping[str, np.ndarray]) -> float:
    """Pearson's r of two results, over all their values flattened, in float64.

    Parameters
    ----------
    got, expected: arrays of the same size, or mappings of output name to array; for
        mappings, the arrays of ``expected``'s outputs are concatenated in its order.

    Returns
    -------
    r in [-1, 1]; 1.0 when the two are identical (also when constant); NaN when a value
    is not finite or r is undefined (one side constant, the two not identical).
    """
    a, b = _flat_values(got, expected), _flat_values(expected, expected)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    if np.array_equal(a, b):
        return 1.0
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0.0:
        return math.nan
    return float(a @ b) / denominator


def _flat_values(values: np.ndarray | Mapping[str, np.ndarray], order) -> np.ndarray:
    if isinstance(values, Mapping):
        return np.concatenate([np.asarray(values[k], dtype=np.float64).ravel() for k in order])
    return np.asarray(values, dtype=np.float64).ravel()

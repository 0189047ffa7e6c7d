"""Check a conversion against the oracle: converted ISM vs naive ISM on random sequences.

Exact conversions (spaced probes, naive fallback) pass when every output's largest error
is at most :data:`TOLERANCE` times the output scale (DESIGN §1: the scale is the larger
of max |f(X)| and max |ISM|); Gaussian probes are approximate by design and pass when
Pearson's r with naive ISM is at least :data:`GAUSSIAN_MIN_PEARSON`.
"""

from __future__ import annotations

import numpy as np

from .bands import densify_results
from .encoding import random_one_hot
from .errors import YuzuError
from .plan import PlanOptions
from .reductions import pearson_r

#: the largest error of an exact conversion, relative to the output scale
TOLERANCE = 1e-5
#: the smallest Pearson r with naive ISM that Gaussian probes must reach
GAUSSIAN_MIN_PEARSON = PlanOptions().gaussian_min_pearson


def random_sequences(n: int, spec, *, seed: int = 0, n_unknown: int = 3) -> np.ndarray:
    """``n`` random one-hot sequences for ``spec``; the last gets ``n_unknown`` all-zero (N) columns.

    Returns
    -------
    shape=(n, A, L) for an ``ncl`` model, (n, L, A) for ``nlc``; float32.
    """
    return random_one_hot(n, spec.seq_len, alphabet_size=spec.alphabet_size, layout=spec.layout, seed=seed,
                          n_unknown=n_unknown, unknown_in="last")


def verify_conversion(conv, X: np.ndarray, *, probes: str = "spaced", device: str = "auto",
                      threads: int | None = None, extra=None, seed: int = 0) -> dict[str, dict]:
    """Converted vs naive ISM on ``X``, per output.

    Parameters
    ----------
    conv: a :class:`yuzu_onnx.convert.Conversion`.
    X: shape=(N, A, L) or (N, L, A), in the model's layout.
    probes: how ``conv`` was converted; ``gaussian`` is judged by Pearson r, the others
        by the relative error.
    device: ``auto``, ``cpu`` or ``cuda``.
    threads: CPU threads of both runs (default ``YUZU_THREADS`` or all cores).
    extra: the model's inputs besides the sequence, name → one row per sequence or one
        for all; default: random values (floats uniform in [0, 1), integers 0) from ``seed``.

    Returns
    -------
    output name → ``max_abs_error``, ``scale``, ``relative_error``, ``pearson_r``, ``ok``.
    """
    from .extra_inputs import check_extra_values, sample_extra_values
    from .oracle import reference_outputs
    from .runners import NaiveRunner
    from .session import ISMSession

    extras = conv.spec.extra_inputs
    extra = sample_extra_values(extras, len(X), seed=seed) if extra is None else extra
    extra = check_extra_values(extras, extra, len(X))
    session = ISMSession(conv.model, device=device, threads=threads)
    ism = densify_results(session.run(X, extra=extra), {"outputs": session.info.outputs})  # banded outputs as dense
    naive_runner = NaiveRunner(conv.spec, outputs=list(conv.outputs), window=conv.plan.window,
                               reductions=dict(conv.reductions), device=device, threads=threads)
    naive_runner.plan_batches(None, None)
    naive = naive_runner.run(X, extra)
    refs = reference_outputs(naive_runner.session, X, spec=conv.spec, outputs=list(conv.outputs), extra=extra)
    return {name: compare_ism(name, ism[name], naive[name], refs[name], probes=probes) for name in conv.outputs}


def compare_ism(name: str, got: np.ndarray, want: np.ndarray, reference: np.ndarray, *,
                probes: str = "spaced") -> dict:
    """One output's comparison (see :func:`verify_conversion`); ``reference``: f(X) for the scale."""
    if got.shape != want.shape:
        raise YuzuError(f"output {name!r}: converted ISM has shape {got.shape}, naive ISM {want.shape}")
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
    scale = max(float(np.max(np.abs(reference))) if reference.size else 0.0,
                float(np.max(np.abs(got))) if got.size else 0.0)
    rel = err / scale if scale > 0 else err
    r = pearson_r(got, want)
    ok = bool(np.isfinite(rel) and rel <= TOLERANCE)
    if probes == "gaussian":  # approximate by design: judged by correlation
        ok = bool(np.isfinite(r) and r >= GAUSSIAN_MIN_PEARSON)
    return {"max_abs_error": err, "scale": scale, "relative_error": rel, "pearson_r": r, "ok": ok}

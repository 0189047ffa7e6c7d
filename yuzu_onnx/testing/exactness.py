"""Exactness checks: a converted model against the naive ISM oracle.

:func:`check_exactness` converts a model, runs the rewrite on a batch and compares every
output with naive ISM (:func:`yuzu_onnx.oracle.naive_ism`) within ``1e-5 × scale`` per
output, ``scale = max(max|f(X)|, max|ism|)``; outputs above tolerance are re-checked
against a float64 oracle (``onnx.reference``) to tell engine bugs from float32 oracle
noise. :func:`draw_options` draws the window and reductions of a random check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

if TYPE_CHECKING:
    from ..convert import Conversion

__all__ = [
    "TOLERANCE",
    "ExactnessReport",
    "OutputCheck",
    "apply_reduction",
    "check_exactness",
    "draw_options",
    "float64_model",
    "float64_oracle",
]

TOLERANCE = 1e-5
F64_MAX_MUTANTS = 4096  # the float64 reference evaluator is slow; skip it for bigger cases


@dataclass
class OutputCheck:
    """One output of one example: the largest error and what it is relative to.

    ``f64_err`` (engine vs a float64 oracle) and ``oracle_noise`` (float32 oracle vs the
    float64 one) are filled in when the float64 check ran; ``verdict`` is ``ok``,
    ``oracle-noise`` (the engine agrees with float64 truth) or ``engine``.
    """

    output: str
    reduce: str
    max_err: float
    scale: float
    shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    nan: bool = False
    f64_err: float | None = None
    oracle_noise: float | None = None
    verdict: str = "ok"

    @property
    def rel(self) -> float:
        return self.max_err / self.scale if self.scale > 0 else self.max_err

    def as_dict(self) -> dict:
        return {
            "output": self.output, "reduce": self.reduce, "max_err": self.max_err, "scale": self.scale,
            "rel": self.rel, "shape": list(self.shape), "expected_shape": list(self.expected_shape),
            "nan": self.nan, "f64_err": self.f64_err, "oracle_noise": self.oracle_noise, "verdict": self.verdict,
        }


@dataclass
class ExactnessReport:
    """The outcome of one conversion checked against the oracle.

    ``conversion`` is the :class:`yuzu_onnx.convert.Conversion` that was checked (``None``
    when the conversion itself failed): its region and plan say what the rewrite did.
    """

    window: tuple[int, int] | None
    reduce: dict[str, str]
    checks: list[OutputCheck] = field(default_factory=list)
    error: str | None = None
    stage: str | None = None  # where ``error`` happened: convert, checker, run, oracle
    fallback: str | None = None
    n_stages: int = 0
    tail_chunk: int | None = None
    conversion: Conversion | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.verdict != "engine" for c in self.checks)

    @property
    def noisy(self) -> bool:
        return any(c.verdict == "oracle-noise" for c in self.checks)

    def summary(self) -> str:
        if self.error is not None:
            return f"{self.stage} error: {self.error}"
        worst = max(self.checks, key=lambda c: c.rel, default=None)
        if worst is None:
            return "no outputs"
        bad = [c for c in self.checks if c.verdict != "ok"]
        text = ", ".join(f"{c.output}[{c.reduce}] rel={c.rel:.2e} ({c.verdict})" for c in bad)
        return text or f"ok (worst rel {worst.rel:.1e})"

    def as_dict(self) -> dict:
        return {
            "window": list(self.window) if self.window else None, "reduce": self.reduce,
            "error": self.error, "stage": self.stage, "fallback": self.fallback, "n_stages": self.n_stages,
            "tail_chunk": self.tail_chunk,
            "checks": [c.as_dict() for c in self.checks],
        }


def draw_options(model: onnx.ModelProto, seq_len: int, rng: np.random.Generator,
                 *, window_p: float = 0.5) -> tuple[tuple[int, int] | None, dict[str, str]]:
    """A random window (``None`` with probability ``1 - window_p``) and reductions.

    ``sum`` is drawn only for outputs inside the local region (whose map has a length axis).
    """
    from ..analysis.region import analyse_region
    from ..importer import load_model

    region = analyse_region(load_model(model))
    window = None
    if rng.random() < window_p:
        start = int(rng.integers(0, seq_len))
        end = int(rng.integers(start + 1, seq_len + 1))
        window = (start, end)
    reduce = {}
    for out in model.graph.output:
        options = ["none", "l2", "raw"] + (["sum"] if out.name in region.maps else [])
        reduce[out.name] = options[int(rng.integers(len(options)))]
    return window, reduce


def apply_reduction(ism: np.ndarray, ref: np.ndarray, how: str, *, layout: str, sum_axis: int | None = None
                    ) -> np.ndarray:
    """The oracle's ``none`` ISM turned into reduction ``how`` (float64).

    ``ism``: ``(N, A, Lw, *odims)`` (ncl) or ``(N, Lw, A, *odims)`` (nlc); ``ref``: the
    reference outputs ``(N, *odims)``; ``sum_axis``: the output's length axis (with batch).
    """
    ism = ism.astype(np.float64)
    if how == "none":
        return ism
    if how == "l2":
        trailing = tuple(range(3, ism.ndim))
        return np.sqrt(np.sum(ism**2, axis=trailing)) if trailing else np.abs(ism)
    if how == "raw":
        return ism + ref.astype(np.float64)[:, None, None]
    if how == "sum":
        if sum_axis is None:
            raise ValueError("reduction sum needs the output's length axis")
        return ism.sum(axis=2 + sum_axis)
    raise ValueError(f"unknown reduction {how!r}")


def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64 (initializers, input and outputs)."""
    import copy

    m = copy.deepcopy(model)
    for init in m.graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del m.graph.value_info[:]
    for node in m.graph.node:
        if node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.DOUBLE
    return m


def float64_oracle(spec, X: np.ndarray, window: tuple[int, int], outputs: Sequence[str]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Naive ISM and reference outputs in float64 with ``onnx.reference.ReferenceEvaluator``."""
    from onnx.reference import ReferenceEvaluator

    from ..oracle import build_mutants, mutant_mask

    evaluator = ReferenceEvaluator(float64_model(spec.model))
    x64 = X.astype(np.float64)
    names = list(outputs)
    refs = dict(zip(names, evaluator.run(names, {spec.input_name: x64})))
    start = window[0]
    mask = mutant_mask(X, spec.layout, window)
    n_idx, j_idx, a_idx = np.nonzero(mask)
    result = {}
    lw = window[1] - window[0]
    a = spec.alphabet_size
    for name in names:
        odims = refs[name].shape[1:]
        head = (a, lw) if spec.layout == "ncl" else (lw, a)
        result[name] = np.zeros((len(X), *head, *odims), dtype=np.float64)
    for lo in range(0, len(n_idx), 512):
        nb, jb, ab = n_idx[lo:lo + 512], j_idx[lo:lo + 512], a_idx[lo:lo + 512]
        mutants = build_mutants(x64, spec.layout, nb, jb + start, ab)
        outs = evaluator.run(names, {spec.input_name: mutants})
        for name, out in zip(names, outs):
            delta = out - refs[name][nb]
            if spec.layout == "ncl":
                result[name][nb, ab, jb] = delta
            else:
                result[name][nb, jb, ab] = delta
    return result, refs


def check_exactness(
    model: onnx.ModelProto,
    X: np.ndarray,
    *,
    window: tuple[int, int] | None = None,
    reduce: dict[str, str] | str | None = None,
    float64: str = "auto",
    tolerance: float = TOLERANCE,
    tail_chunk_bytes: int | None = None,
    batch_size: int | None = None,
    first_conv: str = "auto",
    output_form: str = "dense",
) -> ExactnessReport:
    """Convert ``model``, run it on ``X`` and compare every output with the naive oracle.

    Parameters
    ----------
    model: the original sequence model.
    X: shape=(N, A, L) (ncl) or (N, L, A) (nlc), one-hot, all-zero columns allowed.
    window: ``None`` or ``(start, end)``.
    reduce: one reduction or output → reduction (default ``none``).
    float64: ``"auto"``: recompute the oracle in float64 for outputs above tolerance;
        ``"always"`` or ``"never"``.
    tolerance: relative to ``scale = max(max|f(X)|, max|ism|, max|expected|)`` per output.
    tail_chunk_bytes: the planner's ``PlanOptions.tail_chunk_bytes`` for the conversion
        (small values force the tail ``Loop`` through several chunks).
    batch_size: sequences per run of the converted model (default all of ``X``).
    first_conv: passed to :func:`yuzu_onnx.convert.convert_model` (``shortcut`` forces the
        first-convolution shortcut wherever it applies).
    output_form: passed to :func:`yuzu_onnx.convert.convert_model`; banded outputs are
        densified (:func:`yuzu_onnx.densify`) before the comparison.

    The oracle runs the imported (cleaned) model; the original model's own outputs on
    ``X`` are compared with the cleaned model's too (stage ``importer`` on a mismatch).

    Returns
    -------
    ExactnessReport: an exception in a stage is recorded (``stage``, ``error``), not raised.
    """
    import warnings

    from ..bands import densify_results
    from ..convert import convert_model
    from ..errors import YuzuWarning
    from ..oracle import naive_ism, reference_outputs
    from ..plan import PlanOptions
    from ..session import ISMSession

    window = None if window is None else (int(window[0]), int(window[1]))
    report = ExactnessReport(window=window, reduce=dict(reduce) if isinstance(reduce, dict) else {})
    options = PlanOptions() if tail_chunk_bytes is None else PlanOptions(tail_chunk_bytes=int(tail_chunk_bytes))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", YuzuWarning)
            conv = convert_model(model, window=window, reduce=reduce, first_conv=first_conv, plan_options=options,
                                 output_form=output_form)
        report.conversion = conv
        report.tail_chunk = conv.plan.tail_chunk
        report.fallback = next((str(w.message) for w in caught if issubclass(w.category, YuzuWarning)), None)
        report.reduce = dict(conv.reductions)
        report.n_stages = len(conv.plan.stages)
    except Exception as exc:
        report.stage, report.error = "convert", f"{type(exc).__name__}: {exc}"
        return report
    try:
        onnx.checker.check_model(conv.model, full_check=True)
    except Exception as exc:
        report.stage, report.error = "checker", f"{type(exc).__name__}: {str(exc)[:500]}"
        return report
    try:
        session = ISMSession(conv.model, device="cpu", threads=1)
        got = densify_results(session.run(X, batch_size=batch_size or len(X)), {"outputs": session.info.outputs})
    except Exception as exc:
        report.stage, report.error = "run", f"{type(exc).__name__}: {str(exc)[:500]}"
        return report
    spec = conv.spec
    full_window = window or (0, spec.seq_len)
    try:
        oracle = naive_ism(spec, X, window=full_window, outputs=conv.outputs, device="cpu")
        refs = reference_outputs(spec, X, outputs=conv.outputs, device="cpu")
    except Exception as exc:
        report.stage, report.error = "oracle", f"{type(exc).__name__}: {exc}"
        return report
    try:
        original = dict(zip(conv.outputs, _run_original(model, spec.input_name, X, conv.outputs)))
    except Exception as exc:
        report.stage, report.error = "importer", f"the original model fails on X: {type(exc).__name__}: {exc}"
        return report
    for name in conv.outputs:
        scale = max(_absmax(original[name]), 1e-30)
        if original[name].shape != refs[name].shape or np.abs(original[name] - refs[name]).max() > tolerance * scale:
            report.stage, report.error = "importer", f"the imported model's {name!r} differs from the original's"
            return report
    layout = spec.layout
    for name in conv.outputs:
        how = conv.reductions[name]
        m = conv.region.maps.get(name)
        sum_axis = m.axis if m is not None else None
        if how == "sum" and sum_axis is None:
            report.stage, report.error = "oracle", f"sum requested for {name!r}, which has no positional map"
            return report
        expected = apply_reduction(oracle[name], refs[name], how, layout=layout, sum_axis=sum_axis)
        value = np.asarray(got[name])
        check = OutputCheck(name, how, np.inf, 1.0, tuple(value.shape), tuple(expected.shape))
        report.checks.append(check)
        check.nan = bool(np.isnan(value).any())
        scale = max(_absmax(refs[name]), _absmax(oracle[name]), _absmax(expected))
        check.scale = scale if scale > 0 else 1.0
        if value.shape != expected.shape:
            check.verdict = "engine"
            continue
        check.max_err = float(np.nan_to_num(np.abs(value.astype(np.float64) - expected), nan=np.inf).max(initial=0.0))
        if check.nan:
            check.max_err = float("inf")
        if check.max_err > tolerance * check.scale or float64 == "always":
            check.verdict = "engine" if check.max_err > tolerance * check.scale else "ok"
            if float64 != "never" and np.isfinite(check.max_err):
                _float64_check(check, spec, X, full_window, value, expected, how, sum_axis, tolerance)
    return report


def _float64_check(check: OutputCheck, spec, X, window, value, expected, how, sum_axis, tolerance) -> None:
    lw = window[1] - window[0]
    if len(X) * lw * spec.alphabet_size > F64_MAX_MUTANTS:
        return
    try:
        ism64, refs64 = float64_oracle(spec, X, window, [check.output])
    except Exception:  # the reference evaluator lacks an op: no verdict from it
        return
    exp64 = apply_reduction(ism64[check.output], refs64[check.output], how, layout=spec.layout, sum_axis=sum_axis)
    check.f64_err = float(np.abs(value.astype(np.float64) - exp64).max(initial=0.0))
    check.oracle_noise = float(np.abs(expected - exp64).max(initial=0.0))
    if check.verdict == "engine" and check.f64_err <= tolerance * check.scale:
        check.verdict = "oracle-noise"


def _run_original(model: onnx.ModelProto, input_name: str, X: np.ndarray, outputs) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(list(outputs), {input_name: X})


def _absmax(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.nanmax(np.abs(a))) if a.size else 0.0

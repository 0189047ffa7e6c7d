"""The exact naive ISM oracle: run every single-substitution mutant through the model.

This is the reference every rewrite is checked against, the fallback for models without
a local region, and the baseline of the benchmarks. It builds the mutants with numpy
(no Python loop over mutants), skips those equal to the reference, runs them through one
ONNX Runtime session in memory-bounded batches and subtracts the reference outputs.

Output contract (DESIGN §1): ``ism[n, a, j, ...] = f(mutant(n, j, a)) - f(X[n])``, laid
out like the input (``(N, A, Lw, *out_dims)`` for ncl models, ``(N, Lw, A, *out_dims)``
for nlc), exactly 0 at the reference base. Columns that are not one-hot have no
reference base: all ``A`` substitutions are computed there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .errors import InputError, ModelError, option
from .extra_inputs import ExtraValues, check_extra_values, take_rows
from .importer import NCL, ModelSpec, load_model
from .runtime import make_session
from .sequences import check_one_hot, length_from_sequences
from .window import parse_window

if TYPE_CHECKING:  # pragma: no cover
    from .targets import AggregateArg, SelectArg

DEFAULT_MAX_MEMORY = 1 << 30  # 1 GiB
BYTES_PER_VALUE = 4
MUTANTS_PER_GROUP = 1 << 20

Progress = Callable[[int, int], None]


def as_spec(model: ModelSpec | str | os.PathLike | onnx.ModelProto, X=None) -> ModelSpec:
    """A ``ModelSpec`` as given, or :func:`load_model` with default options (a dynamic
    length taken from the sequences ``X`` when given)."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        seq_len = length_from_sequences(model, X) if X is not None else None
        return load_model(model, seq_len=seq_len)
    raise TypeError(f"model must be a ModelSpec, a path or an onnx.ModelProto, got {type(model).__name__}")


def resolve_outputs(spec: ModelSpec, outputs: str | Sequence[str] | None) -> tuple[str, ...]:
    """The requested output names (default: all), checked against the model."""
    if outputs is None:
        return spec.output_names
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    if not names:
        raise InputError(f"no outputs requested; the model's outputs: {', '.join(spec.output_names)}")
    unknown = [n for n in names if n not in spec.output_names]
    if unknown:
        raise InputError(
            f"model has no output {', '.join(map(repr, unknown))}; its outputs: {', '.join(spec.output_names)}"
        )
    return tuple(dict.fromkeys(names))


def ism_shape(
    spec: ModelSpec, output_name: str, n_sequences: int, *, window: tuple[int, int] | None = None
) -> tuple[int, ...]:
    """The shape of the ISM array of one output.

    ``(N, A, Lw, *out_dims)`` for ncl models, ``(N, Lw, A, *out_dims)`` for nlc, where
    ``Lw = end - start`` and ``out_dims`` is the output's shape without its batch axis.
    """
    start, end = parse_window(window, spec.seq_len)
    out_dims = tuple(spec.output(output_name).shape[1:])
    a, lw = spec.alphabet_size, end - start
    head = (a, lw) if spec.layout == NCL else (lw, a)
    return (int(n_sequences), *head, *out_dims)


def bytes_per_sample(spec: ModelSpec) -> int:
    """An upper bound on the memory one sequence takes in a forward pass.

    The sum of every batch-dependent tensor's per-sample size (measured shapes) times
    4 bytes, plus the input. Tensors whose batch is merged with another axis count the
    unknown axis as ``seq_len`` per sample.
    """
    total = 0
    for name, shape in spec.shapes.items():
        axis = spec.batch_axes.get(name)
        if axis is None and name not in spec.irregular:
            continue
        size = 1
        for d in shape:
            size *= spec.seq_len if d < 0 and axis is None else max(int(d), 1)
        total += size
    total += 2 * spec.alphabet_size * spec.seq_len  # the mutant batch we build, and its copy
    return max(total, 1) * BYTES_PER_VALUE


def result_bytes_per_sequence(
    spec: ModelSpec, outputs: str | Sequence[str] | None = None, *, window: tuple[int, int] | None = None
) -> int:
    """The bytes of one sequence's ISM result arrays: per output, every mutant (``A`` x
    ``Lw``) times the output's size, float32, in the result layout (:func:`ism_shape`)."""
    total = 0
    for name in resolve_outputs(spec, outputs):
        total += int(np.prod(ism_shape(spec, name, 1, window=window), dtype=np.int64))
    return max(total, 1) * BYTES_PER_VALUE


def auto_batch_size(spec: ModelSpec, max_memory: int | None = None) -> int:
    """Mutants per batch that fit in ``max_memory`` bytes (default 1 GiB)."""
    budget = DEFAULT_MAX_MEMORY if max_memory is None else int(max_memory)
    if budget <= 0:
        raise InputError(f"{option('max_memory', max_memory)} is not a positive number of bytes")
    return max(1, budget // bytes_per_sample(spec))


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise InputError(f"{option('batch_size', batch_size)} is not a positive integer")


def _run(session, input_name: str, names: Sequence[str], x: np.ndarray, spec: ModelSpec,
         extra: ExtraValues | None = None) -> list[np.ndarray]:
    outs = session.run(list(names), {input_name: x, **dict(extra or {})})
    for name, out in zip(names, outs, strict=True):
        want = (x.shape[0], *spec.output(name).shape[1:])
        if tuple(out.shape) != want:
            raise ModelError(
                f"output {name!r} has shape {tuple(out.shape)} for a batch of {x.shape[0]}, "
                f"but its measured shape is {spec.output(name).shape}"
            )
    return outs


def reference_outputs(
    session_or_spec,
    X: np.ndarray,
    *,
    spec: ModelSpec | None = None,
    outputs: str | Sequence[str] | None = None,
    batch_size: int | None = None,
    max_memory: int | None = None,
    providers: Sequence[str] | None = None,
    device: str = "auto",
    extra: ExtraValues | None = None,
) -> dict[str, np.ndarray]:
    """The model's outputs for the sequences themselves.

    Parameters
    ----------
    session_or_spec: a ``ModelSpec`` (a session is created), or an
        ``onnxruntime.InferenceSession`` of the model (then give ``spec`` for the output
        checks and batch sizing, or ``batch_size``).
    X: shape=(N, A, L) for ncl models or (N, L, A) for nlc, float32 one-hot.
    spec: the model, when a session is passed.
    outputs: output names (default: all the session's outputs).
    extra: the model's inputs besides the sequence, name → shape=(N, ...) or (1, ...)
        (checked against ``spec``; passed as given without one).

    Returns
    -------
    dict: output name → array of shape ``(N, *out_dims)`` in the output's dtype.
    """
    _check_batch_size(batch_size)
    if isinstance(session_or_spec, ModelSpec):
        spec = session_or_spec
        session = make_session(spec.model, providers=providers, device=device)
    else:
        session = session_or_spec
    input_name = spec.input_name if spec is not None else session.get_inputs()[0].name
    if spec is not None:
        names = resolve_outputs(spec, outputs)
        X = check_one_hot(X, layout=spec.layout, alphabet_size=spec.alphabet_size, seq_len=spec.seq_len)
        extra = check_extra_values(spec.extra_inputs, extra, len(X))
    else:
        available = [o.name for o in session.get_outputs()]
        names = tuple(available if outputs is None else ([outputs] if isinstance(outputs, str) else outputs))
        X = np.ascontiguousarray(X, dtype=np.float32)
    if batch_size is None:
        batch_size = auto_batch_size(spec, max_memory) if spec is not None else 64
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for lo in range(0, len(X), batch_size):
        rows = slice(lo, lo + batch_size)
        xb = X[rows]
        if spec is not None:
            outs = _run(session, input_name, names, xb, spec, take_rows(extra, rows))
        else:
            outs = session.run(list(names), {input_name: xb, **take_rows(extra, rows)})
        for name, out in zip(names, outs, strict=True):
            chunks[name].append(np.asarray(out))
    result = {}
    for name in names:
        if chunks[name]:
            result[name] = np.concatenate(chunks[name])
        else:  # no sequences
            shape = (0, *spec.output(name).shape[1:]) if spec is not None else (0,)
            result[name] = np.zeros(shape, dtype=np.float32)
    return result


def mutant_mask(X: np.ndarray, layout: str, window: tuple[int, int]) -> np.ndarray:
    """Which substitutions to run: ``(N, Lw, A)`` bool, False at reference bases.

    A column is the reference base ``e_a`` when it holds exactly one non-zero value and
    that value is exactly 1.
    """
    start, end = window
    xn = X[:, :, start:end].transpose(0, 2, 1) if layout == NCL else X[:, start:end, :]
    is_ref = (xn == 1) & (np.count_nonzero(xn, axis=2) == 1)[:, :, None]
    return ~is_ref


def build_mutants(
    X: np.ndarray, layout: str, n_idx: np.ndarray, pos_idx: np.ndarray, a_idx: np.ndarray
) -> np.ndarray:
    """Mutant sequences: ``X[n]`` with column ``pos`` set to ``e_a``, for each triple.

    Parameters
    ----------
    X: shape=(N, A, L) (ncl) or (N, L, A) (nlc).
    n_idx, pos_idx, a_idx: shape=(B,) sequence, absolute position and base of each mutant.

    Returns
    -------
    np.ndarray, shape=(B, A, L) or (B, L, A), float32.
    """
    mutants = X[n_idx]  # fancy indexing copies
    rows = np.arange(len(n_idx))
    if layout == NCL:
        mutants[rows, :, pos_idx] = 0.0
        mutants[rows, a_idx, pos_idx] = 1.0
    else:
        mutants[rows, pos_idx, :] = 0.0
        mutants[rows, pos_idx, a_idx] = 1.0
    return mutants


def naive_ism(
    model: ModelSpec | str | os.PathLike | onnx.ModelProto,
    X: np.ndarray,
    *,
    outputs: str | Sequence[str] | None = None,
    window: tuple[int, int] | None = None,
    batch_size: int | None = None,
    max_memory: int | None = None,
    providers: Sequence[str] | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    threads: int | None = None,
    extra: ExtraValues | None = None,
    select: SelectArg = None,
    aggregate: AggregateArg = None,
) -> dict[str, np.ndarray]:
    """Exact in-silico saturation mutagenesis by running every mutant.

    Parameters
    ----------
    model: a ``ModelSpec`` from :func:`yuzu_onnx.importer.load_model`, or a path /
        ``onnx.ModelProto`` (loaded with default options; a dynamic length is taken
        from ``X``).
    X: shape=(N, A, L) for ncl models or (N, L, A) for nlc, float32 one-hot, or one
        sequence (A, L) / (L, A) as a batch of one; all-zero (``N``) and soft columns
        are allowed.
    outputs: output names to compute (default: all outputs).
    window: ``(start, end)``: mutate only positions ``start <= j < end`` (default: all).
    batch_size: mutants per forward pass; default: derived from ``max_memory``.
    max_memory: the memory budget of one forward pass in bytes (default 1 GiB).
    providers: ONNX Runtime execution providers (overrides ``device``).
    device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress: called as ``progress(done, total)`` after each batch, counting mutants.
    threads: CPU threads (default ``YUZU_THREADS`` or all cores).
    extra: the model's inputs besides the sequence (``spec.extra_inputs``), name →
        shape=(N, *shape) (one row per sequence) or (1, *shape) (one row for all); every
        mutant of sequence ``n`` gets row ``n``, never mutated.
    select, aggregate: output targets, as for :func:`yuzu_onnx.convert` (``{"out": {1: [0,
        5]}}``, ``{"out": {2: (90, 100, "sum")}}``): applied to every mutant's and the
        reference's output before the difference, so the result compares key by key with
        a model converted with the same targets. They apply to the outputs of ``model`` as
        given (a ``ModelSpec`` from :func:`yuzu_onnx.targets.targeted_spec` already has them).

    Returns
    -------
    dict: output name → float32 ISM array of shape ``(N, A, Lw, *out_dims)`` (ncl) or
    ``(N, Lw, A, *out_dims)`` (nlc), ``Lw = end - start``, where
    ``ism[n, a, j] = f(mutant(n, start + j, a)) - f(X[n])`` and exactly 0 at the
    reference base.

    Raises
    ------
    SequenceError: ``X`` is not a valid one-hot array for the model.
    InputError: a bad window, output name, batch size or memory budget.
    """
    spec = as_spec(model, X)
    if select is not None or aggregate is not None:
        from .targets import targeted_spec

        spec, _ = targeted_spec(spec, select, aggregate)
    X = check_one_hot(X, layout=spec.layout, alphabet_size=spec.alphabet_size, seq_len=spec.seq_len)
    extra = check_extra_values(spec.extra_inputs, extra, len(X))
    names = resolve_outputs(spec, outputs)
    start, end = parse_window(window, spec.seq_len)
    _check_batch_size(batch_size)
    if batch_size is None:
        batch_size = auto_batch_size(spec, max_memory)
    elif max_memory is not None:
        auto_batch_size(spec, max_memory)  # validates the value
    n_seq = len(X)
    result = {
        name: np.zeros(ism_shape(spec, name, n_seq, window=(start, end)), dtype=np.float32) for name in names
    }
    if n_seq == 0:
        return result

    session = make_session(spec.model, providers=providers, device=device, threads=threads)
    mask = mutant_mask(X, spec.layout, (start, end))
    total = int(mask.sum())
    done = 0
    # Sequences are processed in groups: the group's reference in one run (at most
    # ``batch_size`` sequences), then all its mutants in batches of ``batch_size`` (a
    # batch may span sequences). A group holds at most ``cap`` mutants, which bounds the
    # index arrays.
    cap = max(batch_size, MUTANTS_PER_GROUP)
    per_seq_max = max(1, int(mask.reshape(n_seq, -1).sum(axis=1).max()))
    group_size = max(1, min(batch_size, cap // per_seq_max))
    for g0 in range(0, n_seq, group_size):
        g1 = min(n_seq, g0 + group_size)
        refs = _run(session, spec.input_name, names, X[g0:g1], spec, take_rows(extra, slice(g0, g1)))
        refs = [np.asarray(r) for r in refs]
        n_idx, j_idx, a_idx = np.nonzero(mask[g0:g1])
        for lo in range(0, len(n_idx), batch_size):
            nb, jb, ab = n_idx[lo : lo + batch_size], j_idx[lo : lo + batch_size], a_idx[lo : lo + batch_size]
            mutants = build_mutants(X, spec.layout, nb + g0, jb + start, ab)
            outs = _run(session, spec.input_name, names, mutants, spec, take_rows(extra, nb + g0))
            for name, out, ref in zip(names, outs, refs, strict=True):
                delta = _difference(np.asarray(out), ref[nb])
                if spec.layout == NCL:
                    result[name][nb + g0, ab, jb] = delta
                else:
                    result[name][nb + g0, jb, ab] = delta
            done += len(nb)
            if progress is not None:
                progress(done, total)
    return result


def _difference(mutant: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``mutant - reference`` in float32 (float64 outputs are subtracted before casting)."""
    if mutant.dtype.kind == "f" and mutant.dtype.itemsize <= 4:
        return mutant.astype(np.float32, copy=False) - reference.astype(np.float32, copy=False)
    return (mutant.astype(np.float64) - reference.astype(np.float64)).astype(np.float32)

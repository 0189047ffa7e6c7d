"""Import: read an exported ONNX sequence model and describe it.

:func:`load_model` finds the one-hot sequence input and its layout, fixes the sequence
length (the batch stays dynamic), folds shape-computing subgraphs with onnx-graphsurgeon,
and *measures* the shape of every tensor by running the model on two batch sizes. The
measured shapes are what the analysis trusts: exporters leave shape patterns that static
inference cannot resolve, but ONNX Runtime always knows the real shapes.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .alphabets import DEFAULT_FOR_SIZE, resolve_alphabet
from .encoding import random_one_hot
from .errors import ModelError, YuzuWarning, option
from .extra_inputs import ExtraInput, sample_extra_values
from .format import is_converted
from .layout import LAYOUTS, NCL, NLC, SequenceSpec

BATCH_DIM_NAME = "batch"


@dataclass(frozen=True)
class OutputSpec:
    """One model output: its name and its measured shape (``-1`` marks the batch axis)."""

    name: str
    shape: tuple[int, ...]
    batch_axis: int | None


@dataclass(frozen=True)
class ModelSpec:
    """An imported sequence model, ready for analysis.

    Attributes
    ----------
    model: the cleaned model (fixed length, dynamic batch, folded shape subgraphs).
    input_name: the one-hot sequence input.
    layout: ``"ncl"`` = ``(N, A, L)`` (PyTorch) or ``"nlc"`` = ``(N, L, A)`` (Keras/TF).
    alphabet: the letters of the one-hot axis, e.g. ``"ACGT"``.
    seq_len: the fixed sequence length ``L``.
    outputs: the model outputs with their measured shapes.
    opset: the default-domain opset of the model.
    shapes: measured shape of every tensor (``-1`` on the batch axis).
    batch_axes: for every measured tensor, the axis carrying the batch, or ``None`` when
        the tensor does not depend on the batch size.
    irregular: tensors whose batch is merged with another axis (e.g. ``(N*L, C)``).
    source_sha256: SHA-256 of the serialized source model as given.
    extra_inputs: the model's inputs besides the sequence (control tracks, covariates),
        held fixed for every mutant of a sequence.
    dtypes: measured element type of every tensor (input, initializers, node outputs).
    """

    model: onnx.ModelProto
    input_name: str
    layout: str
    alphabet: str
    seq_len: int
    outputs: tuple[OutputSpec, ...]
    opset: int
    shapes: Mapping[str, tuple[int, ...]] = field(repr=False)
    batch_axes: Mapping[str, int | None] = field(repr=False)
    irregular: frozenset[str] = field(repr=False, default=frozenset())
    source_sha256: str = ""
    extra_inputs: tuple[ExtraInput, ...] = ()
    dtypes: Mapping[str, np.dtype] = field(repr=False, default_factory=dict)

    @property
    def sequence(self) -> SequenceSpec:
        """Layout, alphabet and length: what reading sequences for the model needs."""
        return SequenceSpec(self.layout, self.alphabet, self.seq_len)

    @property
    def alphabet_size(self) -> int:
        """``A``, the size of the one-hot axis."""
        return len(self.alphabet)

    @property
    def input_shape(self) -> tuple[int, int]:
        """The per-sequence input shape: ``(A, L)`` for ncl, ``(L, A)`` for nlc."""
        return self.sequence.input_shape

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def output(self, name: str) -> OutputSpec:
        for out in self.outputs:
            if out.name == name:
                return out
        raise ModelError(f"model has no output {name!r}; outputs: {', '.join(self.output_names)}")


def load_model(
    path_or_proto: str | os.PathLike | onnx.ModelProto,
    *,
    seq_len: int | None = None,
    input_name: str | None = None,
    layout: str = "auto",
    alphabet: str | int | None = None,
) -> ModelSpec:
    """Load an ONNX sequence model and describe it.

    Parameters
    ----------
    path_or_proto: an ``.onnx`` file or a loaded ``onnx.ModelProto`` (left untouched).
    seq_len: the sequence length ``L``; required when the model's length is dynamic.
    input_name: the one-hot input, when the model has several candidates.
    layout: ``"auto"``, ``"ncl"`` (``(N, A, L)``) or ``"nlc"`` (``(N, L, A)``).
    alphabet: ``None`` (4 → DNA, 20 → protein), a size, a name or the letters.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelError: the file is not a usable ONNX model, is already a converted ISM model, or
        the input is ambiguous.
    """
    raw, proto = _read_proto(path_or_proto)
    check_original(proto, path_or_proto)
    if layout not in ("auto", *LAYOUTS):
        raise ModelError(f"{option('layout', layout)} is not auto, ncl or nlc")
    letters = resolve_alphabet(alphabet)
    seq_input = _find_sequence_input(proto, input_name, letters, alphabet)
    lay, size, length = _decide_layout(seq_input, layout, letters, seq_len, alphabet)
    letters = letters or DEFAULT_FOR_SIZE[size]
    extras = _extra_inputs(proto, seq_input, length)
    fixed_batch = _dims(seq_input)[0] == 1
    model = _readable_ir_version(_upgrade_opset(proto))
    model = _fix_input_shape(model, seq_input.name, lay, size, length, extras)
    model = _fold_constants(model)
    try:
        shapes, batch_axes, irregular, dtypes = measure_shapes(model, seq_input.name, lay, size, length, extras)
        lost = [o.name for o in model.graph.output if batch_axes.get(o.name) != 0]
        if fixed_batch and lost:  # a batch-1 export whose outputs do not follow the batch
            raise ModelError(f"output {lost[0]!r} does not follow the batch size")
    except ModelError as failure:
        model = _free_batch_of_one(model, seq_input.name, lay, size, length, extras, failure)
        shapes, batch_axes, irregular, dtypes = measure_shapes(model, seq_input.name, lay, size, length, extras)
    model = _canonicalise_batch_reshapes(model, shapes, batch_axes)
    outputs = tuple(
        OutputSpec(o.name, shapes[o.name], batch_axes.get(o.name)) for o in model.graph.output
    )
    for out in outputs:
        if batch_axes.get(out.name) != 0:
            raise ModelError(
                f"output {out.name!r} (shape {out.shape}) does not carry the batch on its first "
                "axis; yuzu-onnx needs outputs of shape (batch, ...)"
            )
    return ModelSpec(
        model=model,
        input_name=seq_input.name,
        layout=lay,
        alphabet=letters,
        seq_len=length,
        outputs=outputs,
        opset=opset_of(model),
        shapes=shapes,
        batch_axes=batch_axes,
        irregular=frozenset(irregular),
        source_sha256=hashlib.sha256(raw).hexdigest(),
        extra_inputs=extras,
        dtypes=dtypes,
    )


def check_original(proto: onnx.ModelProto, source: str | os.PathLike | onnx.ModelProto = "model") -> None:
    """Refuse a converted ISM model where the original model is needed.

    Every entry point that imports a model (convert, inspect, ism, naive, verify and their
    Python functions) goes through :func:`load_model`, which calls this first.

    Raises
    ------
    ModelError: ``proto`` carries yuzu-onnx's converted-model metadata.
    """
    if not is_converted(proto):
        return
    name = "the model" if isinstance(source, onnx.ModelProto) else repr(str(source))
    raise ModelError(
        f"{name} is a converted ISM model (written by yuzu-onnx convert), but this needs the original "
        "model it was converted from; give the original model, or compute ISM with the converted "
        "one with `yuzu-onnx run` (Python: ISMSession)"
    )


@dataclass(frozen=True)
class InputAxes:
    """The sequence input as the model file declares it, before any length is fixed.

    ``seq_len`` is ``None`` when the model's length is dynamic (then it comes from
    ``seq_len=`` or from the sequences, see :func:`yuzu_onnx.sequences.length_from_sequences`).
    """

    input_name: str
    layout: str
    alphabet_size: int
    seq_len: int | None


def input_axes(
    path_or_proto: str | os.PathLike | onnx.ModelProto,
    *,
    input_name: str | None = None,
    layout: str = "auto",
    alphabet: str | int | None = None,
) -> InputAxes:
    """Find the sequence input, its layout and its length (``None`` when dynamic) without
    running the model; the options and errors are those of :func:`load_model`."""
    _, proto = _read_proto(path_or_proto, external_data=False)
    if layout not in ("auto", *LAYOUTS):
        raise ModelError(f"{option('layout', layout)} is not auto, ncl or nlc")
    letters = resolve_alphabet(alphabet)
    seq_input = _find_sequence_input(proto, input_name, letters, alphabet)
    lay, size, length = _decide_layout(seq_input, layout, letters, None, alphabet, need_length=False)
    return InputAxes(seq_input.name, lay, size, length)


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset version."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("model imports no default-domain (ai.onnx) opset")


def _read_proto(path_or_proto, *, external_data: bool = True) -> tuple[bytes, onnx.ModelProto]:
    """The serialized model and its parsed proto (a given proto is copied); weights stored
    outside the file are loaded unless ``external_data=False``."""
    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto.SerializeToString(), copy.deepcopy(path_or_proto)
    if not isinstance(path_or_proto, (str, os.PathLike)):
        raise TypeError(f"expected a path or onnx.ModelProto, got {type(path_or_proto).__name__}")
    path = Path(path_or_proto)
    if not path.exists():
        raise ModelError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelError(f"model path {str(path)!r} is not a file")
    raw = path.read_bytes()
    if not raw:
        raise ModelError(f"model file {str(path)!r} is empty")
    try:
        proto = onnx.load_from_string(raw)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelError(
            f"{str(path)!r} is not an ONNX model (cannot parse it: {type(exc).__name__}); "
            "is the file truncated?"
        ) from None
    if len(proto.graph.node) == 0 or len(proto.graph.output) == 0:
        raise ModelError(f"{str(path)!r} is not an ONNX model with a graph (no nodes or outputs)")
    if external_data and any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer):
        onnx.load_external_data_for_model(proto, str(path.parent))
    return raw, proto


MIN_OPSET = 11


def _upgrade_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Models older than opset 11 are converted (the rewrite emits opset-11 ops)."""
    if opset_of(proto) >= MIN_OPSET:
        return proto
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        raise ModelError(
            f"the model uses opset {opset_of(proto)}; yuzu-onnx needs opset {MIN_OPSET} or newer and "
            f"the automatic upgrade failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "re-export the model with a newer opset"
        ) from None
    warnings.warn(f"the model's opset {opset_of(proto)} was upgraded to {MIN_OPSET}", YuzuWarning, stacklevel=3)
    return upgraded


def _readable_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    """A model that declares a newer ONNX IR version than the installed ONNX Runtime reads
    (an ``onnx`` newer than ``onnxruntime`` writes its own newest) is declared at the newest
    one ONNX Runtime reads, when its opsets allow: IR versions only add proto features, and
    a feature the model uses that ONNX Runtime lacks still fails, by name, at its first run.
    """
    from .runtime import IR_VERSION_READ_EVERYWHERE, onnxruntime_max_ir_version

    if model.ir_version <= IR_VERSION_READ_EVERYWHERE:
        return model
    newest = onnxruntime_max_ir_version()
    if newest is None or model.ir_version <= newest:
        return model
    import onnxruntime as ort

    try:
        needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    except Exception:  # an opset version this onnx does not know
        needed = model.ir_version
    if needed > newest:
        raise ModelError(
            f"the model declares ONNX IR version {model.ir_version} and opset {opset_of(model)}, which need IR "
            f"version {needed}; onnxruntime {ort.__version__} reads IR versions up to {newest}: upgrade "
            "onnxruntime (pip install -U onnxruntime, or onnxruntime-gpu) or export with an older opset"
        )
    readable = onnx.ModelProto()
    readable.CopyFrom(model)
    readable.ir_version = newest
    return readable


def _free_batch_of_one(model: onnx.ModelProto, input_name: str, layout: str, size: int, length: int,
                       extras: tuple[ExtraInput, ...], failure: ModelError) -> onnx.ModelProto:
    """A model that fails on a batch of 2 but may have been exported with a fixed batch of 1:
    its batch-1 shape constants made dynamic and checked (:mod:`yuzu_onnx.fixed_batch`).

    Raises the original ``failure`` when the model does not run on one sequence either.
    """
    from .fixed_batch import free_fixed_batch

    def feeds(n: int) -> dict[str, np.ndarray]:
        return {input_name: random_one_hot(n, length, alphabet_size=size, layout=layout, seed=n),
                **sample_extra_values(extras, n, seed=n)}

    freed = free_fixed_batch(model, input_name, feeds)
    if freed is None:  # it does not run on one sequence either: not a batch problem
        raise failure
    model, changes = freed
    if not changes:  # nothing batch-1 to free, and batches work: the failure is something else
        raise failure
    warnings.warn(
        f"the model was exported with a fixed batch of 1; {len(changes)} shape "
        f"constant(s) were made batch-independent so that mutants can be batched (checked: a batch of 3 gives what "
        f"each sequence gives alone): {'; '.join(changes[:3])}{' ...' if len(changes) > 3 else ''}",
        YuzuWarning,
        stacklevel=3,
    )
    return model


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _find_sequence_input(
    proto: onnx.ModelProto, input_name: str | None, letters: str | None, alphabet: str | int | None = None
) -> onnx.ValueInfoProto:
    inputs = _graph_inputs(proto)
    if input_name is not None:
        match = [i for i in inputs if i.name == input_name]
        if not match:
            names = ", ".join(i.name for i in inputs) or "none"
            raise ModelError(f"model has no input {input_name!r}; its inputs: {names}")
        chosen = match[0]
    else:
        sizes = {len(letters)} if letters else set(DEFAULT_FOR_SIZE)
        candidates = [i for i in inputs if _is_candidate(i, sizes)]
        if not candidates:
            described = "; ".join(f"{i.name} {_describe(i)}" for i in inputs) or "no inputs"
            if letters:
                _refuse_alphabet(inputs, letters, alphabet, described)
            raise ModelError(
                "model has no one-hot-like input (a float rank-3 input with an axis of size "
                f"{' or '.join(map(str, sorted(sizes)))}); its inputs: {described}; "
                f"use {option('alphabet')} if the alphabet is not DNA or protein"
            )
        if len(candidates) > 1:
            names = ", ".join(i.name for i in candidates)
            raise ModelError(
                f"several inputs look like one-hot sequences ({names}); choose one with {option('input_name')}"
            )
        chosen = candidates[0]
    elem = chosen.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ModelError(
            f"input {chosen.name!r} has element type {TensorProto.DataType.Name(elem)}; "
            "yuzu-onnx needs a float32 one-hot input"
        )
    if len(_dims(chosen)) != 3:
        raise ModelError(f"input {chosen.name!r} has shape {_describe(chosen)}; a rank-3 one-hot input is needed")
    return chosen


def _refuse_alphabet(inputs: list[onnx.ValueInfoProto], letters: str, alphabet, described: str) -> None:
    """No input has an axis of ``len(letters)``: say what size the model's alphabet axis has."""
    given = option("alphabet", alphabet if alphabet is not None else letters)
    likely = [i for i in inputs if _is_candidate(i, set(DEFAULT_FOR_SIZE))]
    if len(likely) == 1:
        found = sorted({d for d in _dims(likely[0])[1:] if d in DEFAULT_FOR_SIZE})
        raise ModelError(
            f"the model's alphabet axis has size {' or '.join(map(str, found))}, not {len(letters)} "
            f"({given} has {len(letters)} letters; input {likely[0].name!r} {_describe(likely[0])}); "
            f"give the model's alphabet with {option('alphabet')}, or leave it out for DNA or protein"
        )
    raise ModelError(
        f"model has no float rank-3 input with an axis of size {len(letters)} ({given} has "
        f"{len(letters)} letters); its inputs: {described}"
    )


def _extra_inputs(proto: onnx.ModelProto, seq_input: onnx.ValueInfoProto, length: int) -> tuple[ExtraInput, ...]:
    """The inputs besides the sequence, with their per-sequence shapes resolved.

    The first axis must be the batch (dynamic, or 1 in a fixed-batch export); a dynamic
    axis named like the sequence input's length axis takes the sequence length ``L``.
    """
    seq_dims = seq_input.type.tensor_type.shape.dim
    length_names = {d.dim_param for d in list(seq_dims)[1:] if d.HasField("dim_param") and d.dim_param}
    extras = []
    for vi in _graph_inputs(proto):
        if vi.name == seq_input.name:
            continue
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"model input {vi.name!r} is not a tensor; yuzu-onnx takes tensor inputs only")
        elem = vi.type.tensor_type.elem_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        except Exception:
            dtype = np.dtype(object)
        if dtype.kind not in "biuf":
            raise ModelError(f"extra input {vi.name!r} has element type {TensorProto.DataType.Name(elem)}; "
                             "yuzu-onnx passes numeric extra inputs only")
        dims = list(vi.type.tensor_type.shape.dim)
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value != 1):
            raise ModelError(
                f"extra input {vi.name!r} has shape {_describe(vi)}; inputs besides the sequence need the batch "
                "on their first axis (one row per sequence), e.g. (batch, 2, L) control tracks or (batch, 1) "
                "covariates"
            )
        shape = []
        for axis, d in enumerate(dims[1:], start=1):
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param in length_names:
                shape.append(int(length))
            else:
                raise ModelError(
                    f"extra input {vi.name!r} has shape {_describe(vi)} with a dynamic axis {axis}; re-export "
                    "the model with only the batch dynamic (or that axis named like the sequence length axis)"
                )
        extras.append(ExtraInput(vi.name, tuple(shape), dtype.name))
    return tuple(extras)


def _is_candidate(vi: onnx.ValueInfoProto, sizes: set[int]) -> bool:
    if not vi.type.HasField("tensor_type") or vi.type.tensor_type.elem_type != TensorProto.FLOAT:
        return False
    dims = _dims(vi)
    return len(dims) == 3 and (dims[1] in sizes or dims[2] in sizes)


def _describe(vi: onnx.ValueInfoProto) -> str:
    if not vi.type.HasField("tensor_type"):
        return "(not a tensor)"
    dims = ["?" if d is None else str(d) for d in _dims(vi)]
    return f"({', '.join(dims)}) {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}"


def _decide_layout(
    vi: onnx.ValueInfoProto, layout: str, letters: str | None, seq_len: int | None,
    alphabet: str | int | None = None, *, need_length: bool = True,
) -> tuple[str, int, int | None]:
    """``(layout, alphabet size, length)`` of the input; ``need_length=False`` returns a
    dynamic length as ``None`` instead of asking for ``seq_len``."""
    _, d1, d2 = _dims(vi)
    sizes = [len(letters)] if letters else sorted(DEFAULT_FOR_SIZE)
    if layout == "auto":
        ncl_ok = d1 in sizes
        nlc_ok = d2 in sizes
        if ncl_ok and nlc_ok and d1 != d2:
            # e.g. (N, 4, 20): DNA of length 20 or protein of length 4; the longer length wins
            ncl_ok, nlc_ok = (d2 or 0) > (d1 or 0), (d1 or 0) > (d2 or 0)
        if ncl_ok and nlc_ok:
            raise ModelError(
                f"input {vi.name!r} has shape {_describe(vi)}: both axes could be the alphabet "
                f"(length equals alphabet size); choose with {option('layout', NCL)} or {option('layout', NLC)}"
            )
        if not (ncl_ok or nlc_ok):
            raise ModelError(
                f"input {vi.name!r} has shape {_describe(vi)} and no axis of alphabet size "
                f"{' or '.join(map(str, sizes))}; give {option('alphabet')} and {option('layout')}"
            )
        layout = NCL if ncl_ok else NLC
    else:
        _check_layout_fits(vi, layout, sizes, letters, alphabet)
    size, length = (d1, d2) if layout == NCL else (d2, d1)
    if size is None:
        if len(sizes) != 1:
            raise ModelError(f"input {vi.name!r} has a dynamic alphabet axis; give {option('alphabet')}")
        size = sizes[0]
    if letters and size != len(letters):
        raise ModelError(
            f"the model's alphabet axis has size {size}, not {len(letters)} "
            f"({option('alphabet', alphabet if alphabet is not None else letters)} has {len(letters)} letters; "
            f"input {vi.name!r} {_describe(vi)})"
        )
    if length is None:
        if seq_len is None and not need_length:
            return layout, size, None
        if seq_len is None:
            raise ModelError(f"input {vi.name!r} has a dynamic sequence length; give {option('seq_len')}")
        length = int(seq_len)
    elif seq_len is not None and int(seq_len) != length:
        raise ModelError(
            f"{option('seq_len', seq_len)} disagrees with the model's fixed length {length} (input {vi.name!r})"
        )
    if length < 1:
        raise ModelError(f"sequence length must be positive, got {length}")
    return layout, size, length


def _check_layout_fits(
    vi: onnx.ValueInfoProto, layout: str, sizes: list[int], letters: str | None, alphabet: str | int | None
) -> None:
    """Refuse a ``layout`` given by the user that puts the alphabet on an axis that cannot
    hold it, naming the layout the shape suggests (before any message about the alphabet
    or the length, which would blame the wrong option)."""
    dims = _dims(vi)
    axis = 1 if layout == NCL else 2
    here, there = dims[axis], dims[3 - axis]
    # a dynamic axis holds the given alphabet, unless the other axis is fixed at its size
    fits = here in sizes or (here is None and letters is not None and there not in sizes)
    if fits:
        return
    other = NLC if layout == NCL else NCL
    what = "a dynamic size" if here is None else f"size {here}"
    if there in sizes:
        raise ModelError(
            f"the layout looks wrong: input {vi.name!r} has shape {_describe(vi)}, so {option('layout', layout)} "
            f"puts the alphabet on axis {axis} ({what}); the shape suggests {option('layout', other)}"
        )
    if here is None:
        raise ModelError(
            f"input {vi.name!r} has shape {_describe(vi)}: with {option('layout', layout)} the alphabet axis "
            f"{axis} is dynamic; give {option('alphabet')}"
        )
    if letters:
        raise ModelError(
            f"the model's alphabet axis has size {here}, not {len(letters)} with {option('layout', layout)} "
            f"({option('alphabet', alphabet if alphabet is not None else letters)} has {len(letters)} letters; "
            f"input {vi.name!r} {_describe(vi)})"
        )
    raise ModelError(
        f"input {vi.name!r} has shape {_describe(vi)}: with {option('layout', layout)} the alphabet axis {axis} "
        f"has size {here}, which is not a known alphabet size ({' or '.join(map(str, sizes))}); "
        f"give {option('alphabet')} with its letters"
    )


def _fix_input_shape(proto: onnx.ModelProto, name: str, layout: str, size: int, length: int,
                     extras: tuple[ExtraInput, ...] = ()) -> onnx.ModelProto:
    model = copy.deepcopy(proto)
    extra_shapes = {e.name: e.shape for e in extras}
    for vi in model.graph.input:
        if vi.name in extra_shapes:
            del vi.type.tensor_type.shape.dim[:]
            vi.type.tensor_type.shape.dim.add().dim_param = BATCH_DIM_NAME
            for value in extra_shapes[vi.name]:
                vi.type.tensor_type.shape.dim.add().dim_value = value
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            for d, value in zip(dims, (None, size, length) if layout == NCL else (None, length, size)):
                d.Clear()
                if value is None:
                    d.dim_param = BATCH_DIM_NAME
                else:
                    d.dim_value = value
    # stale intermediate shapes (often with symbolic lengths) would confuse inference
    del model.graph.value_info[:]
    for out in model.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return model


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constant and shape subgraphs with onnx-graphsurgeon (after fixing ``L``)."""
    import onnx_graphsurgeon as gs

    from .runtime import quiet_onnxruntime

    quiet_onnxruntime()  # graphsurgeon runs its own ONNX Runtime session: keep its log lines off stderr
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graph = gs.import_onnx(inferred)
            graph.fold_constants(fold_shapes=True, error_ok=True)
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
            folded = gs.export_onnx(graph, do_type_check=False)
        except Exception as exc:
            warnings.warn(f"constant folding failed ({exc}); continuing unfolded", YuzuWarning, stacklevel=3)
            return model
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    del folded.metadata_props[:]
    folded.metadata_props.extend(model.metadata_props)
    del folded.graph.value_info[:]
    return folded


def measure_shapes(
    model: onnx.ModelProto, input_name: str, layout: str, size: int, length: int,
    extra_inputs: tuple[ExtraInput, ...] = (),
) -> tuple[dict[str, tuple[int, ...]], dict[str, int | None], set[str], dict[str, np.dtype]]:
    """Run the model on batches of 2 and 3 and record every tensor's shape and element type.

    ``extra_inputs`` (the inputs besides the sequence) get random values.

    Returns ``(shapes, batch_axes, irregular, dtypes)``: shapes with ``-1`` on the batch
    axis, the batch axis of each tensor (``None``: batch-independent), the tensors whose
    batch is merged into another axis, and each tensor's element type.
    """
    import onnxruntime as ort

    from .runtime import cpu_session_options

    probe = copy.deepcopy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:
        inferred = probe
    types = {vi.name: vi.type for vi in inferred.graph.value_info}
    existing = {o.name for o in probe.graph.output}
    initializers = {t.name for t in probe.graph.initializer}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in existing and out not in initializers:
                vi = onnx.ValueInfoProto(name=out)
                if out in types and types[out].HasField("tensor_type"):
                    vi.type.tensor_type.elem_type = types[out].tensor_type.elem_type
                else:
                    continue
                probe.graph.output.append(vi)
                existing.add(out)
    names = [o.name for o in probe.graph.output]
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), cpu_session_options(optimize=False), providers=["CPUExecutionProvider"]
        )
        runs = [session.run(names, {input_name: random_one_hot(b, length, alphabet_size=size, layout=layout, seed=b),
                                    **sample_extra_values(extra_inputs, b, seed=b)})
                for b in (2, 3)]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"ONNX Runtime cannot run the model with a batch of 2 sequences of length {length}: {first}"
            + _reshape_length_hint(first, length) + _dilated_same_padding_hint(first)
        ) from None
    shapes: dict[str, tuple[int, ...]] = {}
    batch_axes: dict[str, int | None] = {}
    irregular: set[str] = set()
    dtypes: dict[str, np.dtype] = {name: np.asarray(a2).dtype for name, a2 in zip(names, runs[0])}
    for name, a2, a3 in zip(names, *runs):
        s2, s3 = np.shape(a2), np.shape(a3)
        diff = [i for i, (u, v) in enumerate(zip(s2, s3)) if u != v]
        if len(s2) != len(s3):
            irregular.add(name)
            shapes[name], batch_axes[name] = tuple(s2), None
        elif not diff:
            shapes[name], batch_axes[name] = tuple(s2), None
        elif len(diff) == 1 and s2[diff[0]] == 2 and s3[diff[0]] == 3:
            shapes[name] = tuple(-1 if i == diff[0] else d for i, d in enumerate(s2))
            batch_axes[name] = diff[0]
        else:
            irregular.add(name)
            shapes[name] = tuple(-1 if i in diff else d for i, d in enumerate(s2))
            batch_axes[name] = None
    for vi in model.graph.input:
        if vi.name == input_name:
            shapes[vi.name] = (-1, size, length) if layout == NCL else (-1, length, size)
            batch_axes[vi.name] = 0
            dtypes[vi.name] = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
    for extra in extra_inputs:
        shapes[extra.name] = (-1, *extra.shape)
        batch_axes[extra.name] = 0
        dtypes[extra.name] = np.dtype(extra.dtype)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        batch_axes[init.name] = None
        dtypes[init.name] = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
    return shapes, batch_axes, irregular, dtypes


def _reshape_length_hint(error: str, length: int) -> str:
    """A hint for an ONNX Runtime error raised by a Reshape node: it may split the sequence
    into blocks of ``k`` positions (attention pooling), which needs a length divisible by ``k``."""
    import re

    found = re.search(r"Node \(([^)]*)\) Op \(Reshape\)|Reshape node\. Name:'([^']*)'", error)
    if found is None:
        return ""
    node = found.group(1) or found.group(2)
    return (
        f"; its Reshape node {node!r} cannot take length {length}: if the model splits the sequence into "
        f"blocks of k positions, give {option('seq_len')} a multiple of k"
    )


def _dilated_same_padding_hint(error: str) -> str:
    """A hint for ONNX Runtime's refusal of a dilated convolution with ``auto_pad`` SAME_UPPER
    or SAME_LOWER, which PyTorch's TorchScript exporter writes for ``padding='same'``."""
    if "Dilation not supported for AutoPadType" not in error:
        return ""
    return (
        "; the exporter wrote the padding of a dilated convolution as auto_pad SAME (PyTorch's "
        "TorchScript exporter does so for padding='same'): export with torch.onnx.export(..., "
        "dynamo=True), or give the convolution integer padding, dilation * (kernel_size - 1) // 2 "
        "(README: Exporting your model)"
    )


def _canonicalise_batch_reshapes(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], batch_axes: Mapping[str, int | None]
) -> onnx.ModelProto:
    """Give batch-dependent Reshape targets a constant ``[-1, d1, d2, ...]`` shape.

    Exporters compute ``x.view(x.size(0), -1)`` as ``Shape → Gather → Concat → Reshape``.
    Once the length is fixed only the batch stays dynamic, so the target is ``-1``
    followed by the measured static dims; the shape chain then becomes dead code.
    """
    const_names = {t.name for t in model.graph.initializer}
    model = copy.deepcopy(model)
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] in const_names:
            continue
        data, out = node.input[0], node.output[0]
        if batch_axes.get(data) != 0 or batch_axes.get(out) != 0:
            continue
        target = np.array([-1, *shapes[out][1:]], dtype=np.int64)
        name = f"yuzu_reshape_target_{out}"
        model.graph.initializer.append(numpy_helper.from_array(target, name))
        const_names.add(name)
        node.input[1] = name
        attrs = [a for a in node.attribute if a.name != "allowzero"]
        del node.attribute[:]
        node.attribute.extend(attrs)
        changed = True
    if not changed:
        return model
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    cleaned = gs.export_onnx(graph, do_type_check=False)
    cleaned.ir_version = model.ir_version
    del cleaned.opset_import[:]
    cleaned.opset_import.extend(model.opset_import)
    del cleaned.metadata_props[:]
    cleaned.metadata_props.extend(model.metadata_props)
    return cleaned

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
from .errors import ModelError, YuzuWarning
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
        raise ModelError(f"layout must be auto, ncl or nlc, got {layout!r}")
    letters = resolve_alphabet(alphabet)
    seq_input = _find_sequence_input(proto, input_name, letters)
    lay, size, length = _decide_layout(seq_input, layout, letters, seq_len)
    letters = letters or DEFAULT_FOR_SIZE[size]
    fixed_batch = _dims(seq_input)[0]
    model = _upgrade_opset(proto)
    model = _fix_input_shape(model, seq_input.name, lay, size, length)
    model = _fold_constants(model)
    try:
        shapes, batch_axes, irregular, dtypes = measure_shapes(model, seq_input.name, lay, size, length)
    except ModelError:
        if fixed_batch != 1:
            raise
        model = _free_batch_of_one(model)
        shapes, batch_axes, irregular, dtypes = measure_shapes(model, seq_input.name, lay, size, length)
        warnings.warn(
            "the model was exported with a fixed batch of 1; its Reshape targets were made "
            "batch-independent so that mutants can be batched",
            YuzuWarning,
            stacklevel=2,
        )
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


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain (``ai.onnx``) opset version."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("model imports no default-domain (ai.onnx) opset")


def _read_proto(path_or_proto) -> tuple[bytes, onnx.ModelProto]:
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
    if any(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer):
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


def _free_batch_of_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace a leading 1 in constant Reshape targets by 0 (copy the batch from the input)."""
    model = copy.deepcopy(model)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]]).copy()
        if target.ndim == 1 and target.size and target[0] == 1:
            target[0] = 0
            new_name = f"yuzu_free_batch_{node.output[0]}"
            model.graph.initializer.append(numpy_helper.from_array(target.astype(np.int64), new_name))
            node.input[1] = new_name
    return model


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _find_sequence_input(
    proto: onnx.ModelProto, input_name: str | None, letters: str | None
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
            raise ModelError(
                "model has no one-hot-like input (a float rank-3 input with an axis of size "
                f"{' or '.join(map(str, sorted(sizes)))}); its inputs: {described}; "
                "use --alphabet if the alphabet is not DNA or protein"
            )
        if len(candidates) > 1:
            names = ", ".join(i.name for i in candidates)
            raise ModelError(f"several inputs look like one-hot sequences ({names}); choose one with --input")
        chosen = candidates[0]
    others = [i.name for i in inputs if i.name != chosen.name]
    if others:
        raise ModelError(
            f"model has inputs besides the sequence input {chosen.name!r}: {', '.join(others)}; "
            "yuzu-onnx needs a model whose only input is the one-hot sequence"
        )
    elem = chosen.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ModelError(
            f"input {chosen.name!r} has element type {TensorProto.DataType.Name(elem)}; "
            "yuzu-onnx needs a float32 one-hot input"
        )
    if len(_dims(chosen)) != 3:
        raise ModelError(f"input {chosen.name!r} has shape {_describe(chosen)}; a rank-3 one-hot input is needed")
    return chosen


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
    vi: onnx.ValueInfoProto, layout: str, letters: str | None, seq_len: int | None
) -> tuple[str, int, int]:
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
                "(length equals alphabet size); choose with --layout ncl or --layout nlc"
            )
        if not (ncl_ok or nlc_ok):
            raise ModelError(
                f"input {vi.name!r} has shape {_describe(vi)} and no axis of alphabet size "
                f"{' or '.join(map(str, sizes))}; give --alphabet and --layout"
            )
        layout = NCL if ncl_ok else NLC
    size, length = (d1, d2) if layout == NCL else (d2, d1)
    if size is None:
        if len(sizes) != 1:
            raise ModelError(f"input {vi.name!r} has a dynamic alphabet axis; give --alphabet")
        size = sizes[0]
    if letters and size != len(letters):
        raise ModelError(
            f"input {vi.name!r} has an alphabet axis of size {size} but alphabet {letters!r} "
            f"has {len(letters)} letters"
        )
    if length is None:
        if seq_len is None:
            raise ModelError(f"input {vi.name!r} has a dynamic sequence length; give --seq-len")
        length = int(seq_len)
    elif seq_len is not None and int(seq_len) != length:
        raise ModelError(
            f"--seq-len {seq_len} disagrees with the model's fixed length {length} (input {vi.name!r})"
        )
    if length < 1:
        raise ModelError(f"sequence length must be positive, got {length}")
    return layout, size, length


def _fix_input_shape(proto: onnx.ModelProto, name: str, layout: str, size: int, length: int) -> onnx.ModelProto:
    model = copy.deepcopy(proto)
    for vi in model.graph.input:
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
    model: onnx.ModelProto, input_name: str, layout: str, size: int, length: int
) -> tuple[dict[str, tuple[int, ...]], dict[str, int | None], set[str], dict[str, np.dtype]]:
    """Run the model on batches of 2 and 3 and record every tensor's shape and element type.

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
        runs = [session.run(names, {input_name: random_one_hot(b, length, alphabet_size=size, layout=layout, seed=b)})
                for b in (2, 3)]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"ONNX Runtime cannot run the model with a batch of 2 sequences of length {length}: {first}"
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
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        batch_axes[init.name] = None
        dtypes[init.name] = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
    return shapes, batch_axes, irregular, dtypes


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

"""Output targets computed in the graph: select indices along an output axis, or reduce a
range of one to a single value, before the ISM difference (``--select``, ``--aggregate``).

Long-context models (Borzoi-like, ``(N, 7611, 192)`` tracks × bins) give ISM far too big to
keep; users select tracks and sum bins *before* the difference. Targets are applied to the
model itself, at import, before analysis (:func:`targeted_spec`): every output keeps its
name, but its graph now ends with the target ops, so the region analysis, the plan, the
emitted graph, window sums, banded outputs, the naive oracle and the memory estimate all see
an output that is already the target.

Semantics (per output; axes count as in the model output, batch = 0 refused, negative
axes count from the end):

* ``select(axis, indices)``: ``Gather`` of those indices (in the given order) along ``axis``;
  the axis keeps its place with ``len(indices)`` entries.
* ``aggregate(axis, start, end, how)``: ``sum`` or ``mean`` over entries ``start..end-1`` of
  ``axis``; the axis *stays*, with size 1 (so the axes of the other targets keep their
  numbers).

At most one ``select`` and one ``aggregate`` per axis; on the same axis the ``select``
applies first, and the ``aggregate`` range counts entries of the selection (``select 1 =
3,7,9`` then ``aggregate 1 = 0:3:sum`` sums the three selected tracks).

A ``select`` on the channel axis of a linear producer (``Conv``/``MatMul``/``Gemm`` with
constant weights, possibly through unary elementwise ops, per-channel constant ops and
``Transpose``) cuts the producer's weights to the selected rows (:func:`cut_selection`):
the unselected tracks are never computed, so time shrinks with the selection. Otherwise the
``Gather`` stays.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper

from .analysis.region import constant_values, node_inputs
from .emit.builder import GraphBuilder, rename_subgraph
from .errors import InputError, ModelError, option
from .importer import ModelSpec, OutputSpec, measure_shapes, opset_of
from .ops import OPS, node_attributes, op_spec
from .ops.broadcasting import broadcasting
from .ops.elementwise import elementwise_unary
from .ops.layout import transpose
from .ops.normalisation import batch_norm

#: the reductions an aggregate may use
AGGREGATIONS = ("sum", "mean")
SCOPE = "targets/"


@dataclass(frozen=True)
class Select:
    """Keep ``indices`` (in this order) along ``axis`` (counted from the front, batch = 0)."""

    axis: int
    indices: tuple[int, ...]

    def to_json(self) -> dict:
        return {"select": {"axis": self.axis, "indices": list(self.indices)}}

    def size(self, before: int) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Aggregate:
    """``how`` (``sum``/``mean``) over entries ``start..end-1`` of ``axis``; the axis stays, size 1."""

    axis: int
    start: int
    end: int
    how: str

    def to_json(self) -> dict:
        return {"aggregate": {"axis": self.axis, "start": self.start, "end": self.end, "how": self.how}}

    def size(self, before: int) -> int:
        return 1


Operation = Select | Aggregate


@dataclass(frozen=True)
class OutputTargets:
    """The targets of one output: its operations in the order they apply (every
    ``select``, then every ``aggregate``, each by axis)."""

    output: str
    operations: tuple[Operation, ...]

    def to_json(self) -> list[dict]:
        """``[{"select": {"axis", "indices"}}, {"aggregate": {"axis", "start", "end", "how"}}]``."""
        return [op.to_json() for op in self.operations]

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The output's shape after the targets, from its shape before (batch ``-1`` kept)."""
        dims = list(shape)
        for op in self.operations:
            dims[op.axis] = op.size(dims[op.axis])
        return tuple(dims)

    def describe(self) -> str:
        """``select axis 1 = [0, 5]; sum over axis 2 90:100`` (for ``inspect``)."""
        return describe_operations(self.to_json())


Targets = Mapping[str, OutputTargets]
#: what ``select=`` takes: ``{output: {axis: indices}}``, an ``OUTPUT:AXIS=I,J`` string or a list of them
SelectArg = Mapping[str, Mapping[int, Sequence[int] | int]] | str | Sequence[str] | None
#: what ``aggregate=`` takes: ``{output: {axis: (start, end, how)}}``, ``OUTPUT:AXIS=S:E:how`` or a list of them
AggregateArg = Mapping[str, Mapping[int, tuple[int, int, str]]] | str | Sequence[str] | None


def describe_operations(records: Iterable[Mapping]) -> str:
    """The words for recorded targets (:meth:`OutputTargets.to_json` records)."""
    parts = []
    for record in records:
        if "select" in record:
            s = record["select"]
            parts.append(f"select axis {s['axis']} = {list(s['indices'])}")
        else:
            a = record["aggregate"]
            parts.append(f"{a['how']} over axis {a['axis']} {a['start']}:{a['end']} (kept, size 1)")
    return "; ".join(parts)


def targets_from_json(value: object) -> tuple[Operation, ...]:
    """The operations of one output's recorded ``targets`` list.

    Raises ``ValueError`` when the record is malformed (the metadata reader names the key).
    """
    if not isinstance(value, list):
        raise ValueError("targets is not a JSON list")
    ops: list[Operation] = []
    for record in value:
        if not isinstance(record, dict) or len(record) != 1:
            raise ValueError(f"target {record!r} is not one select or aggregate record")
        (kind, body), = record.items()
        if kind == "select":
            ops.append(Select(int(body["axis"]), tuple(int(i) for i in body["indices"])))
        elif kind == "aggregate":
            if body["how"] not in AGGREGATIONS:
                raise ValueError(f"aggregate {body['how']!r} is not one of {', '.join(AGGREGATIONS)}")
            ops.append(Aggregate(int(body["axis"]), int(body["start"]), int(body["end"]), str(body["how"])))
        else:
            raise ValueError(f"target kind {kind!r} is not select or aggregate")
    return tuple(ops)


# --------------------------------------------------------------------------- parsing


def _int(text: object, what: str) -> int:
    if isinstance(text, (bool, np.bool_)):
        raise InputError(f"{what} must be a whole number, got {text!r}")
    if isinstance(text, (int, np.integer)):
        return int(text)
    try:
        return int(str(text).strip())
    except ValueError:
        raise InputError(f"{what} must be a whole number, got {text!r}") from None


def _split_spec(text: str, name: str, example: str) -> tuple[str, str, str]:
    """``OUTPUT:AXIS=VALUE`` → ``(output, axis text, value text)``."""
    left, eq, value = str(text).partition("=")
    output, colon, axis = left.rpartition(":")
    if not eq or not colon or not output or not axis.strip() or not value.strip():
        raise InputError(f"{option(name, text)} is not OUTPUT:AXIS={example}")
    return output.strip(), axis.strip(), value.strip()


def parse_select_text(text: str) -> tuple[str, str, list[str]]:
    """``"profile:1=0,5"`` → ``("profile", "1", ["0", "5"])`` (checked later against the model)."""
    output, axis, value = _split_spec(text, "select", "I,J,...")
    return output, axis, [v for v in value.split(",") if v.strip()] or [""]


def parse_aggregate_text(text: str) -> tuple[str, str, tuple[str, ...]]:
    """``"profile:2=90:100:sum"`` → ``("profile", "2", ("90", "100", "sum"))``."""
    output, axis, value = _split_spec(text, "aggregate", "START:END:sum|mean")
    parts = tuple(p.strip() for p in value.split(":"))
    if len(parts) != 3:
        raise InputError(f"{option('aggregate', text)} is not OUTPUT:AXIS=START:END:sum|mean (give the range and "
                         f"the reduction, e.g. {output}:{axis}=0:10:sum)")
    return output, axis, parts


def _entries(value: SelectArg | AggregateArg, name: str, parse_text) -> list[tuple[str, object, object]]:
    """``(output, axis, value)`` triples from a dict ``{output: {axis: value}}``, one CLI
    string or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        entries = []
        for output, per_axis in value.items():
            if not isinstance(per_axis, Mapping):
                raise InputError(f"{option(name)} needs {{output: {{axis: ...}}}}; output {output!r} maps to "
                                 f"{per_axis!r}")
            entries.extend((str(output), axis, v) for axis, v in per_axis.items())
        return entries
    if isinstance(value, (list, tuple)):
        entries = []
        for text in value:
            if not isinstance(text, str):
                raise InputError(f"{option(name)} needs {{output: {{axis: ...}}}} or OUTPUT:AXIS=... strings, "
                                 f"got {text!r}")
            entries.append(parse_text(text))
        return entries
    raise InputError(f"{option(name)} needs {{output: {{axis: ...}}}} or OUTPUT:AXIS=... strings, got {value!r}")


def _axis(output: str, axis_value: object, shape: tuple[int, ...], name: str) -> int:
    rank = len(shape)
    axis = _int(axis_value, f"the axis of {option(name)} for output {output!r}")
    if not -rank <= axis < rank:
        raise InputError(f"{option(name)}: axis {axis} of output {output!r} is out of range; the output has "
                         f"{rank} axes (batch 0, then 1..{rank - 1}; negative axes count from the end)")
    if axis % rank == 0:
        raise InputError(f"{option(name)}: axis {axis} of output {output!r} is the batch axis (one row per sequence); "
                         f"targets choose along the output's own axes 1..{rank - 1}")
    return axis % rank


def parse_targets(
    select: SelectArg = None, aggregate: AggregateArg = None, *, output_shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, OutputTargets]:
    """Check and normalise targets against the model's outputs.

    Parameters
    ----------
    select: ``{"out": {1: [0, 5]}}``, ``"out:1=0,5"`` or a list of such strings.
    aggregate: ``{"out": {2: (90, 100, "sum")}}``, ``"out:2=90:100:sum"`` or a list of them.
    output_shapes: each output's measured shape (batch ``-1`` first).

    Returns
    -------
    ``{output: OutputTargets}`` for the outputs with targets, in the model's output order.

    Raises
    ------
    InputError: an unknown output, an axis out of range or the batch axis, an index out of
        range, an empty selection or range, an unknown reduction, or two targets of one
        kind on the same axis; the message names the output, the axis and the value.
    """
    found: dict[str, dict[int, list]] = {}  # output -> axis -> [select, aggregate]
    for name, value, parse_text in (("select", select, parse_select_text), ("aggregate", aggregate,
                                                                            parse_aggregate_text)):
        for output, axis_value, body in _entries(value, name, parse_text):
            if output not in output_shapes:
                raise InputError(f"{option(name)} names output {output!r}, which the model does not have; its "
                                 f"outputs: {', '.join(output_shapes)}")
            axis = _axis(output, axis_value, output_shapes[output], name)
            slot = found.setdefault(output, {}).setdefault(axis, [None, None])
            k = 0 if name == "select" else 1
            if slot[k] is not None:
                raise InputError(f"{option(name)} is given twice for axis {axis} of output {output!r}")
            slot[k] = body
    result: dict[str, OutputTargets] = {}
    for output in output_shapes:
        if output not in found:
            continue
        shape = output_shapes[output]
        selects: list[Operation] = []
        aggregates: list[Operation] = []
        for axis in sorted(found[output]):
            sel, agg = found[output][axis]
            size = shape[axis]
            if sel is not None:
                select_op = _select(output, axis, sel, size)
                selects.append(select_op)
                size = len(select_op.indices)
            if agg is not None:
                aggregates.append(_aggregate(output, axis, agg, size, selected=sel is not None))
        result[output] = OutputTargets(output, tuple(selects + aggregates))
    return result


def _select(output: str, axis: int, body: object, size: int) -> Select:
    if isinstance(body, (str, int, np.integer)):
        body = [body]
    where = f"axis {axis} of output {output!r}"
    indices = [_int(i, f"{option('select')}: an index on {where}") for i in body]
    if not indices:
        raise InputError(f"{option('select')} selects nothing on {where}; give at least one index")
    for i in indices:
        if not -size <= i < size:
            raise InputError(f"{option('select')}: index {i} on {where} is out of range; the axis has {size} "
                             f"entries (0..{size - 1})")
    return Select(axis, tuple(i % size for i in indices))


def _aggregate(output: str, axis: int, body: object, size: int, *, selected: bool) -> Aggregate:
    where = f"axis {axis} of output {output!r}" + (" (counted in its selection)" if selected else "")
    if isinstance(body, str):
        body = tuple(p.strip() for p in body.split(":"))
    if not isinstance(body, (tuple, list)) or len(body) != 3:
        raise InputError(f"{option('aggregate')} on {where} needs (start, end, 'sum' or 'mean'), got {body!r}")
    start = _int(body[0], f"{option('aggregate')}: the start on {where}")
    end = _int(body[1], f"{option('aggregate')}: the end on {where}")
    how = str(body[2]).strip().lower()
    if how not in AGGREGATIONS:
        raise InputError(f"{option('aggregate')}: reduction {body[2]!r} on {where} is not one of "
                         f"{', '.join(AGGREGATIONS)}")
    lo, hi = (start + size if start < 0 else start), (end + size if end < 0 else end)
    if not 0 <= lo < hi <= size:
        raise InputError(f"{option('aggregate')}: range {start}:{end} on {where} is empty or out of range; the "
                         f"axis has {size} entries (0..{size - 1}), give START < END <= {size}")
    return Aggregate(axis, lo, hi, how)


def targets_key(targets: Targets) -> dict:
    """A JSON-ready record of the targets (for cache keys and run identities)."""
    return {name: t.to_json() for name, t in targets.items()}


def targets_digest(targets: Targets) -> str:
    """A short hash of the targets (empty without any)."""
    if not targets:
        return ""
    return hashlib.sha256(json.dumps(targets_key(targets), sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- graph rewrite


def _aggregation_op(how: str) -> str:
    """The op table's listed-axes reduction whose head role is ``how`` (ReduceSum/ReduceMean)."""
    for op, spec in OPS.items():
        if spec.window_sum is not None and spec.window_sum.kind == how and spec.axes_input_since is not None:
            return op
    raise ValueError(f"no reduction for {how!r} in the op table")


def _rename_tensor(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in the main graph (and its subgraphs' reads)."""
    graph = model.graph
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                attr.g.CopyFrom(rename_subgraph(attr.g, {old: new}))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    g.CopyFrom(rename_subgraph(g, {old: new}))
    for vi in list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def apply_targets(
    model: onnx.ModelProto, targets: Targets, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
    cut: bool = True,
) -> onnx.ModelProto:
    """A copy of ``model`` whose targeted outputs end with their target ops.

    Each targeted output keeps its name: the tensor the model computed is renamed, and the
    appended ``Gather`` (select) / ``Slice`` + ``ReduceSum``/``ReduceMean`` with kept dims
    (aggregate) write the output. With ``cut`` and the measured ``shapes``, a select on the
    channel axis of a linear producer cuts the producer instead (:func:`cut_selection`).
    The declared shapes of the targeted outputs are cleared (shape inference or
    :func:`~yuzu_onnx.importer.measure_shapes` gives the new ones).
    """
    model = copy.deepcopy(model)
    graph = model.graph
    b = GraphBuilder(opset_of(model), scope=SCOPE)
    taken = {n for node in graph.node for n in node.output} | {t.name for t in graph.initializer} | {
        i.name for i in graph.input}
    for name, target in targets.items():
        raw = b.name("untargeted")
        while raw in taken:
            raw = b.name("untargeted")
        _rename_tensor(model, name, raw)
        for vi in graph.output:  # the output is the targeted tensor, written below
            if vi.name == raw:
                vi.name = name
                vi.type.tensor_type.ClearField("shape")
        current = raw
        for op in target.operations:
            if isinstance(op, Select):
                if cut and shapes is not None and current == raw and cut_selection(
                        model, raw, op.axis, op.indices, {**shapes, raw: tuple(shapes[name])}):
                    continue
                current = b.op("Gather", [current, b.ints(op.indices, "indices")], axis=op.axis, hint="select")
            else:
                whole = op.start == 0 and op.end == _size_after(target, op, None if shapes is None else shapes[name])
                sliced = current if whole else b.slice(current, [op.start], [op.end], [op.axis],
                                                       hint="aggregate_range")
                current = b.reduce(_aggregation_op(op.how), sliced, [op.axis], keepdims=1, hint=f"aggregate_{op.how}")
        if current == raw:  # every target was a cut: the producer writes the output itself
            _rename_tensor(model, raw, name)
            for vi in graph.output:
                if vi.name == name:
                    vi.type.tensor_type.ClearField("shape")
            continue
        last = b.nodes[-1]
        assert last.output[0] == current
        last.output[0] = name
    graph.node.extend(b.nodes)
    graph.initializer.extend(b.initializers)
    return model


def _size_after(target: OutputTargets, op: Aggregate, shape: Sequence[int] | None) -> int | None:
    """The size of ``op``'s axis when the aggregate applies (after a select on the axis)."""
    if shape is None:
        return None
    size = shape[op.axis]
    for other in target.operations:
        if isinstance(other, Select) and other.axis == op.axis:
            size = len(other.indices)
    return size


# --------------------------------------------------------------------------- the cut pass


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node_inputs(node):
            found.setdefault(name, []).append(node)
    return found


def cut_selection(model: onnx.ModelProto, tensor: str, axis: int, indices: Sequence[int],
                  shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Cut the linear producer of ``tensor`` to ``indices`` along ``axis``, in place.

    Walks back from ``tensor`` through unary elementwise ops, ops with one computed input
    and per-channel (or scalar) constants, batch normalisation (channel axis 1) and
    ``Transpose`` (the axis follows the permutation) to a ``Conv`` (channel axis 1,
    ``group`` 1), ``MatMul`` (constant 2-D weight, last axis) or ``Gemm`` (constant weight;
    output axis 1) with constant weights. Every tensor on the way must be read by the next
    node only (and not be a graph output). On success the producer's weights and bias, and
    the per-channel constants on the way, are replaced by their rows ``indices`` (new
    initializers; shared ones are left alone), so ``tensor`` holds the selection and nothing
    else is computed. Exact: each kept channel is computed by the same ops from the same
    weights.

    Returns whether the graph was cut (``False``: nothing changed).
    """
    graph = model.graph
    constants = constant_values(model)
    producers = {o: node for node in graph.node for o in node.output if o}
    consumers = _consumers(model)
    outputs = {o.name for o in graph.output}
    idx = np.asarray(indices, dtype=np.int64)
    edits: list[tuple[onnx.NodeProto, int, np.ndarray]] = []  # (node, input index, new constant)
    current, ax = tensor, axis
    first = True
    chain: set[str] = set()  # the tensors that shrink to the selection
    while True:
        chain.add(current)
        node = producers.get(current)
        if node is None or len(shapes.get(current, ())) <= ax:
            return False
        if not first and (len(consumers.get(current, [])) != 1 or current in outputs):
            return False
        if first and len(consumers.get(current, [])) > 0:
            return False  # the untargeted tensor feeds other nodes: they need every channel
        first = False
        spec = op_spec(node.op_type)
        out_shape = shapes[current]
        rank = len(out_shape)
        if spec.convolution:
            weight = constants.get(node.input[1]) if len(node.input) > 1 else None
            bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if ax != 1 or weight is None or int(node_attributes(node).get("group", 1)) != 1:
                return False
            if bias_name is not None and bias_name not in constants:
                return False
            edits.append((node, 1, np.take(weight, idx, axis=0)))
            if bias_name is not None:
                edits.append((node, 2, np.take(constants[bias_name], idx, axis=0)))
            break
        if spec.dense_weight is not None and len(node.input) >= 2:
            weight = constants.get(node.input[1])
            if weight is None or weight.ndim != 2 or node.input[0] in constants or ax != rank - 1:
                return False
            if len(node.input) > 2 and node.input[2]:  # Gemm: alpha·A'·B' + beta·C
                if node.input[2] not in constants:
                    return False
                bias = constants[node.input[2]]
                if bias.ndim >= 1 and bias.shape[-1] > 1:
                    edits.append((node, 2, np.take(bias, idx, axis=bias.ndim - 1)))
            transposed = bool(node_attributes(node).get("transB", 0))
            edits.append((node, 1, np.take(weight, idx, axis=0 if transposed else 1)))
            break
        if spec.locality is elementwise_unary:
            data = [k for k, name in enumerate(node.input) if name and name not in constants]
            if data != [0] or node.output[0] != current or any(o for o in node.output[1:] if consumers.get(o)):
                return False
            if shapes.get(node.input[0]) != out_shape:
                return False
            current = node.input[0]
            continue
        if spec.locality is broadcasting and node.output[0] == current:
            data = [k for k, name in enumerate(node.input) if name and name not in constants]
            if len(data) != 1 or shapes.get(node.input[data[0]]) != out_shape:
                return False
            for k, name in enumerate(node.input):
                if k == data[0] or not name:
                    continue
                value = constants[name]
                at = ax - (rank - value.ndim)
                if at >= 0 and value.shape[at] > 1:
                    edits.append((node, k, np.take(value, idx, axis=at)))
            current = node.input[data[0]]
            continue
        if spec.locality is batch_norm and ax == 1 and node.output[0] == current and len(node.output) == 1:
            if any(name not in constants for name in node.input[1:5]):
                return False
            for k in range(1, 5):
                edits.append((node, k, np.take(constants[node.input[k]], idx, axis=0)))
            current = node.input[0]
            continue
        if spec.locality is transpose:
            perm = node_attributes(node).get("perm")
            if perm is None:
                perm = list(reversed(range(rank)))
            ax = int(perm[ax])
            current = node.input[0]
            continue
        return False
    stale = [vi for vi in graph.value_info if vi.name in chain]  # declared shapes that no longer hold
    for vi in stale:
        graph.value_info.remove(vi)
    for node, k, value in edits:
        name = f"yuzu/{SCOPE}cut/{node.input[k]}/{len(graph.initializer)}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        node.input[k] = name
    return True


# --------------------------------------------------------------------------- on a spec


def targeted_spec(spec: ModelSpec, select: SelectArg = None, aggregate: AggregateArg = None, *,
                  cut: bool = True) -> tuple[ModelSpec, dict[str, OutputTargets]]:
    """``spec`` with its targeted outputs computed in the graph, and the parsed targets.

    The rewritten model is measured again (:func:`~yuzu_onnx.importer.measure_shapes`), so
    every later step sees the targeted shapes; ``source_sha256`` stays the source model's.
    Without targets ``spec`` is returned as it is.
    """
    targets = parse_targets(select, aggregate, output_shapes={o.name: o.shape for o in spec.outputs})
    if not targets:
        return spec, targets
    model = apply_targets(spec.model, targets, shapes=spec.shapes, cut=cut)
    shapes, batch_axes, irregular, dtypes = measure_shapes(
        model, spec.input_name, spec.layout, spec.alphabet_size, spec.seq_len, spec.extra_inputs)
    for name, target in targets.items():
        want = target.shape(spec.output(name).shape)
        if shapes.get(name) != want or batch_axes.get(name) != 0:
            raise ModelError(f"the targets of output {name!r} gave shape {shapes.get(name)}, not {want}")
    outputs = tuple(OutputSpec(o.name, shapes[o.name], batch_axes.get(o.name)) for o in spec.outputs)
    return replace(spec, model=model, outputs=outputs, shapes=shapes, batch_axes=batch_axes,
                   irregular=frozenset(irregular), dtypes=dtypes), targets

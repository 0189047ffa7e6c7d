"""Find the local (convolutional) region of a model and its frontier.

Walks the graph in topological order from the sequence input, classifies every tensor
as *const* (independent of the sequence), *meta* (depends on it only through shapes,
e.g. ``Shape`` outputs), *fixed* (computed from the model's extra inputs only, such as
control tracks: per sequence, but the same for every mutant) or *data*, and gives every
data tensor that a locality rule can place a :class:`PositionalMap`. The first op that
mixes positions ends the region there; those stops are recorded with the op, the node
and the reason.

Fixed tensors get a map too where the rules place one (an extra input with the sequence
length on the sequence's length axis, and what local ops make of it): a region node may
then read them position by position, and the emitted probes read them tiled to the
probes (``emit/extra.py``). A fixed tensor without a map may be read by a region node
only when it does not run along the sequence (a per-sequence covariate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..importer import NCL, ModelSpec
from ..ops import NotLocal, RuleContext, is_meta, locality_rule, op_spec

# re-exported: the analysis and emit modules import it from here
from ..ops import node_attributes as node_attributes
from .positional import PositionalMap, input_map

CONST, META, DATA, FIXED = "const", "meta", "data", "fixed"


@dataclass(frozen=True)
class RegionStop:
    """Where and why the local region ends."""

    op_type: str
    node: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op_type} node {self.node!r}: {self.reason}"


@dataclass(frozen=True)
class LocalRegion:
    """The local region of a model.

    Attributes
    ----------
    maps: positional map of every local tensor (the sequence input included, and the
        fixed tensors that have one).
    kinds: ``const`` / ``meta`` / ``data`` / ``fixed`` for every tensor.
    region_nodes: indices (into ``model.graph.node``, topological order) of region nodes.
    tail_nodes: indices of data nodes outside the region.
    frontier: local tensors read by the tail, or model outputs inside the region.
    stops: where the region ends, and why.
    """

    maps: Mapping[str, PositionalMap]
    kinds: Mapping[str, str]
    region_nodes: tuple[int, ...]
    tail_nodes: tuple[int, ...]
    frontier: tuple[str, ...]
    stops: tuple[RegionStop, ...]

    @property
    def is_empty(self) -> bool:
        return not self.region_nodes

    def is_fixed(self, name: str) -> bool:
        """``name`` is computed from the extra inputs only (the same for every mutant)."""
        return self.kinds.get(name) == FIXED


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, including names its subgraphs read from the outer scope."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        for graph in subgraphs(attr):
            names.extend(outer_scope_names(graph))
    return names


def subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def outer_scope_names(graph: onnx.GraphProto) -> list[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: list[str] = []
    for node in graph.node:
        for name in node_inputs(node):
            if name not in defined:
                used.append(name)
        defined.update(o for o in node.output if o)
    return used


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of initializers and ``Constant`` nodes."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and not any(True for _ in node.input):
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name in ("value_float", "value_int"):
                    values[node.output[0]] = np.array(onnx.helper.get_attribute_value(attr))
                elif attr.name in ("value_floats", "value_ints"):
                    values[node.output[0]] = np.array(onnx.helper.get_attribute_value(attr))
    return values


def analyse_region(spec: ModelSpec) -> LocalRegion:
    """Give every tensor of ``spec.model`` a kind and, where local, a positional map."""
    graph = spec.model.graph
    constants = constant_values(spec.model)
    kinds: dict[str, str] = {name: CONST for name in constants}
    kinds[spec.input_name] = DATA
    axis = 2 if spec.layout == NCL else 1
    maps: dict[str, PositionalMap] = {spec.input_name: input_map(axis, spec.seq_len)}
    for extra in spec.extra_inputs:
        kinds[extra.name] = FIXED
        shape = spec.shapes.get(extra.name, ())
        if len(shape) > axis and shape[axis] == spec.seq_len:
            maps[extra.name] = input_map(axis, spec.seq_len)
    region: list[int] = []
    tail: list[int] = []
    stops: list[RegionStop] = []
    for index, node in enumerate(graph.node):
        inputs = node_inputs(node)
        in_kinds = {kinds.get(name, CONST) for name in inputs}
        if is_meta(node):
            kind = CONST if in_kinds <= {CONST} else META
        elif DATA in in_kinds:
            kind = DATA
        elif META in in_kinds:
            kind = META
        elif FIXED in in_kinds:
            kind = FIXED
        else:
            kind = CONST
        for out in node.output:
            if out:
                kinds[out] = kind
        if kind == FIXED:
            _place_fixed(node, spec, maps, kinds, constants)
        if kind != DATA:
            continue
        data_inputs = [name for name in inputs if kinds.get(name) == DATA]
        if not all(name in maps for name in data_inputs):
            tail.append(index)
            continue
        try:
            out_maps = _apply_rule(node, spec, maps, kinds, constants)
        except NotLocal as why:
            stops.append(RegionStop(node.op_type, node.name or node.output[0], str(why)))
            tail.append(index)
            continue
        for out, m in zip(node.output, out_maps):
            if out:
                maps[out] = m
        region.append(index)
    frontier = frontier_of(spec, region, tail, maps, kinds)
    return LocalRegion(
        maps=maps,
        kinds=kinds,
        region_nodes=tuple(region),
        tail_nodes=tuple(tail),
        frontier=frontier,
        stops=tuple(stops),
    )


def _place_fixed(node, spec: ModelSpec, maps, kinds, constants) -> None:
    """Maps for a fixed node's outputs where its rule places them (no map otherwise)."""
    if not any(name in maps for name in node.input if name):
        return
    try:
        out_maps = _apply_rule(node, spec, maps, kinds, constants, reading=FIXED)
    except NotLocal:
        return
    for out, m in zip(node.output, out_maps):
        if out:
            maps[out] = m


def _apply_rule(node, spec: ModelSpec, maps, kinds, constants, reading: str = DATA) -> list[PositionalMap]:
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        raise NotLocal("it holds a subgraph")
    fn = locality_rule(node)
    if reading == FIXED:
        # a fixed node: every input with a map counts as positional
        input_maps = [maps.get(name) if kinds.get(name) == FIXED else None for name in node.input]
    else:
        input_maps = [maps.get(name) if kinds.get(name) in (DATA, FIXED) else None for name in node.input]
    takes_shapes = op_spec(node.op_type).takes_shape_inputs
    for name in node.input:
        if name and kinds.get(name) == META and not takes_shapes:
            raise NotLocal(f"input {name!r} is computed from the batch size")
    ctx = RuleContext(node=node, input_maps=input_maps, shapes=spec.shapes, constants=constants, opset=spec.opset)
    for name in node.input:
        if name and name not in spec.shapes and kinds.get(name) == DATA:
            raise NotLocal(f"the shape of input {name!r} is unknown")
    out_maps = fn(ctx)
    if reading == DATA:
        _check_fixed_inputs(node, spec, kinds, maps, out_maps)
    for out, m in zip(node.output, out_maps):
        if not out:
            continue
        if spec.batch_axes.get(out) != 0 or out in spec.irregular:
            raise NotLocal(f"its output {out!r} does not keep the batch on the first axis")
        if m.axis == 0 or out not in spec.shapes or spec.shapes[out][m.axis] != m.length:
            raise NotLocal(f"its output {out!r} has an unexpected shape")
    return out_maps


def _check_fixed_inputs(node, spec: ModelSpec, kinds, maps, out_maps: list[PositionalMap]) -> None:
    """A fixed input without a map may not run along the output's length axis (it would
    have to be cut with the probes' spans, and nothing says which positions it holds)."""
    out = next((o for o in node.output if o), None)
    if out is None or not out_maps:
        return
    out_rank, axis = len(spec.shapes.get(out, ())), out_maps[0].axis
    for name in node.input:
        if not name or kinds.get(name) != FIXED or name in maps:
            continue
        shape = spec.shapes.get(name, ())
        k = axis - (out_rank - len(shape))
        if 0 <= k < len(shape) and shape[k] not in (1,):
            raise NotLocal(f"it reads {name!r}, computed from the model's extra inputs, along the sequence "
                           "without a known position map")


def frontier_of(spec: ModelSpec, region: list[int], tail: list[int], maps, kinds) -> tuple[str, ...]:
    """Local tensors read by the tail (or the shape computations it needs), and local model outputs."""
    graph = spec.model.graph
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    needed_meta: set[int] = set()
    stack = [name for i in tail for name in node_inputs(graph.node[i]) if kinds.get(name) == META]
    while stack:
        name = stack.pop()
        producer = producers.get(name)
        if producer is None or producer in needed_meta:
            continue
        needed_meta.add(producer)
        stack.extend(n for n in node_inputs(graph.node[producer]) if kinds.get(n) == META)
    readers = set(tail) | needed_meta
    frontier: list[str] = []
    for i in sorted(readers):
        for name in node_inputs(graph.node[i]):
            if name in maps and kinds.get(name) == DATA and name not in frontier:
                frontier.append(name)
    for out in graph.output:
        if out.name in maps and kinds.get(out.name) == DATA and out.name not in frontier:
            frontier.append(out.name)
    return tuple(frontier)

"""The op table's record, its registry and the lookups the engine uses.

One :class:`OpSpec` per ONNX op type holds everything the engine knows about the op:

* ``locality``: the rule giving the positional map of each output (analysis);
* ``required_spans`` and ``crop``: the input spans a cropped copy of the node needs, and
  the attribute/constant edits that make it compute only a span (emit, cropping);
* ``flops``: FLOPs of one node for one sequence (plan);
* ``gaussian_linear``: the linear part Gaussian probes encode and decode around, for ops
  they sense (emit, Gaussian probes); every other local op is applied to reference + rows;
* linear heads of the tail (analysis/linear_heads, emit/window_sums): ``window_sum`` (a
  global mean or sum: :class:`WindowSum`, its kind and the axes a node reduces),
  ``flattens`` (may flatten ``(N, ...)`` to ``(N, features)`` ahead of a dense layer) and
  ``dense_weight`` (the constant ``features × outputs`` matrix of a dense layer);
* ``axes_input_since``: the opset from which the op reads its ``axes`` from an input
  rather than an attribute (emitted nodes);
* ``tail_form``: the name of a faster equivalent form the emitter writes for the op in the
  materialised tail (``emit/softplus.py``: ``"stable_softplus"``), ``None`` for the op itself;
* flags: ``takes_shape_inputs`` (may read tensors derived from the batch size),
  ``meta`` (output depends on its input only through its shape), ``convolution``
  (``Conv`` layout: data, weights ``(Cout, Cin/group, *kernel)``, optional bias),
  ``rearranges`` (the output holds the input's values, only re-arranged).

This module is the lowest layer of the package: it imports ``onnx``, ``numpy`` and the
pure value :class:`~yuzu_onnx.analysis.positional.PositionalMap`, nothing above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import onnx
from onnx import helper

from ..analysis.positional import PositionalMap

STANDARD_DOMAINS = ("", "ai.onnx")


class NotLocal(Exception):
    """The op mixes positions (or cannot be placed); the local region ends here."""


class UnsupportedOpError(NotLocal):
    """The table has no locality rule for a node's op.

    ``op_type`` (with its domain when not the default), ``node`` (the node's name, or its
    first output) and ``supported`` (the op types with rules) name what was asked and what
    exists.
    """

    def __init__(self, op_type: str, node: str, supported: Sequence[str]) -> None:
        self.op_type = op_type
        self.node = node
        self.supported = tuple(supported)
        super().__init__(f"no locality rule for op {op_type} (ops with rules: {', '.join(self.supported)})")


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes by name, as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def text_attribute(value, default: str) -> str:
    """A string attribute (``bytes`` in protos) as ``str``; ``default`` when absent."""
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else value


def norm_axis(axis: int, rank: int) -> int:
    """``axis`` counted from the front (negative axes count from the back)."""
    return axis + rank if axis < 0 else axis


def optional_input(node: onnx.NodeProto, index: int) -> str | None:
    """The name of input ``index``, or ``None`` when the node omits it."""
    return node.input[index] if index < len(node.input) and node.input[index] else None


@dataclass(frozen=True)
class RuleContext:
    """What a locality rule sees: the node, the maps of its data inputs (``None`` for
    constant inputs), measured shapes, constant values and the model's opset."""

    node: onnx.NodeProto
    input_maps: Sequence[PositionalMap | None]
    shapes: Mapping[str, tuple[int, ...]]
    constants: Mapping[str, np.ndarray]
    opset: int

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index`` (``None`` if absent or not constant)."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.constants.get(self.node.input[index])

    def in_shape(self, index: int) -> tuple[int, ...]:
        return self.shapes[self.node.input[index]]

    def out_shape(self, index: int = 0) -> tuple[int, ...]:
        name = self.node.output[index]
        if name not in self.shapes:
            raise NotLocal(f"the shape of {name!r} is unknown")
        return self.shapes[name]

    def only_data_input(self, index: int = 0) -> PositionalMap:
        """The map of input ``index``; every other input must be a constant."""
        for i, m in enumerate(self.input_maps):
            if i != index and m is not None:
                raise NotLocal(f"input {i} ({self.node.input[i]!r}) is computed from the sequence")
        m = self.input_maps[index] if index < len(self.input_maps) else None
        if m is None:
            raise NotLocal(f"input {index} is not a local tensor")
        return m


@dataclass(frozen=True)
class Span:
    """Positions ``lo..hi`` (inclusive) of a tensor's length axis."""

    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def union(self, other: Span | None) -> Span:
        return self if other is None else Span(min(self.lo, other.lo), max(self.hi, other.hi))


@dataclass(frozen=True)
class CropContext:
    """What the crop functions see: the node, the positional maps of the local tensors
    (its inputs and outputs among them), measured shapes and constant values."""

    node: onnx.NodeProto
    maps: Mapping[str, PositionalMap]
    shapes: Mapping[str, tuple[int, ...]]
    constants: Mapping[str, np.ndarray]

    def in_map(self, index: int = 0) -> PositionalMap:
        return self.maps[self.node.input[index]]

    @property
    def out_map(self) -> PositionalMap:
        return self.maps[self.node.output[0]]

    def const(self, index: int) -> np.ndarray | None:
        """The constant value of input ``index`` (``None`` if absent or not constant)."""
        name = optional_input(self.node, index)
        return None if name is None else self.constants.get(name)

    def rank(self, index: int = 0) -> int:
        return len(self.shapes[self.node.input[index]])


@dataclass(frozen=True)
class CropEdit:
    """How a node copied onto a span differs from the original.

    ``inputs``: ``(input index, new constant value, name hint)``, applied in order;
    ``attributes``: attributes set (replacing any of the same name), appended after the
    kept ones; ``drop_attributes``: attributes removed.
    """

    inputs: tuple[tuple[int, np.ndarray, str], ...] = ()
    attributes: tuple[onnx.AttributeProto, ...] = ()
    drop_attributes: tuple[str, ...] = ()


LocalityRule = Callable[[RuleContext], list[PositionalMap]]
# the spans of the node's local inputs needed for an output span; ``None``: not croppable
SpanRule = Callable[[CropContext, Span], "dict[str, Span] | None"]
# the edits for computing the output span from inputs cut to the given spans
CropRewrite = Callable[[CropContext, Span, Mapping[str, Span]], CropEdit]
FlopsRule = Callable[[onnx.NodeProto, Mapping[str, tuple[int, ...]]], float]
LinearPart = Callable[[onnx.NodeProto], onnx.NodeProto]
RearrangeCheck = Callable[[onnx.NodeProto, Mapping[str, tuple[int, ...]]], bool]
# the sorted axes (of input 0) a node reduces, ``None`` when they are not known constants
ReducedAxes = Callable[[onnx.NodeProto, Mapping[str, tuple[int, ...]], Mapping[str, np.ndarray]], "list[int] | None"]
# ``W`` (features × outputs) a dense node multiplies a flat ``(N, features)`` input by, or
# ``None`` when it is not a constant matrix of that form
DenseWeight = Callable[[onnx.NodeProto, Mapping[str, np.ndarray]], "np.ndarray | None"]


def numel(shape: tuple[int, ...]) -> int:
    """Elements of one sequence's tensor (the dynamic batch dim ``-1`` counts 1)."""
    return int(np.prod([d for d in shape if d != -1], dtype=np.int64)) if shape else 1


def output_numel(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Elements of all the node's outputs with known shapes."""
    return sum(numel(shapes[o]) for o in node.output if o and o in shapes)


def elementwise_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """One FLOP per element of the largest input or output (the default)."""
    ins = [i for i in node.input if i in shapes]
    return float(max(output_numel(node, shapes), max((numel(shapes[i]) for i in ins), default=0)))


def same_span(ctx: CropContext, out_span: Span) -> dict[str, Span]:
    """Position-wise ops: every local input is needed on the output's span."""
    return {name: out_span for name in ctx.node.input if name in ctx.maps}


def always_rearranges(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Ops whose output always holds the input's values, only re-arranged."""
    return True


@dataclass(frozen=True)
class WindowSum:
    """The head role of a global mean/sum: ``kind`` ``"sum"`` or ``"mean"`` (the sum over
    the reduced axes divided by their element count) and ``reduced_axes``, the axes a node
    reduces."""

    kind: Literal["sum", "mean"]
    reduced_axes: ReducedAxes


@dataclass(frozen=True)
class OpSpec:
    """Everything the engine knows about one op type (see the module docstring).

    ``locality`` ``None``: the op always mixes positions or is not data (it ends the local
    region); ``required_spans`` ``None``: a stage holding the op is not cropped; ``crop``
    ``None``: a cropped copy of the node is the node itself on cropped inputs.
    """

    op_type: str
    locality: LocalityRule | None = None
    flops: FlopsRule = elementwise_flops
    required_spans: SpanRule | None = None
    crop: CropRewrite | None = None
    gaussian_linear: LinearPart | None = None
    takes_shape_inputs: bool = False
    meta: bool = False
    convolution: bool = False
    rearranges: RearrangeCheck | None = None
    window_sum: WindowSum | None = None
    flattens: bool = False
    dense_weight: DenseWeight | None = None
    axes_input_since: int | None = None
    tail_form: str | None = None


_TABLE: dict[str, OpSpec] = {}
OPS: Mapping[str, OpSpec] = MappingProxyType(_TABLE)


def register(*op_types: str, **fields) -> None:
    """Add one entry per op type, all with ``fields`` (see :class:`OpSpec`)."""
    for op in op_types:
        if op in _TABLE:
            raise ValueError(f"op {op} is registered twice in the op table")
        _TABLE[op] = OpSpec(op, **fields)


def op_spec(op_type: str) -> OpSpec:
    """The entry of ``op_type``; an op outside the table gets a blank entry (no locality
    rule, no cropping, the default FLOPs, no flags)."""
    spec = _TABLE.get(op_type)
    return OpSpec(op_type) if spec is None else spec


def supported_ops() -> list[str]:
    """The op types with a locality rule, sorted."""
    return sorted(op for op, spec in _TABLE.items() if spec.locality is not None)


def locality_rule(node: onnx.NodeProto) -> LocalityRule:
    """The locality rule of ``node``'s op.

    Raises :class:`UnsupportedOpError` (a :class:`NotLocal`) naming the op, the node and
    the supported ops when the op (or its domain) has none.
    """
    spec = _TABLE.get(node.op_type)
    if spec is None or spec.locality is None or node.domain not in STANDARD_DOMAINS:
        op = f"{node.domain + '.' if node.domain else ''}{node.op_type}"
        raise UnsupportedOpError(op, node.name or (node.output[0] if node.output else ""), supported_ops())
    return spec.locality


def flops_of(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """FLOPs of one node for one sequence (multiply-adds count 2), from its table entry."""
    return op_spec(node.op_type).flops(node, shapes)


def is_meta(node: onnx.NodeProto) -> bool:
    """``node`` reads its inputs only through their shapes (``Shape``, ``Size``)."""
    return op_spec(node.op_type).meta

"""Linear heads of the tail (DESIGN §4): tail nodes whose mutant outputs can be decoded
from window sums of probe deltas instead of materialised mutants.

A head is a global mean/sum over the length axis of a local tensor, or ``Flatten →
Gemm/MatMul`` with constant weights on one. Detection is pure analysis over the model,
its region, its constants and where the planner's stages put each tensor; the emitter
(``emit/window_sums.py``) builds what the plan records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from ..importer import ModelSpec
from .region import LocalRegion, node_attributes

REDUCE_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum")
MAX_OWNERSHIP_ELEMENTS = 32 * 2**20
MAX_DENSE_WEIGHT_ELEMENTS = 64 * 2**20


@dataclass(frozen=True)
class LinearHead:
    """Tail nodes computing a linear function of one local tensor, decoded from window sums.

    ``nodes``: the head's node indices (the reducing node, or the Flatten and the dense
    node); ``source``: the local tensor it reads; ``output``: the tensor it computes;
    ``op_type``: the op of its last node.
    """

    nodes: tuple[int, ...]
    source: str
    output: str
    op_type: str


def reduced_axes(node: onnx.NodeProto, spec: ModelSpec, constants: Mapping[str, np.ndarray]) -> list[int] | None:
    """Axes (of the input) a mean/sum node reduces, or ``None`` if not decodable."""
    rank = len(spec.shapes[node.input[0]])
    if node.op_type == "GlobalAveragePool":
        return list(range(2, rank))
    axes = node_attributes(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constants.get(node.input[1])
        if value is None:
            return None
        axes = value.tolist()
    if axes is None:
        return None
    return sorted(a + rank if a < 0 else a for a in np.atleast_1d(axes))


def dense_weight(node: onnx.NodeProto, constants: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """``W`` (features × outputs, alpha applied) of a Gemm/MatMul on a flat (N, F) tensor."""
    if len(node.input) < 2 or node.input[1] not in constants:
        return None
    weight = constants[node.input[1]].astype(np.float32)
    if weight.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return weight
    attrs = node_attributes(node)
    if attrs.get("transA", 0):
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        return None
    weight = weight.T if attrs.get("transB", 0) else weight
    return weight * np.float32(attrs.get("alpha", 1.0))


def find_linear_heads(
    spec: ModelSpec,
    region: LocalRegion,
    constants: Mapping[str, np.ndarray],
    tail_indices: Sequence[int],
    *,
    probe_layout: Mapping[str, tuple[int, int]],
    window: tuple[int, int],
) -> tuple[LinearHead, ...]:
    """Tail nodes whose outputs can be decoded from window sums.

    Their input must be a local tensor decoded from probes (``probe_layout`` maps each
    tensor a stage produces to that stage's ``(spacing, n_probes)``) and read by no other
    tail node: a mean/sum over its length axis, or a Flatten/Reshape to ``(N, features)``
    followed by a Gemm/MatMul with constant weights. The ownership matrix of the window
    sums must stay below :data:`MAX_OWNERSHIP_ELEMENTS`.
    """
    graph = spec.model.graph
    readers: dict[str, list[int]] = {}
    for i in tail_indices:
        for name in graph.node[i].input:
            readers.setdefault(name, []).append(i)
    heads: list[LinearHead] = []
    for i in tail_indices:
        node = graph.node[i]
        source = node.input[0] if node.input else ""
        m = region.maps.get(source)
        if m is None or source == spec.input_name or source not in probe_layout or len(readers[source]) != 1:
            continue
        spacing, n_probes = probe_layout[source]
        mutants_per_probe = -(-(window[1] - window[0]) // spacing)
        if node.domain not in ("", "ai.onnx") or n_probes * m.length * mutants_per_probe > MAX_OWNERSHIP_ELEMENTS:
            continue
        if node.op_type in REDUCE_OPS:
            axes = reduced_axes(node, spec, constants)
            if axes and m.axis in axes and 0 not in axes and node.output[0] in spec.shapes:
                heads.append(LinearHead((i,), source, node.output[0], node.op_type))
        elif node.op_type in ("Flatten", "Reshape"):
            head = _dense_head(spec, constants, i, readers)
            if head is not None:
                heads.append(head)
    return tuple(heads)


def _dense_head(spec: ModelSpec, constants: Mapping[str, np.ndarray], index: int,
                readers: dict[str, list[int]]) -> LinearHead | None:
    graph = spec.model.graph
    node = graph.node[index]
    flat = node.output[0]
    shape = spec.shapes.get(flat)
    features = int(np.prod(list(spec.shapes[node.input[0]][1:])))
    if shape != (-1, features) or len(readers.get(flat, [])) != 1:
        return None
    dense_index = readers[flat][0]
    dense = graph.node[dense_index]
    if dense.op_type not in ("Gemm", "MatMul") or dense.input[0] != flat:
        return None
    weight = dense_weight(dense, constants)
    if weight is None or weight.shape[0] != features or weight.size > MAX_DENSE_WEIGHT_ELEMENTS:
        return None
    return LinearHead((index, dense_index), node.input[0], dense.output[0], dense.op_type)

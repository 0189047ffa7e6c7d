"""Linear heads of the tail (DESIGN §4): tail nodes whose mutant outputs can be decoded
from window sums of probe deltas instead of materialised mutants.

A head is a global mean/sum over the length axis of a local tensor, or ``Flatten →
Gemm/MatMul`` with constant weights on one. Which ops play which part is the op table's
(``window_sum``, ``flattens``, ``dense_weight``). Detection is pure analysis over the
model, its region, its constants and where the planner's stages put each tensor; the
emitter (``emit/window_sums.py``) builds what the plan records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..importer import ModelSpec
from ..ops import STANDARD_DOMAINS, op_spec
from .region import LocalRegion

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

    Their input must be a float32 local tensor decoded from probes (``probe_layout`` maps each
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
        if spec.dtypes.get(source) != np.float32:  # window sums are float32 MatMuls
            continue
        spacing, n_probes = probe_layout[source]
        mutants_per_probe = -(-(window[1] - window[0]) // spacing)
        if node.domain not in STANDARD_DOMAINS or n_probes * m.length * mutants_per_probe > MAX_OWNERSHIP_ELEMENTS:
            continue
        role = op_spec(node.op_type)
        if role.window_sum is not None:
            axes = role.window_sum.reduced_axes(node, spec.shapes, constants)
            if axes and m.axis in axes and 0 not in axes and node.output[0] in spec.shapes:
                heads.append(LinearHead((i,), source, node.output[0], node.op_type))
        elif role.flattens:
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
    dense_weight = op_spec(dense.op_type).dense_weight
    if dense_weight is None or dense.input[0] != flat:
        return None
    weight = dense_weight(dense, constants)
    if weight is None or weight.shape[0] != features or weight.size > MAX_DENSE_WEIGHT_ELEMENTS:
        return None
    return LinearHead((index, dense_index), node.input[0], dense.output[0], dense.op_type)

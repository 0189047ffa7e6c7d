"""Convolutions that read the one-hot input directly (the first-convolution shortcut).

A convolution of the sequence itself is linear in one column: substituting base ``a``
for ``ref`` at position ``j`` changes its output at ``p`` by the kernel column
difference ``W[:, a, t] - W[:, ref, t]`` at the tap ``t`` that reads ``j`` (DESIGN §3b),
plus nothing anywhere else. Its values on spaced probes are therefore the reference
output plus a gathered kernel-column difference, with no convolution run on the probes
(``emit/input_conv.py``). This module finds those convolutions: ``Conv`` nodes with
constant weights and ``group = 1`` whose data input is the sequence, possibly through
ops that only re-arrange it (the op table's ``rearranges``: Transpose, Unsqueeze, Squeeze,
Identity, a Reshape that keeps the order of the non-unit axes, e.g. Keras'
``(N, L, A) → (N, A, 1, L)`` before a Conv2D).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from ..importer import ModelSpec
from ..ops import node_attributes, op_spec
from .region import LocalRegion


@dataclass(frozen=True)
class InputConv:
    """A convolution of the one-hot input, described along the sequence.

    Output position ``p`` reads input positions ``stride·p + offset + t·dilation`` for taps
    ``t = 0..K-1`` (``offset`` is minus the leading pad); ``weight[o, a, t]`` has the
    alphabet in the order of the input's one-hot columns.
    """

    node: int
    output: str
    weight: np.ndarray
    stride: int
    dilation: int
    offset: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    @property
    def span(self) -> int:
        """Input positions one output position reads."""
        return (self.kernel - 1) * self.dilation + 1

    def flops_per_output(self) -> float:
        """Multiply-adds (×2) the convolution spends on one output element."""
        return 2.0 * self.weight.shape[1] * self.kernel


def _is_layout_of_input(name: str, spec: ModelSpec, producers: Mapping[str, onnx.NodeProto]) -> bool:
    """``name`` holds the input's values, only re-arranged (and unit axes added or removed)."""
    seen = 0
    while name != spec.input_name:
        node = producers.get(name)
        seen += 1
        if node is None or seen > 16:
            return False
        rearranges = op_spec(node.op_type).rearranges
        if rearranges is None or not rearranges(node, spec.shapes):
            return False
        name = node.input[0]
    return True


def find_input_convs(spec: ModelSpec, region: LocalRegion, constants: Mapping[str, np.ndarray]) -> list[InputConv]:
    """Every region ``Conv`` the shortcut can compute from kernel-column differences."""
    graph = spec.model.graph
    producers = {o: node for node in graph.node for o in node.output if o}
    a, length = spec.alphabet_size, spec.seq_len
    found = []
    for index in region.region_nodes:
        node = graph.node[index]
        if not op_spec(node.op_type).convolution or len(node.input) < 2 or node.input[1] not in constants:
            continue
        data, out = node.input[0], node.output[0]
        m_in, m_out = region.maps.get(data), region.maps.get(out)
        shape, out_shape = spec.shapes.get(data), spec.shapes.get(out)
        if m_in is None or m_out is None or shape is None or out_shape is None or a == length:
            continue
        if (m_in.stride, m_in.lo, m_in.hi, m_in.length) != (1, 0, 0, length) or m_in.axis < 2:
            continue
        # (N, A, 1.., L, 1..): alphabet on the channel axis, every other spatial axis of size 1
        spatial = [d for axis, d in enumerate(shape) if axis >= 2 and axis != m_in.axis]
        if shape[1] != a or any(d != 1 for d in spatial):
            continue
        if any(d != 1 for axis, d in enumerate(out_shape) if axis >= 2 and axis != m_out.axis):
            continue
        attrs = node_attributes(node)
        if attrs.get("group", 1) != 1 or not _is_layout_of_input(data, spec, producers):
            continue
        weight = np.asarray(constants[node.input[1]], dtype=np.float32)
        i = m_in.axis - 2
        if weight.ndim != len(shape) or weight.shape[1] != a:
            continue
        if any(k != 1 for axis, k in enumerate(weight.shape[2:]) if axis != i):
            continue
        kernel = int(weight.shape[2 + i])
        dilation = int((attrs.get("dilations") or [1] * (weight.ndim - 2))[i])
        if (kernel - 1) * dilation + 1 != m_out.receptive_field:
            continue
        found.append(InputConv(
            node=index,
            output=out,
            weight=weight.reshape(weight.shape[0], a, kernel),
            stride=m_out.stride,
            dilation=dilation,
            offset=m_out.lo,
        ))
    return found

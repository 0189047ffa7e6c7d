"""Recurrent layers (GRU, LSTM, RNN): they run along the whole sequence, so they are
never local; the table only counts their FLOPs."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from .registry import elementwise_flops, numel, output_numel, register


def recurrent_flops(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> float:
    """Two FLOPs per input weight per output element, doubled for the recurrent weights."""
    if len(node.input) > 1 and node.input[1] in shapes:
        return 2.0 * output_numel(node, shapes) * numel(shapes[node.input[1]][1:]) * 2
    return elementwise_flops(node, shapes)


register("GRU", "LSTM", "RNN", flops=recurrent_flops)

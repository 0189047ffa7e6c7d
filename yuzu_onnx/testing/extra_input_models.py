"""Test models beyond a single one-hot input: extra inputs and fixed-batch exports.

Built with ``onnx.helper`` (no torch), seeded, float32, like :mod:`model_builders`:

* :func:`build_bpnet_control`: BPNet with control tracks, as bpnet-lite's
  ``BPNet(n_control_tracks=2)`` computes it: a dilated residual tower on ``x``; the
  profile head convolves the tower concatenated with the control tracks ``x_ctl``
  ``(N, 2, L)`` and trims it; the counts head concatenates the tower's mean with
  ``log(1 + sum(x_ctl))`` before a dense layer.
* :func:`build_covariates`: a tower scaled by a per-sequence scalar covariate ``scale``
  ``(N, 1)`` and shifted by an embedding of an integer cell type ``cell`` ``(N,)``, a
  profile head, and a dense head that adds the covariate again.
* :func:`build_fixed_batch`: what a tracing exporter writes without a dynamic batch: batch
  1 in the input's shape, a ``Reshape`` to ``[1, -1]`` before the dense layer and a learned
  token of batch 1 concatenated to the tower (``Concat`` over the length).
* :func:`build_batch_indexing`: a fixed-batch model that really indexes the batch
  (``x[0]``), which no rewrite can free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from .model_builders import _Graph

__all__ = ["build_batch_indexing", "build_bpnet_control", "build_covariates", "build_fixed_batch"]


class _MultiInputGraph(_Graph):
    """A :class:`_Graph` with further graph inputs after the one-hot ``x``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra: list[onnx.ValueInfoProto] = []

    def add_input(self, name: str, elem_type: int, dims: Sequence[int | str]) -> str:
        self.extra.append(helper.make_tensor_value_info(name, elem_type, list(dims)))
        return name

    def build(self) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in self.outputs]
        graph = helper.make_graph(self.nodes, self.name, [self.input, *self.extra], outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                                  producer_name="yuzu_onnx.testing.extra_input_models")
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        model.doc_string = f"{self.name} ({self.layout}, opset {self.opset})"
        return model


def _tower(g: _Graph, channels: int = 8) -> str:
    h = g.op("Relu", [g.same_conv(g.seq(), 4, channels, 7)])
    for d in (2, 4):
        h = g.op("Add", [h, g.op("Relu", [g.same_conv(h, channels, channels, 3, dilation=d, gain=1.0)])])
    return h


def build_bpnet_control(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0, trim: int = 5) -> onnx.ModelProto:
    """BPNet with 2 control tracks: inputs ``x`` and ``x_ctl`` ``(N, 2, L)`` (``(N, L, 2)``
    for nlc); outputs ``profile`` ``(N, 2, L - 2·trim)`` and ``counts`` ``(N, 1)``."""
    g = _MultiInputGraph("bpnet_control", layout=layout, seq_len=seq_len, seed=seed)
    dims = ["batch", 2, seq_len] if layout == "ncl" else ["batch", seq_len, 2]
    ctl = g.add_input("x_ctl", TensorProto.FLOAT, dims)
    ctl = ctl if layout == "ncl" else g.to_first(ctl)
    h = _tower(g)
    with_ctl = g.op("Concat", [h, ctl], axis=1)
    profile = g.same_conv(with_ctl, 10, 2, 9, gain=1.0)
    g.profile_output(g.slice_len(profile, trim, seq_len - trim, axis=2), "profile")
    mean = g.reduce("ReduceMean", h, [2])
    total = g.unsqueeze(g.reduce("ReduceSum", ctl, [1, 2]), [1])  # (N, 1)
    log_total = g.op("Log", [g.op("Add", [total, g.const(1.0, "one")])])
    g.output(g.gemm(g.op("Concat", [mean, log_total], axis=1), 9, 1), "counts")
    return g.build()


def build_covariates(*, layout: str = "ncl", seq_len: int = 80, seed: int = 0, n_cells: int = 3) -> onnx.ModelProto:
    """Inputs ``x``, ``scale`` ``(N, 1)`` float and ``cell`` ``(N,)`` int64; outputs
    ``profile`` ``(N, 2, L)`` and ``y`` ``(N, 2)``."""
    g = _MultiInputGraph("covariates", layout=layout, seq_len=seq_len, seed=seed)
    scale = g.add_input("scale", TensorProto.FLOAT, ["batch", 1])
    cell = g.add_input("cell", TensorProto.INT64, ["batch"])
    h = _tower(g)
    table = g.const(0.5 * g.rng.standard_normal((n_cells, 8)), "cell_embedding")
    shift = g.unsqueeze(g.op("Gather", [table, cell], axis=0), [2])  # (N, 8, 1)
    h = g.op("Add", [g.op("Mul", [h, g.unsqueeze(scale, [2])]), shift])
    g.profile_output(g.same_conv(g.op("Relu", [h]), 8, 2, 5, gain=1.0), "profile")
    head = g.gemm(g.reduce("ReduceMean", h, [2]), 8, 2)
    g.output(g.op("Add", [head, g.op("Mul", [scale, g.const(0.7, "covariate_weight")])]), "y")
    return g.build()


def _batch_of_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every graph input's first dim set to 1 (an export without a dynamic batch)."""
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_value = 1
    return model


def build_fixed_batch(*, layout: str = "ncl", seq_len: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Batch fixed at 1: a tower, a batch-1 token concatenated along the length, a
    profile output ``(1, 2, L + 1)`` and a ``Reshape [1, -1]`` → dense output ``y`` ``(1, 3)``."""
    g = _Graph("fixed_batch", layout=layout, seq_len=seq_len, seed=seed)
    h = _tower(g)
    token = g.const(0.3 * g.rng.standard_normal((1, 8, 1)), "token")
    with_token = g.op("Concat", [token, h], axis=2)  # (1, 8, L + 1)
    g.profile_output(g.conv(with_token, 8, 2, 1, gain=1.0), "profile")
    pooled = g.op("MaxPool", [h], kernel_shape=[8], strides=[8])  # (1, 8, L / 8)
    flat = g.op("Reshape", [pooled, g.ints([1, -1], "flat_shape")])
    g.output(g.gemm(flat, 8 * (seq_len // 8), 3), "y")
    return _batch_of_one(g.build())


def build_batch_indexing(*, layout: str = "ncl", seq_len: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Batch fixed at 1 and really used: ``x[0]`` (``Gather`` on the batch) and back."""
    g = _Graph("batch_indexing", layout=layout, seq_len=seq_len, seed=seed)
    h = _tower(g)
    first = g.op("Gather", [h, g.const(np.array(0), "first", np.int64)], axis=0)  # (8, L)
    pooled = g.reduce("ReduceMean", first, [1])  # (8,)
    flat = g.op("Reshape", [pooled, g.ints([1, 8], "flat_shape")])
    g.output(g.gemm(flat, 8, 2), "y")
    return _batch_of_one(g.build())

"""Seeded ONNX sequence models for tests, built with ``onnx.helper`` (no torch).

Every builder has the signature ``build_<name>(*, layout="ncl", seq_len=..., seed=0)`` and
returns a small float32 :class:`onnx.ModelProto` with one graph input ``"x"`` of shape
``("batch", 4, L)`` (``layout="ncl"``, PyTorch) or ``("batch", L, 4)`` (``layout="nlc"``,
Keras/TF). Channels-last models are built the way tf2onnx exports Keras models: the input
stays channels-last, the graph transposes to channels-first for ``Conv`` (or goes through
``Unsqueeze`` → 2-D ``Conv`` with a ``(1, k)`` kernel → ``Squeeze``) and transposes back
where Keras would work channels-last (flatten, per-position dense, padding, cropping,
profile outputs).

Weights come from ``np.random.default_rng(seed)`` with He-style scales so activations stay
of order one. All models pass ``onnx.checker.check_model(model, full_check=True)`` and run
in ONNX Runtime with any batch size.

:data:`BUILDERS` maps a short name to each builder; :data:`SEQUENTIAL` names the models
whose local (convolutional) region is one unbranched chain: every node from the input to
the first position-mixing op is a ``Conv``, ``BatchNormalization``, pooling op or unary
activation (or a layout-only ``Transpose``/``Unsqueeze``/``Squeeze`` of a channels-last
model) with one non-constant input, and its output feeds exactly one node (the region's last
output may feed several position-mixing ops). GELU built from ``Erf`` is a diamond, so
``activations`` is not in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..encoding import random_one_hot
from ..layout import LAYOUTS

__all__ = [
    "ALPHABET_SIZE",
    "BUILDERS",
    "LAYOUTS",
    "SEQUENTIAL",
    "random_onehot",
]

ALPHABET_SIZE = 4
INPUT_NAME = "x"


def random_onehot(
    n: int,
    seq_len: int,
    *,
    layout: str = "ncl",
    seed: int = 0,
    n_positions: int = 0,
    alphabet_size: int = ALPHABET_SIZE,
) -> np.ndarray:
    """Random one-hot sequences, optionally with all-zero ("N") columns.

    Parameters
    ----------
    n: number of sequences.
    seq_len: sequence length ``L``.
    layout: ``"ncl"`` → shape ``(n, A, L)``; ``"nlc"`` → shape ``(n, L, A)``.
    seed: seed of ``np.random.default_rng``.
    n_positions: per sequence, this many distinct random positions are all-zero columns.
    alphabet_size: ``A`` (4 for DNA).

    Returns
    -------
    np.ndarray, float32, shape ``(n, A, L)`` or ``(n, L, A)``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'ncl' or 'nlc', got {layout!r}")
    if n < 0 or seq_len < 1:
        raise ValueError(f"need n >= 0 and seq_len >= 1, got n={n}, seq_len={seq_len}")
    if not 0 <= n_positions <= seq_len:
        raise ValueError(f"n_positions must be in [0, seq_len={seq_len}], got {n_positions}")
    return random_one_hot(n, seq_len, alphabet_size=alphabet_size, layout=layout, seed=seed, n_unknown=n_positions)


# --------------------------------------------------------------------------------------
# A small graph-building helper.


def rename_tensor(nodes: Sequence[onnx.NodeProto], old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever ``nodes`` read or write it."""
    for node in nodes:
        for names in (node.input, node.output):
            for i, t in enumerate(names):
                if t == old:
                    names[i] = new


class _Graph:
    """Accumulates nodes and initializers of one model; tensors are referred to by name."""

    def __init__(
        self,
        name: str,
        *,
        layout: str,
        seq_len: int,
        seed: int,
        opset: int = 17,
        dynamic_length: bool = False,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'ncl' or 'nlc', got {layout!r}")
        if not isinstance(seq_len, (int, np.integer)) or seq_len < 16:
            raise ValueError(f"seq_len must be an integer >= 16, got {seq_len!r}")
        self.name = name
        self.layout = layout
        self.seq_len = int(seq_len)
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self._count = 0
        length: str | int = "L" if dynamic_length else self.seq_len
        dims = ["batch", ALPHABET_SIZE, length] if layout == "ncl" else ["batch", length, ALPHABET_SIZE]
        self.input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)

    # -- naming and raw nodes ----------------------------------------------------------

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], *, n_outputs: int = 1, **attrs):
        outs = [self.fresh(op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(op_type), **attrs))
        return outs[0] if n_outputs == 1 else outs

    def output(self, tensor: str, name: str) -> None:
        """Make ``tensor`` a graph output called ``name`` (renames the producing node's output)."""
        rename_tensor(self.nodes, tensor, name)
        self.outputs.append(name)

    # -- layout ---------------------------------------------------------------------------

    def seq(self) -> str:
        """The one-hot input as a channels-first ``(N, 4, L)`` tensor."""
        return INPUT_NAME if self.layout == "ncl" else self.to_first(INPUT_NAME)

    def to_first(self, t: str) -> str:
        """``(N, L, C)`` → ``(N, C, L)``."""
        return self.op("Transpose", [t], perm=[0, 2, 1])

    def to_last(self, t: str) -> str:
        """``(N, C, L)`` → ``(N, L, C)``."""
        return self.op("Transpose", [t], perm=[0, 2, 1])

    def profile_output(self, t: str, name: str = "y") -> None:
        """Output a channels-first track, channels-last for nlc models (as Keras would)."""
        self.output(t if self.layout == "ncl" else self.to_last(t), name)

    # -- layers ---------------------------------------------------------------------------

    def weight(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(np.float32)

    def conv(
        self,
        x: str,
        c_in: int,
        c_out: int,
        k: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        pads: Sequence[int] | None = None,
        auto_pad: str | None = None,
        group: int = 1,
        bias: bool = True,
        gain: float = 2.0,
    ) -> str:
        """A 1-D (``k`` an int) or 2-D (``k`` a pair) convolution; default pads are zero."""
        kernel = [k] if isinstance(k, int) else list(k)
        nd = len(kernel)

        def per_dim(v):
            return [v] * nd if isinstance(v, int) else list(v)

        fan_in = (c_in // group) * int(np.prod(kernel))
        w = self.const(self.weight([c_out, c_in // group, *kernel], fan_in, gain), "W")
        inputs = [x, w]
        if bias:
            inputs.append(self.const(0.1 * self.rng.standard_normal(c_out), "B"))
        attrs: dict = {
            "kernel_shape": kernel,
            "strides": per_dim(stride),
            "dilations": per_dim(dilation),
        }
        if group != 1:
            attrs["group"] = group
        if auto_pad is not None:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads) if pads is not None else [0] * (2 * nd)
        return self.op("Conv", inputs, **attrs)

    def same_conv(self, x: str, c_in: int, c_out: int, k: int, *, dilation: int = 1, **kw) -> str:
        """A stride-1 conv with explicit pads that keep the length (asymmetric for even k)."""
        total = dilation * (k - 1)
        return self.conv(x, c_in, c_out, k, dilation=dilation, pads=[total // 2, total - total // 2], **kw)

    def batch_norm(self, x: str, c: int) -> str:
        scale = self.const(1.0 + 0.2 * self.rng.standard_normal(c), "bn_scale")
        bias = self.const(0.1 * self.rng.standard_normal(c), "bn_bias")
        mean = self.const(0.3 * self.rng.standard_normal(c), "bn_mean")
        var = self.const(0.5 + self.rng.random(c), "bn_var")
        return self.op("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5)

    def gemm(self, x: str, n_in: int, n_out: int, *, gain: float = 1.0) -> str:
        w = self.const(self.weight([n_out, n_in], n_in, gain), "gemm_W")
        b = self.const(0.1 * self.rng.standard_normal(n_out), "gemm_B")
        return self.op("Gemm", [x, w, b], transB=1)

    def dense(self, x: str, n_in: int, n_out: int, *, gain: float = 1.0, bias: bool = True) -> str:
        """Keras ``Dense``: ``MatMul`` on the last axis, then ``Add`` of the bias."""
        y = self.op("MatMul", [x, self.const(self.weight([n_in, n_out], n_in, gain), "dense_W")])
        if bias:
            y = self.op("Add", [y, self.const(0.1 * self.rng.standard_normal(n_out), "dense_B")])
        return y

    def reduce(self, op_type: str, x: str, axes: Sequence[int], *, keepdims: int = 0) -> str:
        """``Reduce*`` with axes as an attribute or an input, as the opset requires."""
        axes_as_input = self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")])

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", [x, self.ints(axes, "axes")])

    def slice_len(self, x: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", [x, self.ints([start], "starts"), self.ints([end], "ends"), self.ints([axis], "axes")])

    def flatten_features(self, x: str) -> str:
        """Flatten a channels-first ``(N, C, L)`` tensor the way the framework would.

        PyTorch flattens channels-first; Keras flattens the channels-last tensor.
        """
        return self.op("Flatten", [x if self.layout == "ncl" else self.to_last(x)], axis=1)

    def gap_head(self, x: str, c: int, n_out: int) -> str:
        """``GlobalAveragePool → Flatten → Gemm``."""
        pooled = self.op("Flatten", [self.op("GlobalAveragePool", [x])], axis=1)
        return self.gemm(pooled, c, n_out)

    def length(self, t: str, axis: int = -1) -> int:
        """The static size of axis ``axis`` of tensor ``t``, by shape inference so far."""
        out = helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, "partial", [self.input], [out], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = inferred.graph.output[0].type.tensor_type.shape.dim
        return int(dims[axis].dim_value)

    def build(self) -> onnx.ModelProto:
        outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in self.outputs]
        graph = helper.make_graph(self.nodes, self.name, [self.input], outputs, self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(
            graph,
            opset_imports=opsets,
            ir_version=helper.find_min_ir_version_for(opsets),
            producer_name="yuzu_onnx.testing.model_builders",
        )
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
        model.doc_string = f"{self.name} ({self.layout}, opset {self.opset})"
        return model


def _gelu_erf(g: _Graph, x: str) -> str:
    """GELU from ``Erf`` (how opset-17 exporters write it): ``0.5·x·(1 + erf(x/√2))``."""
    erf = g.op("Erf", [g.op("Div", [x, g.const(np.sqrt(2.0), "sqrt2")])])
    return g.op("Mul", [g.op("Mul", [x, g.const(0.5, "half")]), g.op("Add", [erf, g.const(1.0, "one")])])


# --------------------------------------------------------------------------------------
# Builders.


def build_tiny_cnn(*, layout: str = "ncl", seq_len: int = 200, seed: int = 0) -> onnx.ModelProto:
    """Conv(4→8, k7) → ReLU → MaxPool(2) → Conv(8→8, k5) → ReLU → GAP → Gemm(8→3)."""
    g = _Graph("tiny_cnn", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 7)])
    h = g.op("MaxPool", [h], kernel_shape=[2], strides=[2])
    h = g.op("Relu", [g.same_conv(h, 8, 8, 5)])
    g.output(g.gap_head(h, 8, 3), "y")
    return g.build()


def build_linear_conv(
    *, layout: str = "ncl", seq_len: int = 64, seed: int = 0, kernel: int = 7, out_channels: int = 3
) -> onnx.ModelProto:
    """A single bias-free Conv with pads ``((k-1)//2, k//2)``: output length == ``L``.

    Output ``y``: ``(N, out_channels, L)`` (ncl) or ``(N, L, out_channels)`` (nlc). Its ISM
    has a closed form: mutating position ``j`` from base ``r`` to ``a`` changes output
    position ``p`` by ``W[:, a, j - p + pad] - W[:, r, j - p + pad]`` (``pad = (k-1)//2``).
    """
    if kernel < 1 or out_channels < 1:
        raise ValueError(f"kernel and out_channels must be >= 1, got {kernel}, {out_channels}")
    g = _Graph("linear_conv", layout=layout, seq_len=seq_len, seed=seed)
    y = g.conv(g.seq(), 4, out_channels, kernel, pads=[(kernel - 1) // 2, kernel // 2], bias=False)
    g.profile_output(y)
    return g.build()


def build_dilated_conv(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Dilated convs with explicit symmetric pads, BatchNormalization, GAP → Gemm head."""
    g = _Graph("dilated_conv", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.conv(g.seq(), 4, 8, 5, dilation=2, pads=[4, 4])])
    h = g.op("Relu", [g.batch_norm(g.conv(h, 8, 8, 3, dilation=4, pads=[4, 4]), 8)])
    g.output(g.gap_head(h, 8, 2), "y")
    return g.build()


def build_strided_conv(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Stride-2 convs, asymmetric pads, no bias, LeakyRelu and Elu, Flatten → Gemm head."""
    g = _Graph("strided_conv", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("LeakyRelu", [g.conv(g.seq(), 4, 8, 4, stride=2, pads=[1, 2])], alpha=0.1)
    h = g.op("Elu", [g.conv(h, 8, 8, 3, stride=2, bias=False)], alpha=1.0)
    g.output(g.gemm(g.flatten_features(h), 8 * g.length(h), 4), "y")
    return g.build()


def build_auto_pad(*, layout: str = "ncl", seq_len: int = 96, seed: int = 0) -> onnx.ModelProto:
    """auto_pad SAME_UPPER, SAME_LOWER (stride 2, even kernels) and VALID; Tanh, Sigmoid;
    ReduceMean over length."""
    g = _Graph("auto_pad", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Tanh", [g.conv(g.seq(), 4, 8, 4, auto_pad="SAME_UPPER")])
    h = g.op("Sigmoid", [g.conv(h, 8, 8, 4, stride=2, auto_pad="SAME_LOWER", gain=6.0)])
    h = g.conv(h, 8, 4, 3, auto_pad="VALID")
    g.output(g.reduce("ReduceMean", h, [2]), "y")
    return g.build()


def build_depthwise(*, layout: str = "ncl", seq_len: int = 80, seed: int = 0) -> onnx.ModelProto:
    """Opset 13: depthwise conv (group = channels) then a pointwise conv; ReduceSum over
    length (axes as input) → Gemm."""
    g = _Graph("depthwise", layout=layout, seq_len=seq_len, seed=seed, opset=13)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.same_conv(h, 8, 8, 7, group=8)
    h = g.op("Relu", [g.conv(h, 8, 16, 1, bias=False)])
    pooled = g.reduce("ReduceSum", h, [2])
    g.output(g.gemm(pooled, 16, 2, gain=1.0 / seq_len), "y")
    return g.build()


def build_pools(*, layout: str = "ncl", seq_len: int = 120, seed: int = 0) -> onnx.ModelProto:
    """Opset 18 pooling: MaxPool ceil_mode=1, AveragePool with count_include_pad 1 and 0
    (one with ceil_mode), LpPool(p=2); dense head Gemm → Relu → Gemm → Sigmoid."""
    g = _Graph("pools", layout=layout, seq_len=seq_len, seed=seed, opset=18)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("MaxPool", [h], kernel_shape=[3], strides=[2], ceil_mode=1)
    h = g.op("AveragePool", [h], kernel_shape=[3], strides=[1], pads=[1, 1], count_include_pad=1)
    h = g.op("Relu", [g.same_conv(h, 8, 8, 3)])
    h = g.op("AveragePool", [h], kernel_shape=[4], strides=[3], pads=[1, 1], count_include_pad=0, ceil_mode=1)
    h = g.op("LpPool", [h], kernel_shape=[2], strides=[2], p=2)
    hidden = g.op("Relu", [g.gemm(g.flatten_features(h), 8 * g.length(h), 16, gain=2.0)])
    g.output(g.op("Sigmoid", [g.gemm(hidden, 16, 3)]), "y")
    return g.build()


def build_activations(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Softplus, GELU built from Erf, Clip, Exp of small values; ReduceMean over length."""
    g = _Graph("activations", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Softplus", [g.same_conv(g.seq(), 4, 8, 5)])
    h = _gelu_erf(g, g.same_conv(h, 8, 8, 3))
    h = g.op("Clip", [g.same_conv(h, 8, 8, 3), g.const(-1.0, "lo"), g.const(1.0, "hi")])
    h = g.op("Exp", [g.op("Mul", [g.same_conv(h, 8, 4, 3), g.const(0.3, "scale")])])
    g.output(g.reduce("ReduceMean", h, [2]), "y")
    return g.build()


def build_gelu20(*, layout: str = "ncl", seq_len: int = 80, seed: int = 0) -> onnx.ModelProto:
    """Opset 20 ``Gelu`` op (exact and tanh approximation); GAP → Gemm head."""
    g = _Graph("gelu20", layout=layout, seq_len=seq_len, seed=seed, opset=20)
    h = g.op("Gelu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("Gelu", [g.same_conv(h, 8, 8, 5, dilation=2)], approximate="tanh")
    g.output(g.gap_head(h, 8, 2), "y")
    return g.build()


def build_basset_like(*, layout: str = "ncl", seq_len: int = 150, seed: int = 0) -> onnx.ModelProto:
    """A miniature Basset: (Conv → BN → ReLU → MaxPool) ×2, Flatten → Gemm → ReLU → Gemm →
    Sigmoid."""
    g = _Graph("basset_like", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.batch_norm(g.same_conv(g.seq(), 4, 16, 9), 16)])
    h = g.op("MaxPool", [h], kernel_shape=[3], strides=[3])
    h = g.op("Relu", [g.batch_norm(g.same_conv(h, 16, 12, 5), 12)])
    h = g.op("MaxPool", [h], kernel_shape=[4], strides=[4])
    hidden = g.op("Relu", [g.gemm(g.flatten_features(h), 12 * g.length(h), 16, gain=2.0)])
    g.output(g.op("Sigmoid", [g.gemm(hidden, 16, 5)]), "y")
    return g.build()


def build_bpnet(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """BPNet-style: conv, 3 dilated residual layers (Add), profile conv head ``profile``
    ``(N, 2, L)`` and counts head GAP → Gemm ``counts`` ``(N, 2)``."""
    g = _Graph("bpnet", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 7)])
    for d in (2, 4, 8):
        h = g.op("Add", [h, g.op("Relu", [g.same_conv(h, 8, 8, 3, dilation=d, gain=1.0)])])
    g.profile_output(g.same_conv(h, 8, 2, 9, gain=1.0), "profile")
    g.output(g.gap_head(h, 8, 2), "counts")
    return g.build()


def build_bpnet_valid(*, layout: str = "ncl", seq_len: int = 140, seed: int = 0) -> onnx.ModelProto:
    """ChromBPNet-style valid convolutions: residual Adds crop the skip with Slice; the
    profile (``(N, 1, P)``) is cropped to the centre; counts = GAP of the cropped tower → Gemm."""
    g = _Graph("bpnet_valid", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.conv(g.seq(), 4, 8, 7)])
    n = seq_len - 6
    for d in (1, 2, 4):
        branch = g.op("Relu", [g.conv(h, 8, 8, 3, dilation=d, gain=1.0)])
        h = g.op("Add", [g.slice_len(h, d, n - d, axis=2), branch])
        n -= 2 * d
    out_len = n - 10 - 8
    if out_len < 4:
        raise ValueError(f"seq_len={seq_len} is too short for bpnet_valid (need >= 46)")
    profile = g.conv(h, 8, 1, 11, gain=1.0)  # length n - 10
    g.profile_output(g.slice_len(profile, 4, 4 + out_len, axis=2), "profile")
    crop = (n - out_len) // 2
    g.output(g.gap_head(g.slice_len(h, crop, crop + out_len, axis=2), 8, 1), "counts")
    return g.build()


def build_residual_bpnet(*, layout: str = "ncl", seq_len: int = 2114, out_len: int = 1000, filters: int = 64,
                         layers: int = 8, first_kernel: int = 21, profile_kernel: int = 75,
                         seed: int = 0) -> onnx.ModelProto:
    """bpnet-lite's ``BPNet`` shape (defaults: its defaults, no control tracks): a ``first_kernel``
    conv, ``layers`` residual dilated convs (kernel 3, dilation 2, 4, ..., ``x + relu(conv(x))``),
    a ``profile_kernel`` profile head (2 strands) cropped to the central ``out_len`` positions
    (``profile``), and counts = Gemm of the mean of the tower over the profile's span (``counts``)."""
    g = _Graph("residual_bpnet", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, filters, first_kernel)])
    for i in range(1, layers + 1):
        h = g.op("Add", [h, g.op("Relu", [g.same_conv(h, filters, filters, 3, dilation=2**i, gain=1.0)])])
    start = (seq_len - out_len) // 2
    profile = g.same_conv(h, filters, 2, profile_kernel, gain=1.0)
    g.profile_output(g.slice_len(profile, start, start + out_len, axis=2), "profile")
    half = profile_kernel // 2
    span = g.slice_len(h, max(0, start - half), min(seq_len, start + out_len + half), axis=2)
    g.output(g.gemm(g.reduce("ReduceMean", span, [2]), filters, 1), "counts")
    return g.build()


def build_residual_pool(*, layout: str = "ncl", seq_len: int = 96, seed: int = 0) -> onnx.ModelProto:
    """Residual Add across a MaxPool: ``MaxPool(ReLU(Conv(h)))`` + ``AveragePool(h)``, both
    stride 2; then ReLU → ReduceMean over length → Gemm."""
    g = _Graph("residual_pool", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    a = g.op("MaxPool", [g.op("Relu", [g.same_conv(h, 8, 8, 3)])], kernel_shape=[2], strides=[2])
    b = g.op("AveragePool", [h], kernel_shape=[2], strides=[2])
    h = g.op("Relu", [g.same_conv(g.op("Add", [a, b]), 8, 8, 3, gain=1.0)])
    g.output(g.gemm(g.reduce("ReduceMean", h, [2]), 8, 2), "y")
    return g.build()


def build_concat_branches(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Two conv branches (k3; k9 dilation 2) concatenated over channels → Conv → GAP → Gemm."""
    g = _Graph("concat_branches", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    a = g.same_conv(h, 8, 4, 3)
    b = g.same_conv(h, 8, 6, 9, dilation=2)
    h = g.op("Relu", [g.op("Concat", [a, b], axis=1)])
    h = g.op("Relu", [g.same_conv(h, 10, 8, 3)])
    g.output(g.gap_head(h, 8, 2), "y")
    return g.build()


def build_gated(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """WaveNet gating ``tanh(conv) · sigmoid(conv)`` (Mul of two local branches); head
    ``Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) → MatMul → Add`` — the
    runtime ``x.view(x.size(0), -1)`` pattern."""
    g = _Graph("gated", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    a = g.op("Tanh", [g.same_conv(h, 8, 8, 3)])
    b = g.op("Sigmoid", [g.same_conv(h, 8, 8, 3, dilation=2)])
    h = g.conv(g.op("Mul", [a, b]), 8, 4, 1, gain=4.0)
    if layout == "nlc":
        h = g.to_last(h)
    batch = g.op("Gather", [g.op("Shape", [h]), g.const(0, "zero", np.int64)], axis=0)
    target = g.op("Concat", [g.unsqueeze(batch, [0]), g.ints([-1], "minus_one")], axis=0)
    flat = g.op("Reshape", [h, target])
    g.output(g.dense(flat, 4 * seq_len, 3), "y")
    return g.build()


def build_crop_pad(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Opset 18: constant Pad along length (asymmetric, with ``axes``), VALID conv, Slice
    crop along length; the output is directly a conv output (a profile, no head).

    Channels-last models pad and crop channels-last (Keras ``ZeroPadding1D``/``Cropping1D``).
    """
    g = _Graph("crop_pad", layout=layout, seq_len=seq_len, seed=seed, opset=18)
    len_axis = 2 if layout == "ncl" else 1
    zero = g.const(0.0, "pad_value")
    padded = g.op("Pad", [INPUT_NAME, g.ints([3, 5], "pads"), zero, g.ints([len_axis], "axes")], mode="constant")
    h = padded if layout == "ncl" else g.to_first(padded)
    h = g.op("Relu", [g.conv(h, 4, 8, 9)])  # length L
    if layout == "nlc":
        h = g.to_last(h)
    h = g.slice_len(h, 10, seq_len - 10, axis=len_axis)
    if layout == "nlc":
        h = g.to_first(h)
    g.profile_output(g.same_conv(h, 8, 3, 5, gain=1.0))
    return g.build()


def build_strided_profile(*, layout: str = "ncl", seq_len: int = 96, seed: int = 0) -> onnx.ModelProto:
    """A profile at half resolution: Conv(k5) → ReLU → Conv(k4, stride 2, pads 1/1) →
    ReLU → MaxPool(2, stride 1, pads 0/1) → Conv(k3) profile ``y`` ``(N, 2, L/2)``."""
    g = _Graph("strided_profile", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("Relu", [g.conv(h, 8, 8, 4, stride=2, pads=[1, 1])])
    h = g.op("MaxPool", [h], kernel_shape=[2], strides=[1], pads=[0, 1])
    g.profile_output(g.same_conv(h, 8, 2, 3, gain=1.0))
    return g.build()


def build_dilated_profile(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Dilated convs (2, 4) without residuals, then a profile Conv(k5) ``y`` ``(N, 3, L)``."""
    g = _Graph("dilated_profile", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 3)])
    h = g.op("Relu", [g.same_conv(h, 8, 8, 3, dilation=2)])
    h = g.op("Relu", [g.same_conv(h, 8, 8, 3, dilation=4)])
    g.profile_output(g.same_conv(h, 8, 3, 5, gain=1.0))
    return g.build()


def build_track_head(*, layout: str = "ncl", seq_len: int = 96, seed: int = 0, tracks: int = 24) -> onnx.ModelProto:
    """Basenji-style multi-track head: Conv(k5) → ReLU → MaxPool(2) to bins, dilated Conv(k3,
    dilation 2) → ReLU, cropped by 2 bins each side, then channels-last: a pointwise Dense to
    ``tracks`` with Softplus, ``tracks`` ``(N, L/2 - 4, tracks)``, and a Dense to 2 × 12 laid out
    as strands, ``strands`` ``(N, 2, L/2 - 4, 12)`` (an axis before the bins)."""
    g = _Graph("track_head", layout=layout, seq_len=seq_len, seed=seed)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 16, 5)])
    h = g.op("MaxPool", [h], kernel_shape=[2], strides=[2])
    h = g.op("Relu", [g.same_conv(h, 16, 16, 3, dilation=2)])
    bins = seq_len // 2 - 4
    h = g.to_last(g.slice_len(h, 2, 2 + bins, 2))  # (N, bins, 16)
    g.output(g.op("Softplus", [g.dense(h, 16, tracks, gain=2.0)]), "tracks")
    strands = g.op("Reshape", [g.dense(h, 16, 24, gain=2.0), g.ints([0, bins, 2, 12], "strand_shape")])
    g.output(g.op("Transpose", [strands], perm=[0, 2, 1, 3]), "strands")
    return g.build()


def build_transpose_dense(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Conv, then channels-last per-position Dense (MatMul on the last axis of ``(N, L, C)``)
    twice, Flatten → Gemm."""
    g = _Graph("transpose_dense", layout=layout, seq_len=seq_len, seed=seed)
    h = g.to_last(g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)]))
    h = g.op("Relu", [g.dense(h, 8, 16, gain=2.0)])
    h = g.dense(h, 16, 4, gain=2.0, bias=False)
    g.output(g.gemm(g.op("Flatten", [h], axis=1), 4 * seq_len, 2), "y")
    return g.build()


def build_keras_conv2d(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's Conv1D: Unsqueeze → Transpose → 2-D Conv with kernel ``(1, k)`` → MaxPool
    ``(1, 2)`` → 2-D Conv → Transpose → Squeeze; per-position Dense; GlobalAveragePooling1D
    (ReduceMean over length) → Dense."""
    g = _Graph("keras_conv2d", layout=layout, seq_len=seq_len, seed=seed)
    if layout == "nlc":  # (N, L, 4) → (N, 1, L, 4) → (N, 4, 1, L)
        h = g.op("Transpose", [g.unsqueeze(INPUT_NAME, [1])], perm=[0, 3, 1, 2])
    else:  # (N, 4, L) → (N, 4, 1, L)
        h = g.unsqueeze(INPUT_NAME, [2])
    h = g.op("Relu", [g.conv(h, 4, 8, (1, 7), pads=[0, 3, 0, 3])])
    h = g.op("MaxPool", [h], kernel_shape=[1, 2], strides=[1, 2])
    h = g.op("Relu", [g.conv(h, 8, 8, (1, 5), pads=[0, 2, 0, 2])])
    h = g.squeeze(g.op("Transpose", [h], perm=[0, 2, 3, 1]), [1])  # (N, L', C)
    h = g.op("Relu", [g.dense(h, 8, 8, gain=2.0)])
    g.output(g.dense(g.reduce("ReduceMean", h, [1]), 8, 2), "y")
    return g.build()


def build_attention(*, layout: str = "ncl", seq_len: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Opset 18: conv tower, then single-head self-attention over positions
    (``softmax(Q·Kᵀ/√d)·V`` with a residual), ReduceMean over length → Gemm."""
    g = _Graph("attention", layout=layout, seq_len=seq_len, seed=seed, opset=18)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("MaxPool", [h], kernel_shape=[2], strides=[2])
    h = g.to_last(g.op("Relu", [g.same_conv(h, 8, 8, 3)]))  # (N, L', 8)
    q = g.dense(h, 8, 8, bias=False)
    k = g.dense(h, 8, 8, bias=False)
    v = g.dense(h, 8, 8, bias=False)
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    weights = g.op("Softmax", [g.op("Div", [scores, g.const(np.sqrt(8.0), "sqrt_d")])], axis=-1)
    h = g.op("Add", [h, g.op("MatMul", [weights, v])])
    g.output(g.gemm(g.reduce("ReduceMean", h, [1]), 8, 2), "y")
    return g.build()


def _attention_pool(g: _Graph, x: str, c: int, length: int) -> tuple[str, int]:
    """Enformer's attention pooling of a channels-first ``(N, C, length)`` tensor over pairs
    of neighbouring positions: ``Σ_pair softmax(W·x)·x``, as ``enformer-pytorch`` exports it
    (``Reshape`` to ``(N, C, L/2, 2)``, a 1×1 ``Conv`` for the logits, ``Softmax`` and the
    weighted sum over the last axis). An odd length is padded by one position whose logit
    is masked to ``-3.4e38``, as ``enformer-pytorch`` does. Channels-last models pool
    ``(N, L/2, 2, C)`` with a ``MatMul`` for the logits, as Keras would. Returns the pooled
    tensor and its length."""
    pad = length % 2
    pooled = (length + pad) // 2
    if pad:
        x = g.op("Pad", [x, g.ints([0, 0, 0, 0, 0, pad], "pool_pads")])
    mask = np.zeros((pooled, 2), dtype=bool)
    mask[-1, 1] = bool(pad)
    if g.layout == "ncl":
        blocks = g.op("Reshape", [x, g.ints([0, c, -1, 2], "pool_shape")])
        logits = g.conv(blocks, c, c, (1, 1), bias=False, gain=1.0)
    else:
        blocks = g.op("Reshape", [g.to_last(x), g.ints([0, -1, 2, c], "pool_shape")])
        logits = g.op("MatMul", [blocks, g.const(g.weight([c, c], c, 1.0), "pool_W")])
        mask = mask[:, :, None]
    if pad:
        logits = g.op("Where", [g.const(mask, "pool_mask", np.bool_), g.const(np.float32(-3.4e38), "min"), logits])
    if g.layout == "ncl":
        return g.reduce("ReduceSum", g.op("Mul", [blocks, g.op("Softmax", [logits], axis=-1)]), [-1]), pooled
    weighted = g.op("Mul", [blocks, g.op("Softmax", [logits], axis=2)])
    return g.to_first(g.reduce("ReduceSum", weighted, [2])), pooled


def _conv_block(g: _Graph, x: str, c_in: int, c_out: int, k: int) -> str:
    """Enformer's ``ConvBlock``: BatchNorm → GELU → Conv (length kept)."""
    return g.same_conv(_gelu_erf(g, g.batch_norm(x, c_in)), c_in, c_out, k)


def build_enformer_like(*, layout: str = "ncl", seq_len: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Opset 18, a small Enformer: stem Conv(4→8, k7) + residual 1×1 conv block + attention
    pooling, two tower blocks (conv block k5 + residual 1×1 block + attention pooling;
    8→12→16 channels), then channels-last: a constant positional embedding, one transformer
    layer (single-head attention over the ``L/8`` positions, feed-forward, both residual with
    LayerNorm), a pointwise GELU layer and two heads ``human`` ``(N, ⌈L/8⌉, 5)`` and ``mouse``
    ``(N, ⌈L/8⌉, 3)`` with Softplus; odd lengths are padded before pooling."""
    g = _Graph("enformer_like", layout=layout, seq_len=seq_len, seed=seed, opset=18)
    h = g.same_conv(g.seq(), 4, 8, 7)
    h = g.op("Add", [h, _conv_block(g, h, 8, 8, 1)])
    h, n = _attention_pool(g, h, 8, seq_len)
    c = 8
    for c_out in (12, 16):
        h = _conv_block(g, h, c, c_out, 5)
        h = g.op("Add", [h, _conv_block(g, h, c_out, c_out, 1)])
        h, n = _attention_pool(g, h, c_out, n)
        c = c_out
    h = g.op("Add", [g.to_last(h), g.const(0.1 * g.rng.standard_normal((1, n, c)), "positions")])  # (N, n, C)
    ones, zeros = g.const(np.ones(c), "ln_scale"), g.const(np.zeros(c), "ln_bias")
    x = g.op("LayerNormalization", [h, ones, zeros], axis=-1, epsilon=1e-5)
    q, k, v = (g.dense(x, c, c, bias=False) for _ in range(3))
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    weights = g.op("Softmax", [g.op("Div", [scores, g.const(np.sqrt(c), "sqrt_d")])], axis=-1)
    h = g.op("Add", [h, g.dense(g.op("MatMul", [weights, v]), c, c)])
    x = g.op("LayerNormalization", [h, ones, zeros], axis=-1, epsilon=1e-5)
    h = g.op("Add", [h, g.dense(g.op("Relu", [g.dense(x, c, 2 * c)]), 2 * c, c)])
    h = _gelu_erf(g, g.dense(h, c, 2 * c))
    g.output(g.op("Softplus", [g.dense(h, 2 * c, 5)]), "human")
    g.output(g.op("Softplus", [g.dense(h, 2 * c, 3)]), "mouse")
    return g.build()


def build_gru(*, layout: str = "ncl", seq_len: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Conv tower, then an ONNX ``GRU`` over positions (sequence-first, as PyTorch exports
    it); the last hidden state → Gemm."""
    g = _Graph("gru", layout=layout, seq_len=seq_len, seed=seed)
    hidden = 8
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("MaxPool", [h], kernel_shape=[2], strides=[2])
    h = g.op("Transpose", [h], perm=[2, 0, 1])  # (L', N, C)
    w = g.const(g.weight([1, 3 * hidden, 8], 8, 1.0), "gru_W")
    r = g.const(g.weight([1, 3 * hidden, hidden], hidden, 1.0), "gru_R")
    b = g.const(0.1 * g.rng.standard_normal([1, 6 * hidden]), "gru_B")
    _, last = g.op("GRU", [h, w, r, b], n_outputs=2, hidden_size=hidden, linear_before_reset=1)
    g.output(g.gemm(g.squeeze(last, [0]), hidden, 2, gain=2.0), "y")
    return g.build()


def build_dynamic_length(*, layout: str = "ncl", seq_len: int = 100, seed: int = 0) -> onnx.ModelProto:
    """Opset 18, input length dynamic (``("batch", 4, "L")``); importers need ``seq_len``
    (only used by callers; the graph accepts any length). ReduceMax and ReduceMean over
    length, concatenated → Gemm."""
    g = _Graph("dynamic_length", layout=layout, seq_len=seq_len, seed=seed, opset=18, dynamic_length=True)
    h = g.op("Relu", [g.same_conv(g.seq(), 4, 8, 5)])
    h = g.op("Relu", [g.same_conv(h, 8, 8, 3, dilation=2)])
    pooled = g.op("Concat", [g.reduce("ReduceMax", h, [2]), g.reduce("ReduceMean", h, [2])], axis=1)
    g.output(g.gemm(pooled, 16, 3), "y")
    return g.build()


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {
    "tiny_cnn": build_tiny_cnn,
    "linear_conv": build_linear_conv,
    "dilated_conv": build_dilated_conv,
    "strided_conv": build_strided_conv,
    "auto_pad": build_auto_pad,
    "depthwise": build_depthwise,
    "pools": build_pools,
    "activations": build_activations,
    "gelu20": build_gelu20,
    "basset_like": build_basset_like,
    "bpnet": build_bpnet,
    "bpnet_valid": build_bpnet_valid,
    "residual_pool": build_residual_pool,
    "concat_branches": build_concat_branches,
    "gated": build_gated,
    "crop_pad": build_crop_pad,
    "transpose_dense": build_transpose_dense,
    "keras_conv2d": build_keras_conv2d,
    "attention": build_attention,
    "enformer_like": build_enformer_like,
    "gru": build_gru,
    "dynamic_length": build_dynamic_length,
    "strided_profile": build_strided_profile,
    "dilated_profile": build_dilated_profile,
    "track_head": build_track_head,
}

SEQUENTIAL: frozenset[str] = frozenset(
    {
        "tiny_cnn",
        "linear_conv",
        "dilated_conv",
        "strided_conv",
        "auto_pad",
        "depthwise",
        "pools",
        "gelu20",
        "basset_like",
        "gru",
        "dynamic_length",
        "strided_profile",
        "dilated_profile",
    }
)

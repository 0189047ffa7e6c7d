"""Seeded random sequence-model architectures inside the space the ISM engine supports.

:func:`random_model` draws a small float32 ONNX model (``onnx.helper`` only, no torch):
a local trunk of 1–5 blocks (convolutions with every padding flavour, dilations, strides,
groups; batch norm; activations; pooling; residual adds, also across pools; channel
concats; sigmoid gating; crops; constant pads; per-position channel ``MatMul``) followed by
1–3 heads (profile, dense, global pooling, or a non-local block: softmax over the length,
a tiny self-attention, reflect padding + conv, global max pooling).

Channels-last (``nlc``) models are built the way tf2onnx writes Keras models: the trunk
works channels-last where Keras does (elementwise ops, per-position dense, crops, pads,
batch norm folded to ``Mul``/``Add``), and convolutions/pools go through ``Transpose`` in
and out, or ``Unsqueeze`` → 2-D op with a ``(1, k)`` kernel → ``Squeeze``.

Every model passes ``onnx.checker.check_model(model, full_check=True)`` and runs in ONNX
Runtime; :func:`random_model` checks both before returning (``validate=True``).
:mod:`yuzu_onnx.testing.exactness` checks a conversion of such a model against the oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..encoding import random_one_hot
from .model_builders import rename_tensor

__all__ = [
    "INPUT_NAME",
    "GeneratorError",
    "ModelInfo",
    "random_batch",
    "random_model",
]

INPUT_NAME = "x"
ALPHABET_SIZE = 4
MIN_LENGTH = 3  # the trunk never shrinks the length below this
MAX_CHANNELS = 8
ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Gelu", "Elu", "Clip")
OPSETS = (17, 17, 17, 17, 13, 18)
CF, CL = "cf", "cl"  # channels-first (N, C, L) / channels-last (N, L, C)


class GeneratorError(RuntimeError):
    """The generator produced a model that fails its own checks (a generator bug)."""


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`random_model` built.

    Attributes
    ----------
    seed: the seed (``None`` when a ``Generator`` was passed).
    description: one line: layout, length, opset, blocks and heads.
    layout: ``"ncl"`` (input ``(N, 4, L)``) or ``"nlc"`` (input ``(N, L, 4)``).
    seq_len: ``L``.
    alphabet_size: ``A`` (4, or 20 for the occasional protein model).
    opset: default-domain opset.
    outputs: output names, in graph order.
    positional_outputs: outputs built inside the local region (``sum`` makes sense there).
    blocks, heads: the drawn trunk blocks and heads, in order.
    suggested: suggested conversion options: ``window`` (``None`` or ``(s, e)``) and
        ``reduce`` (output → reduction).
    """

    seed: int | None
    description: str
    layout: str
    seq_len: int
    alphabet_size: int
    opset: int
    outputs: tuple[str, ...]
    positional_outputs: tuple[str, ...]
    blocks: tuple[str, ...]
    heads: tuple[str, ...]
    suggested: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _T:
    """A trunk tensor: name, channels, length and form (channels first or last)."""

    name: str
    c: int
    length: int
    form: str

    @property
    def len_axis(self) -> int:
        return 2 if self.form == CF else 1

    @property
    def ch_axis(self) -> int:
        return 1 if self.form == CF else 2


class _Builder:
    def __init__(self, rng: np.random.Generator, layout: str, seq_len: int, opset: int,
                 alphabet_size: int = ALPHABET_SIZE) -> None:
        self.rng = rng
        self.alphabet_size = alphabet_size
        self.layout = layout
        self.seq_len = seq_len
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.outputs: list[str] = []
        self.count = 0

    # -- random helpers ---------------------------------------------------------------
    def pick(self, options: Sequence):
        return options[int(self.rng.integers(len(options)))]

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def randint(self, lo: int, hi: int) -> int:
        """An integer in ``[lo, hi]``."""
        return int(self.rng.integers(lo, hi + 1))

    # -- graph helpers ----------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value, hint: str = "c", dtype=np.float32, *, node_ok: bool = True) -> str:
        """An initializer, or now and then a ``Constant`` node (as some exporters write)."""
        name = self.fresh(hint)
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        if node_ok and self.rng.random() < 0.08:
            self.nodes.append(helper.make_node("Constant", [], [name], name=self.fresh("Constant"), value=tensor))
        else:
            self.inits.append(tensor)
        return name

    def ints(self, values: Sequence[int], hint: str = "i") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], **attrs) -> str:
        out = self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.fresh(op_type), **attrs))
        return out

    def weight(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * np.sqrt(gain / max(fan_in, 1))).astype(np.float32)

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes, "axes")])
        return self.op("Unsqueeze", [x], axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes, "axes")])
        return self.op("Squeeze", [x], axes=list(axes))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int = 0) -> str:
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def mark_output(self, tensor: str, name: str) -> None:
        """Make ``tensor`` the graph output ``name`` by renaming it everywhere."""
        rename_tensor(self.nodes, tensor, name)
        self.outputs.append(name)

    # -- layout -----------------------------------------------------------------------
    def to_form(self, t: _T, form: str) -> _T:
        if t.form == form:
            return t
        return _T(self.op("Transpose", [t.name], perm=[0, 2, 1]), t.c, t.length, form)

    def to_layout_form(self, t: _T) -> _T:
        """Channels first for ncl models, channels last for nlc (a profile output)."""
        return self.to_form(t, CF if self.layout == "ncl" else CL)

    def keras_form(self) -> str:
        """The form an elementwise op prefers: what the framework keeps."""
        return CF if self.layout == "ncl" else CL

    def sliding(self, t: _T, op_type: str, c_out: int, kernel: int, stride: int, dilation: int,
                pad_attrs: dict, extra: dict, inputs_after: Sequence[str] = ()) -> _T | None:
        """A Conv/MaxPool/AveragePool along the length, 1-D or Keras-style 2-D."""
        span = (kernel - 1) * dilation + 1
        out_len = _sliding_length(t.length, span, stride, pad_attrs, extra.get("ceil_mode", 0))
        if out_len is None or out_len < MIN_LENGTH:
            return None
        two_d = self.layout == "nlc" and self.coin(0.5)
        attrs = dict(extra)
        if not two_d and self.coin(0.15):
            # (N, C, L) → (N, C, L, 1): a 2-D op with a (k, 1) kernel, length on H
            t = self.to_form(t, CF)
            attrs["kernel_shape"] = [kernel, 1]
            attrs["strides"] = [stride, 1]
            if op_type == "Conv" or dilation != 1:
                attrs["dilations"] = [dilation, 1]
            if "pads" in pad_attrs:
                pb, pe = pad_attrs["pads"]
                attrs["pads"] = [pb, 0, pe, 0]
            else:
                attrs["auto_pad"] = pad_attrs["auto_pad"]
            h = self.op(op_type, [self.unsqueeze(t.name, [3]), *inputs_after], **attrs)
            if self.coin(0.3):
                h = self.op("Relu", [h]) if op_type == "Conv" and self.coin() else self.op("Identity", [h])
            return _T(self.squeeze(h, [3]), c_out, out_len, CF)
        if two_d:
            attrs["kernel_shape"] = [1, kernel]
            attrs["strides"] = [1, stride]
            if op_type == "Conv" or dilation != 1:
                attrs["dilations"] = [1, dilation]
            if op_type != "Conv" and "dilations" in extra:
                attrs["dilations"] = [1, dilation]
            if "pads" in pad_attrs:
                pb, pe = pad_attrs["pads"]
                attrs["pads"] = [0, pb, 0, pe]
            else:
                attrs["auto_pad"] = pad_attrs["auto_pad"]
            if t.form == CL and self.coin(0.5):
                # tf2onnx: (N, L, C) → Unsqueeze(1) → (N, 1, L, C) → Transpose → (N, C, 1, L)
                h = self.op("Transpose", [self.unsqueeze(t.name, [1])], perm=[0, 3, 1, 2])
                h = self.op(op_type, [h, *inputs_after], **attrs)
                h = self.squeeze(self.op("Transpose", [h], perm=[0, 2, 3, 1]), [1])
                return _T(h, c_out, out_len, CL)
            t = self.to_form(t, CF)
            h = self.op(op_type, [self.unsqueeze(t.name, [2]), *inputs_after], **attrs)
            return _T(self.squeeze(h, [2]), c_out, out_len, CF)
        t = self.to_form(t, CF)
        attrs["kernel_shape"] = [kernel]
        attrs["strides"] = [stride]
        if op_type == "Conv" or dilation != 1:
            attrs["dilations"] = [dilation]
        attrs.update(pad_attrs)
        return _T(self.op(op_type, [t.name, *inputs_after], **attrs), c_out, out_len, CF)

    # -- layers -----------------------------------------------------------------------
    def pad_attrs(self, span: int, stride: int, *, same: bool = False, dilated: bool = False) -> dict:
        """Explicit symmetric/asymmetric pads or an ``auto_pad`` mode.

        ONNX Runtime rejects ``SAME_*`` with dilations, so dilated ops get explicit pads.
        """
        if same and stride == 1:
            if self.coin(0.3) and not dilated:
                return {"auto_pad": self.pick(["SAME_UPPER", "SAME_LOWER"])}
            total = span - 1
            first = total // 2 if self.coin() else total - total // 2
            return {"pads": [first, total - first]}
        kinds = ["sym", "asym", "asym", "valid"] + ([] if dilated else ["same_upper", "same_lower"])
        kind = self.pick(kinds)
        if kind == "valid":
            return {"auto_pad": "VALID"}
        if kind == "same_upper":
            return {"auto_pad": "SAME_UPPER"}
        if kind == "same_lower":
            return {"auto_pad": "SAME_LOWER"}
        if kind == "sym":
            p = self.randint(0, span // 2)
            return {"pads": [p, p]}
        return {"pads": [self.randint(0, span - 1), self.randint(0, span - 1)]}

    def conv(self, t: _T, c_out: int | None = None, *, kernel: int | None = None, stride: int = 1,
             dilation: int = 1, same: bool = False, depthwise: bool | None = None,
             gain: float = 2.0) -> _T | None:
        kernel = self.randint(1, 9) if kernel is None else kernel
        free_channels = c_out is None
        c_out = self.randint(2, MAX_CHANNELS) if c_out is None else c_out
        if depthwise is None:
            depthwise = t.c >= 2 and self.coin(0.2) and (free_channels or c_out == t.c)
        group = 1
        if depthwise:
            group = t.c
            c_out = t.c * (2 if free_channels and 2 * t.c <= MAX_CHANNELS and self.coin(0.3) else 1)
        span = (kernel - 1) * dilation + 1
        pad = self.pad_attrs(span, stride, same=same, dilated=dilation > 1)
        fan = (t.c // group) * kernel
        two_d_shape = [c_out, t.c // group, kernel]
        w = self.weight(two_d_shape, fan, gain)
        extra = {"group": group} if group != 1 else {}
        # the weight's rank must match the op's (1-D or 2-D): decide inside by a placeholder
        inputs = ["__W__"]
        bias = 0.1 * self.rng.standard_normal(c_out) if self.coin(0.7) else None
        if bias is not None:
            inputs.append("__B__")
        before = len(self.nodes)
        out = self.sliding(t, "Conv", c_out, kernel, stride, dilation, pad, extra, inputs)
        if out is None:
            return None
        conv_node = next(n for n in self.nodes[before:] if n.op_type == "Conv")
        kshape = helper.get_attribute_value(next(a for a in conv_node.attribute if a.name == "kernel_shape"))
        conv_node.input[1] = self.const(w.reshape(c_out, t.c // group, *kshape), "W", node_ok=False)
        if bias is not None:
            conv_node.input[2] = self.const(bias, "B", node_ok=False)
        return out

    def same_conv(self, t: _T, c_out: int | None = None, **kw) -> _T:
        """A stride-1 conv that keeps the length."""
        kernel = kw.pop("kernel", None) or self.randint(1, 9)
        dilation = kw.pop("dilation", None) or (self.randint(1, 4) if kernel > 1 else 1)
        out = self.conv(t, c_out, kernel=kernel, dilation=dilation, same=True, **kw)
        assert out is not None and out.length == t.length
        return out

    def batch_norm(self, t: _T) -> _T:
        c = t.c
        scale = 1.0 + 0.2 * self.rng.standard_normal(c)
        bias = 0.1 * self.rng.standard_normal(c)
        mean = 0.3 * self.rng.standard_normal(c)
        var = 0.5 + self.rng.random(c)
        if t.form == CL:
            # Keras BatchNormalization after folding: per-channel Mul and Add on the last axis
            a = scale / np.sqrt(var + 1e-3)
            h = self.op("Mul", [t.name, self.const(a, "bn_mul")])
            return _T(self.op("Add", [h, self.const(bias - mean * a, "bn_add")]), c, t.length, CL)
        inputs = [t.name] + [self.const(v, n) for v, n in
                             ((scale, "bn_scale"), (bias, "bn_bias"), (mean, "bn_mean"), (var, "bn_var"))]
        return _T(self.op("BatchNormalization", inputs, epsilon=1e-5), c, t.length, CF)

    def activation(self, t: _T, kind: str | None = None) -> _T:
        kind = kind or self.pick(ACTIVATIONS)
        x = t.name
        if kind == "LeakyRelu":
            h = self.op("LeakyRelu", [x], alpha=float(self.pick([0.01, 0.1, 0.3])))
        elif kind == "Elu":
            h = self.op("Elu", [x], alpha=float(self.pick([1.0, 0.5])))
        elif kind == "Clip":
            lo, hi = self.pick([(0.0, 6.0), (-1.0, 1.0), (-0.5, 2.0)])
            h = self.op("Clip", [x, self.const(lo, "clip_min"), self.const(hi, "clip_max")])
        elif kind == "Gelu":
            erf = self.op("Erf", [self.op("Div", [x, self.const(np.sqrt(2.0), "sqrt2")])])
            h = self.op("Mul", [self.op("Mul", [x, self.const(0.5, "half")]),
                                self.op("Add", [erf, self.const(1.0, "one")])])
        else:
            h = self.op(kind, [x])
        if self.coin(0.05):
            h = self.op(self.pick(["Identity", "Dropout"]), [h])
        return _T(h, t.c, t.length, t.form)

    def pool(self, t: _T, *, kernel: int | None = None, stride: int | None = None,
             op_type: str | None = None, pads: list[int] | None = None, ceil_mode: int | None = None,
             free: bool = False) -> _T | None:
        """A pooling op; ``free`` also draws dilations (MaxPool) and ``auto_pad``."""
        op_type = op_type or self.pick(["MaxPool", "AveragePool"])
        kernel = kernel or self.randint(2, 4)
        stride = stride or self.randint(1, 3)
        dilation = 2 if free and op_type == "MaxPool" and self.coin(0.2) else 1
        span = (kernel - 1) * dilation + 1
        if pads is None:
            pads = [0, 0] if self.coin(0.6) else [self.randint(0, kernel - 1), self.randint(0, kernel - 1)]
        if ceil_mode is None:
            ceil_mode = int(self.coin(0.3))
        if ceil_mode and (dilation > 1 or _ceil_is_ambiguous(t.length, kernel, stride, pads)):
            ceil_mode = 0
        extra: dict = {}
        if ceil_mode:
            extra["ceil_mode"] = 1
        pad_attrs: dict = {"pads": list(pads)}
        if free and not ceil_mode and dilation == 1 and stride <= kernel and self.coin(0.2):
            pad_attrs = {"auto_pad": self.pick(["SAME_UPPER", "SAME_LOWER", "VALID"])}
        if op_type == "AveragePool" and self.coin():
            extra["count_include_pad"] = 1
        if dilation > 1:
            extra["dilations"] = [dilation]
        out = self.sliding(t, op_type, t.c, kernel, stride, dilation, pad_attrs, extra)
        if out is not None and dilation > 1 and span > t.length:
            return None
        return out

    def crop(self, t: _T, length: int) -> _T:
        """Slice the length down to ``length`` (roughly centred; ends sometimes negative)."""
        if length >= t.length:
            return t
        t = self.to_form(t, self.keras_form()) if self.coin(0.5) else t
        extra = t.length - length
        start = self.randint(0, extra)
        end = start + length
        end_value = end - t.length if (end < t.length and self.coin(0.4)) else end
        axis = t.len_axis if self.coin(0.7) else t.len_axis - 3
        ends = self.ints([end_value], "ends")
        if self.coin(0.15):  # ends computed from Shape (folded once the length is fixed)
            size = self.op("Gather", [self.op("Shape", [t.name]), self.ints([t.len_axis], "len_axis")], axis=0)
            ends = self.op("Sub", [size, self.ints([t.length - end], "cut")])
        inputs = [t.name, self.ints([start], "starts"), ends, self.ints([axis], "axes")]
        if self.coin(0.2):
            inputs.append(self.ints([1], "steps"))
        return _T(self.op("Slice", inputs), t.c, length, t.form)

    def match(self, a: _T, b: _T) -> tuple[_T, _T]:
        """Bring two branches to the same form and length (cropping the longer one)."""
        b = self.to_form(b, a.form)
        if a.length > b.length:
            a = self.crop(a, b.length)
            b = self.to_form(b, a.form)
        elif b.length > a.length:
            b = self.crop(b, a.length)
            b = self.to_form(b, a.form)
        return a, b

    # -- blocks -----------------------------------------------------------------------
    def block_conv(self, t: _T) -> tuple[_T, str]:
        for _ in range(8):
            stride = 2 if self.coin(0.2) else 1
            kernel = self.randint(1, 9)
            dilation = self.randint(1, 4) if kernel > 1 and self.coin(0.4) else 1
            out = self.conv(t, kernel=kernel, stride=stride, dilation=dilation)
            if out is not None:
                break
        else:
            out = self.same_conv(t, kernel=1)
            kernel, stride, dilation = 1, 1, 1
        parts = [f"conv{kernel}" + (f"d{dilation}" if dilation > 1 else "") + (f"s{stride}" if stride > 1 else "")]
        if self.coin(0.4):
            out = self.batch_norm(out)
            parts.append("bn")
        if self.coin(0.8):
            kind = self.pick(ACTIVATIONS)
            out = self.activation(self.to_form(out, self.keras_form()) if self.coin(0.3) else out, kind)
            parts.append(kind.lower())
        return out, "+".join(parts)

    def block_pool(self, t: _T) -> tuple[_T, str] | None:
        for _ in range(6):
            out = self.pool(t, free=True)
            if out is not None:
                node = next(n for n in reversed(self.nodes) if n.op_type in ("MaxPool", "AveragePool"))
                return out, f"{node.op_type.lower()}"
        return None

    def block_residual(self, t: _T) -> tuple[_T, str]:
        h = self.same_conv(t, t.c)
        if self.coin(0.4):
            h = self.batch_norm(h)
        h = self.activation(h)
        if self.coin(0.5):
            h = self.same_conv(h, t.c, gain=1.0)
        a, b = self.match(t, h)
        out = _T(self.op("Add", [a.name, b.name] if self.coin() else [b.name, a.name]), a.c, a.length, a.form)
        return out, "residual"

    def block_residual_pool(self, t: _T) -> tuple[_T, str] | None:
        kernel, stride = self.randint(2, 4), self.randint(2, 3)
        pads = [0, 0] if self.coin(0.6) else [self.randint(0, kernel - 1), self.randint(0, kernel - 1)]
        ceil_mode = int(self.coin(0.3))
        main = self.activation(self.same_conv(t, t.c if self.coin(0.6) else None))
        pooled = self.pool(main, kernel=kernel, stride=stride, pads=pads, ceil_mode=ceil_mode)
        if pooled is None:
            return None
        how = self.pick(["same_pool", "skip_pool", "skip_strided_conv"])
        if how == "same_pool":  # both branches pooled the same way
            skip = self.pool(t, kernel=kernel, stride=stride, pads=pads, ceil_mode=ceil_mode)
        elif how == "skip_pool":  # the skip pooled, the main branch pooled differently
            skip = self.pool(t, kernel=stride, stride=stride, op_type="AveragePool", pads=[0, 0], ceil_mode=0)
        else:
            skip = self.conv(t, pooled.c, kernel=1, stride=stride, depthwise=False)
        if skip is None:
            return None
        if skip.c != pooled.c:
            skip = self.same_conv(skip, pooled.c, kernel=1, depthwise=False)
        a, b = self.match(pooled, skip)
        return _T(self.op("Add", [a.name, b.name]), a.c, a.length, a.form), f"respool({how})"

    def block_concat(self, t: _T) -> tuple[_T, str] | None:
        c1 = self.randint(1, max(1, MAX_CHANNELS // 2))
        c2 = self.randint(1, max(1, MAX_CHANNELS - c1))
        a = self.activation(self.same_conv(t, c1, depthwise=False))
        if self.coin(0.3) and t.c + c1 <= MAX_CHANNELS:
            b = t
        else:
            b = self.conv(t, c2, kernel=self.randint(1, 7), depthwise=False)
            if b is None:
                return None
            b = self.activation(b)
        a, b = self.match(a, b)
        out = self.op("Concat", [a.name, b.name], axis=a.ch_axis if self.coin() else a.ch_axis - 3)
        return _T(out, a.c + b.c, a.length, a.form), "concat"

    def block_gate(self, t: _T) -> tuple[_T, str]:
        c = self.randint(2, MAX_CHANNELS // 2)
        if self.coin(0.35):
            # GLU: one conv to 2c channels, Split over the channels, a * sigmoid(b)
            h = self.same_conv(t, 2 * c, depthwise=False)
            if self.coin(0.5):
                h = self.to_form(h, self.keras_form())
            a, g = self.fresh("glu_a"), self.fresh("glu_b")
            if self.opset >= 18:
                attrs = {"num_outputs": 2}
                inputs = [h.name]
            else:
                attrs = {}
                inputs = [h.name, self.ints([c, c], "split")]
            self.nodes.append(helper.make_node("Split", inputs, [a, g], name=self.fresh("Split"),
                                               axis=h.ch_axis, **attrs))
            out = self.op("Mul", [a, self.op("Sigmoid", [g])])
            return _T(out, c, h.length, h.form), "glu"
        a = self.activation(self.same_conv(t, c, depthwise=False), self.pick(["Tanh", "Relu", "Elu"]))
        g = self.activation(self.same_conv(t, c, depthwise=False), "Sigmoid")
        a, g = self.match(a, g)
        op = self.pick(["Mul", "Mul", "Max", "Min", "Sub", "Div"])
        if op == "Div":
            g = _T(self.op("Add", [g.name, self.const(0.5, "half")]), g.c, g.length, g.form)
        return _T(self.op(op, [a.name, g.name]), c, a.length, a.form), f"gate({op.lower()})"

    def block_crop(self, t: _T) -> tuple[_T, str] | None:
        if t.length <= MIN_LENGTH + 1:
            return None
        if self.coin(0.25) and t.length >= 2 * MIN_LENGTH + 2:
            # a strided Slice (step 2), bounds sometimes negative or past the end
            start = self.randint(0, 3)
            end = t.length - self.randint(0, 3)
            length = -(-(end - start) // 2)
            if length < MIN_LENGTH:
                return None
            start_value = start - t.length if self.coin(0.3) else start
            end_value = (2**31 - 1) if end == t.length and self.coin(0.5) else end
            inputs = [t.name, self.ints([start_value], "starts"), self.ints([end_value], "ends"),
                      self.ints([t.len_axis], "axes"), self.ints([2], "steps")]
            return _T(self.op("Slice", inputs), t.c, length, t.form), "crop(step2)"
        cut = self.randint(1, min(8, t.length - MIN_LENGTH))
        return self.crop(t, t.length - cut), "crop"

    def block_pad(self, t: _T) -> tuple[_T, str]:
        t = self.to_form(t, self.keras_form()) if self.coin(0.6) else t
        pb, pe = self.randint(0, 4), self.randint(0, 4)
        if pb + pe == 0:
            pb = 1
        if self.coin(0.2) and t.length > MIN_LENGTH + 4:
            pb, pe = self.pick([(-1, 2), (2, -2), (-2, -1), (0, -3)])  # negative pads crop
        value = 0.0 if self.coin(0.7) else float(self.pick([0.5, -1.0]))
        # (opset 18's ``axes`` input is not drawn: ONNX Runtime 1.2x's transpose optimizer
        # rewrites Transpose → Pad(axes) into an out-of-range Gather)
        begin, end = [0, 0, 0], [0, 0, 0]
        begin[t.len_axis], end[t.len_axis] = pb, pe
        inputs = [t.name, self.ints(begin + end, "pads")]
        if value != 0.0 or self.coin(0.3):
            inputs.append(self.const(value, "pad_value"))
        return _T(self.op("Pad", inputs, mode="constant"), t.c, t.length + pb + pe, t.form), "pad"

    def block_posbias(self, t: _T) -> tuple[_T, str]:
        """A per-position constant (a positional embedding) added or multiplied."""
        shape = [t.c, t.length] if t.form == CF else [t.length, t.c]
        if self.coin(0.3):
            shape = [1, t.length] if t.form == CF else [t.length, 1]
        value = 0.3 * self.rng.standard_normal(shape)
        op = self.pick(["Add", "Mul", "Sub", "Where"])
        if op == "Where":  # zero out a stretch of positions (a padding mask)
            keep = np.ones([1, t.length] if t.form == CF else [t.length, 1], dtype=bool)
            a = self.randint(0, t.length - 1)
            stretch = slice(a, a + self.randint(1, 5))
            if t.form == CF:
                keep[:, stretch] = False
            else:
                keep[stretch, :] = False
            fill = self.const(float(self.pick([0.0, -1.0])), "fill")
            mask = self.const(keep, "keep", np.bool_)
            return _T(self.op("Where", [mask, t.name, fill]), t.c, t.length, t.form), "mask"
        if op == "Mul":
            value = 1.0 + value
        inputs = [t.name, self.const(value, "pos")]
        if self.coin(0.5):
            inputs.reverse()
        return _T(self.op(op, inputs), t.c, t.length, t.form), f"pos{op.lower()}"

    def block_arith(self, t: _T) -> tuple[_T, str]:
        """Scalar arithmetic: x*a, x/a, a-x, x+per-channel bias."""
        kind = self.pick(["Mul", "Div", "Sub", "Add"])
        if kind == "Add":
            value = 0.2 * self.rng.standard_normal([t.c, 1] if t.form == CF else [t.c])
            inputs = [t.name, self.const(value, "chan_bias")]
        else:
            inputs = [t.name, self.const(float(self.pick([0.5, 1.5, -2.0])), "scalar")]
            if kind == "Sub":
                inputs.reverse()
        return _T(self.op(kind, inputs), t.c, t.length, t.form), kind.lower()

    def block_channel_norm(self, t: _T) -> tuple[_T, str]:
        """LayerNormalization or Softmax over the channels (local ops)."""
        t = self.to_form(t, CL) if self.coin(0.7) else t
        if self.opset >= 17 and t.form == CL and self.coin(0.6):
            scale = self.const(1.0 + 0.1 * self.rng.standard_normal(t.c), "ln_scale")
            bias = self.const(0.1 * self.rng.standard_normal(t.c), "ln_bias")
            return _T(self.op("LayerNormalization", [t.name, scale, bias], axis=-1, epsilon=1e-5),
                      t.c, t.length, t.form), "layernorm"
        return _T(self.op("Softmax", [t.name], axis=t.ch_axis), t.c, t.length, t.form), "chan_softmax"

    def block_chan_gate(self, t: _T) -> tuple[_T, str]:
        """Spatial attention: x * sigmoid(ReduceMean/Max over channels, keepdims)."""
        kind = self.pick(["ReduceMean", "ReduceMax"])
        g = self.op("Sigmoid", [self.reduce(kind, t.name, [t.ch_axis], keepdims=1)])
        return _T(self.op("Mul", [t.name, g]), t.c, t.length, t.form), "chan_gate"

    def block_se(self, t: _T) -> tuple[_T, str]:
        """Squeeze-and-excitation: mixes positions, so the local region ends here."""
        pooled = self.reduce("ReduceMean", t.name, [t.len_axis], keepdims=0)
        hidden = max(1, t.c // 2)
        h = self.op("Relu", [self.gemm(pooled, t.c, hidden, gain=2.0)])
        s = self.op("Sigmoid", [self.gemm(h, hidden, t.c)])
        s = self.unsqueeze(s, [t.len_axis])
        return _T(self.op("Mul", [t.name, s]), t.c, t.length, t.form), "se"

    def block_matmul(self, t: _T) -> tuple[_T, str]:
        t = self.to_form(t, CL)
        c = self.randint(2, MAX_CHANNELS)
        h = self.op("MatMul", [t.name, self.const(self.weight([t.c, c], t.c), "mm_W")])
        if self.coin(0.7):
            h = self.op("Add", [h, self.const(0.1 * self.rng.standard_normal(c), "mm_B")])
        out = _T(h, c, t.length, CL)
        if self.coin(0.6):
            out = self.activation(out)
        return out, "matmul"

    # -- heads ------------------------------------------------------------------------
    def gemm(self, x: str, n_in: int, n_out: int, *, gain: float = 1.0) -> str:
        if self.coin(0.6):
            w = self.const(self.weight([n_out, n_in], n_in, gain), "gemm_W")
            inputs = [x, w]
            if self.coin(0.8):
                inputs.append(self.const(0.1 * self.rng.standard_normal(n_out), "gemm_B"))
            return self.op("Gemm", inputs, transB=1)
        h = self.op("MatMul", [x, self.const(self.weight([n_in, n_out], n_in, gain), "dense_W")])
        return self.op("Add", [h, self.const(0.1 * self.rng.standard_normal(n_out), "dense_B")])

    def dense_stack(self, x: str, n_in: int) -> tuple[str, str]:
        n_out = self.randint(1, 4)
        if self.coin(0.35):
            hidden = self.randint(2, 8)
            h = self.op("Relu", [self.gemm(x, n_in, hidden, gain=2.0)])
            return self.gemm(h, hidden, n_out), "2x"
        return self.gemm(x, n_in, n_out), ""

    def head_profile(self, t: _T) -> tuple[str, str]:
        variant = self.rng.random()
        if variant < 0.2:  # BPNet-like (N, L) profile: a 1-channel conv, squeezed
            h = self.to_layout_form(self.conv(t, 1, kernel=self.randint(1, 5), depthwise=False, same=True, gain=1.0))
            return self.squeeze(h.name, [h.ch_axis]), "profile(N,L)"
        if variant < 0.3:  # one channel picked with Gather
            idx = self.const(self.randint(0, t.c - 1), "channel", np.int64)
            return self.op("Gather", [t.name, idx], axis=t.ch_axis), "profile(gather)"
        if variant < 0.4:
            return self.reduce("ReduceSum", t.name, [t.ch_axis], keepdims=0), "profile(chansum)"
        if self.coin(0.5):
            t = self.conv(t, self.randint(1, 3), kernel=1, depthwise=False, gain=1.0)
            note = "profile(1x1)"
        else:
            note = "profile"
        return self.to_layout_form(t).name, note

    def head_dense(self, t: _T) -> tuple[str, str]:
        if self.coin(0.2):  # Flatten of a 1-channel track stays local: (N, 1, L) → (N, L)
            t = self.conv(t, 1, kernel=1, depthwise=False, gain=1.0)
        t = self.to_layout_form(t)
        if self.coin(0.5):
            flat = self.op("Flatten", [t.name], axis=1)
            how = "flatten"
        else:
            batch = self.op("Gather", [self.op("Shape", [t.name]), self.const(0, "zero", np.int64)], axis=0)
            target = self.op("Concat", [self.unsqueeze(batch, [0]), self.ints([-1], "minus_one")], axis=0)
            flat = self.op("Reshape", [t.name, target])
            how = "reshape"
        out, note = self.dense_stack(flat, t.c * t.length)
        return out, f"dense({how}{',' + note if note else ''})"

    def head_global(self, t: _T) -> tuple[str, str]:
        kind = self.pick(["GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax"])
        if kind == "GlobalAveragePool":
            t = self.to_form(t, CF)
            pooled = self.op("Flatten", [self.op("GlobalAveragePool", [t.name])], axis=1)
        else:
            pooled = self.reduce(kind, t.name, [t.len_axis], keepdims=0)
            if kind == "ReduceSum":
                pooled = self.op("Mul", [pooled, self.const(1.0 / t.length, "inv_len")])
        if self.coin(0.6):
            pooled, note = self.dense_stack(pooled, t.c)
            return pooled, f"global({kind}{',gemm' + note})"
        return pooled, f"global({kind})"

    def head_input_global(self, t: _T) -> tuple[str, str]:
        """A head on the one-hot input itself (e.g. base composition) plus the trunk."""
        x = _T(INPUT_NAME, self.alphabet_size, self.seq_len, CF if self.layout == "ncl" else CL)
        comp = self.reduce("ReduceMean", x.name, [x.len_axis], keepdims=0)
        pooled = self.reduce("ReduceMean", t.name, [t.len_axis], keepdims=0)
        both = self.op("Concat", [comp, pooled], axis=1)
        return self.gemm(both, x.c + t.c, self.randint(1, 3)), "input_global"

    def head_multi_scale(self, t: _T, trunk: Sequence[_T]) -> tuple[str, str]:
        """Global pools of two trunk depths, concatenated, then a dense layer."""
        other = trunk[int(self.rng.integers(len(trunk)))]
        parts = [self.reduce(self.pick(["ReduceMean", "ReduceMax"]), u.name, [u.len_axis], keepdims=0)
                 for u in (other, t)]
        return self.gemm(self.op("Concat", parts, axis=1), other.c + t.c, self.randint(1, 3)), "multi_scale"

    def head_length_matmul(self, t: _T) -> tuple[str, str]:
        """A constant matrix over the length: MatMul(W[L2, L], x[N, L, C]) (position mixing)."""
        t = self.to_form(t, CL)
        l2 = self.randint(1, 6)
        w = self.const(self.weight([l2, t.length], t.length, 1.0), "len_W")
        h = self.op("MatMul", [w, t.name])
        if self.coin():
            return self.to_layout_form(_T(h, t.c, l2, CL)).name, "length_matmul(profile)"
        return self.gemm(self.op("Flatten", [h], axis=1), l2 * t.c, self.randint(1, 3)), "length_matmul(dense)"

    def head_nonlocal(self, t: _T) -> tuple[str, str]:
        kind = self.pick(["softmax", "softmax_pool", "attention", "reflect_conv", "gmp"])
        if kind == "softmax":
            s = self.op("Softmax", [t.name], axis=t.len_axis if self.coin() else t.len_axis - 3)
            return self.to_layout_form(_T(s, t.c, t.length, t.form)).name, "softmax"
        if kind == "softmax_pool":
            logits = self.same_conv(t, t.c, kernel=1, depthwise=False, gain=1.0)
            logits = self.to_form(logits, t.form)
            w = self.op("Softmax", [logits.name], axis=t.len_axis)
            pooled = self.reduce("ReduceSum", self.op("Mul", [t.name, w]), [t.len_axis], keepdims=0)
            return pooled, "softmax_pool"
        if kind == "attention":
            t = self.to_form(t, CL)
            dk = self.randint(2, 4)
            q, k, v = (self.op("MatMul", [t.name, self.const(self.weight([t.c, dk], t.c, 1.0), n)])
                       for n in ("Wq", "Wk", "Wv"))
            scores = self.op("MatMul", [q, self.op("Transpose", [k], perm=[0, 2, 1])])
            scores = self.op("Mul", [scores, self.const(1.0 / np.sqrt(dk), "inv_sqrt_dk")])
            o = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
            if self.coin():
                return self.to_layout_form(_T(o, dk, t.length, CL)).name, "attention(profile)"
            pooled = self.reduce("ReduceMean", o, [1], keepdims=0)
            return self.gemm(pooled, dk, self.randint(1, 3)), "attention(pool)"
        if kind == "reflect_conv":
            t = self.to_form(t, CF)
            p = self.randint(1, min(3, t.length - 1))
            rank_pads = [0, 0, p, 0, 0, p]
            padded = _T(self.op("Pad", [t.name, self.ints(rank_pads, "pads")], mode="reflect"), t.c, t.length + 2 * p, CF)
            h = self.conv(padded, self.randint(1, 4), kernel=2 * p + 1, depthwise=False, same=False)
            if h is None:
                h = self.same_conv(padded, 2, kernel=1, depthwise=False)
            if self.coin():
                return self.to_layout_form(h).name, "reflect_conv(profile)"
            h = self.to_form(h, CF)
            return self.op("Flatten", [self.op("GlobalAveragePool", [h.name])], axis=1), "reflect_conv(gap)"
        t = self.to_form(t, CF)
        pooled = self.op("Flatten", [self.op("GlobalMaxPool", [t.name])], axis=1)
        return self.gemm(pooled, t.c, self.randint(1, 3)), "gmp"


BLOCKS = ("conv", "conv", "conv", "conv", "pool", "pool", "residual", "residual_pool", "concat", "gate", "crop",
          "pad", "matmul", "posbias", "arith", "channel_norm", "chan_gate", "se")
FIRST_BLOCKS = ("residual", "concat", "gate", "crop", "pad", "matmul", "posbias", "pool")
HEADS = ("profile", "dense", "global", "nonlocal", "profile", "dense", "global", "nonlocal",
         "input_global", "multi_scale", "length_matmul")


def random_model(
    rng_or_seed: int | np.random.Generator,
    *,
    validate: bool = True,
) -> tuple[onnx.ModelProto, ModelInfo]:
    """A random sequence model and what it is.

    Parameters
    ----------
    rng_or_seed: an ``int`` seed or a ``numpy.random.Generator``.
    validate: run ``onnx.checker`` (full check) and ONNX Runtime on a batch of 2 before
        returning; a failure raises :class:`GeneratorError`.

    Returns
    -------
    (model, info): a float32 ``onnx.ModelProto`` with input ``"x"`` of shape
    ``("batch", 4, L)`` (ncl) or ``("batch", L, 4)`` (nlc) and 1–3 outputs ``out0``...,
    and its :class:`ModelInfo`.
    """
    seed = int(rng_or_seed) if isinstance(rng_or_seed, (int, np.integer)) else None
    rng = np.random.default_rng(seed) if seed is not None else rng_or_seed
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng_or_seed must be an int or a numpy Generator, got {type(rng_or_seed).__name__}")
    layout = "ncl" if rng.random() < 0.5 else "nlc"
    seq_len = int(rng.integers(16, 121))
    opset = int(OPSETS[int(rng.integers(len(OPSETS)))])
    alphabet_size = ALPHABET_SIZE
    if rng.random() < 0.08:  # protein, kept short
        alphabet_size, seq_len = 20, min(seq_len, 48)
    if seq_len == 20:  # L = 20 makes the layout ambiguous (20 is the protein alphabet size)
        seq_len = 21
    b = _Builder(rng, layout, seq_len, opset, alphabet_size)
    dims = ["batch", alphabet_size, seq_len] if layout == "ncl" else ["batch", seq_len, alphabet_size]
    graph_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, dims)

    t = _T(INPUT_NAME, alphabet_size, seq_len, CF if layout == "ncl" else CL)
    blocks: list[str] = []
    if rng.random() < 0.15:  # an unusual op straight on the one-hot input
        made = getattr(b, f"block_{b.pick(FIRST_BLOCKS)}")(t)
        if made is not None:
            t, note = made
            blocks.append(note)
    t, first = b.block_conv(t)
    blocks.append(first)
    trunk = [t]
    for _ in range(int(rng.integers(0, 5 if rng.random() < 0.8 else 8))):
        kind = b.pick(BLOCKS)
        made = getattr(b, f"block_{kind}")(t)
        if made is None:
            continue
        t, note = made
        blocks.append(note)
        trunk.append(t)

    n_heads = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    heads: list[str] = []
    positional: list[str] = []
    names: list[str] = []
    pending: dict[str, str] = {}
    for h in range(n_heads):
        kind = b.pick(HEADS)
        source = t
        if h > 0 and len(trunk) > 1 and b.coin(0.3):
            source = trunk[int(rng.integers(len(trunk) - 1))]  # a head from inside the trunk
        out, note = getattr(b, f"head_{kind}")(source, trunk) if kind == "multi_scale" else \
            getattr(b, f"head_{kind}")(source)
        if source is not t:
            note += "@mid"
        name = f"out{h}"
        if out in pending.values() or b.coin(0.1):
            out = b.op("Identity", [out])
        pending[name] = out
        names.append(name)
        heads.append(note)
        if kind == "profile":
            positional.append(name)
    for name, out in pending.items():  # renamed last: trunk tensors stay valid until here
        b.mark_output(out, name)
    model = _finish(b, graph_input, seed)
    window = None
    if rng.random() < 0.5:
        start = int(rng.integers(0, seq_len - 1))
        end = int(rng.integers(start + 1, seq_len + 1))
        window = (start, end)
    reduce = {}
    for name in names:
        options = ["none", "l2", "raw"] + (["sum"] if name in positional else [])
        reduce[name] = options[int(rng.integers(len(options)))]
    description = (
        f"{layout} L={seq_len} A={alphabet_size} opset{opset} | " + " > ".join(blocks) + " | heads: " + ", ".join(heads)
    )
    info = ModelInfo(
        seed=seed,
        description=description,
        layout=layout,
        seq_len=seq_len,
        alphabet_size=alphabet_size,
        opset=opset,
        outputs=tuple(names),
        positional_outputs=tuple(positional),
        blocks=tuple(blocks),
        heads=tuple(heads),
        suggested={"window": window, "reduce": reduce},
    )
    model.doc_string = description
    if validate:
        check_model_runs(model, info)
    return model, info


def _finish(b: _Builder, graph_input: onnx.ValueInfoProto, seed: int | None) -> onnx.ModelProto:
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in b.outputs]
    graph = helper.make_graph(b.nodes, f"random_{seed}", [graph_input], outputs, b.inits)
    opsets = [helper.make_opsetid("", b.opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="yuzu_onnx.testing.random_models")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise GeneratorError(f"shape inference fails on random model {seed}: {exc}") from exc
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if missing:
        # shape inference cannot follow ``Reshape(x, [Shape(x)[0], -1])`` with a symbolic
        # batch; the runtime can
        x = random_batch(2, b.seq_len, layout=b.layout, rng=np.random.default_rng(0), n_unknown=0,
                         alphabet_size=b.alphabet_size)
        values = dict(zip((o.name for o in model.graph.output), _run_onnxruntime(model, x)))
        for out in missing:
            shape = ["batch", *values[out.name].shape[1:]]
            out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, shape))
    return model


def random_batch(
    n: int, seq_len: int, *, layout: str, rng: np.random.Generator, n_unknown: int = 3,
    alphabet_size: int = ALPHABET_SIZE,
) -> np.ndarray:
    """``n`` one-hot sequences; the first has ``n_unknown`` all-zero (N) columns."""
    return random_one_hot(n, seq_len, alphabet_size=alphabet_size, layout=layout, rng=rng, n_unknown=n_unknown,
                          unknown_in="first")


def check_model_runs(model: onnx.ModelProto, info: ModelInfo) -> None:
    """``onnx.checker`` (full) and one ONNX Runtime run; raises :class:`GeneratorError`."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise GeneratorError(f"onnx.checker rejects random model {info.seed}: {exc}") from exc
    x = random_batch(2, info.seq_len, layout=info.layout, rng=np.random.default_rng(0), n_unknown=0,
                     alphabet_size=info.alphabet_size)
    try:
        outs = _run_onnxruntime(model, x)
    except Exception as exc:
        raise GeneratorError(f"ONNX Runtime cannot run random model {info.seed}: {exc}") from exc
    names = [o.name for o in model.graph.output]
    declared = {o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
                for o in model.graph.output}
    for name, value in zip(names, outs):
        want = declared[name]
        if len(want) != value.ndim or any(w is not None and w != v for w, v in zip(want[1:], value.shape[1:])):
            raise GeneratorError(f"random model {info.seed}: output {name} has shape {value.shape}, "
                                 f"shape inference says {want}")
        if not np.all(np.isfinite(value)):
            raise GeneratorError(f"random model {info.seed}: output {name} is not finite")
        if value.shape[0] != 2:
            raise GeneratorError(f"random model {info.seed}: output {name} does not keep the batch")


def _run_onnxruntime(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run([o.name for o in model.graph.output], {INPUT_NAME: x})


def _sliding_length(length: int, span: int, stride: int, pad_attrs: dict, ceil_mode: int) -> int | None:
    """Output length of a sliding op along the sequence (``None`` if empty)."""
    if "auto_pad" in pad_attrs:
        mode = pad_attrs["auto_pad"]
        if mode == "VALID":
            out = (length - span) // stride + 1 if length >= span else 0
        else:
            out = -(-length // stride)
    else:
        pb, pe = pad_attrs["pads"]
        total = length + pb + pe - span
        if total < 0:
            return None
        out = (-(-total // stride) if ceil_mode else total // stride) + 1
    return out if out > 0 else None


def _ceil_is_ambiguous(length: int, kernel: int, stride: int, pads: Sequence[int]) -> bool:
    """``ceil_mode`` cases where runtimes disagree (the last window starts in the padding)."""
    total = length + pads[0] + pads[1] - kernel
    if total < 0:
        return True
    out = -(-total // stride) + 1
    return (out - 1) * stride >= length + pads[0] or total % stride != 0 and pads[1] > 0

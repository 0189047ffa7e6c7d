"""Softplus on probes and in the materialised tail as ``Relu(x) - Log(Sigmoid(|x|))``.

ONNX Runtime's CPU ``Softplus`` kernel takes ~70 ns per element (≈45 times ``Relu``);
on the heads of long-context models (Enformer's 5313 + 1643 tracks, Borzoi's 7611, run on
every mutant) it was a quarter of the converted model's time. The stable form above
(``softplus(x) = max(x, 0) + softplus(-|x|)`` and ``softplus(-y) = -log(sigmoid(y))``, where
``sigmoid(|x|)`` lies in [0.5, 1] so the logarithm never sees 0) is five vectorised passes
(it was seven as ``Relu(x) + Log(1 + Exp(-|x|))``) and agrees to float32 rounding (absolute
error ≲ 1e-7 of the output, far below the 1e-5-of-scale exactness tolerance).
Probe stages use it too (a Softplus head in the local region, e.g. Basenji2's, runs on every
probe); positions a mutation cannot reach take the reference's values in the decode, so
they stay exactly 0.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..ops import STANDARD_DOMAINS, op_spec
from .builder import GraphBuilder


def is_softplus(node: onnx.NodeProto, dtype: np.dtype | None = None) -> bool:
    """A standard-domain node whose op table entry asks for the stable Softplus form, on
    float32 values (``dtype``: its output's measured element type; ``None``: unmeasured,
    taken as float32) — the form's constants are float32."""
    float32 = dtype is None or np.dtype(dtype) == np.float32
    return float32 and node.domain in STANDARD_DOMAINS and op_spec(node.op_type).tail_form == "stable_softplus"


def emit_softplus(b: GraphBuilder, x: str, out: str) -> None:
    """Write ``out = Relu(x) - Log(Sigmoid(|x|))`` (float32 ``x``) into ``b``."""
    log_term = b.op("Log", [b.op("Sigmoid", [b.op("Abs", [x], hint="softplus")], hint="softplus")], hint="softplus")
    relu = b.op("Relu", [x], hint="softplus")
    b.nodes.append(onnx.helper.make_node("Sub", [relu, log_term], [out], name=out))

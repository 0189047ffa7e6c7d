"""The op table: one entry per ONNX op type with everything the engine knows about it.

Each op family has its module here (``elementwise``, ``broadcasting``, ``sliding_window``
(Conv and pooling), ``normalisation``, ``layout``, ``slicing`` (Slice, Pad), ``matmul``,
``gather`` (Gather, Split), ``reduction``, ``expand``, ``meta`` (Shape, Size),
``recurrent``), which defines its rules as small pure functions and registers one
:class:`OpSpec` per op type with :func:`~yuzu_onnx.ops.registry.register`. The engine reads
the table only: the region analysis (``locality``, ``takes_shape_inputs``, ``meta``),
the planner (``flops``), stage cropping (``required_spans``, ``crop``), the first-
convolution shortcut and wide convolutions (``convolution``, ``rearranges``),
Gaussian probes (``gaussian_linear``), the linear heads of the tail decoded from window
sums (``window_sum``, ``flattens``, ``dense_weight``) and the graph builder's emitted
reductions (``axes_input_since``).

Adding an op
------------
1. Add its entry to the module of its family (or a new module imported below):
   ``register("MyOp", locality=..., required_spans=..., ...)``. Every field but
   ``op_type`` has a default: no locality rule (the op ends the region), elementwise
   FLOPs, no cropping (a stage holding it is computed on the full length), no flags.
2. Add its case to the op test ``tests/test_ops.py``, which checks every op in
   :func:`supported_ops` against brute force; ``tests/test_op_table.py`` checks the
   table's invariants.

Nothing else changes: no other module lists op types.

This package is the lowest layer: it imports ``onnx``, ``numpy`` and the pure value
:class:`~yuzu_onnx.analysis.positional.PositionalMap`, never the analysis, plan or emit
stages.
"""

from . import (  # noqa: F401  (each family registers its entries on import)
    broadcasting,
    elementwise,
    expand,
    gather,
    layout,
    matmul,
    meta,
    normalisation,
    recurrent,
    reduction,
    slicing,
    sliding_window,
)
from .registry import (
    OPS,
    STANDARD_DOMAINS,
    CropContext,
    CropEdit,
    NotLocal,
    OpSpec,
    RuleContext,
    Span,
    UnsupportedOpError,
    WindowSum,
    flops_of,
    is_meta,
    locality_rule,
    node_attributes,
    op_spec,
    supported_ops,
)

__all__ = [
    "OPS",
    "STANDARD_DOMAINS",
    "CropContext",
    "CropEdit",
    "NotLocal",
    "OpSpec",
    "RuleContext",
    "Span",
    "UnsupportedOpError",
    "WindowSum",
    "flops_of",
    "is_meta",
    "locality_rule",
    "node_attributes",
    "op_spec",
    "supported_ops",
]

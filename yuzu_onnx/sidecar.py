"""The JSON sidecar of a converted model, ``ISM.onnx.json``, which the browser host reads.

It repeats what a host needs before it loads the model: the input's name, layout,
alphabet and length, the model's other inputs (``extra_inputs``: name → per-sequence
shape and dtype; a host passes them with the batch first, the same rows as the
sequences), the mutated window, and per ISM output its reduction and shape, and the output
targets it was converted with (``targets``: the ``--select``/``--aggregate`` records, in
the order they apply; absent without targets).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from .atomic import write_json


def graph_output_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Output name → declared dims (``None`` for a symbolic or unknown dim)."""
    shapes = {}
    for o in model.graph.output:
        dims = []
        for d in o.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else None)
        shapes[o.name] = dims
    return shapes


def sidecar_document(conv) -> dict:
    """The sidecar of a :class:`yuzu_onnx.convert.Conversion`, as a JSON-ready dict."""
    shapes = graph_output_shapes(conv.model)
    return {
        "input": conv.spec.input_name,
        "extra_inputs": {e.name: e.to_json() for e in conv.spec.extra_inputs},
        "layout": conv.spec.layout,
        "alphabet": conv.spec.alphabet,
        "seq_len": conv.spec.seq_len,
        "window": list(conv.plan.window),
        "outputs": {o: {"reduce": conv.reductions[o], "shape": shapes.get(o), **_targets_of(conv, o)}
                    for o in conv.outputs},
    }


def _targets_of(conv, output: str) -> dict:
    """``{"targets": [...]}`` for an output converted with targets (``--select``/``--aggregate``), else ``{}``."""
    target = getattr(conv, "targets", {}).get(output)
    return {"targets": target.to_json()} if target is not None else {}


def save_conversion(conv, out: str | os.PathLike) -> Path:
    """Save the converted model to ``out`` and its sidecar beside it; returns the sidecar path."""
    from .convert import save_model

    out = Path(out)
    save_model(conv.model, out)
    sidecar = out.with_name(out.name + ".json")
    write_json(sidecar, sidecar_document(conv))
    return sidecar

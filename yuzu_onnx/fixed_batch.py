"""Models exported with a fixed batch of 1: make the batch dynamic, or say why not.

Tracing exporters (``torch.onnx.export`` without ``dynamic_axes``, TorchScript exports of
einops code, tf2onnx with a fixed input signature) bake the batch size 1 of the example
input into shape constants. ISM runs batches of mutants, so yuzu-onnx rewrites them:

* a constant ``Reshape`` target whose first entry is 1, on a tensor that depends on the
  inputs, gets ``-1`` there (``0``, copy the input's first dim, when the target already
  has a ``-1``);
* a ``Concat`` (over another axis than the batch) of input-dependent tensors with a
  batch-independent one of leading dim 1 (a learned token, positional features, a
  ``zeros(1, ...)``) gets that one expanded to the batch of an input-dependent sibling.

The rewrite is then checked: the rewritten model on a batch of 3 sequences must give what
the original gives on each of them alone (batch 1), output by output. When it cannot run
or disagrees, :func:`free_fixed_batch` refuses with one line that names the first node at
fault and the export option that fixes the model (``dynamic_axes=`` / ``dynamic_shapes=``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError

#: the batch the rewritten model is checked on (against the sequences one at a time)
CHECK_BATCH = 3
PREFIX = "yuzu_free_batch/"

Feeds = Callable[[int], dict[str, np.ndarray]]


def export_fix(input_name: str) -> str:
    """The re-export advice of every refusal."""
    return (f"re-export the model with a dynamic batch: torch.onnx.export(..., dynamic_axes={{'{input_name}': "
            "{0: 'batch'}}) or, with dynamo=True, dynamic_shapes=...; tf2onnx: an input signature with batch None")


def free_fixed_batch(model: onnx.ModelProto, input_name: str, feeds: Feeds) -> tuple[onnx.ModelProto, list[str]] | None:
    """Rewrite the batch-1 shape constants of ``model`` and check the result.

    Parameters
    ----------
    model: a model that runs on a batch of 1 but not on larger batches.
    input_name: the one-hot input (named in the advice).
    feeds: ``feeds(n)`` gives the inputs of ``n`` sequences (every graph input).

    Returns
    -------
    ``(model, changes)``: the rewritten model and one phrase per rewritten node; ``None``
    when the model does not run on one sequence either (its problem is not the batch).

    Raises
    ------
    ModelError: the rewritten model fails on (or disagrees for) a batch of
        :data:`CHECK_BATCH`; the message names the node and the export fix.
    """
    try:
        singles = _run_all(model, feeds(1))
    except _RunError:
        return None
    rewritten, changes = _rewrite(model, singles)
    _check(model, rewritten, input_name, feeds)
    return rewritten, changes


# --------------------------------------------------------------------------- rewrite


def _batch_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors that depend on a graph input (everything else is a constant of the model)."""
    inits = {t.name for t in model.graph.initializer}
    dependent = {i.name for i in model.graph.input if i.name not in inits}
    for node in model.graph.node:
        if any(name in dependent for name in node.input if name):
            dependent.update(o for o in node.output if o)
    return dependent


def _constant_of(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """An initializer's value (the importer's constant folding has made ``Constant`` nodes
    initializers)."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def _rewrite(model: onnx.ModelProto, singles: Mapping[str, np.ndarray]) -> tuple[onnx.ModelProto, list[str]]:
    model = copy.deepcopy(model)
    graph = model.graph
    dependent = _batch_dependent(model)
    changes: list[str] = []
    nodes: list[onnx.NodeProto] = []
    count = 0

    def fresh(hint: str) -> str:
        nonlocal count
        count += 1
        return f"{PREFIX}{hint}_{count}"

    for node in graph.node:
        label = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[0] in dependent:
            target = _constant_of(model, node.input[1])
            if target is not None and target.ndim == 1 and target.size and int(target[0]) == 1:
                target = target.astype(np.int64).copy()
                target[0] = 0 if (target == -1).any() else -1
                name = fresh("reshape_target")
                graph.initializer.append(numpy_helper.from_array(target, name))
                node.input[1] = name
                changes.append(f"{label}: target {target.tolist()}")
        elif node.op_type == "Concat" and any(n in dependent for n in node.input):
            rank = singles[node.output[0]].ndim if node.output[0] in singles else 0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            axis = axis + rank if axis < 0 else axis
            sibling = next(n for n in node.input if n in dependent)
            for k, name in enumerate(node.input):
                value = singles[name] if name in singles else _constant_of(model, name)
                if name in dependent or value is None or axis == 0 or value.ndim != rank or value.shape[0] != 1:
                    continue
                batch = fresh("batch")
                nodes.append(helper.make_node("Shape", [sibling], [fresh("shape")], name=fresh("Shape")))
                nodes.append(helper.make_node("Gather", [nodes[-1].output[0], _ints(graph, fresh("first"), [0])],
                                              [batch], name=fresh("Gather"), axis=0))
                shape = fresh("expand_shape")
                nodes.append(helper.make_node("Concat", [batch, _ints(graph, fresh("ones"), [1] * (rank - 1))],
                                              [shape], name=fresh("Concat"), axis=0))
                expanded = fresh("expanded")
                nodes.append(helper.make_node("Expand", [name, shape], [expanded], name=fresh("Expand")))
                node.input[k] = expanded
                changes.append(f"{label}: input {name!r} expanded to the batch")
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model, changes


def _ints(graph: onnx.GraphProto, name: str, values: Sequence[int]) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
    return name


# --------------------------------------------------------------------------- check


class _RunError(Exception):
    """ONNX Runtime failed; ``node`` is the node it names (empty when none)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.first_line = text.strip().splitlines()[0] if text.strip() else "it failed"
        match = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
        self.op, self.node = (match.group(1), match.group(2)) if match else ("", "")

    @property
    def node_text(self) -> str:
        return f"node {self.node!r} ({self.op}): " if self.op else ""


def _run_all(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``model`` (that ONNX Runtime can return) on ``feeds``."""
    import onnxruntime as ort

    from .runtime import cpu_session_options

    probe = copy.deepcopy(model)
    present = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in present:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                present.add(out)
    names = [o.name for o in probe.graph.output]
    try:
        session = ort.InferenceSession(probe.SerializeToString(), cpu_session_options(optimize=False, threads=1),
                                       providers=["CPUExecutionProvider"])
        values = session.run(names, dict(feeds))
    except Exception as exc:
        raise _RunError(str(exc)) from None
    return dict(zip(names, values, strict=True))


def _check(original: onnx.ModelProto, rewritten: onnx.ModelProto, input_name: str, feeds: Feeds) -> None:
    """The rewritten model on a batch of :data:`CHECK_BATCH` against the original on each sequence alone."""
    batch = feeds(CHECK_BATCH)
    fix = export_fix(input_name)
    try:
        together = _run_all(rewritten, batch)
    except _RunError as exc:
        raise ModelError(
            f"the model's graph fixes the batch at 1 and fails on a batch of {CHECK_BATCH} sequences even "
            f"after yuzu-onnx made its Reshape/Concat shape constants batch-independent: {exc.node_text}"
            f"{exc.first_line}; {fix}"
        ) from None
    alone = [_run_all(original, {k: v[i : i + 1] for k, v in batch.items()}) for i in range(CHECK_BATCH)]
    outputs = [o.name for o in original.graph.output]
    bad_output = next((name for name in outputs if not _agrees(together[name], [a[name] for a in alone])), None)
    if bad_output is None:
        return
    culprit = None
    for node in original.graph.node:
        if any(o in together and o in alone[0] and not _agrees(together[o], [a[o] for a in alone])
               for o in node.output if o):
            culprit = node
            break
    where = (f"node {culprit.name or culprit.output[0]!r} ({culprit.op_type})" if culprit is not None
             else f"output {bad_output!r}")
    raise ModelError(
        f"the model's graph fixes the batch at 1 and {where} gives different values for a batch of "
        f"{CHECK_BATCH} sequences than for each sequence alone (it mixes or indexes the batch); {fix}"
    )


def _agrees(values: np.ndarray, singles: Sequence[np.ndarray], tolerance: float = 1e-5) -> bool:
    """``values`` (batch of n) equals the n single-sequence values stacked, where comparable."""
    values = np.asarray(values)
    if values.dtype.kind != "f":  # shapes and indices legitimately follow the batch size
        return True
    if any(np.shape(s)[:1] != (1,) for s in singles) or values.shape != (len(singles), *np.shape(singles[0])[1:]):
        # batch-independent tensors must stay the same; other shape patterns are not comparable
        same_shape = all(np.shape(s) == values.shape for s in singles)
        return not same_shape or all(_close(values, s, tolerance) for s in singles)
    return _close(values, np.concatenate(singles), tolerance)


def _close(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        return False
    if a64.size == 0:
        return True
    finite = np.isfinite(a64) & np.isfinite(b64)
    if not np.array_equal(np.isfinite(a64), np.isfinite(b64)):
        return False
    scale = max(float(np.max(np.abs(b64[finite]), initial=0.0)), 1e-30)
    return bool(np.max(np.abs(a64[finite] - b64[finite]), initial=0.0) <= tolerance * scale)

"""The converted-model format: what an ISM model's ``metadata_props`` say about it.

A converted model carries its description as string entries ``yuzu_onnx.<key>`` in
``metadata_props``; :mod:`yuzu_onnx.emit` writes them with :func:`write_converted_info`,
and the session, the CLI and the hosts read them with :func:`read_converted_info`.
The keys, in the order they are written:

==========================  =========================================================
``format``                  :data:`FORMAT`, the version of this schema (``ism/1``)
``version``                 the yuzu-onnx version that wrote the model
``source_sha256``           SHA-256 of the source model
``input``                   name of the one-hot sequence input
``extra_inputs``            only in models with inputs besides the sequence: JSON
                            ``{name: {"shape": [...], "dtype": ...}}``, the graph's other
                            inputs (per-sequence shape without the batch), held fixed for
                            every mutant of a sequence
``layout``                  ``ncl`` or ``nlc``
``alphabet``                letters of the one-hot axis, e.g. ``ACGT``
``seq_len``                 the sequence length ``L``
``window``                  mutated positions ``start:end``
``probes``                  ``spaced``, ``naive`` or ``gaussian``
``outputs``                 JSON ``{output: {"reduce": how, "form": f}}``; ``f`` is
                            ``dense`` or ``banded``, and a banded output adds
                            ``"band": {"axis", "window_axis", "width", "length",
                            "starts"}`` (:class:`yuzu_onnx.bands.Band`); an output
                            with targets (``--select``/``--aggregate``) adds
                            ``"targets": [{"select": {"axis", "indices"}},
                            {"aggregate": {"axis", "start", "end", "how"}}]`` in the
                            order they apply (absent: none; files without it read as
                            before)
``stages``                  JSON list, one object per probe stage (per conv for gaussian)
``first_conv_shortcut``     JSON list of the convolutions run as the shortcut
``tail_chunk``              mutants per chunk of a materialised tail
``window_chunks``           only in streamed models: JSON ``{"width": W, "count": K,
                            "reason": ...}``, the window runs in ``K`` chunks of ``W``
                            mutated positions, one after the other
``peak_bytes_per_sequence`` the memory estimate of one sequence
``fixed_bytes``             memory held once per process (runtime and weights); absent
                            in files written before it existed
``naive_flops``             FLOPs of naive ISM per sequence (``%.6g``)
``rewritten_flops``         FLOPs of the converted model per sequence (``%.6g``)
``fallback``                why the model runs naive ISM (empty: it does not)
``region_stops``            JSON list of the ops that end the local region
``tail``                    ``none``, ``vectors`` or ``materialised``
==========================  =========================================================

A Gaussian-probe model writes ``probes`` and ``stages`` after ``tail``, followed by
``alpha``, ``alpha_mode``, ``pearson_r``, ``seed`` and ``condition_number``
(:class:`GaussianInfo`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .bands import Band
from .errors import InputError, ModelError
from .extra_inputs import ExtraInput, extra_inputs_from_json
from .layout import LAYOUTS, SequenceSpec, layout_of

PREFIX = "yuzu_onnx."
#: the version of the metadata schema; a reader refuses any other
FORMAT = "ism/1"

#: every key of a converted model (without :data:`PREFIX`), in the order it is written
KEYS = (
    "format", "version", "source_sha256", "input", "layout", "alphabet", "seq_len", "window", "probes",
    "outputs", "stages", "first_conv_shortcut", "tail_chunk", "peak_bytes_per_sequence", "naive_flops",
    "rewritten_flops", "fallback", "region_stops", "tail",
)
#: the key a model with inputs besides the sequence adds (after ``input``)
EXTRA_INPUT_KEYS = ("extra_inputs",)
#: the keys of memory planning a model adds when it has them: ``window_chunks`` (a streamed
#: model, after ``tail_chunk``) and ``fixed_bytes`` (after ``peak_bytes_per_sequence``)
MEMORY_KEYS = ("window_chunks", "fixed_bytes")
#: the keys a Gaussian-probe model adds
GAUSSIAN_KEYS = ("alpha", "alpha_mode", "pearson_r", "seed", "condition_number")
#: the keys a model must have to be run
REQUIRED_KEYS = ("format", "input", "layout", "alphabet", "seq_len", "window", "outputs")
TAILS = ("none", "vectors", "materialised")
#: the forms of a converted model's outputs
FORMS = ("dense", "banded")

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_T = TypeVar("_T")


@dataclass(frozen=True)
class GaussianInfo:
    """How a Gaussian-probe model was chosen (see :mod:`yuzu_onnx.emit.gaussian`).

    ``alpha``: the oversampling factor; ``alpha_mode``: ``auto`` (searched) or ``fixed``;
    ``pearson_r``: correlation with naive ISM on the check sequence; ``seed``: seed of the
    sensing matrices; ``condition_number``: the worst per-position least-squares system's.
    """

    alpha: float
    alpha_mode: str
    pearson_r: float
    seed: int
    condition_number: float

    def to_props(self) -> dict[str, str]:
        """The entries this record writes, keys without :data:`PREFIX`."""
        return {
            "alpha": f"{self.alpha:.2f}",
            "alpha_mode": self.alpha_mode,
            "pearson_r": f"{self.pearson_r:.8f}",
            "seed": str(self.seed),
            "condition_number": f"{self.condition_number:.4g}",
        }


@dataclass(frozen=True)
class ConvertedModelInfo:
    """What a converted model's metadata say about it.

    Attributes
    ----------
    input_name: the one-hot sequence input.
    sequence: layout, alphabet and length of the sequences the model reads.
    window: ``(start, end)`` of the mutated positions.
    outputs: ``{output: {"reduce": how}}`` in the model's output order.
    probes: ``spaced``, ``naive`` or ``gaussian``.
    version: the yuzu-onnx version that wrote the model (``None``: not recorded).
    source_sha256: SHA-256 of the source model (empty: not recorded).
    stages: one JSON object per probe stage (per convolution for Gaussian probes).
    first_conv_shortcut: the convolutions run as the first-convolution shortcut.
    tail: what the tail runs on: ``none``, ``vectors`` or ``materialised``.
    tail_chunk: mutants per chunk of a materialised tail.
    peak_bytes_per_sequence: the memory estimate of one sequence.
    fixed_bytes: the memory held once per process (runtime, weights), beside the
        per-sequence estimate.
    window_chunks: a streamed model's ``{"width", "count", "reason"}``; empty otherwise.
    naive_flops, rewritten_flops: FLOPs per sequence of naive ISM and of the model.
    fallback_reason: why the model runs naive ISM, or ``None``.
    region_stops: the ops that end the local region.
    gaussian: the Gaussian-probe record; ``None`` for other probes (and for a Gaussian
        model before its emitter has chosen ``alpha``).
    props: every ``metadata_props`` entry as read (empty for a record built in memory);
        never written back.
    extra_inputs: the graph's inputs besides the sequence (held fixed for every mutant).
    """

    input_name: str
    sequence: SequenceSpec
    window: tuple[int, int]
    outputs: Mapping[str, Mapping[str, Any]]
    probes: str = "spaced"
    version: str | None = None
    source_sha256: str = ""
    stages: tuple[Mapping[str, Any], ...] = ()
    first_conv_shortcut: tuple[str, ...] = ()
    tail: str = "materialised"
    tail_chunk: int = 1
    peak_bytes_per_sequence: int = 0
    fixed_bytes: int = 0
    window_chunks: Mapping[str, Any] = field(default_factory=dict)
    naive_flops: float = 0.0
    rewritten_flops: float = 0.0
    fallback_reason: str | None = None
    region_stops: tuple[str, ...] = ()
    gaussian: GaussianInfo | None = None
    props: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    extra_inputs: tuple[ExtraInput, ...] = ()

    @property
    def layout(self) -> str:
        """``"ncl"`` or ``"nlc"``."""
        return self.sequence.layout

    @property
    def alphabet(self) -> str:
        """The letters of the one-hot axis."""
        return self.sequence.alphabet

    @property
    def seq_len(self) -> int:
        """The sequence length ``L``."""
        return self.sequence.seq_len

    @property
    def alphabet_size(self) -> int:
        """``A``, the size of the one-hot axis."""
        return self.sequence.alphabet_size

    @property
    def forms(self) -> dict[str, str]:
        """``{output: form}``: ``dense`` or ``banded`` (``dense`` when unrecorded)."""
        return {name: entry.get("form", "dense") for name, entry in self.outputs.items()}

    @property
    def targets(self) -> dict[str, list[dict]]:
        """``{output: [target records]}`` of the outputs converted with targets
        (:mod:`yuzu_onnx.targets`); outputs without targets are left out."""
        return {name: list(entry["targets"]) for name, entry in self.outputs.items() if entry.get("targets")}

    @property
    def reductions(self) -> dict[str, str]:
        """``{output: how}``: the reduction of each output (``none`` when unrecorded)."""
        return {name: entry.get("reduce", "none") for name, entry in self.outputs.items()}

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries of this record, prefixed keys, in written order."""
        values = {
            "format": FORMAT,
            "version": self.version or "",
            "source_sha256": self.source_sha256,
            "input": self.input_name,
            **({"extra_inputs": json.dumps({e.name: e.to_json() for e in self.extra_inputs})}
               if self.extra_inputs else {}),
            "layout": self.layout,
            "alphabet": self.alphabet,
            "seq_len": str(self.seq_len),
            "window": f"{self.window[0]}:{self.window[1]}",
            "probes": self.probes,
            "outputs": json.dumps({name: dict(entry) for name, entry in self.outputs.items()}),
            "stages": json.dumps([dict(stage) for stage in self.stages]),
            "first_conv_shortcut": json.dumps(list(self.first_conv_shortcut)),
            "tail_chunk": str(self.tail_chunk),
            **({"window_chunks": json.dumps(dict(self.window_chunks))} if self.window_chunks else {}),
            "peak_bytes_per_sequence": str(int(self.peak_bytes_per_sequence)),
            **({"fixed_bytes": str(int(self.fixed_bytes))} if self.fixed_bytes else {}),
            "naive_flops": f"{self.naive_flops:.6g}",
            "rewritten_flops": f"{self.rewritten_flops:.6g}",
            "fallback": self.fallback_reason or "",
            "region_stops": json.dumps(list(self.region_stops)),
            "tail": self.tail,
        }
        if self.gaussian is not None:  # the Gaussian emitter's entries come last
            values = {k: v for k, v in values.items() if k not in ("probes", "stages")} | {
                "probes": values["probes"], "stages": values["stages"], **self.gaussian.to_props()}
        return {PREFIX + key: value for key, value in values.items()}


def metadata_of(model: onnx.ModelProto) -> dict[str, str]:
    """A model's ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def is_converted(model_or_props: onnx.ModelProto | Mapping[str, str]) -> bool:
    """Whether a model (or its metadata) is a converted yuzu-onnx model."""
    props = model_or_props if isinstance(model_or_props, Mapping) else metadata_of(model_or_props)
    return PREFIX + "format" in props


def write_converted_info(model: onnx.ModelProto, info: ConvertedModelInfo) -> None:
    """Replace ``model``'s ``metadata_props`` by the entries of ``info``."""
    del model.metadata_props[:]
    for key, value in info.to_props().items():
        model.metadata_props.add(key=key, value=value)


def read_converted_info(
    model_or_props: onnx.ModelProto | Mapping[str, str], *, source: str = "model"
) -> ConvertedModelInfo:
    """Read and check the metadata of a converted model.

    Given a ``ModelProto``, the metadata are also checked against its graph (input name
    and shape, output names). ``source`` names the model in messages.

    Raises
    ------
    ModelError: an original (unconverted) model, another format version, or metadata
        that are missing, malformed (the message names the key) or inconsistent with
        the graph.
    """
    model = None if isinstance(model_or_props, Mapping) else model_or_props
    props = dict(model_or_props) if model is None else metadata_of(model)
    if not is_converted(props):
        raise ModelError(
            f"{source} is not a converted yuzu-onnx model (no yuzu_onnx metadata); "
            "convert it first with `yuzu-onnx convert MODEL -o ISM.onnx`"
        )
    if props[PREFIX + "format"] != FORMAT:
        raise ModelError(f"{source} has ISM format {props[PREFIX + 'format']!r}; this version reads {FORMAT!r}")
    fields = _Fields(props, source)
    layout = fields.get("layout", _layout)
    gaussian = None
    if PREFIX + "alpha" in props:  # written once the Gaussian emitter has chosen alpha
        gaussian = GaussianInfo(
            alpha=fields.get("alpha", float),
            alpha_mode=fields.get("alpha_mode", str, "auto"),
            pearson_r=fields.get("pearson_r", float),
            seed=fields.get("seed", int),
            condition_number=fields.get("condition_number", float),
        )
    info = ConvertedModelInfo(
        input_name=fields.get("input", str),
        sequence=SequenceSpec(layout, fields.get("alphabet", str), fields.get("seq_len", int)),
        window=fields.get("window", _window),
        outputs=fields.get("outputs", _outputs),
        probes=fields.get("probes", str, "spaced"),
        version=fields.get("version", str, None),
        source_sha256=fields.get("source_sha256", str, ""),
        stages=tuple(fields.get("stages", _json_list, [])),
        first_conv_shortcut=tuple(str(v) for v in fields.get("first_conv_shortcut", _json_list, [])),
        tail=fields.get("tail", _tail, "materialised"),
        tail_chunk=fields.get("tail_chunk", int, 1),
        peak_bytes_per_sequence=fields.get("peak_bytes_per_sequence", int, 0),
        fixed_bytes=fields.get("fixed_bytes", int, 0),
        window_chunks=fields.get("window_chunks", _json_object, {}),
        naive_flops=fields.get("naive_flops", _float_or_zero, 0.0),
        rewritten_flops=fields.get("rewritten_flops", _float_or_zero, 0.0),
        fallback_reason=fields.get("fallback", str, "") or None,
        region_stops=tuple(str(v) for v in fields.get("region_stops", _json_list, [])),
        gaussian=gaussian,
        props=props,
        extra_inputs=fields.get("extra_inputs", _extra_inputs, ()),
    )
    if model is not None:
        _check_graph(model, info, source)
    if not 0 <= info.window[0] < info.window[1] <= info.seq_len:
        raise ModelError(f"{source}: metadata window {info.window} does not fit length {info.seq_len}; "
                         "convert the model again")
    return info


_MISSING: Any = object()


class _Fields:
    """Typed reads of ``yuzu_onnx.*`` entries; a missing or malformed one names its key."""

    def __init__(self, props: Mapping[str, str], source: str) -> None:
        self.props, self.source = props, source

    def get(self, key: str, parse: Callable[[str], _T], default: _T = _MISSING) -> _T:
        text = self.props.get(PREFIX + key)
        if text is None:
            if default is _MISSING:
                raise ModelError(f"{self.source} has missing or malformed yuzu_onnx metadata (no {PREFIX}{key}); "
                                 "convert the model again")
            return default
        try:
            return parse(text)
        except (TypeError, ValueError, InputError) as exc:
            raise ModelError(f"{self.source} has missing or malformed yuzu_onnx metadata ({PREFIX}{key} = "
                             f"{text[:120]!r}: {exc}); convert the model again") from None


def _layout(text: str) -> str:
    if text not in LAYOUTS:
        raise ValueError("not ncl or nlc")
    return text


def _window(text: str) -> tuple[int, int]:
    start, end = (int(v) for v in text.split(":"))
    return start, end


def _outputs(text: str) -> dict[str, dict[str, Any]]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("not a JSON object of objects")
    for name, entry in value.items():
        form = entry.get("form", "dense")
        if form not in FORMS:
            raise ValueError(f"output {name!r} has form {form!r}, not one of {', '.join(FORMS)}")
        if form == "banded":
            Band.from_json(entry.get("band") or {})
        if "targets" in entry:
            _check_targets(name, entry["targets"])
    return value


#: the fields of each kind of output target record
TARGET_FIELDS = {"select": ("axis", "indices"), "aggregate": ("axis", "start", "end", "how")}


def _check_targets(output: str, records: object) -> None:
    """An output's recorded targets: a list of one-key ``select``/``aggregate`` records."""
    if not isinstance(records, list):
        raise ValueError(f"output {output!r} has targets that are not a list")
    for record in records:
        kind = next(iter(record), None) if isinstance(record, dict) and len(record) == 1 else None
        if kind not in TARGET_FIELDS or not isinstance(record[kind], dict) or \
                any(f not in record[kind] for f in TARGET_FIELDS[kind]):
            raise ValueError(f"output {output!r} has a malformed target {record!r}")


def set_output_fields(model: onnx.ModelProto, fields: Mapping[str, Mapping[str, Any]]) -> None:
    """Add ``fields`` to the ``outputs`` entries of a converted model's metadata, in place
    (e.g. ``{"profile": {"targets": [...]}}``); other entries are left as written."""
    key = PREFIX + "outputs"
    for prop in model.metadata_props:
        if prop.key == key:
            outputs = json.loads(prop.value)
            for name, extra in fields.items():
                outputs[name] = {**outputs[name], **dict(extra)}
            prop.value = json.dumps(outputs)
            return
    raise ModelError("the model has no yuzu_onnx.outputs metadata to add to")


def _extra_inputs(text: str) -> tuple[ExtraInput, ...]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    try:
        return extra_inputs_from_json(value)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an entry lacks {exc}") from None


def _json_list(text: str) -> list:
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError("not a JSON list")
    return value


def _json_object(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _tail(text: str) -> str:
    if text not in TAILS:
        raise ValueError(f"not one of {', '.join(TAILS)}")
    return text


def _float_or_zero(text: str) -> float:
    return float(text or 0)


def _check_graph(model: onnx.ModelProto, info: ConvertedModelInfo, source: str) -> None:
    inputs = {i.name: i for i in model.graph.input}
    if info.input_name not in inputs:
        raise ModelError(f"{source}: metadata names input {info.input_name!r}, which the graph does not have; "
                         "the metadata was edited — convert the model again")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[info.input_name].type.tensor_type.shape.dim]
    expected = layout_of(info.layout).shape(0, info.alphabet_size, info.seq_len)
    if dims[1:] != list(expected[1:]):
        raise ModelError(f"{source}: metadata (layout {info.layout}, alphabet {info.alphabet!r}, length "
                         f"{info.seq_len}) disagrees with the graph's input shape; convert the model again")
    missing = [e.name for e in info.extra_inputs if e.name not in inputs]
    unlisted = [name for name in inputs if name != info.input_name and name not in {e.name for e in info.extra_inputs}
                and name not in {t.name for t in model.graph.initializer}]
    if missing or unlisted:
        raise ModelError(f"{source}: metadata extra inputs {[e.name for e in info.extra_inputs]} differ from the "
                         f"graph's other inputs; convert the model again")
    graph_outputs = {o.name for o in model.graph.output}
    if set(info.outputs) != graph_outputs:
        raise ModelError(f"{source}: metadata outputs {sorted(info.outputs)} differ from the graph's "
                         f"{sorted(graph_outputs)}; convert the model again")

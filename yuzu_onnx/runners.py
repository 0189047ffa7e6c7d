"""Runners: compute ISM for a batch of sequences, whatever does the work.

A :class:`Runner` is what :func:`yuzu_onnx.pipeline.run_to_files` drives:
:class:`ConvertedRunner` runs a converted model (:class:`yuzu_onnx.session.ISMSession`),
:class:`NaiveRunner` the naive oracle (:func:`yuzu_onnx.oracle.naive_ism`) on the original
model, with the converted model's reductions applied in numpy. Both plan their batches
against a memory budget before any work and refuse up front when one sequence (or one
mutant) cannot fit it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from .bands import bands_of
from .errors import InputError, option
from .extra_inputs import ExtraInput, ExtraValues
from .importer import ModelSpec
from .layout import SequenceSpec
from .progress import format_bytes, memory_option
from .reductions import reduce_ism

if TYPE_CHECKING:
    from .targets import OutputTargets


@runtime_checkable
class Runner(Protocol):
    """Computes ISM for batches of sequences (what :func:`~yuzu_onnx.pipeline.run_to_files` needs).

    Attributes
    ----------
    kind: what the runner computes, for messages (``"ISM"``, ``"naive ISM"``).
    output_names: the ISM outputs, in the order of the result.
    layout, alphabet, seq_len: the model's input (``ncl``/``nlc``, letters, length).
    window: ``(start, end)`` of the mutated positions.
    reductions: output name → ``none``/``l2``/``sum``/``raw``.
    source_sha256: SHA-256 of the original model.
    bands: output name → band record (:meth:`yuzu_onnx.bands.Band.to_json`) of each
        banded output; the others are dense.
    targets: output name → the target records (``--select``/``--aggregate``,
        :meth:`yuzu_onnx.targets.OutputTargets.to_json`) its values were computed with;
        outputs without targets are left out.
    extra_inputs: the model's inputs besides the sequence (held fixed for its mutants).
    """

    kind: str
    output_names: list[str]
    layout: str
    alphabet: str
    seq_len: int
    window: tuple[int, int]
    reductions: dict[str, str]
    source_sha256: str
    bands: dict[str, dict]
    targets: dict[str, list[dict]]
    extra_inputs: tuple[ExtraInput, ...]

    @property
    def provider(self) -> str:
        """The execution provider doing the work."""
        ...

    @property
    def sequence_spec(self) -> SequenceSpec:
        """What reading the input sequences needs to know."""
        ...

    def plan_batches(self, batch_size: int | None, max_memory) -> int:
        """Sequences per :meth:`run` call; refuses up front when the budget cannot hold one."""
        ...

    def batch_options(self) -> dict:
        """The batch settings a resumed run must share (recorded in the partial store)."""
        ...

    def run(self, x: np.ndarray, extra: ExtraValues | None = None) -> dict[str, np.ndarray]:
        """ISM of ``x``: shape=(n, A, L) or (n, L, A) → output name → (n, A, Lw, ...) or (n, Lw, A, ...).

        ``extra``: the extra inputs' rows of these sequences, name → shape=(n, ...).
        """
        ...


class ConvertedRunner:
    """ISM with a converted model (:class:`yuzu_onnx.session.ISMSession`)."""

    kind = "ISM"

    def __init__(self, session) -> None:
        self.session = session
        info = session.info
        self.output_names = list(session.output_names)
        self.layout = info.layout
        self.alphabet = info.alphabet
        self.seq_len = info.seq_len
        self.window = tuple(info.window)
        self.reductions = {name: spec.get("reduce", "none") for name, spec in info.outputs.items()}
        self.source_sha256 = info.source_sha256
        self.extra_inputs = info.extra_inputs
        self.peak_bytes_per_sequence = info.peak_bytes_per_sequence
        self.bands = {name: band.to_json() for name, band in bands_of(info).items()}
        self.targets = {name: records for name, records in info.targets.items() if name in self.output_names}

    @property
    def provider(self) -> str:
        return self.session.provider

    @property
    def sequence_spec(self) -> SequenceSpec:
        return SequenceSpec(self.layout, self.alphabet, self.seq_len)

    def plan_batches(self, batch_size: int | None, max_memory) -> int:
        """Sequences per batch; refuses up front when one sequence cannot fit ``max_memory``."""
        from .session import default_memory_budget, parse_memory

        if batch_size is not None and batch_size < 1:
            raise InputError(f"{option('batch_size', batch_size)} is too small; the batch size must be at least 1")
        budget = parse_memory(max_memory) if max_memory is not None else default_memory_budget()
        fitting = self.session.batch_size_for(budget)  # refuses when one sequence does not fit
        self.rows_per_batch = int(batch_size) if batch_size is not None else fitting
        return self.rows_per_batch

    def batch_options(self) -> dict:
        return {"batch_size": self.rows_per_batch}

    def run(self, x: np.ndarray, extra: ExtraValues | None = None) -> dict[str, np.ndarray]:
        values = self.session.run_batch(x, extra)
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values, strict=True)}


class NaiveRunner:
    """Naive ISM (:func:`yuzu_onnx.oracle.naive_ism`) on the original model.

    Parameters
    ----------
    spec: the imported model.
    outputs: output names (default all).
    window: ``(start, end)`` of the mutated positions.
    reductions: output → ``none``/``l2``/``sum``/``raw`` (default ``none``).
    mutant_batch_size: mutants per forward pass (default from ``max_memory``).
    targets: the targets ``spec`` computes (the second value of
        :func:`yuzu_onnx.targets.targeted_spec`: output → :class:`~yuzu_onnx.targets.OutputTargets`,
        or output → its recorded list of target records); recorded in :attr:`targets` for
        the result's metadata. They are not applied here: ``spec`` already ends with them.
    """

    kind = "naive ISM"
    bands: dict[str, dict] = {}  # naive ISM is dense

    def __init__(self, spec: ModelSpec, *, outputs: Sequence[str] | None = None, window=None,
                 reductions: Mapping[str, str] | None = None, mutant_batch_size: int | None = None,
                 max_memory=None, device: str = "auto", threads: int | None = None,
                 targets: Mapping[str, OutputTargets | Sequence[Mapping]] | None = None) -> None:
        from .analysis.region import analyse_region
        from .convert import resolve_outputs, resolve_reductions
        from .plan import parse_window
        from .runtime import make_session

        self.spec = spec
        self.output_names = list(resolve_outputs(spec, outputs))
        self.reductions = resolve_reductions(reductions, self.output_names)
        self.window = parse_window(window, spec.seq_len)
        self.layout, self.alphabet, self.seq_len = spec.layout, spec.alphabet, spec.seq_len
        self.source_sha256 = spec.source_sha256
        self.extra_inputs = spec.extra_inputs
        self.targets = _target_records(targets, self.output_names)
        self.sum_axes: dict[str, int | None] = {}
        if "sum" in self.reductions.values():
            region = analyse_region(spec)
            for name, how in self.reductions.items():
                if how == "sum":
                    m = region.maps.get(name)
                    if m is None:
                        raise InputError(
                            f"{option('reduce', 'sum')} needs a positional output axis, but output {name!r} has none "
                            "(it is computed after the local region); use none or l2"
                        )
                    self.sum_axes[name] = m.axis
        if mutant_batch_size is not None and mutant_batch_size < 1:
            raise InputError(f"{option('batch_size', mutant_batch_size)} is too small; the batch size must be at least 1")
        self.mutant_batch_size = mutant_batch_size
        self.max_memory = max_memory
        self.threads = threads
        self.session = make_session(spec.model, device=device, threads=threads)
        self.providers = self.session.get_providers()

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def sequence_spec(self) -> SequenceSpec:
        return SequenceSpec(self.layout, self.alphabet, self.seq_len)

    #: the most sequences one call of ``naive_ism`` takes (each call opens a session)
    MAX_SEQUENCES_PER_CALL = 64

    def result_bytes_per_sequence(self) -> int:
        """The result arrays one sequence holds during :meth:`run`: ``naive_ism``'s (every
        mutant times the output size, in the result layout) and, for a reduction other than
        ``none``, the reduced copy (counted at full size)."""
        from .oracle import result_bytes_per_sequence

        per_output = {name: result_bytes_per_sequence(self.spec, [name], window=self.window)
                      for name in self.output_names}
        return sum(size * (1 if self.reductions[name] == "none" else 2) for name, size in per_output.items())

    def plan_batches(self, batch_size: int | None, max_memory) -> int:
        """Sequences per call of ``naive_ism`` (``batch_size`` counts mutants here).

        The memory of a call is its result arrays (:meth:`result_bytes_per_sequence` per
        sequence) plus one forward pass of ``batch_size`` mutants
        (:func:`~yuzu_onnx.oracle.bytes_per_sample` each). Without ``batch_size`` the
        results take at most half of the budget and the mutant batch the rest; a call that
        cannot fit even one sequence (and one mutant, or ``batch_size`` mutants) is refused
        up front with the smallest budget that would do.
        """
        from .oracle import bytes_per_sample
        from .session import default_memory_budget, parse_memory

        if batch_size is not None and batch_size < 1:
            raise InputError(f"{option('batch_size', batch_size)} must be at least 1")
        budget = parse_memory(max_memory) if max_memory is not None else default_memory_budget()
        per_mutant = bytes_per_sample(self.spec)
        per_sequence = self.result_bytes_per_sequence()
        mutants = 1 if batch_size is None else int(batch_size)
        need = per_sequence + mutants * per_mutant
        if need > budget:
            batch = ("one mutant's forward pass" if batch_size is None else
                     f"a forward pass of {option('batch_size', mutants)} mutants")
            fix = "" if batch_size is None else f" or lower {option('batch_size')}"
            if batch_size is None or per_sequence + per_mutant > budget:
                fix += f", or narrow {option('window')} or {option('outputs')}"
            raise InputError(
                f"naive ISM of one sequence needs about {format_bytes(need)} of memory: "
                f"{format_bytes(per_sequence)} for its result arrays (every mutant times the output size) "
                f"and {format_bytes(mutants * per_mutant)} for {batch}, but the budget is "
                f"{format_bytes(budget)}; raise {option('max_memory')} to at least {memory_option(need)}{fix}"
            )
        if batch_size is None:
            rows = max(1, min(self.MAX_SEQUENCES_PER_CALL, (budget // 2) // per_sequence))
            mutants = max(1, (budget - rows * per_sequence) // per_mutant)
        else:
            rows = max(1, min(self.MAX_SEQUENCES_PER_CALL, (budget - mutants * per_mutant) // per_sequence))
        # about one mutant batch per call: the sequences whose mutants fill it
        mutants_per_sequence = max(1, (self.spec.alphabet_size - 1) * (self.window[1] - self.window[0]))
        rows = max(1, min(rows, mutants // mutants_per_sequence))
        self.max_memory = budget
        self.mutant_batch_size = int(mutants)
        self.rows_per_batch = int(rows)
        return self.rows_per_batch

    def batch_options(self) -> dict:
        return {"batch_size": self.mutant_batch_size, "sequences_per_call": self.rows_per_batch}

    def run(self, x: np.ndarray, extra: ExtraValues | None = None) -> dict[str, np.ndarray]:
        from .oracle import naive_ism, reference_outputs

        result = naive_ism(self.spec, x, outputs=self.output_names, window=self.window,
                           batch_size=self.mutant_batch_size, providers=self.providers, threads=self.threads,
                           extra=extra)
        refs = None
        if "raw" in self.reductions.values():
            refs = reference_outputs(self.session, x, spec=self.spec, outputs=self.output_names, extra=extra)
        return {
            name: reduce_ism(result[name], self.reductions[name],
                             reference=None if refs is None else refs[name], sum_axis=self.sum_axes.get(name))
            for name in self.output_names
        }


def _target_records(targets: Mapping[str, OutputTargets | Sequence[Mapping]] | None,
                    output_names: Sequence[str]) -> dict[str, list[dict]]:
    """``{output: [target records]}`` of the outputs in ``output_names`` that have targets."""
    records: dict[str, list[dict]] = {}
    for name, target in (targets or {}).items():
        if name not in output_names:
            continue
        found = target.to_json() if hasattr(target, "to_json") else [dict(r) for r in target]
        if found:
            records[name] = found
    return records

"""Which benchmark models exist, and how they are built and exported.

A named model is an architecture of ``tools/torch_models.py`` (seeded PyTorch weights,
needs torch) at a given length; its ONNX export is cached. An ``.onnx`` path is
benchmarked as it is. A model may carry extra conversion options (``convert_options``,
e.g. ``reduce=l2``); ``NAME:VARIANT`` on the command line makes such a variant of a named
model, sharing its export.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import BenchError

BENCH_CACHE_ENV = "YUZU_BENCH_CACHE"
QUICK_LENGTH = 200
QUICK_MODELS = ("toynet", "bpnet4")
# NAME:SUFFIX in --models: a named variant, or convert options KEY=VALUE joined by "+"
VARIANTS: dict[str, dict[str, Any]] = {"l2": {"reduce": "l2"}}
# convert options that the bench sets itself (the length and the window) or that are no JSON
RESERVED_CONVERT_OPTIONS = frozenset({"model", "seq_len", "window", "plan_options"})


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: a ``tools/torch_models.py`` architecture, or an ONNX file.

    ``cache_name`` is the file name of the export in the cache folders; ``window`` limits
    the mutated positions (``(start, end)``), for models where naive ISM over every
    position would take hours. ``options`` are architecture options (``torch_models.build``
    keyword arguments); ``convert_options`` extra :func:`yuzu_onnx.convert.convert_model`
    keyword arguments (e.g. ``{"reduce": "l2"}``) of every conversion of the model.
    ``naive_sample``: by default, time naive ISM on this many positions spread over the
    window and extrapolate (None: every position). ``quick`` overrides ``seq_len``,
    ``window``, ``options``, ``naive_sample`` and ``convert_options`` (merged over the
    model's: targets that fit the shorter outputs) for ``--quick`` (default:
    ``QUICK_LENGTH`` positions, no window).
    """

    name: str
    arch: str | None = None
    seq_len: int | None = None
    window: tuple[int, int] | None = None
    cache_name: str | None = None
    path: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    convert_options: Mapping[str, Any] = field(default_factory=dict)
    naive_sample: int | None = None
    quick: Mapping[str, Any] = field(default_factory=dict)


def central(seq_len: int, width: int) -> tuple[int, int]:
    """The central ``width`` positions of a sequence of ``seq_len``: ``(start, end)``."""
    start = (seq_len - width) // 2
    return start, start + width


def variant(model: BenchModel, name: str, convert_options: Mapping[str, Any], note: str = "") -> BenchModel:
    """``model`` converted with extra ``convert_options`` (merged over its own), named ``name``.

    The variant shares the base model's export (same architecture and cache file).
    """
    options = {**model.convert_options, **convert_options}
    described = ", ".join(f"{k}={v}" for k, v in options.items())
    quick = dict(model.quick)
    if "convert_options" in quick:  # the variant's own options win under --quick too
        quick["convert_options"] = {k: v for k, v in quick["convert_options"].items() if k not in convert_options}
    return replace(model, name=name, convert_options=options, quick=quick,
                   note=note or "; ".join(x for x in (model.note, f"converted with {described}") if x))


MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel("toynet", "toynet", 1000, cache_name="toynet_torchscript.onnx"),
        BenchModel("yuzu_toynet", "yuzu_toynet", 1000, cache_name="yuzu_toynet_torchscript.onnx",
                   note="the Yuzu paper's ToyNet: three 7-wide convs, a 2-channel profile over all positions"),
        BenchModel("basset600", "basset", 600, cache_name="basset_torchscript.onnx"),
        BenchModel("basset1000", "basset", 1000, cache_name="basset1000.onnx"),
        BenchModel("deepsea", "deepsea", 1000, cache_name="deepsea_torchscript.onnx"),
        BenchModel("factorized_basset", "factorized_basset", 600, cache_name="factorized_basset_torchscript.onnx"),
        BenchModel("bpnet4", "bpnet4", 1000, cache_name="bpnet4_torchscript.onnx"),
        BenchModel("bpnet9", "bpnet9", 2114, cache_name="bpnet9_torchscript.onnx",
                   note="profile cropped to the central 1000 positions, plus counts",
                   quick={"options": {"out_len": 100}}),
        BenchModel("spliceai10k", "spliceai10k", 11000, window=(5400, 5600), cache_name="spliceai10k_torchscript.onnx",
                   note="ISM of the 200 central positions only (--window), naive included",
                   quick={"seq_len": 10200, "window": central(10200, 200), "naive_sample": 8}),
        BenchModel("protein_cnn", "protein_cnn", 500, cache_name="protein_cnn_torchscript.onnx",
                   note="20-letter protein alphabet; first convolution 20→128, width 15"),
        BenchModel("enformer_like", "enformer_like", 2048, window=(974, 1074),
                   cache_name="enformer_like_torchscript.onnx",
                   note="conv tower with attention pooling, 2 transformer layers, heads of 5313 and 1643 "
                        "tracks on 32 bins; ISM of the 100 central positions (--window)",
                   quick={"seq_len": 512, "options": {"target_length": 8}, "window": central(512, 100)}),
        BenchModel("bpnet_lite", "bpnet_lite", 2114, cache_name="bpnet_lite_torchscript.onnx",
                   note="bpnet-lite's default BPNet: 64 filters, 8 dilated layers (2..256), 2-strand profile "
                        "on the central 1000 positions, one count; ISM of all 2114 positions",
                   quick={"seq_len": 400, "options": {"out_len": 200}}),
        BenchModel("chrombpnet", "chrombpnet", 2114, window=central(2114, 1000),
                   cache_name="chrombpnet_torchscript.onnx", naive_sample=32,
                   note="ChromBPNet: accessibility BPNet (512 filters, 8 layers) + bias BPNet (128 filters, 4 "
                        "layers), summed profile logits, logsumexp counts; ISM of the central 1000 positions",
                   quick={"seq_len": 400, "options": {"out_len": 200}, "window": central(400, 200),
                          "naive_sample": 16}),
        BenchModel("splice10k", "splice10k", 15000, window=central(15000, 5000),
                   cache_name="splice10k_torchscript.onnx", naive_sample=32,
                   note="SpliceAI-10k at its real input (15,000 → 5,000 × 3 classes); ISM of the 5000 output "
                        "positions",
                   quick={"seq_len": 10400, "window": central(10400, 400), "naive_sample": 8}),
        BenchModel("borzoi_like", "borzoi_like", 16384, window=central(16384, 100),
                   cache_name="borzoi_like_torchscript.onnx", naive_sample=20,
                   note="Borzoi's layers at half width on 16 kb: conv tower to 128 bp, 2 transformer layers, "
                        "U-net back to 32 bp, 7611 tracks on 192 bins; ISM of the 100 central positions",
                   quick={"seq_len": 2048, "options": {"target_length": 24}, "window": central(2048, 100),
                          "naive_sample": 8}),
        BenchModel("basenji2_like", "basenji2_like", 32768, window=central(32768, 100),
                   cache_name="basenji2_like_torchscript.onnx", naive_sample=16,
                   note="Basenji2 on 32 kb: conv tower to 128 bp, 11 dilated residual blocks (1..72), 5313 "
                        "tracks on 224 bins; ISM of the 100 central positions",
                   quick={"seq_len": 4096, "options": {"crop": 4}, "window": central(4096, 100),
                          "naive_sample": 8}),
    )
}
MODELS["borzoi_like_l2"] = variant(MODELS["borzoi_like"], "borzoi_like_l2", VARIANTS["l2"])
MODELS["basenji2_like_l2"] = variant(MODELS["basenji2_like"], "basenji2_like_l2", VARIANTS["l2"])
# the targets users ask for (issue #14): four tracks, ten bins summed, before the ISM difference
# (with --quick: ten central bins of the 24 the reduced lengths give)
MODELS["borzoi_like_targets"] = replace(variant(
    MODELS["borzoi_like"], "borzoi_like_targets",
    {"select": {"human": {1: [0, 1, 2, 3]}}, "aggregate": {"human": {2: (90, 100, "sum")}}}),
    quick={**MODELS["borzoi_like"].quick, "convert_options": {"aggregate": {"human": {2: (7, 17, "sum")}}}})
MODELS["basenji2_like_targets"] = replace(variant(
    MODELS["basenji2_like"], "basenji2_like_targets",
    {"select": {"human": {2: [0, 1, 2, 3]}}, "aggregate": {"human": {1: (107, 117, "sum")}}}),
    quick={**MODELS["basenji2_like"].quick, "convert_options": {"aggregate": {"human": {1: (7, 17, "sum")}}}})


def quick_model(model: BenchModel) -> BenchModel:
    """The same architecture at a reduced length (for smoke tests): ``model.quick`` or ``QUICK_LENGTH``."""
    if model.arch is None:
        return model
    seq_len = int(model.quick.get("seq_len", QUICK_LENGTH))
    window = model.quick.get("window")
    convert_options = {**model.convert_options, **model.quick.get("convert_options", {})}
    described = ", ".join(f"{k}={v}" for k, v in convert_options.items())
    return replace(model, name=f"{model.name}@{seq_len}", seq_len=seq_len,
                   window=tuple(window) if window else None, cache_name=f"{model.arch}_L{seq_len}.onnx",
                   options={**model.options, **model.quick.get("options", {})}, convert_options=convert_options,
                   naive_sample=model.quick.get("naive_sample"), quick={},
                   note="reduced length (--quick)" + (f"; converted with {described}" if described else ""))


def convert_option_names() -> set[str]:
    """The keyword arguments of :func:`yuzu_onnx.convert.convert_model` a bench model may carry."""
    from yuzu_onnx.convert import convert_model

    return set(inspect.signature(convert_model).parameters) - RESERVED_CONVERT_OPTIONS


def parse_convert_options(text: str) -> dict[str, Any]:
    """``"reduce=l2+outputs=human"`` (or a named variant, ``"l2"``) as convert keyword arguments.

    Values are read as JSON when they parse (numbers, ``true``), else kept as strings.
    """
    if text in VARIANTS:
        return dict(VARIANTS[text])
    options: dict[str, Any] = {}
    known = convert_option_names()
    for part in text.split("+"):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise BenchError(f"model variant {text!r}: expected a variant ({', '.join(VARIANTS)}) or "
                             "KEY=VALUE convert options joined by '+'")
        if key not in known:
            raise BenchError(f"model variant {text!r}: {key!r} is no convert option; choose from "
                             f"{', '.join(sorted(known))}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def resolve_models(names: Sequence[str], *, quick: bool = False, window: tuple[int, int] | None = None) -> list[BenchModel]:
    """Bench models from names (see :data:`MODELS`), ``NAME:VARIANT`` (e.g. ``borzoi_like:l2``,
    ``deepsea:reduce=l2``: the model converted with those options) or paths of ``.onnx`` files."""
    models = []
    for name in names:
        if name.endswith(".onnx") or os.sep in name:
            path = Path(name)
            if not path.is_file():
                raise BenchError(f"model file {name!r} does not exist")
            model = BenchModel(path.stem, path=str(path.resolve()))
        else:
            base, colon, suffix = name.partition(":")
            if base not in MODELS:
                raise BenchError(f"unknown model {base!r}; choose from {', '.join(MODELS)} or give an .onnx path")
            model = MODELS[base]
            if colon:
                model = variant(model, name, parse_convert_options(suffix))
            if quick:
                model = quick_model(model)
        if window is not None:
            model = replace(model, window=window)
        models.append(model)
    return models


def naive_sample_for(model: BenchModel, requested: int | None) -> int | None:
    """Positions naive ISM runs on (then extrapolated): ``--naive-sample`` when given (0: every
    position), else the model's default; None for every position."""
    if requested is not None:
        return requested or None
    return model.naive_sample


def oracle_comparison(convert_options: Mapping[str, Any]) -> str | None:
    """How the converted model's outputs compare with naive ISM: ``"none"`` (as they are),
    ``"l2_per_output"`` (``reduce=l2``), or None when the options change the outputs in a way
    the bench cannot check (another reduction, a selection of outputs or positions).

    ``select``/``aggregate`` (output targets) change nothing here: the naive worker applies
    the same targets (:func:`.workers.naive_spec`), so the outputs compare as they are."""
    harmless = {"probes", "alpha", "seed", "first_conv", "output_form", "input_name", "layout", "alphabet",
                "select", "aggregate"}
    reduce = convert_options.get("reduce")
    if set(convert_options) - harmless - {"reduce"}:
        return None
    values = set(reduce.values()) if isinstance(reduce, Mapping) else {reduce}
    if values <= {None, "none"}:
        return "none"
    if values == {"l2"}:
        return "l2_per_output"
    return None


def default_cache_dir() -> Path:
    """Where exports are cached: ``$YUZU_BENCH_CACHE`` or ``~/.cache/yuzu-onnx/bench``."""
    return Path(os.environ.get(BENCH_CACHE_ENV, Path.home() / ".cache" / "yuzu-onnx" / "bench"))


def export_candidates(cache_name: str, *, cache_dir: str | Path, reuse_dirs: Sequence[str | Path]) -> list[Path]:
    """The files that may hold a model's export: in each reuse folder, then in the cache."""
    return [Path(d) / cache_name for d in reuse_dirs] + [Path(cache_dir) / cache_name]


def models_without_export(models: Sequence[BenchModel], *, cache_dir: str | Path,
                          reuse_dirs: Sequence[str | Path]) -> list[BenchModel]:
    """The architectures among ``models`` with no export on disk yet: building them needs torch."""
    return [m for m in models if m.arch is not None and not any(
        p.is_file() for p in export_candidates(m.cache_name, cache_dir=cache_dir, reuse_dirs=reuse_dirs))]


def load_torch_models() -> ModuleType:
    """``tools/torch_models.py`` (the seeded PyTorch architectures); needs torch."""
    try:
        from .. import torch_models
    except SystemExit as exc:  # the tool exits with a message when torch is missing
        raise BenchError(str(exc)) from None
    return torch_models


def prepare_export(job: dict) -> tuple[Path, bool | None, list[str]]:
    """The model's ONNX export: a reused or cached file that matches PyTorch, or a new export.

    Returns ``(path, verified against PyTorch, notes)``. Without torch a file on disk is
    used unchecked (``verified`` is None).
    """
    model = job["model"]
    cache = Path(job["cache_dir"])
    candidates = export_candidates(model["cache_name"], cache_dir=cache, reuse_dirs=job.get("reuse_dirs", []))
    notes = []
    try:
        tm = load_torch_models()
    except BenchError as exc:
        for candidate in candidates:
            if candidate.is_file():
                return candidate, None, [f"export not checked against PyTorch ({exc})"]
        raise BenchError(f"no cached export of {model['name']} ({model['cache_name']}) and cannot build it: {exc}") from None
    module = tm.build(model["arch"], seed=job["model_seed"], seq_len=model["seq_len"], **model.get("options", {}))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            tm.verify_export(module, candidate, seq_len=model["seq_len"])
            return candidate, True, notes
        except Exception as exc:  # a stale or foreign file: never overwrite it, export anew
            notes.append(f"ignored {candidate}: does not match the seeded PyTorch model ({str(exc)[:200]})")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / model["cache_name"]
    tmp = cache / f".{model['cache_name']}.{os.getpid()}.tmp.onnx"
    try:
        tm.export(module, tmp, seq_len=model["seq_len"], exporter="torchscript")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    notes.append(f"exported to {target}")
    return target, True, notes

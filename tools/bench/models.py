"""Which benchmark models exist, and how they are built and exported.

A named model is an architecture of ``tools/torch_models.py`` (seeded PyTorch weights,
needs torch) at a given length; its ONNX export is cached. An ``.onnx`` path is
benchmarked as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .errors import BenchError

BENCH_CACHE_ENV = "YUZU_BENCH_CACHE"
QUICK_LENGTH = 200
QUICK_MODELS = ("toynet", "bpnet4")


@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: a ``tools/torch_models.py`` architecture, or an ONNX file.

    ``cache_name`` is the file name of the export in the cache folders; ``window`` limits
    the mutated positions (``(start, end)``), for models where naive ISM over every
    position would take hours.
    """

    name: str
    arch: str | None = None
    seq_len: int | None = None
    window: tuple[int, int] | None = None
    cache_name: str | None = None
    path: str | None = None
    options: Mapping[str, int] = field(default_factory=dict)
    note: str = ""


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
                   note="profile cropped to the central 1000 positions, plus counts"),
        BenchModel("spliceai10k", "spliceai10k", 11000, window=(5400, 5600), cache_name="spliceai10k_torchscript.onnx",
                   note="ISM of the 200 central positions only (--window), naive included"),
        BenchModel("protein_cnn", "protein_cnn", 500, cache_name="protein_cnn_torchscript.onnx",
                   note="20-letter protein alphabet; first convolution 20→128, width 15"),
        BenchModel("enformer_like", "enformer_like", 2048, window=(974, 1074),
                   cache_name="enformer_like_torchscript.onnx",
                   note="conv tower with attention pooling, 2 transformer layers, heads of 5313 and 1643 "
                        "tracks on 32 bins; ISM of the 100 central positions (--window)"),
    )
}


def quick_model(model: BenchModel) -> BenchModel:
    """The same architecture at ``QUICK_LENGTH`` positions (for smoke tests)."""
    if model.arch is None:
        return model
    return BenchModel(f"{model.name}@{QUICK_LENGTH}", model.arch, QUICK_LENGTH,
                      cache_name=f"{model.arch}_L{QUICK_LENGTH}.onnx", note="reduced length (--quick)")


def resolve_models(names: Sequence[str], *, quick: bool = False, window: tuple[int, int] | None = None) -> list[BenchModel]:
    """Bench models from names (see :data:`MODELS`) or paths of ``.onnx`` files."""
    models = []
    for name in names:
        if name.endswith(".onnx") or os.sep in name:
            path = Path(name)
            if not path.is_file():
                raise BenchError(f"model file {name!r} does not exist")
            model = BenchModel(path.stem, path=str(path.resolve()))
        elif name in MODELS:
            model = quick_model(MODELS[name]) if quick else MODELS[name]
        else:
            raise BenchError(f"unknown model {name!r}; choose from {', '.join(MODELS)} or give an .onnx path")
        if window is not None:
            model = BenchModel(model.name, model.arch, model.seq_len, window, model.cache_name, model.path,
                               model.options, model.note)
        models.append(model)
    return models


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

"""ONNX Runtime sessions: providers, options and the check that CUDA was really obtained."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence

import onnx

from .errors import InputError, YuzuWarning

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def default_threads() -> int:
    """Intra-op threads: ``YUZU_THREADS`` if set, else the machine's core count."""
    value = os.environ.get("YUZU_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise InputError(f"YUZU_THREADS must be an integer, got {value!r}") from None
    return os.cpu_count() or 1


#: ONNX Runtime's FATAL severity: its own log lines stay off stderr (failures still raise)
QUIET_LOG_SEVERITY = 4


def quiet_onnxruntime() -> None:
    """Keep ONNX Runtime's default logger off stderr.

    Failures reach yuzu-onnx as exceptions and become one-line messages; ORT's own
    ``[E:onnxruntime:...]`` lines (a failed run while measuring shapes, a CUDA library that
    does not load) would only repeat them in another format.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(QUIET_LOG_SEVERITY)


def cpu_session_options(*, optimize: bool = True, threads: int | None = None):
    """Session options tuned for ISM runs: full graph optimisation, quiet logging."""
    import onnxruntime as ort

    quiet_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = QUIET_LOG_SEVERITY
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    return options


def providers_for(device: str = "auto") -> list[str]:
    """Execution providers for a device choice: ``auto`` is ``YUZU_DEVICE`` when set (``cpu``
    or ``cuda``), else CUDA when ONNX Runtime offers it."""
    import onnxruntime as ort

    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        device = os.environ.get("YUZU_DEVICE", "").strip().lower() or "auto"
        if device not in DEVICES:
            raise InputError(f"YUZU_DEVICE must be one of {', '.join(DEVICES)}, got {os.environ['YUZU_DEVICE']!r}")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


#: CUDA provider options of every session: exact float32 (ONNX Runtime's default lets
#: convolutions and matrix products run in TF32, 10-bit mantissas, about 1e-3 relative)
CUDA_OPTIONS = {"use_tf32": "0"}


def cuda_provider_options() -> dict[str, str]:
    """The CUDA execution provider's options: :data:`CUDA_OPTIONS`, then any
    ``key=value,key=value`` pairs of ``YUZU_CUDA_PROVIDER_OPTIONS`` (e.g.
    ``cudnn_conv_algo_search=HEURISTIC,gpu_mem_limit=8000000000``)."""
    options = dict(CUDA_OPTIONS)
    text = os.environ.get("YUZU_CUDA_PROVIDER_OPTIONS", "").strip()
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"YUZU_CUDA_PROVIDER_OPTIONS must be key=value pairs separated by commas, "
                             f"got {pair!r} in {text!r}")
        options[key.strip()] = value.strip()
    return options


def provider_entries(providers: Sequence) -> list:
    """``providers`` with the CUDA entry given :func:`cuda_provider_options` (an entry that
    is already a ``(name, options)`` pair keeps its own)."""
    return [(CUDA, cuda_provider_options()) if p == CUDA else p for p in providers]


def make_session(
    model: onnx.ModelProto | str | os.PathLike,
    *,
    providers: Sequence[str] | None = None,
    device: str = "auto",
    threads: int | None = None,
):
    """Create an ``onnxruntime.InferenceSession`` and check the providers it really got.

    ONNX Runtime silently falls back to the CPU when the CUDA libraries are missing;
    this warns (:class:`YuzuWarning`) naming the provider actually used.
    """
    import onnxruntime as ort

    wanted = list(providers) if providers else providers_for(device)
    if CUDA in wanted and CUDA not in ort.get_available_providers():
        warnings.warn(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(ort.get_available_providers())}); running on "
            "CPUExecutionProvider. Install onnxruntime-gpu for GPU runs.",
            YuzuWarning,
            stacklevel=2,
        )
        wanted = [p for p in wanted if p != CUDA] or [CPU]
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    session = ort.InferenceSession(source, cpu_session_options(threads=threads), providers=provider_entries(wanted))
    got = session.get_providers()
    if CUDA in wanted and CUDA not in got:
        warnings.warn(
            f"CUDA was requested but the session runs on {got[0]} (the CUDA libraries could not "
            "be loaded); results are computed on the CPU.",
            YuzuWarning,
            stacklevel=2,
        )
    return session


#: ONNX IR versions every supported ONNX Runtime (1.17 and later) reads: models at or below
#: it need no probe of the installed one
IR_VERSION_READ_EVERYWHERE = 9


@functools.cache
def onnxruntime_max_ir_version() -> int | None:
    """The newest ONNX IR version the installed ONNX Runtime reads (``None``: no limit found).

    Read off ONNX Runtime's refusal of a one-node model declaring a far newer version; an
    ``onnx`` newer than ``onnxruntime`` writes models that ONNX Runtime refuses this way.
    """
    import re

    import onnxruntime as ort
    from onnx import TensorProto, helper

    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ir_version_probe", values[:1], values[1:])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    probe.ir_version = 1000
    quiet_onnxruntime()
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=[CPU])
    except Exception as exc:  # "Unsupported model IR version: 1000, max supported IR version: 13"
        found = re.search(r"max supported IR version: (\d+)", str(exc))
        return int(found.group(1)) if found else None
    return None


def session_provider(session) -> str:
    """The execution provider that does the work in ``session``."""
    return session.get_providers()[0]

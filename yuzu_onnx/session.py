"""Run converted ISM models: metadata checks, memory-bounded batching, caching."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
import onnx

from .errors import InputError, ModelError, option
from .extra_inputs import ExtraValues, check_extra_values, take_rows
from .format import FORMAT, ConvertedModelInfo, read_converted_info
from .memory import parse_memory
from .plan import NO_CHUNKING_FITS
from .progress import format_bytes, memory_option
from .sequences import check_one_hot

DEFAULT_MEMORY_FRACTION = 0.25


def converted_sidecar(model: onnx.ModelProto) -> dict:
    """The JSON sidecar written next to a converted model (read by the browser host)."""
    info = read_converted_info(model)
    return {
        "format": FORMAT,
        "input": info.input_name,
        "extra_inputs": {e.name: e.to_json() for e in info.extra_inputs},
        "layout": info.layout,
        "alphabet": info.alphabet,
        "seq_len": info.seq_len,
        "window": list(info.window),
        "outputs": dict(info.outputs),
        "version": info.version if info.version is not None else "",
    }


def default_memory_budget() -> int:
    """A quarter of the machine's RAM (``YUZU_MAX_MEMORY`` overrides, in bytes)."""
    value = os.environ.get("YUZU_MAX_MEMORY")
    if value:
        return parse_memory(value)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    return int(total * DEFAULT_MEMORY_FRACTION)


class ISMSession:
    """Run a converted ISM model on one-hot sequences.

    Parameters
    ----------
    model: path to a converted ``.onnx`` file, or its ``ModelProto``.
    providers: ONNX Runtime execution providers (default from ``device``).
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    threads: intra-op threads (default ``YUZU_THREADS`` or all cores).
    """

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, *, providers=None, device: str = "auto",
                 threads: int | None = None) -> None:
        from .runtime import make_session

        if isinstance(model, onnx.ModelProto):
            proto, source = model, "model"
        else:
            path = Path(model)
            if not path.is_file():
                raise ModelError(f"converted model {str(path)!r} does not exist")
            try:
                proto = onnx.load(str(path))
            except Exception:
                raise ModelError(f"{str(path)!r} is not an ONNX model (cannot parse it); is the file truncated?") from None
            source = repr(str(path))
        self.info: ConvertedModelInfo = read_converted_info(proto, source=source)
        self.session = make_session(proto, providers=providers, device=device, threads=threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.use_io_binding = self.provider == "CUDAExecutionProvider"

    @property
    def provider(self) -> str:
        """The execution provider doing the work."""
        return self.session.get_providers()[0]

    def batch_size_for(self, max_memory: int | str | None = None) -> int:
        """Sequences per run that fit ``max_memory`` (bytes; default a quarter of RAM) beside
        the memory the runtime and the weights hold once; refuses when one sequence does not fit."""
        budget = parse_memory(max_memory) if max_memory is not None else default_memory_budget()
        per_sequence = max(self.info.peak_bytes_per_sequence, 1)
        need = per_sequence + self.info.fixed_bytes
        if need > budget:
            chunks = self.info.window_chunks
            if str(chunks.get("reason", "")).startswith(NO_CHUNKING_FITS):
                fix = (f"; converting again with a smaller {option('max_memory')} would not help: "
                       f"{chunks.get('reason')}")
            else:
                fix = (f", or convert the model again with {option('max_memory')} at this budget: its window then "
                       "runs in chunks that fit")
            raise InputError(
                f"one sequence needs about {format_bytes(need)} ({format_bytes(per_sequence)} for the sequence, "
                f"{format_bytes(self.info.fixed_bytes)} for the runtime and weights) but the memory budget is "
                f"{format_bytes(budget)}; raise {option('max_memory')} to at least {memory_option(need)}{fix}"
            )
        return max(1, min(256, (budget - self.info.fixed_bytes) // per_sequence))

    def run(
        self,
        X: np.ndarray,
        *,
        extra: ExtraValues | None = None,
        batch_size: int | None = None,
        max_memory: int | str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """ISM of every sequence in ``X``.

        Parameters
        ----------
        X: shape=(N, A, L) (ncl) or (N, L, A) (nlc), float32 one-hot, or one sequence
            (A, L) / (L, A), run as a batch of one; all-zero columns are unknown bases (all
            ``A`` substitutions are reported there).
        extra: the model's inputs besides the sequence (``info.extra_inputs``), name →
            shape=(N, *shape) (one row per sequence) or (1, *shape) (one row for all);
            held fixed for every mutant of a sequence.
        batch_size: sequences per run (default from ``max_memory``).
        progress: called as ``progress(done, total)`` after each batch.

        Returns
        -------
        ``{output_name: ism}`` with ``ism`` of shape ``(N, A, Lw, ...)`` (ncl) or ``(N, Lw, A, ...)``.
        """
        info = self.info
        X = check_one_hot(X, layout=info.layout, alphabet_size=info.alphabet_size, seq_len=info.seq_len)
        extra = check_extra_values(info.extra_inputs, extra, len(X))
        if batch_size is None:
            batch_size = self.batch_size_for(max_memory)
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if len(X) == 0:
            return {name: np.zeros((0,), np.float32) for name in self.output_names}
        first = slice(0, batch_size)
        values = self.run_batch(X[first], take_rows(extra, first))
        if progress is not None:
            progress(min(batch_size, len(X)), len(X))
        if len(X) <= batch_size:  # one batch: its arrays as they are (no copy of what may be most of the memory)
            return dict(zip(self.output_names, values))
        # the results allocated once and every later batch written into its rows: no per-batch
        # arrays to fault in and concatenate (a dense profile ISM is ~32 MB per sequence)
        results = {name: np.empty((len(X), *value.shape[1:]), value.dtype) for name, value in zip(self.output_names, values)}
        for name, value in zip(self.output_names, values):
            results[name][first] = value
        del values
        for begin in range(batch_size, len(X), batch_size):
            rows = slice(begin, begin + batch_size)
            self.run_batch_into(X[rows], take_rows(extra, rows), {name: out[rows] for name, out in results.items()})
            if progress is not None:
                progress(min(begin + batch_size, len(X)), len(X))
        return results

    def run_batch(self, X: np.ndarray, extra: ExtraValues | None = None) -> list[np.ndarray]:
        """One ONNX Runtime call on an already validated batch.

        ``extra``: the extra inputs' rows of these sequences (checked with
        :func:`~yuzu_onnx.extra_inputs.check_extra_values`). On CUDA the inputs and outputs
        are bound with IO binding: the batch is copied to the device once and each ISM
        output straight back into host memory.
        """
        feeds = self._feeds(X, extra)
        try:
            if self.use_io_binding:
                return self._run_bound(feeds)
            return self.session.run(self.output_names, feeds)
        except Exception as exc:
            self._raise_run_error(exc, len(X))

    def run_batch_into(self, X: np.ndarray, extra: ExtraValues | None, out: Mapping[str, np.ndarray]) -> None:
        """:meth:`run_batch` with each output written into ``out[name]`` (C-contiguous arrays
        of the output's shape for this batch): on the CPU, ONNX Runtime writes into them
        through IO binding; on CUDA the outputs are copied in."""
        if self.use_io_binding:
            for name, value in zip(self.output_names, self.run_batch(X, extra)):
                out[name][...] = value
            return
        binding = self._bound_inputs(self._feeds(X, extra))
        for name in self.output_names:
            target = out[name]
            binding.bind_output(name, "cpu", 0, target.dtype, list(target.shape), target.ctypes.data)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            self._raise_run_error(exc, len(X))

    def _feeds(self, X: np.ndarray, extra: ExtraValues | None) -> dict[str, np.ndarray]:
        feeds = {self.info.input_name: X, **dict(extra or {})}
        missing = [e.name for e in self.info.extra_inputs if e.name not in feeds]
        if missing:
            raise InputError(f"the model also takes {', '.join(missing)}; pass them with extra=")
        return feeds

    def _raise_run_error(self, exc: Exception, n: int) -> NoReturn:
        """A failed ONNX Runtime run as yuzu-onnx's error (out of memory: which option helps)."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "alloc" in text.lower() or "memory" in text.lower():
            raise InputError(f"ONNX Runtime ran out of memory on a batch of {n} sequences; "
                             f"lower {option('batch_size')} or {option('max_memory')}") from None
        raise exc

    def _bound_inputs(self, feeds: Mapping[str, np.ndarray]):
        """An IO binding of the session with ``feeds`` bound as its inputs."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        return binding

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        binding = self._bound_inputs(feeds)
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def options_key(source_sha256: str, options: Mapping) -> str:
    """Cache key of a conversion: the source model's hash and the options."""
    text = json.dumps({"source": source_sha256, **{k: options[k] for k in sorted(options)}}, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("YUZU_CACHE_DIR", Path.home() / ".cache" / "yuzu-onnx"))


def ism(
    model: str | os.PathLike | onnx.ModelProto,
    X: np.ndarray,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    max_memory: int | str | None = None,
    extra: ExtraValues | None = None,
    **convert_options,
) -> dict[str, np.ndarray]:
    """Convert ``model`` (cached on disk by source hash and options) and run it on ``X``.

    ``extra``: the model's inputs besides the sequence (see :meth:`ISMSession.run`).
    ``convert_options`` are those of :func:`yuzu_onnx.convert`; a model with a dynamic
    length is converted for the length of ``X`` unless ``seq_len`` is given. ``max_memory``
    budgets the run and, unless ``convert_options`` has its own, the conversion (whose window
    streams in chunks when one sequence would need more). Returns ``{output: ism}``.
    """
    from .sequences import length_from_sequences

    if convert_options.get("seq_len") is None:
        axes = {k: convert_options[k] for k in ("input_name", "layout", "alphabet") if k in convert_options}
        seq_len = length_from_sequences(model, X, **axes)
        if seq_len is not None:
            convert_options["seq_len"] = seq_len
    if max_memory is not None:  # the budget of the run is the conversion's too (as on the command line)
        convert_options.setdefault("max_memory", max_memory)
    converted = cached_conversion(model, cache_dir=cache_dir, **convert_options)
    return ISMSession(converted, device=device).run(X, extra=extra, batch_size=batch_size, max_memory=max_memory)


def cached_conversion(model, *, cache_dir=None, **convert_options) -> Path:
    """Path of the converted model in the cache, converting it first if needed."""
    from .convert import convert, save_model

    if isinstance(model, onnx.ModelProto):
        raw = model.SerializeToString()
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file {str(path)!r} does not exist")
        raw = path.read_bytes()
    key = options_key(hashlib.sha256(raw).hexdigest(), convert_options)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / f"{key}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    converted = convert(model, **convert_options)
    save_model(converted, target)
    return target

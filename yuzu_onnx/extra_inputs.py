"""Model inputs besides the one-hot sequence: control tracks, covariates, and the like.

A model such as BPNet with control tracks takes ``(X, X_ctl)``. Only the one-hot input
``X`` is mutated; every other input (an *extra input*) is held fixed for all mutants of a
sequence: the converted model keeps it as a graph input with the batch on its first axis
and broadcasts it to the probes in the graph. :class:`ExtraInput` describes one such input
(its per-sequence shape and element type), :func:`check_extra_values` validates the values
a caller passes (one row per sequence, or one row for all), and :func:`sample_extra_values`
makes random values for measurements and checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, option

ExtraValues = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ExtraInput:
    """One model input that is not mutated.

    Attributes
    ----------
    name: the graph input's name.
    shape: its per-sequence shape (the batch axis, the first, left out).
    dtype: its numpy element type name, e.g. ``"float32"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        """``NAME (batch, 2, 1000) float32``."""
        dims = ", ".join(["batch", *map(str, self.shape)])
        return f"{self.name} ({dims}) {self.dtype}"

    def to_json(self) -> dict:
        """``{"shape": [...], "dtype": ...}`` (the metadata and sidecar entry)."""
        return {"shape": list(self.shape), "dtype": self.dtype}


def extra_inputs_from_json(value: Mapping[str, Mapping]) -> tuple[ExtraInput, ...]:
    """The records written by :meth:`ExtraInput.to_json`, keyed by name, back as objects."""
    return tuple(ExtraInput(str(name), tuple(int(d) for d in entry["shape"]), str(entry["dtype"]))
                 for name, entry in value.items())


def sample_extra_values(extras: Sequence[ExtraInput], n: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values for ``n`` sequences: floats uniform in ``[0, 1)``, integers and booleans 0.

    Returns
    -------
    dict: input name → array of shape ``(n, *shape)`` in the input's dtype.
    """
    rng = np.random.default_rng(seed)
    values = {}
    for extra in extras:
        dtype = np.dtype(extra.dtype)
        shape = (int(n), *extra.shape)
        if dtype.kind == "f":
            values[extra.name] = rng.random(shape).astype(dtype)
        else:
            values[extra.name] = np.zeros(shape, dtype=dtype)
    return values


def check_extra_values(extras: Sequence[ExtraInput], values: ExtraValues | None, n: int, *,
                       label: str | None = None) -> dict[str, np.ndarray]:
    """Validate the extra inputs' values for ``n`` sequences and broadcast single rows.

    Parameters
    ----------
    extras: the model's extra inputs.
    values: input name → array of shape ``(n, *shape)`` (one row per sequence) or
        ``(1, *shape)`` / ``shape`` (one row for all sequences).
    n: the number of sequences.
    label: how the caller names the values in messages (default: the ``extra`` option,
        ``--extra-input`` on the command line).

    Returns
    -------
    dict: input name → contiguous array of shape ``(n, *shape)`` in the input's dtype.

    Raises
    ------
    InputError: a value is missing, unknown, of the wrong shape or not convertible.
    """
    label = label or option("extra")
    values = dict(values or {})
    wanted = {e.name: e for e in extras}
    unknown = [name for name in values if name not in wanted]
    if unknown:
        have = ", ".join(wanted) if wanted else "none besides the sequence"
        raise InputError(f"{label} names {', '.join(map(repr, unknown))}, which the model does not take "
                         f"(its extra inputs: {have})")
    missing = [name for name in wanted if name not in values]
    if missing:
        described = "; ".join(wanted[name].describe() for name in missing)
        raise InputError(f"the model also takes {described}; give the values with {label} "
                         f"(one row per sequence, or one row for all)")
    result = {}
    for name, extra in wanted.items():
        try:
            array = np.asarray(values[name])
        except Exception as exc:  # objects numpy cannot convert
            raise InputError(f"{label} {name!r} is not an array ({type(exc).__name__})") from None
        if array.dtype.kind not in "biuf":
            raise InputError(f"{label} {name!r} has element type {array.dtype}; the model takes {extra.dtype}")
        if array.shape == extra.shape:
            array = array[None]
        if array.shape[1:] != extra.shape or array.shape[0] not in (1, n):
            rows = ", ".join(map(str, (n, *extra.shape)))
            raise InputError(
                f"{label} {name!r} has shape {array.shape}; the model takes {extra.describe()}: give "
                f"({rows}) for {n} sequences, or one row for all"
            )
        array = array.astype(np.dtype(extra.dtype), copy=False)
        if array.shape[0] != n:
            array = np.broadcast_to(array, (n, *extra.shape))
        result[name] = np.ascontiguousarray(array)
    return result


def take_rows(values: ExtraValues | None, rows) -> dict[str, np.ndarray]:
    """``values`` (checked, one row per sequence) restricted to ``rows`` (a slice or indices)."""
    return {name: np.ascontiguousarray(array[rows]) for name, array in (values or {}).items()}


def parse_extra_option(text: str) -> tuple[str, str]:
    """``NAME=FILE.npy`` → ``(name, path)`` (the command line's ``--extra-input``)."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InputError(f"{option('extra')} must be NAME=FILE.npy, got {text!r}")
    return name.strip(), path.strip()


def load_extra_files(pairs: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Read ``--extra-input NAME=FILE.npy`` options into ``{name: array}``."""
    values: dict[str, np.ndarray] = {}
    for text in pairs or ():
        name, path = parse_extra_option(text)
        if name in values:
            raise InputError(f"{option('extra')} {name!r} is given twice")
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{option('extra')} {name}: file {path!r} does not exist")
        try:
            values[name] = np.load(os.fspath(p), allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{option('extra')} {name}: {path!r} is not a .npy array ({type(exc).__name__})") from None
        if not isinstance(values[name], np.ndarray):
            raise InputError(f"{option('extra')} {name}: {path!r} holds several arrays; give one .npy array")
    return values


def extra_values_sha256(values: ExtraValues | None) -> str:
    """A digest of the values (recorded by resumable runs so that a resume with other values is refused)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(values or {}):
        array = np.ascontiguousarray(values[name])
        digest.update(name.encode() + str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()

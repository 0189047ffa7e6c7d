"""Banded ISM outputs: only the output positions a mutation can reach.

A mutation at input position ``j`` changes a local output (one that keeps a length axis,
e.g. a profile head) only at the positions whose receptive field contains ``j``: a band
of ``width`` positions starting at ``starts[k]`` for the ``k``-th mutated position
(``j = window_start + k``). Everywhere else the dense ISM value is exactly 0. A *banded*
ISM array stores the band only: the output's length axis (``length`` positions) is
replaced, in place, by a band axis of ``width`` positions, so that::

    dense[..., k, ..., starts[k] + b, ...] == banded[..., k, ..., b, ...]

bit for bit, and every other dense value is 0. :func:`densify` expands a banded array
to the dense one. A :class:`Band` is what the converted model's metadata
(``yuzu_onnx.outputs``) and a result file's ``__metadata__`` (``bands``) record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: ``output_form`` values: every output dense, banded where an output keeps a length axis,
#: or banded where that saves at least :data:`AUTO_MIN_SAVING` times the memory
OUTPUT_FORMS = ("dense", "banded", "auto")
#: ``auto`` bands an output when ``length / width`` is at least this
AUTO_MIN_SAVING = 4.0


@dataclass(frozen=True)
class Band:
    """Where the band of a banded ISM output lies.

    Attributes
    ----------
    axis: the band's axis in the ISM array (batch axis = 0); in the dense array the
        output's length axis is at the same place.
    window_axis: the ISM array's axis of mutated positions (2 for ncl, 1 for nlc).
    width: positions per band (``B``).
    length: positions of the dense output's length axis (``P``).
    starts: shape=(Lw,), the first dense position of each mutated position's band;
        ``0 <= starts[k] <= length - width``.
    """

    axis: int
    window_axis: int
    width: int
    length: int
    starts: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.width <= self.length:
            raise InputError(f"band width {self.width} must be in 1..{self.length} (the output length)")
        if self.starts and not (min(self.starts) >= 0 and max(self.starts) <= self.length - self.width):
            raise InputError(f"band starts must lie in 0..{self.length - self.width}")

    @property
    def saving(self) -> float:
        """How many times smaller the banded array is than the dense one (``length / width``)."""
        return self.length / self.width

    def to_json(self) -> dict:
        """The metadata record (JSON-ready)."""
        return {"axis": self.axis, "window_axis": self.window_axis, "width": self.width, "length": self.length,
                "starts": list(self.starts)}

    @classmethod
    def from_json(cls, record: Mapping) -> Band:
        """A band from its metadata record (:meth:`to_json`)."""
        try:
            return cls(axis=int(record["axis"]), window_axis=int(record["window_axis"]), width=int(record["width"]),
                       length=int(record["length"]), starts=tuple(int(s) for s in record["starts"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed band record ({type(exc).__name__}: {exc}); convert the model again") from None


def band_positions(*, stride: int, lo: int, hi: int, length: int, window: tuple[int, int]) -> tuple[int, np.ndarray]:
    """Band width and starts of an output whose position ``p`` reads input positions
    ``[stride·p + lo, stride·p + hi]``, for the mutated positions ``window = (start, end)``.

    Returns
    -------
    (width, starts): ``starts`` shape=(Lw,), int64; each band covers every position its
    mutation reaches (a mutation that reaches none gets any band: its values are 0).
    """
    j = np.arange(window[0], window[1], dtype=np.int64)
    first = np.maximum(0, -((hi - j) // stride))  # ceil((j - hi) / stride)
    last = np.minimum(length - 1, (j - lo) // stride)
    reach = last - first + 1
    width = int(min(length, max(1, int(reach.max(initial=1)))))
    starts = np.clip(np.minimum(first, length - width), 0, length - width)
    return width, starts.astype(np.int64)


def reached(band: Band, *, stride: int, lo: int, hi: int, window_start: int) -> np.ndarray:
    """``mask[k, b]``: position ``starts[k] + b`` reads mutated position ``window_start + k``."""
    p = np.asarray(band.starts, dtype=np.int64)[:, None] + np.arange(band.width)[None, :]
    j = window_start + np.arange(len(band.starts))[:, None]
    return (stride * p + lo <= j) & (j <= stride * p + hi)


def _check_values(values: np.ndarray, band: Band) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim <= max(band.axis, band.window_axis):
        raise InputError(f"a banded ISM array needs axis {band.axis}, got shape {values.shape}")
    if values.shape[band.axis] != band.width or values.shape[band.window_axis] != len(band.starts):
        raise InputError(
            f"array of shape {values.shape} is not banded as recorded (band width {band.width} on axis "
            f"{band.axis}, {len(band.starts)} mutated positions on axis {band.window_axis})"
        )
    return values


def densify(values: np.ndarray, band: Band | Mapping) -> np.ndarray:
    """Expand a banded ISM array to the dense one (bit-identical values, zeros elsewhere).

    Parameters
    ----------
    values: shape=(N, A, Lw, ..., width, ...) (ncl) or (N, Lw, A, ..., width, ...) (nlc):
        a banded output as ``run`` writes it.
    band: its :class:`Band`, or the band record of the model's or result's metadata
        (``yuzu_onnx.bands.bands_of(metadata)[output]``).

    Returns
    -------
    shape=(N, A, Lw, ..., length, ...) or (N, Lw, A, ..., length, ...), the dtype of ``values``.
    """
    band = band if isinstance(band, Band) else Band.from_json(band)
    values = _check_values(values, band)
    shape = list(values.shape)
    shape[band.axis] = band.length
    dense = np.zeros(shape, dtype=values.dtype)
    index_shape = [1] * values.ndim
    index_shape[band.window_axis] = len(band.starts)
    index_shape[band.axis] = band.width
    index = (np.asarray(band.starts, dtype=np.int64)[:, None] + np.arange(band.width)[None, :])
    if band.axis < band.window_axis:
        index = index.T
    index = np.broadcast_to(index.reshape(index_shape), values.shape)
    np.put_along_axis(dense, index, values, axis=band.axis)
    return dense


def dense_chunks(values: np.ndarray, band: Band | Mapping | None, *, max_bytes: int = 256 * 2**20
                 ) -> Iterator[np.ndarray]:
    """``values`` densified a few sequences at a time (``values`` itself in one piece when
    ``band`` is ``None``), each piece under about ``max_bytes``."""
    if band is None:
        yield np.asarray(values)
        return
    band = band if isinstance(band, Band) else Band.from_json(band)
    per_row = max(1, int(np.prod(values.shape[1:], dtype=np.int64)) * values.dtype.itemsize
                  * band.length // band.width)
    rows = max(1, int(max_bytes // per_row))
    for lo in range(0, len(values), rows):
        yield densify(values[lo : lo + rows], band)


def bands_of(metadata) -> dict[str, Band]:
    """``{output: Band}`` of the banded outputs.

    ``metadata``: a result's metadata (its ``bands`` entry), a converted model's
    :class:`~yuzu_onnx.format.ConvertedModelInfo`, or a mapping with that record's
    ``outputs`` (entries with ``"form": "banded"``).
    """
    if not isinstance(metadata, Mapping):
        metadata = {"outputs": metadata.outputs}
    records = metadata.get("bands")
    if records is None:
        outputs = metadata.get("outputs")
        records = {name: entry["band"] for name, entry in outputs.items()
                   if isinstance(entry, Mapping) and entry.get("form") == "banded"} if isinstance(outputs, Mapping) else {}
    return {name: Band.from_json(record) for name, record in (records or {}).items()}


def densify_results(arrays: Mapping[str, np.ndarray], metadata: Mapping) -> dict[str, np.ndarray]:
    """Every banded array of a result (``arrays``, ``metadata`` as ``read_results`` returns
    them) expanded to the dense form; the other arrays as they are."""
    bands = bands_of(metadata)
    return {name: densify(value, bands[name]) if name in bands else value for name, value in arrays.items()}

"""Layouts of a one-hot sequence tensor and the sequence spec a model reads.

A batch of one-hot sequences is ``(N, A, L)`` (``"ncl"``, PyTorch) or ``(N, L, A)``
(``"nlc"``, Keras/TF). Layouts travel through the package as their names (plain strings,
:data:`LAYOUTS`); :func:`layout_of` turns a name into a :class:`Layout` value that knows
the axes, the shape and the transpose between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

NCL = "ncl"
NLC = "nlc"
LAYOUTS = (NCL, NLC)
#: the axis permutation between ``(N, A, L)`` and ``(N, L, A)`` (its own inverse)
TRANSPOSE = (0, 2, 1)


@dataclass(frozen=True)
class Layout:
    """Where the alphabet and the length sit in a rank-3 one-hot batch.

    ``name``: ``"ncl"`` or ``"nlc"``; ``alphabet_axis`` and ``length_axis``: 1 or 2.
    """

    name: str
    alphabet_axis: int
    length_axis: int

    def shape(self, n: int, alphabet_size: int, length: int) -> tuple[int, int, int]:
        """The batch shape: ``(n, A, L)`` for ncl, ``(n, L, A)`` for nlc."""
        return (n, alphabet_size, length) if self.name == NCL else (n, length, alphabet_size)

    def from_nla(self, x: np.ndarray) -> np.ndarray:
        """``x`` of shape ``(N, L, A)`` in this layout (C-contiguous; nlc returns ``x`` itself)."""
        return x if self.name == NLC else np.ascontiguousarray(x.transpose(TRANSPOSE))

    def to_nla(self, x: np.ndarray) -> np.ndarray:
        """A ``(N, L, A)`` view of ``x`` given in this layout."""
        return x if self.name == NLC else x.transpose(TRANSPOSE)


_BY_NAME = {NCL: Layout(NCL, alphabet_axis=1, length_axis=2), NLC: Layout(NLC, alphabet_axis=2, length_axis=1)}


def layout_of(name: str) -> Layout:
    """The :class:`Layout` named ``name`` (``"ncl"`` or ``"nlc"``).

    Raises
    ------
    InputError: any other name; the message names the value received.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise InputError(f"layout must be 'ncl' or 'nlc', got {name!r}") from None


@dataclass(frozen=True)
class SequenceSpec:
    """What reading and checking sequences needs to know about a model.

    ``layout``: ``"ncl"`` or ``"nlc"``; ``alphabet``: the letters of the one-hot axis,
    e.g. ``"ACGT"``; ``seq_len``: the fixed sequence length ``L``.
    """

    layout: str
    alphabet: str
    seq_len: int

    @property
    def alphabet_size(self) -> int:
        """``A``, the size of the one-hot axis."""
        return len(self.alphabet)

    @property
    def input_shape(self) -> tuple[int, int]:
        """The per-sequence input shape: ``(A, L)`` for ncl, ``(L, A)`` for nlc."""
        return layout_of(self.layout).shape(0, self.alphabet_size, self.seq_len)[1:]

    @property
    def axes(self) -> Layout:
        """The :class:`Layout` value of ``layout``."""
        return layout_of(self.layout)

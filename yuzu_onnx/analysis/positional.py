"""Positional maps: which input positions each position of a local tensor depends on."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PositionalMap:
    """How a local tensor's length axis relates to the input sequence.

    Position ``p`` of the tensor's ``axis`` depends only on input positions in the
    window ``[stride * p + lo, stride * p + hi]`` (a superset is fine: the rewrite stays
    exact as long as the true dependency lies inside). ``length`` is the number of
    positions along ``axis``.
    """

    axis: int
    length: int
    stride: int
    lo: int
    hi: int

    @property
    def receptive_field(self) -> int:
        """Width of the window in input positions (``RF = hi - lo + 1``)."""
        return self.hi - self.lo + 1

    def window(self, p: int) -> tuple[int, int]:
        """The unclipped window ``[lo, hi]`` of position ``p`` in input coordinates."""
        return self.stride * p + self.lo, self.stride * p + self.hi

    def changed_span(self, start: int, end: int) -> tuple[int, int]:
        """Positions ``(lo, hi)`` whose window meets the mutated positions ``[start, end)``.

        Never empty: when no position is reached, one unchanged position is returned.
        """
        lo = min(max(0, -(-(start - self.hi) // self.stride)), self.length - 1)
        hi = min(self.length - 1, (end - 1 - self.lo) // self.stride)
        return lo, max(lo, hi)

    def moved(self, axis: int, length: int | None = None) -> PositionalMap:
        """The same windows on another axis (Transpose, Reshape, Squeeze...)."""
        return replace(self, axis=axis, length=self.length if length is None else length)

    def sliding(self, *, kernel_span: int, stride: int, pad_begin: int, length: int, axis: int) -> PositionalMap:
        """Compose with a sliding window op (Conv, pooling, Slice, Pad) along the length.

        Output position ``q`` reads this tensor's positions
        ``[stride * q - pad_begin, stride * q - pad_begin + kernel_span - 1]``.
        """
        s = self.stride
        return PositionalMap(
            axis=axis,
            length=length,
            stride=s * stride,
            lo=self.lo - s * pad_begin,
            hi=self.hi + s * (kernel_span - 1 - pad_begin),
        )

    def union(self, other: PositionalMap) -> PositionalMap:
        """Windows of an op reading both tensors position by position."""
        return replace(self, lo=min(self.lo, other.lo), hi=max(self.hi, other.hi))


def input_map(axis: int, length: int) -> PositionalMap:
    """The sequence input itself: position ``j`` depends on position ``j``."""
    return PositionalMap(axis=axis, length=length, stride=1, lo=0, hi=0)

"""The window of mutated positions: one parser for every form the CLI and the API accept."""

from __future__ import annotations

from .errors import InputError


def parse_window(window: tuple[int, int] | str | None, seq_len: int) -> tuple[int, int]:
    """``(start, end)`` of the mutated positions, ``0 <= start < end <= seq_len``.

    Parameters
    ----------
    window: ``None`` (the whole sequence), a pair ``(start, end)`` of integers (any
        two-element sequence, numpy integers included), or a string ``"start:end"`` in
        which either side may be empty (``":200"``, ``"100:"``).
    seq_len: the sequence length ``L``.

    Raises
    ------
    InputError: a value of another form, or one that does not fit ``L``; the message
        names the value received.
    """
    if window is None:
        return 0, seq_len
    if isinstance(window, str):
        try:
            start_text, end_text = window.split(":")
            start = int(start_text) if start_text else 0
            end = int(end_text) if end_text else seq_len
        except ValueError:
            raise InputError(f"window must be START:END (e.g. 100:200), got {window!r}") from None
        shown = f"{start}:{end}"
    else:
        try:
            start, end = window
            start, end = int(start), int(end)
        except (TypeError, ValueError):
            raise InputError(
                f"window must be a pair (start, end) of integers or a string START:END, got {window!r}"
            ) from None
        shown = f"({start}, {end})"
    if not 0 <= start < end <= seq_len:
        raise InputError(f"window {shown} must satisfy 0 <= start < end <= {seq_len} (the sequence length)")
    return start, end

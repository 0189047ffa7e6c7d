"""Memory sizes: parsing the ``max_memory`` budgets of conversion and runs."""

from __future__ import annotations

from .errors import InputError

#: the memory budget of one sequence a conversion plans for when none is given: above it
#: the window is streamed in chunks (``plan.stream_window``)
DEFAULT_CONVERT_MEMORY = 4 * 2**30


def parse_memory(value: str | int) -> int:
    """``"4G"``, ``"512M"``, ``"1e9"`` or an int → bytes."""
    if isinstance(value, int):
        if value <= 0:
            raise InputError(f"memory size must be positive, got {value!r}")
        return value
    text = str(value).strip().upper().removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    try:
        number = float(text[:-1] if scale != 1 else text)
    except ValueError:
        raise InputError(f"memory size must look like 4G, 512M or a number of bytes, got {value!r}") from None
    if number <= 0:
        raise InputError(f"memory size must be positive, got {value!r}")
    return int(number * scale)

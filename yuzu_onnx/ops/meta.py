"""Shape and Size: their outputs depend on the input only through its shape, so a tensor
computed from them is *meta* (known once the batch size is), never local data."""

from __future__ import annotations

from .registry import register

register("Shape", "Size", meta=True)

"""The benchmark's exception."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark step cannot run (missing package, unsupported model, bad option)."""

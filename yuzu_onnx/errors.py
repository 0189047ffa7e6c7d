"""Errors and warnings raised by yuzu-onnx.

Every problem a user can cause is a :class:`YuzuError` with a one-line message that
names the problem and, where there is one, the option that fixes it. The CLI prints
that line and exits with :attr:`YuzuError.exit_code` (2 for bad input or usage).
"""

from __future__ import annotations


class YuzuError(Exception):
    """Base class of every error yuzu-onnx raises on purpose."""

    exit_code: int = 1


class InputError(YuzuError):
    """Bad user input: a model, a sequence file, an option value. CLI exit code 2."""

    exit_code = 2


class ModelError(InputError):
    """The model cannot be used as given (not ONNX, no one-hot input, ambiguous...)."""


class SequenceError(InputError):
    """Sequences that do not fit the model (length, alphabet, values)."""


class UnsupportedError(YuzuError):
    """A model part the rewrite does not handle; callers fall back to naive ISM."""


class YuzuWarning(UserWarning):
    """Warnings about fallbacks, providers and anything that changes how work is done."""

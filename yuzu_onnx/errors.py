"""Errors and warnings raised by yuzu-onnx.

Every problem a user can cause is a :class:`YuzuError` with a one-line message that
names the problem and, where there is one, the option that fixes it. The CLI prints
that line and exits with :attr:`YuzuError.exit_code` (2 for bad input or usage).

Messages name options through :func:`option`, so that each interface spells them its own
way (``--seq-len`` in the CLI, ``seq_len=`` from Python); install hints for optional
dependencies come from :func:`install_hint`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class YuzuError(Exception):
    """Base class of every error yuzu-onnx raises on purpose.

    Options named in the message are :func:`option` references: ``str(exc)`` spells them
    for the interface in effect (``seq_len=`` from Python, ``--seq-len`` in the CLI).
    """

    exit_code: int = 1

    def __str__(self) -> str:
        return render(super().__str__())


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
    """Warnings about fallbacks, providers and anything that changes how work is done.

    Options named in the message render like those of :class:`YuzuError`.
    """

    def __str__(self) -> str:
        return render(super().__str__())


# --------------------------------------------------------------------------- option names
#
# An error that names an option names it the way the user spells it: ``--seq-len 500`` on
# the command line, ``seq_len=500`` from Python. Messages embed :func:`option` references;
# ``str(exc)`` renders them for the interface in effect (:func:`interface`; Python unless
# the CLI says otherwise), so a message wrapped into another keeps the right spelling.

#: option identifier → (command-line spelling, Python keyword) where they differ from the
#: default (``--seq-len`` / ``seq_len`` for the identifier ``seq_len``)
OPTION_SPELLINGS: dict[str, tuple[str, str]] = {
    "input_name": ("--input", "input_name"),
    "out": ("-o", "out"),
    "fmt": ("--format", "fmt"),
    "probe_seed": ("--probe-seed", "seed"),
    "plot_output": ("--output", "output"),
    "extra": ("--extra-input", "extra"),
}
INTERFACES = ("python", "cli")

_MARK, _SEP = "\x1e", "\x1f"
_NO_VALUE = object()
_REFERENCE = re.compile(f"{_MARK}([^{_MARK}{_SEP}]*){_SEP}([^{_MARK}{_SEP}]*){_SEP}([^{_MARK}{_SEP}]*){_MARK}")
_INTERFACE: ContextVar[str] = ContextVar("yuzu_onnx_interface", default="python")


def option_spelling(name: str, interface: str = "python") -> str:
    """How ``interface`` spells the option ``name``: ``--seq-len`` (cli) or ``seq_len=`` (python)."""
    cli, python = OPTION_SPELLINGS.get(name, ("--" + name.replace("_", "-"), name))
    return cli if interface == "cli" else python + "="


def option(name: str, value: object = _NO_VALUE) -> str:
    """A reference to the option ``name`` (its Python keyword), optionally with a value.

    Put it in an error or warning message; it renders as ``--seq-len`` / ``--seq-len 500``
    on the command line and as ``seq_len=`` / ``seq_len=500`` from Python (a flag given
    ``True`` renders as ``--resume`` / ``resume=True``).
    """
    if value is _NO_VALUE:
        cli, python = option_spelling(name, "cli"), option_spelling(name)
    elif value is True:
        cli, python = option_spelling(name, "cli"), f"{option_spelling(name)}True"
    else:
        cli, python = f"{option_spelling(name, 'cli')} {value}", f"{option_spelling(name)}{value!r}"
    return f"{_MARK}{name}{_SEP}{cli}{_SEP}{python}{_MARK}"


def render(message: str, interface: str | None = None) -> str:
    """``message`` with its :func:`option` references spelled for ``interface``
    (default: the one in effect, see :func:`interface`)."""
    which = interface or _INTERFACE.get()
    group = 2 if which == "cli" else 3
    return _REFERENCE.sub(lambda m: m.group(group), message)


@contextmanager
def interface(name: str) -> Iterator[None]:
    """Render option names in messages for ``name`` (``"cli"`` or ``"python"``) inside the block."""
    if name not in INTERFACES:
        raise ValueError(f"interface must be one of {INTERFACES}, got {name!r}")
    token = _INTERFACE.set(name)
    try:
        yield
    finally:
        _INTERFACE.reset(token)


#: whether ``pip install yuzu-onnx`` works (the package is not on PyPI yet); install hints
#: offer ``pip install 'yuzu-onnx[EXTRA]'`` once it does
PUBLISHED_ON_PYPI = False


def install_hint(package: str, extra: str | None = None) -> str:
    """How to install an optional dependency, in words that work from where the user is.

    ``install_hint("pyfaidx", "genome")`` → ``pip install pyfaidx (or, in a yuzu-onnx
    checkout, pip install '.[genome]')``: the package itself installs from anywhere; the
    extra from a source checkout, or by name once yuzu-onnx is on PyPI
    (:data:`PUBLISHED_ON_PYPI`). Every install hint in messages comes from here.
    """
    hint = f"pip install {package}"
    if extra and PUBLISHED_ON_PYPI:
        hint += f" (or pip install 'yuzu-onnx[{extra}]')"
    elif extra:
        hint += f" (or, in a yuzu-onnx checkout, pip install '.[{extra}]')"
    return hint

"""Sequence alphabets: the letters behind the one-hot axis of a model's input."""

from __future__ import annotations

from .errors import InputError, option

DNA = "ACGT"
RNA = "ACGU"
PROTEIN = "ACDEFGHIKLMNPQRSTVWY"

NAMED_ALPHABETS: dict[str, str] = {"dna": DNA, "rna": RNA, "protein": PROTEIN}
DEFAULT_FOR_SIZE: dict[int, str] = {4: DNA, 20: PROTEIN}


def resolve_alphabet(alphabet: str | int | None) -> str | None:
    """Turn an ``--alphabet`` value into its letters.

    ``None`` means "detect from the model" and stays ``None``; an int picks the default
    alphabet of that size (4 → ``ACGT``, 20 → the 20 amino acids); a name (``dna``, ``rna``,
    ``protein``) or a string of distinct letters is used as given (upper-cased).
    """
    if alphabet is None:
        return None
    if isinstance(alphabet, bool):
        raise InputError(f"alphabet must be a size, a name or letters, got {alphabet!r}")
    if isinstance(alphabet, int) or (isinstance(alphabet, str) and alphabet.isdigit()):
        size = int(alphabet)
        if size not in DEFAULT_FOR_SIZE:
            raise InputError(
                f"no default alphabet of size {size}; give its letters instead, "
                f"e.g. {option('alphabet', 'ACGT')} (known sizes: {sorted(DEFAULT_FOR_SIZE)})"
            )
        return DEFAULT_FOR_SIZE[size]
    if not isinstance(alphabet, str) or not alphabet:
        raise InputError(f"alphabet must be a size, a name or letters, got {alphabet!r}")
    letters = NAMED_ALPHABETS.get(alphabet.lower(), alphabet.upper())
    if len(set(letters)) != len(letters) or not letters.isalpha():
        raise InputError(f"alphabet {alphabet!r} must be distinct letters, e.g. ACGT")
    return letters

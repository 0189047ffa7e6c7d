"""Text input files, plain or gzipped (recognised by their magic bytes)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from .errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file, gunzipping it when it starts with the gzip magic bytes."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"{str(p)!r} is not a file")
    raw = p.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{str(p)!r} is a damaged gzip file: {exc}") from None
    return raw


def read_text(path: str | os.PathLike) -> str:
    """A text file's contents, plain or gzipped (detected by its magic bytes)."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{str(path)!r} is not a text file (byte {exc.start} is not valid UTF-8)"
        ) from None

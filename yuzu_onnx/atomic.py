"""Files written atomically: a temporary file beside the target, renamed into place.

Every result, model, sidecar and partial-store file goes through :func:`atomic_file`: the
data is written to a temporary file in the destination folder, flushed to disk
(``fsync``), given the permissions ``open()`` would give, and renamed over the target
with ``os.replace``. A crash or an error never leaves a partial file under the final
name; the temporary file is removed on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def default_file_mode() -> int:
    """``0o666`` less the umask: what ``open()`` would give (``mkstemp`` gives ``0o600``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Yield a binary file object; when the block succeeds it becomes ``path``.

    Parameters
    ----------
    path: the final file; its folder must exist.
    suffix: the temporary file's suffix (``.tmp.npy`` keeps tools that sniff suffixes happy).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(target.parent)


def write_json(path: str | os.PathLike, doc, *, sort_keys: bool = False) -> None:
    """Write ``doc`` as indented JSON (two spaces, final newline) atomically."""
    text = json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n"
    with atomic_file(path) as fh:
        fh.write(text.encode("utf-8"))


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

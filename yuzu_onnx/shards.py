"""Sharded results: a folder of shards with a manifest, written by any engine, read lazily.

A sharded result (``--format shards``) is a folder::

    OUT/
      manifest.json            what the run was and the list of finished shards
      shards/000000.json       shard 0's record: rows, files, checksums (written last)
      shards/000000/<output>.npy   ISM of rows start:stop, one file per output
      shards/000000/x.npy          the one-hot input of those rows
      shards/000000/names.npy      their names (unicode)
      shards/000000/coords.json    BED input only: [chrom, start, end, strand] per row
      ...

Shard ``i`` holds rows ``i * shard_size : (i + 1) * shard_size`` of the input, in input
order, whichever worker computed it. Every file is written atomically and its SHA-256
recorded in the shard's record, which is written after its files; a shard counts as done
only when its record is there and every checksum matches, so a worker killed mid-shard
leaves nothing that a resumed run would take for finished.

``manifest.json`` (:data:`SHARDS_FORMAT`) holds ``identity`` (the model's SHA-256, the
input's SHA-256 and the options that change results: a resumed run must match them),
``shard_size``, ``n_sequences``, ``outputs``, ``metadata`` (layout, alphabet, window,
reductions, ...), ``run`` (engine, workers, batch size: informational, free to change
between runs) and, once complete, ``shapes`` and the list of ``shards`` with their
records. :func:`load_results` reads a sharded folder, an NPY folder or an NPZ file
as :class:`Results`, memory-mapped and lazy.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_file, write_json
from .encoding import SequenceBatch
from .errors import InputError, option
from .partial_store import file_sha256
from .results import MANIFEST as NPY_MANIFEST
from .results import npy_file_name, read_npy_dir, read_npz

SHARDS_FORMAT = "yuzu-onnx-shards/1"
MANIFEST_FILE = "manifest.json"
SHARD_FOLDER = "shards"
DEFAULT_SHARD_SIZE = 256
#: array names stored beside the outputs in every shard
INPUT_ARRAYS = ("x", "names")


def shard_plan(n: int, shard_size: int) -> list[tuple[int, int, int]]:
    """``(index, start, stop)`` of every shard of ``n`` rows."""
    if shard_size < 1:
        raise InputError(f"{option('shard_size')} must be at least 1, got {shard_size}")
    return [(i, lo, min(n, lo + shard_size)) for i, lo in enumerate(range(0, n, shard_size))]


class _HashingFile:
    """A write-only file wrapper that hashes what goes through it."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def write_hashed(path: Path, writer) -> str:
    """Write ``path`` atomically with ``writer(fh)``; returns the SHA-256 of its bytes."""
    with atomic_file(path) as raw:
        fh = _HashingFile(raw)
        writer(fh)
        return fh.digest.hexdigest()


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Writes the files of single shards into ``folder`` (what a worker needs; no manifest).

    Parameters
    ----------
    folder: the sharded result folder.
    outputs: the ISM output names, in result order.
    """

    def __init__(self, folder: str | os.PathLike, outputs: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.outputs = list(outputs)
        clash = [o for o in self.outputs if npy_file_name(o) in ("x.npy", "names.npy")]
        if clash:
            raise InputError(f"model output {clash[0]!r} clashes with the stored input arrays (x, names)")

    def record_path(self, index: int) -> Path:
        return self.folder / SHARD_FOLDER / f"{index:06d}.json"

    def shard_dir(self, index: int) -> Path:
        return self.folder / SHARD_FOLDER / f"{index:06d}"

    def write(self, index: int, start: int, stop: int, arrays: Mapping[str, np.ndarray], batch: SequenceBatch,
              *, extra: Mapping | None = None) -> dict:
        """Write shard ``index`` (rows ``start:stop``) and its record; returns the record.

        Parameters
        ----------
        arrays: output name → ISM of the shard's rows, shape=(stop - start, ...).
        batch: the shard's sequences (``x``, ``names``, ``coords``).
        extra: further entries of the record (e.g. the shard's variant table part).
        """
        n = stop - start
        if len(batch) != n or any(len(arrays[name]) != n for name in self.outputs):
            raise InputError(f"shard {index} must hold {n} rows")
        folder = self.shard_dir(index)
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, dict] = {}
        payload = {name: np.ascontiguousarray(arrays[name], dtype=np.float32) for name in self.outputs}
        payload["x"] = np.ascontiguousarray(batch.x, dtype=np.float32)
        payload["names"] = np.asarray(list(batch.names), dtype=str)
        for name, arr in payload.items():
            fname = npy_file_name(name)
            sha = write_hashed(folder / fname, lambda fh, a=arr: np.save(fh, a, allow_pickle=False))
            files[name] = {"file": fname, "sha256": sha, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        if batch.coords is not None:
            text = json.dumps([list(c) for c in batch.coords]).encode()
            sha = write_hashed(folder / "coords.json", lambda fh: fh.write(text))
            files["coords"] = {"file": "coords.json", "sha256": sha}
        record = {"index": index, "start": start, "stop": stop, "dir": f"{SHARD_FOLDER}/{index:06d}",
                  "files": files, **dict(extra or {})}
        write_json(self.record_path(index), record, sort_keys=True)
        return record


def verify_record(folder: Path, record: Mapping, *, start: int, stop: int, outputs: Sequence[str]) -> bool:
    """Whether a shard's record describes rows ``start:stop`` and every file matches its checksum."""
    try:
        if record.get("start") != start or record.get("stop") != stop:
            return False
        files = record["files"]
        if any(name not in files for name in [*outputs, *INPUT_ARRAYS]):
            return False
        base = folder / record["dir"]
        for entry in files.values():
            if file_sha256(base / entry["file"]) != entry["sha256"]:
                return False
        part = record.get("variants")
        if part is not None and file_sha256(part["path"]) != part["sha256"]:
            return False
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


class ShardStore:
    """A sharded result folder being written: the manifest, the plan, the finished shards.

    Use :meth:`open`; workers write shards with a :class:`ShardWriter` on the same folder.
    """

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder = folder
        self.manifest = manifest
        self.writer = ShardWriter(folder, manifest["outputs"])

    @property
    def plan(self) -> list[tuple[int, int, int]]:
        return shard_plan(self.manifest["n_sequences"], self.manifest["shard_size"])

    @classmethod
    def open(cls, folder: str | os.PathLike, *, identity: Mapping, n_sequences: int, outputs: Sequence[str],
             shard_size: int | None, metadata: Mapping, run: Mapping, resume: bool) -> ShardStore:
        """Create the folder's manifest, or check the one there for ``resume``.

        Parameters
        ----------
        identity: ``model_sha256``, ``input_sha256`` and ``options`` (what changes results);
            a resumed run must match them.
        shard_size: rows per shard (default :data:`DEFAULT_SHARD_SIZE`, or the folder's on resume).
        metadata: the result's metadata (layout, alphabet, window, reductions, ...).
        run: how this run computes (engine, workers, batch size); recorded, never compared.
        resume: continue the run whose manifest is in ``folder``.

        Raises
        ------
        InputError: a folder with results without ``resume``; a folder of another run,
            model, input or options with ``resume``; a ``shard_size`` other than the folder's.
        """
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        if path.is_file():
            old = _read_json(path)
            _check_resumable(folder, old, identity, shard_size, resume=resume)
            manifest = {**old, "run": dict(run), "metadata": dict(metadata), "complete": False}
            manifest.pop("shards", None)
            manifest.pop("shapes", None)
        else:
            if folder.exists() and any(folder.iterdir()):
                raise InputError(f"output folder {str(folder)!r} is not empty and holds no {MANIFEST_FILE}; "
                                 f"give a new or empty folder for {option('fmt', 'shards')}")
            if resume:
                import warnings

                from .errors import YuzuWarning

                warnings.warn(f"nothing to resume: {str(folder)!r} holds no sharded run; starting from the first "
                              "sequence", YuzuWarning, stacklevel=3)
            size = DEFAULT_SHARD_SIZE if shard_size is None else int(shard_size)
            shard_plan(n_sequences, size)  # checks the size
            manifest = {"format": SHARDS_FORMAT, "complete": False, "identity": dict(identity),
                        "n_sequences": int(n_sequences), "shard_size": size, "outputs": list(outputs),
                        "metadata": dict(metadata), "run": dict(run)}
        folder.mkdir(exist_ok=True)
        (folder / SHARD_FOLDER).mkdir(exist_ok=True)
        write_json(path, manifest, sort_keys=True)
        return cls(folder, manifest)

    def done_shards(self) -> dict[int, dict]:
        """The shards already finished and verified by checksum (``index → record``)."""
        done: dict[int, dict] = {}
        for index, start, stop in self.plan:
            path = self.writer.record_path(index)
            if not path.is_file():
                continue
            record = _read_json(path)
            if isinstance(record, dict) and verify_record(self.folder, record, start=start, stop=stop,
                                                          outputs=self.manifest["outputs"]):
                done[index] = record
        return done

    def finish(self, records: Mapping[int, Mapping]) -> dict:
        """Check every shard is there, sweep temporary files, write the complete manifest."""
        plan = self.plan
        missing = [i for i, _, _ in plan if i not in records]
        if missing:
            raise InputError(f"{len(missing)} of {len(plan)} shards are missing (first: {missing[0]}); "
                             f"rerun with {option('resume')} to compute them")
        shards = [dict(records[i]) for i, _, _ in plan]
        first = shards[0]["files"]
        n = self.manifest["n_sequences"]
        shapes = {name: [n, *first[name]["shape"][1:]] for name in [*self.manifest["outputs"], *INPUT_ARRAYS]}
        for dirpath, _, filenames in os.walk(self.folder / SHARD_FOLDER):
            for name in filenames:
                if name.startswith(".") and name.endswith(".tmp"):  # left by a killed worker
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, name))
        self.manifest = {**self.manifest, "complete": True, "shapes": shapes, "shards": shards}
        write_json(self.folder / MANIFEST_FILE, self.manifest, sort_keys=True)
        return self.manifest

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_json(path: Path):
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text("utf-8"))
    return None


def _check_resumable(folder: Path, old, identity: Mapping, shard_size: int | None, *, resume: bool) -> None:
    if not isinstance(old, dict) or old.get("format") != SHARDS_FORMAT:
        raise InputError(f"{str(folder)!r} holds a {MANIFEST_FILE} that is not a yuzu-onnx sharded result; "
                         "give another output folder")
    if not resume:
        state = "a finished" if old.get("complete") else "an interrupted"
        raise InputError(f"{str(folder)!r} holds {state} sharded run; rerun with {option('resume')} to continue it "
                         "(finished shards are kept), or give another output folder")
    was = old.get("identity", {})
    for key, what in (("model_sha256", "the model"), ("input_sha256", "the input"), ("options", "the options")):
        if was.get(key) != identity.get(key):
            detail = ""
            if key == "options":
                a, b = was.get(key) or {}, identity.get(key) or {}
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                detail = " (" + ", ".join(f"{k}: was {a.get(k)!r}, now {b.get(k)!r}" for k in diff) + ")"
            raise InputError(f"cannot resume {str(folder)!r}: {what} differ from the earlier run's{detail}; "
                             "rerun with the same model, input and options, or give another output folder")
    if shard_size is not None and int(shard_size) != old.get("shard_size"):
        raise InputError(f"cannot resume {str(folder)!r} with {option('shard_size')} {shard_size}: it was written with "
                         f"{option('shard_size')} {old.get('shard_size')}; leave the option out or pass that value")


# --------------------------------------------------------------------------- reading


class ShardedArray:
    """One array of a sharded result: the shards' ``.npy`` files, memory-mapped on first use.

    Behaves like a read-only array for row access: ``len(a)``, ``a.shape``, ``a.dtype``,
    ``a[i]``, ``a[lo:hi]``, ``a[i, ...]`` and ``np.asarray(a)`` (which reads every shard).
    """

    def __init__(self, name: str, parts: Sequence[tuple[int, int, Path]], row_shape: Sequence[int], dtype) -> None:
        self.name = name
        self.parts = list(parts)
        self.starts = [lo for lo, _, _ in self.parts]
        self.shape = (self.parts[-1][1] if self.parts else 0, *row_shape)
        self.dtype = np.dtype(dtype)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def part(self, i: int) -> np.ndarray:
        """Shard ``i``'s rows, memory-mapped."""
        if i not in self._maps:
            self._maps[i] = np.load(self.parts[i][2], mmap_mode="r", allow_pickle=False)
        return self._maps[i]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (a view into one shard when they lie in one, else a copy)."""
        lo, hi = max(0, lo), min(len(self), hi)
        if hi <= lo:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        first = bisect.bisect_right(self.starts, lo) - 1
        pieces = []
        i = first
        while i < len(self.parts) and self.parts[i][0] < hi:
            start, stop, _ = self.parts[i]
            pieces.append(self.part(i)[max(lo, start) - start : min(hi, stop) - start])
            i += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} is out of range for {len(self)} rows")
            out = self.rows(i, i + 1)[0]
        elif isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            out = self.rows(lo, hi)[::step] if step > 0 else np.asarray(self)[key]
        else:
            out = np.asarray(self)[key]
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self.rows(0, len(self))
        return out.astype(dtype) if dtype is not None else np.array(out)

    def __repr__(self) -> str:
        return f"ShardedArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, shards={len(self.parts)})"


@dataclass
class Results:
    """A result on disk, read lazily (see :func:`load_results`).

    Attributes
    ----------
    path: the result.
    kind: ``shards``, ``npy`` or ``npz``.
    metadata: the run's metadata (layout, alphabet, window, reductions, outputs, ...).
    arrays: name → array (memory-mapped ``np.ndarray`` or :class:`ShardedArray`), the ISM
        outputs and ``x``.
    names: the sequence names.
    coords: BED input: ``(chrom, start, end, strand)`` per sequence; else ``None``.
    bounds: ``(start, stop)`` of each shard (one pair for NPZ/NPY).
    """

    path: Path
    kind: str
    metadata: dict
    arrays: dict
    names: np.ndarray
    coords: list | None
    bounds: list[tuple[int, int]]

    @property
    def outputs(self) -> list[str]:
        """The ISM outputs, in result order."""
        listed = self.metadata.get("outputs")
        return [k for k in listed if k in self.arrays] if isinstance(listed, list) else \
            [k for k in self.arrays if k not in INPUT_ARRAYS]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str):
        if name not in self.arrays:
            raise KeyError(f"no array {name!r}; arrays: {', '.join(self.arrays)}")
        return self.arrays[name]

    def __contains__(self, name) -> bool:
        return name in self.arrays

    def blocks(self) -> Iterator[tuple[int, int, dict[str, np.ndarray], tuple[str, ...], list | None]]:
        """Yield ``(start, stop, {name: rows}, names, coords)`` per shard, in row order."""
        for lo, hi in self.bounds:
            arrays = {name: _rows(arr, lo, hi) for name, arr in self.arrays.items()}
            coords = None if self.coords is None else self.coords[lo:hi]
            yield lo, hi, arrays, tuple(str(s) for s in self.names[lo:hi]), coords


def _rows(arr, lo: int, hi: int) -> np.ndarray:
    return arr.rows(lo, hi) if isinstance(arr, ShardedArray) else arr[lo:hi]


def load_results(path: str | os.PathLike, *, verify: bool = False) -> Results:
    """Open a result: a sharded folder, an NPY folder or an NPZ file, lazily.

    Parameters
    ----------
    path: the result of ``yuzu-onnx run`` (``--format shards``, ``npy`` or ``npz``).
    verify: check every shard's files against the checksums in the manifest.

    Returns
    -------
    Results: ISM arrays of shape ``(N, A, Lw, ...)`` (ncl) or ``(N, Lw, A, ...)`` (nlc) and
    ``x`` of shape ``(N, A, L)`` or ``(N, L, A)``, memory-mapped (NPZ files are read whole).

    Raises
    ------
    InputError: not a result, an unfinished sharded run, or (``verify``) a damaged shard.
    """
    p = Path(path)
    if p.is_dir() and (p / MANIFEST_FILE).is_file():
        return _load_shards(p, verify=verify)
    if p.is_dir() and (p / NPY_MANIFEST).is_file():
        arrays, meta = read_npy_dir(p, mmap=True)
        return _single(p, "npy", arrays, meta)
    if p.is_file():
        arrays, meta = read_npz(p)
        return _single(p, "npz", arrays, meta)
    if p.is_dir():
        raise InputError(f"{str(p)!r} is not a yuzu-onnx result (no {MANIFEST_FILE} or {NPY_MANIFEST})")
    raise InputError(f"result {str(p)!r} does not exist")


def _single(p: Path, kind: str, arrays: dict, meta: dict) -> Results:
    names = arrays.pop("names", None)
    if "x" not in arrays or names is None:
        raise InputError(f"{str(p)!r} is not a yuzu-onnx result (no 'x' and 'names' arrays)")
    coords = meta.get("coords")
    return Results(p, kind, meta, arrays, np.asarray(names), coords, [(0, len(names))])


def _load_shards(p: Path, *, verify: bool) -> Results:
    manifest = _read_json(p / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format") != SHARDS_FORMAT:
        raise InputError(f"{str(p / MANIFEST_FILE)!r} is not a yuzu-onnx sharded result manifest")
    if not manifest.get("complete"):
        raise InputError(f"{str(p)!r} holds an unfinished sharded run; rerun it with {option('resume')} to finish it")
    shards = manifest["shards"]
    outputs = manifest["outputs"]
    if verify:
        for rec in shards:
            if not verify_record(p, rec, start=rec["start"], stop=rec["stop"], outputs=outputs):
                raise InputError(f"shard {rec['index']} of {str(p)!r} does not match its checksums; "
                                 f"delete its record shards/{{:06d}}.json and rerun with {option('resume')}".format(rec["index"]))
    arrays: dict = {}
    for name in [*outputs, "x"]:
        shape = manifest["shapes"][name]
        parts = [(rec["start"], rec["stop"], p / rec["dir"] / rec["files"][name]["file"]) for rec in shards]
        arrays[name] = ShardedArray(name, parts, shape[1:], shards[0]["files"][name]["dtype"])
    names = np.concatenate([np.load(p / rec["dir"] / rec["files"]["names"]["file"], allow_pickle=False)
                            for rec in shards])
    coords = None
    if "coords" in shards[0]["files"]:
        coords = []
        for rec in shards:
            coords += json.loads((p / rec["dir"] / rec["files"]["coords"]["file"]).read_text("utf-8"))
    meta = {**manifest["metadata"], "outputs": outputs, "n_sequences": manifest["n_sequences"]}
    return Results(p, "shards", meta, arrays, names, coords, [(rec["start"], rec["stop"]) for rec in shards])

"""BED regions and a genome FASTA: fixed-length sequences centred on each region.

Reading the genome needs ``pyfaidx`` (``pip install pyfaidx``, see :func:`yuzu_onnx.errors.install_hint`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from .alphabets import DNA
from .encoding import SequenceBatch, one_hot, reverse_complement
from .errors import InputError, SequenceError, YuzuWarning, install_hint
from .layout import NCL
from .textfiles import read_text

STRANDS = ("+", "-", ".")


@dataclass(frozen=True)
class BedRegion:
    """One BED line: 0-based, half-open ``[start, end)`` on ``chrom``.

    ``name`` is ``None`` when the line has no name column (or the name is ``.``);
    ``strand`` is ``"+"``, ``"-"`` or ``"."`` (``"."`` when absent).
    """

    chrom: str
    start: int
    end: int
    name: str | None = None
    strand: str = "."


def read_bed(path: str | os.PathLike) -> list[BedRegion]:
    """Read a BED file (plain or gzipped).

    Tab- or whitespace-separated, at least 3 columns (``chrom start end``), optional
    ``name`` (4th) and ``strand`` (6th) columns. Blank lines, ``#`` comments and
    ``track``/``browser`` lines are skipped.

    Raises
    ------
    SequenceError: a malformed line (named by its line number), or no regions.
    """
    text = read_text(path)
    regions: list[BedRegion] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.split()[0] in ("track", "browser"):
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else stripped.split()
        fields = [f.strip() for f in fields]
        where = f"{str(path)!r} line {lineno}"
        if len(fields) < 3:
            raise SequenceError(f"{where}: expected at least 3 columns (chrom start end), got {len(fields)}")
        chrom = fields[0]
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise SequenceError(
                f"{where}: start and end must be integers, got {fields[1]!r} and {fields[2]!r}"
            ) from None
        if not chrom:
            raise SequenceError(f"{where}: empty chromosome name")
        if start < 0 or end < start:
            raise SequenceError(f"{where}: invalid interval {start}-{end} (need 0 <= start <= end)")
        name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
        strand = fields[5] if len(fields) > 5 and fields[5] else "."
        if strand not in STRANDS:
            raise SequenceError(f"{where}: strand must be +, - or ., got {strand!r}")
        regions.append(BedRegion(chrom, start, end, name, strand))
    if not regions:
        raise SequenceError(f"{str(path)!r} contains no BED regions")
    return regions


def resize_region(region: BedRegion, seq_len: int) -> tuple[int, int]:
    """The ``[start, end)`` of length ``seq_len`` centred on ``region``.

    centre = ``(start + end) // 2``, new start = ``centre - seq_len // 2``; the start may
    be negative (the region runs off the chromosome's start).
    """
    centre = (region.start + region.end) // 2
    start = centre - seq_len // 2
    return start, start + seq_len


def open_genome(genome_fasta):
    """Open a genome FASTA with ``pyfaidx`` (builds the ``.fai`` index when missing)."""
    try:
        import pyfaidx
    except ImportError:
        raise InputError(
            f"reading BED regions needs pyfaidx, which is not installed; {install_hint('pyfaidx', 'genome')}"
        ) from None
    if isinstance(genome_fasta, pyfaidx.Fasta):
        return genome_fasta
    path = os.fspath(genome_fasta)
    if not os.path.isfile(path):
        raise InputError(f"genome FASTA {path!r} does not exist")
    try:
        return pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=True)
    except Exception as exc:
        raise InputError(
            f"cannot open genome FASTA {path!r} with pyfaidx ({type(exc).__name__}: {exc}); "
            "a gzipped genome must be bgzip-compressed"
        ) from None


def extract_regions(
    bed_regions: Sequence[BedRegion],
    genome_fasta,
    seq_len: int,
    *,
    strand: bool = False,
    alphabet: str = DNA,
    layout: str = NCL,
) -> SequenceBatch:
    """Fixed-length one-hot sequences centred on BED regions.

    Parameters
    ----------
    bed_regions: from :func:`read_bed`.
    genome_fasta: a path to the genome FASTA, or an open ``pyfaidx.Fasta``.
    seq_len: the model's sequence length; every region is centred and resized to it.
    strand: reverse-complement regions on the ``-`` strand.
    alphabet: the model's alphabet (``"ACGT"`` or ``"ACGU"``).
    layout: ``"ncl"`` or ``"nlc"``, the layout of the returned array.

    Returns
    -------
    SequenceBatch: ``x`` of shape ``(N, A, seq_len)`` or ``(N, seq_len, A)``; names from
    the BED name column, else ``chrom:start-end`` of the resized region; ``coords`` =
    ``(chrom, start, end, strand)`` of the resized region, strand ``"-"`` when the
    sequence was reverse-complemented, else ``"+"``.

    Warns
    -----
    YuzuWarning: when regions run off a chromosome end (padded with ``N``).

    Raises
    ------
    SequenceError: an unknown chromosome.
    """
    if seq_len < 1:
        raise InputError(f"seq_len must be positive, got {seq_len}")
    regions = list(bed_regions)
    if not regions:
        raise SequenceError("no BED regions to extract")
    fasta = open_genome(genome_fasta)
    try:
        chrom_lens = {name: len(fasta[name]) for name in fasta.keys()}
        seqs: list[str] = []
        names: list[str] = []
        coords: list[tuple[str, int, int, str]] = []
        padded = 0
        for region in regions:
            if region.chrom not in chrom_lens:
                raise SequenceError(_unknown_chrom_message(region, chrom_lens))
            start, end = resize_region(region, seq_len)
            chrom_len = chrom_lens[region.chrom]
            lo, hi = max(start, 0), min(end, chrom_len)
            body = str(fasta[region.chrom][lo:hi]) if hi > lo else ""
            left, right = lo - start, end - max(hi, lo)
            if left or right:
                padded += 1
                body = "N" * left + body + "N" * right
            minus = strand and region.strand == "-"
            if minus:
                body = reverse_complement(body)
            seqs.append(body)
            names.append(region.name if region.name is not None else f"{region.chrom}:{start}-{end}")
            coords.append((region.chrom, start, end, "-" if minus else "+"))
    finally:
        if fasta is not genome_fasta:
            fasta.close()
    if padded:
        warnings.warn(
            f"{padded} of {len(regions)} regions run off a chromosome end and were padded with N "
            f"to length {seq_len}",
            YuzuWarning,
            stacklevel=2,
        )
    x = one_hot(seqs, alphabet, layout=layout, names=names)
    return SequenceBatch(x=x, names=tuple(names), coords=tuple(coords))


def _unknown_chrom_message(region: BedRegion, chrom_lens) -> str:
    chrom = region.chrom
    alt = chrom[3:] if chrom.startswith("chr") else f"chr{chrom}"
    known = list(chrom_lens)
    shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
    hint = f"; did you mean {alt!r}? (chromosome naming differs)" if alt in chrom_lens else ""
    return (
        f"chromosome {chrom!r} (region {chrom}:{region.start}-{region.end}) is not in the genome "
        f"FASTA (its chromosomes: {shown}){hint}"
    )

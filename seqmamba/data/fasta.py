"""FASTA windows, read lazily through pyfaidx: a BED-driven interval dataset and BED-less tiling.

Coordinates are 0-based, half-open ``[start, end)`` everywhere (BED's convention; pyfaidx slices
the same way). A multi-gigabyte FASTA is never loaded: only the ``.fai`` index (built by pyfaidx
on first use) and the windows asked for are read.

Window placement (``FastaIntervalDataset``), as in the Mamba paper / hyena-dna's hg38 loader:

* With a BED in the Basenji format (``chrom  start  end  split``; split in train / valid / test):
  an interval of I bases with L <= I is cut into ``I // L`` windows from its start (the remainder
  ``I % L`` is counted as ``uncovered_bases``); with L > I it gives two windows, one starting at the
  interval's start and one ending at its end. A window that would cross a chromosome edge is
  shifted inside the chromosome (counted as ``shifted_at_edge``) instead of padded or truncated,
  so every window has exactly L real bases. A chromosome shorter than L is an error.
* Without a BED: every chromosome of the split is tiled by non-overlapping windows from 0; a tail
  shorter than L gets one more window ending at the chromosome's end (overlapping its neighbour,
  counted as ``tail_windows``); contigs shorter than L are skipped and counted. Splits are by
  chromosome: ``val_chroms`` / ``test_chroms`` when given, otherwise the last chromosomes in name
  order holding ``val_fraction`` of the bases are the validation split (no test split).

N handling: a window whose fraction of N (and other ambiguous) bases exceeds ``max_n_fraction``
is skipped where it is drawn (training) or listed (validation), and counted; the N positions of
kept windows are masked out of the loss by the task (target -100).
"""
from __future__ import annotations

import gzip
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from seqmamba.registry import DATASETS

from .dna_tokenizer import N, DNATokenizer, reverse_complement

SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")


def check_fasta_file(path: str) -> str:
    """``path`` exists and starts like a FASTA file (first non-blank line ``>name``); else one-line error."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FASTA file {path!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as g:
                first = g.read(4096)
        except OSError as err:
            raise ValueError(f"{path}: not a readable gzip file ({err})") from None
        gz = True
    else:
        with open(path, "rb") as f:
            first = f.read(4096)
        gz = False
    line = next((ln for ln in first.splitlines() if ln.strip()), b"")
    if not line.startswith(b">"):
        shown = line[:40].decode("ascii", errors="replace")
        raise ValueError(f"{path}:1: not a FASTA file (the first line {shown!r} does not start with '>')")
    if gz:
        raise ValueError(f"{path}: gzip-compressed FASTA cannot be read by random access; decompress it "
                         f"(gunzip -k {path}) or recompress with bgzip")
    return path


def open_fasta(path: str):
    """A pyfaidx.Fasta over ``path`` (raw strings, case kept), after :func:`check_fasta_file`."""
    import pyfaidx

    path = check_fasta_file(path)
    try:
        return pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=False, read_ahead=None,
                             build_index=True)
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError) as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"{path}: pyfaidx cannot index this FASTA ({msg})") from None


@dataclass(frozen=True)
class BedInterval:
    chrom: str
    start: int
    end: int
    split: str
    line: int


def read_bed(path: str, chrom_lengths: Optional[Dict[str, int]] = None, fasta_path: str = "") -> List[BedInterval]:
    """Intervals of a Basenji-format BED (``chrom start end split``, tab or space separated; ``#``,
    ``track`` and ``browser`` lines ignored). Every malformed line is a one-line error naming
    ``path:line``; with ``chrom_lengths`` a chromosome absent from the FASTA or an interval past its
    end is too."""
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"BED file {path!r} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    out: List[BedInterval] = []
    with opener(path, "rt") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.strip()
            if not text or text.startswith(("#", "track", "browser")):
                continue
            cols = text.split()
            if len(cols) < 4:
                raise ValueError(f"{path}:{number}: expected 4 columns 'chrom start end split' (Basenji format), "
                                 f"got {len(cols)}: {text[:80]!r}")
            chrom, start_s, end_s, split = cols[:4]
            try:
                start, end = int(start_s), int(end_s)
            except ValueError:
                raise ValueError(f"{path}:{number}: start/end must be integers, got {start_s!r} {end_s!r}") from None
            if start < 0 or end <= start:
                raise ValueError(f"{path}:{number}: need 0 <= start < end, got start={start} end={end}")
            if split not in SPLIT_ALIASES:
                raise ValueError(f"{path}:{number}: split {split!r} is not one of train, valid, test")
            if chrom_lengths is not None:
                if chrom not in chrom_lengths:
                    raise ValueError(f"{path}:{number}: chromosome {chrom!r} is not in the FASTA {fasta_path} "
                                     f"(it has {_few(chrom_lengths)})")
                if end > chrom_lengths[chrom]:
                    raise ValueError(f"{path}:{number}: end {end} is past the end of {chrom} "
                                     f"({chrom_lengths[chrom]} bases in {fasta_path})")
            out.append(BedInterval(chrom, start, end, SPLIT_ALIASES[split], number))
    if not out:
        raise ValueError(f"{path}: the BED file has no intervals")
    return out


def _few(names, k: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def place_windows(start: int, end: int, chrom_len: int, seq_len: int, counts: Counter) -> List[int]:
    """Window starts for the interval [start, end) (see the module docstring); all inside [0, chrom_len)."""
    if seq_len > chrom_len:
        raise ValueError(f"window of {seq_len} bases is longer than the chromosome ({chrom_len} bases)")
    size = end - start
    if seq_len <= size:
        n = size // seq_len
        counts["uncovered_bases"] += size - n * seq_len
        return [start + k * seq_len for k in range(n)]
    starts = []
    for s in (start, end - seq_len):
        clamped = min(max(s, 0), chrom_len - seq_len)
        if clamped != s:
            counts["shifted_at_edge"] += 1
        starts.append(clamped)
    return starts


def tile_chromosome(chrom_len: int, seq_len: int, counts: Counter) -> List[int]:
    """Non-overlapping windows from 0, plus one ending at the chromosome's end for a short tail."""
    starts = list(range(0, chrom_len - seq_len + 1, seq_len))
    if starts and starts[-1] + seq_len < chrom_len:
        starts.append(chrom_len - seq_len)
        counts["tail_windows"] += 1
    return starts


def chromosome_split(lengths: Dict[str, int], val_chroms: Optional[Sequence[str]], test_chroms: Optional[Sequence[str]],
                     val_fraction: float, where: str) -> Dict[str, str]:
    """chrom -> split for BED-less data (see the module docstring). Unknown names in the lists fail."""
    split = {c: "train" for c in lengths}
    if val_chroms or test_chroms:
        for names, which in ((val_chroms or [], "valid"), (test_chroms or [], "test")):
            for c in names:
                c = str(c)
                if c not in lengths:
                    raise ValueError(f"dataset.{'val' if which == 'valid' else 'test'}_chroms: {c!r} is not a "
                                     f"chromosome of {where} (it has {_few(lengths)})")
                split[c] = which
        return split
    names = sorted(lengths)
    if len(names) < 2:
        raise ValueError(f"{where} has a single sequence {names}: without a BED, the validation split is a set "
                         f"of chromosomes; give dataset.bed or a FASTA with several chromosomes")
    total, taken = sum(lengths.values()), 0
    for c in reversed(names[1:]):  # the first chromosome always stays in training
        if taken >= val_fraction * total:
            break
        split[c] = "valid"
        taken += lengths[c]
    return split


@DATASETS.register("fasta_intervals")
class FastaIntervalDataset:
    """Windows of ``seq_len`` bases of one split of a FASTA (with or without a BED), read lazily.

    ``read(i)`` is the text of window i; ``tokens(i, rc)`` its ids (uint8) on either strand.
    ``counts`` says what placement skipped or shifted; ``n_fraction(ids)`` is the share of N."""

    def __init__(self, fasta: str, bed: Optional[str] = None, seq_len: int = 1024, split: str = "train",
                 max_n_fraction: float = 0.5, val_chroms: Optional[Sequence[str]] = None,
                 test_chroms: Optional[Sequence[str]] = None, val_fraction: float = 0.1, name: str = ""):
        if not fasta:
            raise ValueError("dataset.fasta is not set: give the FASTA file, e.g. dataset.fasta=data/hg38/hg38.ml.fa")
        if split not in SPLIT_ALIASES:
            raise ValueError(f"split {split!r} is not one of train, valid, test")
        if not 0.0 <= float(max_n_fraction) <= 1.0:
            raise ValueError(f"dataset.max_n_fraction={max_n_fraction!r}: expected a number in [0, 1]")
        self.fasta_path = check_fasta_file(fasta)
        self.bed_path = os.path.expanduser(str(bed)) if bed else None
        if self.bed_path and not os.path.isfile(self.bed_path):
            raise FileNotFoundError(f"BED file {self.bed_path!r} does not exist")
        self.seq_len = int(seq_len)
        self.split = SPLIT_ALIASES[split]
        self.max_n_fraction = float(max_n_fraction)
        self.tokenizer = DNATokenizer()
        self._fasta = None
        lengths = {name: len(rec) for name, rec in self.fasta.records.items()}
        if not lengths:
            raise ValueError(f"{self.fasta_path}: the FASTA has no sequences")
        self.chrom_lengths = lengths
        self.counts: Counter = Counter()
        chroms: List[str] = []
        chrom_ids: Dict[str, int] = {}
        chrom_index: List[int] = []
        starts: List[int] = []
        if self.bed_path:
            for iv in read_bed(self.bed_path, lengths, self.fasta_path):
                if iv.split != self.split:
                    continue
                try:
                    placed = place_windows(iv.start, iv.end, lengths[iv.chrom], self.seq_len, self.counts)
                except ValueError as err:
                    raise ValueError(f"{self.bed_path}:{iv.line}: {err} ({iv.chrom}); use a shorter seq_len") from None
                if iv.chrom not in chrom_ids:
                    chrom_ids[iv.chrom] = len(chroms)
                    chroms.append(iv.chrom)
                chrom_index.extend([chrom_ids[iv.chrom]] * len(placed))
                starts.extend(placed)
            where = f"{self.bed_path} (split {self.split})"
        else:
            split_of = chromosome_split(lengths, val_chroms, test_chroms, float(val_fraction), self.fasta_path)
            for chrom in lengths:
                if split_of[chrom] != self.split:
                    continue
                if lengths[chrom] < self.seq_len:
                    self.counts["short_contigs_skipped"] += 1
                    continue
                placed = tile_chromosome(lengths[chrom], self.seq_len, self.counts)
                chroms.append(chrom)
                chrom_index.extend([len(chroms) - 1] * len(placed))
                starts.extend(placed)
            where = f"{self.fasta_path} (split {self.split}, tiled without a BED)"
            if self.counts["short_contigs_skipped"]:
                warnings.warn(f"{self.fasta_path}: {self.counts['short_contigs_skipped']} sequences shorter than "
                              f"seq_len={self.seq_len} skipped")
        if not starts:
            raise ValueError(f"{where}: no window of {self.seq_len} bases in this split")
        self.chroms = chroms
        self.chrom_index = np.asarray(chrom_index, dtype=np.int32)
        self.starts = np.asarray(starts, dtype=np.int64)

    @property
    def fasta(self):
        if self._fasta is None:  # opened on first use (and again in a forked worker, if it closed)
            self._fasta = open_fasta(self.fasta_path)
        return self._fasta

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fasta"] = None
        return state

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def coordinates(self, i: int) -> Tuple[str, int, int]:
        start = int(self.starts[i])
        return self.chroms[int(self.chrom_index[i])], start, start + self.seq_len

    def read(self, i: int, rc: bool = False) -> str:
        chrom, start, end = self.coordinates(i)
        seq = self.fasta[chrom][start:end]
        if len(seq) != end - start:  # never expected: placement keeps windows inside the chromosome
            raise RuntimeError(f"{self.fasta_path}: read {chrom}:{start}-{end} returned {len(seq)} bases")
        return reverse_complement(seq) if rc else seq

    def tokens(self, i: int, rc: bool = False) -> np.ndarray:
        chrom, start, end = self.coordinates(i)
        return self.tokenizer.encode(self.read(i, rc), where=f"{self.fasta_path} {chrom}:{start}-{end}")

    def too_many_n(self, ids: np.ndarray) -> bool:
        return float((ids == N).mean()) > self.max_n_fraction

    def summary(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()) if v)
        return (f"{len(self)} windows of {self.seq_len} bases on {len(self.chroms)} sequences "
                f"({self.split}){'; ' + extra if extra else ''}")

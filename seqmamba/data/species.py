"""Species windows (Great Apes): species -> chromosome -> window, with chromosome splits.

Layout of ``species_dir`` (what data_scripts/download_great_apes.py and make_demo_genomes.py write)::

    species_dir/manifest.tsv            species  chrom  path  length   (path relative to species_dir)
    species_dir/<species>/chr<name>.fa  one chromosome per file

Without a manifest, every ``<species>/*.fa|.fasta|.fna`` file is read and each record in it is a
chromosome. Chromosome names are compared without a ``chr`` prefix, so ``chr12`` and ``12`` are the
same chromosome for the split lists. Default splits follow hyena-dna's species task (and the Mamba
paper): valid 1, 3, 12, 13; test 5, 7, 9, 10, 11; train every other chromosome (X, Y, 2A, 2B
included). A species without chrY (female assemblies) simply has fewer training chromosomes.

A sample: a species uniformly, one of its chromosomes in the split uniformly, a start uniformly in
[0, length - L]; windows with more than ``max_n_fraction`` N are redrawn (counted). Reverse
complement with probability ``rc_prob``.
"""
from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from seqmamba.registry import DATASETS

from .dna_tokenizer import N, DNATokenizer, reverse_complement
from .fasta import FASTA_SUFFIXES, SPLIT_ALIASES, open_fasta

DEFAULT_SPECIES = ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")
DEFAULT_VAL_CHROMS = ("1", "3", "12", "13")
DEFAULT_TEST_CHROMS = ("5", "7", "9", "10", "11")
MAX_REDRAWS = 1000


def short_chrom_name(name: str) -> str:
    return name[3:] if name.lower().startswith("chr") else name


def read_manifest(species_dir: str) -> List[Tuple[str, str, str, int]]:
    """Rows (species, chrom, absolute path, length) of ``manifest.tsv``, or of a directory scan."""
    species_dir = os.path.expanduser(str(species_dir))
    if not os.path.isdir(species_dir):
        raise FileNotFoundError(f"dataset.species_dir={species_dir!r} is not a directory")
    manifest = os.path.join(species_dir, "manifest.tsv")
    rows: List[Tuple[str, str, str, int]] = []
    if os.path.isfile(manifest):
        with open(manifest, newline="") as f:
            reader = csv.reader(f, delimiter="\t")
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:4]] != ["species", "chrom", "path", "length"]:
                raise ValueError(f"{manifest}:1: expected the header 'species<TAB>chrom<TAB>path<TAB>length', "
                                 f"got {header!r}")
            for number, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 4:
                    raise ValueError(f"{manifest}:{number}: expected 4 tab-separated columns, got {row!r}")
                try:
                    length = int(row[3])
                except ValueError:
                    raise ValueError(f"{manifest}:{number}: length {row[3]!r} is not an integer") from None
                path = row[2] if os.path.isabs(row[2]) else os.path.join(species_dir, row[2])
                rows.append((row[0], row[1], path, length))
        if not rows:
            raise ValueError(f"{manifest}: the manifest lists no chromosomes")
        return rows
    for species in sorted(os.listdir(species_dir)):
        folder = os.path.join(species_dir, species)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(FASTA_SUFFIXES):
                path = os.path.join(folder, fname)
                fasta = open_fasta(path)
                rows.extend((species, name, path, len(rec)) for name, rec in fasta.records.items())
    if not rows:
        raise ValueError(f"dataset.species_dir={species_dir!r} is empty: expected manifest.tsv or "
                         f"<species>/<chrom>.fa files (make them with data_scripts/make_demo_genomes.py or "
                         f"data_scripts/download_great_apes.py)")
    return rows


@DATASETS.register("species_windows")
class SpeciesDataset:
    """Labelled windows of ``seq_len`` bases from one split of several species' chromosomes."""

    def __init__(self, species_dir: str, seq_len: int = 1024, split: str = "train",
                 species: Sequence[str] = DEFAULT_SPECIES, val_chroms: Sequence = DEFAULT_VAL_CHROMS,
                 test_chroms: Sequence = DEFAULT_TEST_CHROMS, max_n_fraction: float = 0.5, rc_prob: float = 0.0,
                 name: str = ""):
        if not species_dir:
            raise ValueError("dataset.species_dir is not set: give the folder of per-species chromosome FASTAs")
        if split not in SPLIT_ALIASES:
            raise ValueError(f"split {split!r} is not one of train, valid, test")
        self.species_dir = os.path.expanduser(str(species_dir))
        self.seq_len = int(seq_len)
        self.split = SPLIT_ALIASES[split]
        self.species = [str(s) for s in species]
        self.max_n_fraction = float(max_n_fraction)
        self.rc_prob = float(rc_prob)
        self.tokenizer = DNATokenizer()
        self.counts: Counter = Counter()
        val = {short_chrom_name(str(c)) for c in val_chroms}
        test = {short_chrom_name(str(c)) for c in test_chroms}
        rows = read_manifest(self.species_dir)
        present = sorted({r[0] for r in rows})
        missing = [s for s in self.species if s not in present]
        if missing:
            raise ValueError(f"dataset.species_dir={self.species_dir!r} has no chromosomes of {missing} "
                             f"(it has {present})")
        # per species: list of (chrom, path, length) in this split
        self.chroms: Dict[str, List[Tuple[str, str, int]]] = {s: [] for s in self.species}
        for sp, chrom, path, length in rows:
            if sp not in self.chroms:
                continue
            short = short_chrom_name(chrom)
            which = "valid" if short in val else "test" if short in test else "train"
            if which != self.split:
                continue
            if length < self.seq_len:
                raise ValueError(f"{path}: chromosome {chrom} of {sp} has {length} bases, shorter than the window "
                                 f"seq_len={self.seq_len}")
            self.chroms[sp].append((chrom, path, length))
        empty = [s for s, c in self.chroms.items() if not c]
        if empty:
            raise ValueError(f"{self.species_dir}: species {empty} have no chromosome in the {self.split} split "
                             f"(valid {sorted(val)}, test {sorted(test)})")
        self._open: Dict[str, object] = {}

    @property
    def num_classes(self) -> int:
        return len(self.species)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def _read(self, path: str, chrom: str, start: int, end: int) -> str:
        fasta = self._open.get(path)
        if fasta is None:
            fasta = self._open[path] = open_fasta(path)
        try:
            seq = fasta[chrom][start:end]
        except KeyError:
            raise ValueError(f"{path}: has no record {chrom!r} (listed in {self.species_dir}/manifest.tsv)") from None
        if len(seq) != end - start:
            raise ValueError(f"{path}: {chrom}:{start}-{end} returned {len(seq)} bases; the manifest length "
                             f"is wrong for this file")
        return seq

    def draw(self, generator: torch.Generator) -> Tuple[np.ndarray, int, Tuple[str, str, int]]:
        """One window: (ids uint8 (seq_len,), label, (species, chrom, start)); N-heavy windows are redrawn."""
        for _ in range(MAX_REDRAWS):
            label = int(torch.randint(len(self.species), (1,), generator=generator))
            sp = self.species[label]
            chrom, path, length = self.chroms[sp][int(torch.randint(len(self.chroms[sp]), (1,), generator=generator))]
            start = int(torch.randint(length - self.seq_len + 1, (1,), generator=generator))
            rc = self.rc_prob > 0 and float(torch.rand((), generator=generator)) < self.rc_prob
            seq = self._read(path, chrom, start, start + self.seq_len)
            if rc:
                seq = reverse_complement(seq)
            ids = self.tokenizer.encode(seq, where=f"{path} {chrom}:{start}")
            if float((ids == N).mean()) > self.max_n_fraction:
                if not self.counts["n_windows_redrawn"]:
                    warnings.warn(f"{self.species_dir}: {self.split} windows with more than max_n_fraction="
                                  f"{self.max_n_fraction} N are redrawn (counted in SpeciesDataset.counts)")
                self.counts["n_windows_redrawn"] += 1
                continue
            return ids, label, (sp, chrom, start)
        raise ValueError(f"{self.species_dir}: {MAX_REDRAWS} windows in a row had more than "
                         f"max_n_fraction={self.max_n_fraction} N; the {self.split} chromosomes are mostly N")

    def batch(self, batch_size: int, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        ids, labels = [], []
        for _ in range(batch_size):
            x, y, _ = self.draw(generator)
            ids.append(torch.from_numpy(x.astype(np.int64)))
            labels.append(y)
        return torch.stack(ids), torch.tensor(labels, dtype=torch.long)

"""Offline stand-in genomes: the whole DNA pipeline (hg38 pretraining, Great Apes classification,
embeddings) runs on them with no download.

What is made (seeded, numpy only; the defaults take a few seconds on one CPU core):

* an ancestral genome of ``--n-chroms`` autosomes plus chrX and chrY, each ``--chrom-length``
  bases: an order-3 Markov chain (k-mer biases) tilted by isochores of varying GC content (35-60%),
  CpG depletion, interspersed repeat families
  (diverged copies, soft-masked lowercase), microsatellites (lowercase) and an N gap at each
  chromosome's start (a telomere stand-in);
* five descendant species along the great-ape tree, with branch lengths (in % substitutions) chosen
  so pairwise divergences match the real ones: bonobo-chimpanzee 0.4%, human-chimpanzee 1.2%,
  gorilla-human/chimpanzee 1.6%, orangutan-the others 3.1%. Each branch applies substitutions
  (transitions twice as likely as transversions), small indels (1-5 bases, ``--indel-ratio`` of
  the substitutions) and insertions of its own repeat element (a lineage-specific "Alu"), at
  ``--element-rate`` copies per base per 1% of branch length: like real species-specific repeats,
  they are what makes a window's species recognisable on chromosomes never seen in training,
  and a longer window is more likely to contain one;
* bonobo, gorilla and orangutan are female (no chrY), as their reference assemblies are;
* ``<out>/hg38/demo_hg38.fa`` (the human genome, one record per chromosome) and
  ``<out>/hg38/demo_sequences_human.bed`` (Basenji format: chrom, start, end, split; intervals of
  ``--bed-interval`` bases; valid chromosomes 1, 3, 12, 13, test 5, 7, 9, 10, 11, as the species
  task splits);
* ``<out>/great_apes/<species>/chr<name>.fa`` and ``<out>/great_apes/manifest.tsv``.

Command line: python data_scripts/make_demo_genomes.py --out data/demo [--chrom-length 262144] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List, Tuple

import numpy as np

from seqmamba.atomic_write import atomic_open

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
LOWER = np.uint8(0x20)
# (parent, child, branch length in % substitutions); ultrametric, see the module docstring
TREE: List[Tuple[str, str, float]] = [
    ("root", "orangutan", 1.55), ("root", "A", 0.75),
    ("A", "gorilla", 0.80), ("A", "B", 0.20),
    ("B", "human", 0.60), ("B", "C", 0.40),
    ("C", "chimpanzee", 0.20), ("C", "bonobo", 0.20),
]
SPECIES = ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")
FEMALE = {"bonobo", "gorilla", "orangutan"}
VAL_CHROMS = {"1", "3", "12", "13"}
TEST_CHROMS = {"5", "7", "9", "10", "11"}


def random_bases(rng: np.random.Generator, n: int, gc: float) -> np.ndarray:
    p = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    return BASES[rng.choice(4, size=n, p=p)]


def mutate_copy(rng: np.random.Generator, seq: np.ndarray, rate: float) -> np.ndarray:
    out = seq.copy()
    hit = rng.random(out.size) < rate
    out[hit] = BASES[rng.integers(0, 4, int(hit.sum()))]
    return out


def markov_bases(rng: np.random.Generator, n: int, gc: float, transitions: np.ndarray) -> np.ndarray:
    """``n`` bases from the order-3 Markov chain ``transitions`` (64 contexts x 4), tilted to ``gc``."""
    probs = transitions * np.array([1 - gc, gc, gc, 1 - gc])
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1).tolist()
    draws = rng.random(n).tolist()
    out = bytearray(n)
    ctx, letters = 0, b"ACGT"
    for i, u in enumerate(draws):
        row = cum[ctx]
        b = 0 if u < row[0] else 1 if u < row[1] else 2 if u < row[2] else 3
        out[i] = letters[b]
        ctx = ((ctx << 2) | b) & 63
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def ancestral_chromosome(rng: np.random.Generator, length: int, families: List[np.ndarray],
                         transitions: np.ndarray) -> np.ndarray:
    parts, total = [], 0
    while total < length:  # isochores of 2-16 kb with their own GC content
        n = int(rng.integers(2048, 16384))
        parts.append(markov_bases(rng, n, float(rng.uniform(0.35, 0.60)), transitions))
        total += n
    seq = np.concatenate(parts)[:length]
    # CpG depletion: most CG dinucleotides become TG or CA (methylation-driven deamination)
    cg = np.flatnonzero((seq[:-1] == ord("C")) & (seq[1:] == ord("G")))
    cg = cg[rng.random(cg.size) < 0.75]
    to_tg = rng.random(cg.size) < 0.5
    seq[cg[to_tg]] = ord("T")
    seq[cg[~to_tg] + 1] = ord("A")
    # interspersed repeats (about 20% of the bases), diverged 5-15%, soft-masked
    covered = 0
    while covered < 0.2 * length:
        fam = families[int(rng.integers(len(families)))]
        cut = int(rng.integers(fam.size // 3, fam.size + 1))
        copy = mutate_copy(rng, fam[-cut:], float(rng.uniform(0.05, 0.15))) | LOWER
        at = int(rng.integers(0, length - copy.size))
        seq[at:at + copy.size] = copy
        covered += copy.size
    # microsatellites: 1-6 base units repeated to 20-100 bases, soft-masked
    for _ in range(max(1, length // 20000)):
        unit = random_bases(rng, int(rng.integers(1, 7)), 0.4)
        copy = np.tile(unit, 100)[: int(rng.integers(20, 101))] | LOWER
        at = int(rng.integers(0, length - copy.size))
        seq[at:at + copy.size] = copy
    seq[: min(1000, length // 20)] = ord("N")  # telomere gap
    return seq


def evolve(rng: np.random.Generator, seq: np.ndarray, branch_pct: float, element: np.ndarray,
           element_rate: float, indel_ratio: float) -> np.ndarray:
    """One branch: lineage-specific element insertions, then substitutions and small indels."""
    n_ins = rng.poisson(seq.size * element_rate * branch_pct)
    if n_ins:
        at = np.sort(rng.integers(0, seq.size, n_ins))
        pieces, prev = [], 0
        for pos in at:
            pieces.append(seq[prev:pos])
            keep = int(rng.integers(element.size // 2, element.size + 1))
            pieces.append(mutate_copy(rng, element[-keep:], 0.02) | LOWER)
            prev = pos
        pieces.append(seq[prev:])
        seq = np.concatenate(pieces)
    rate = branch_pct / 100.0
    real = np.flatnonzero(seq != ord("N"))
    hit = real[rng.random(real.size) < rate]
    upper = seq[hit] & ~LOWER
    # transitions (A<->G, C<->T) twice as likely as each transversion
    transition = {ord("A"): ord("G"), ord("G"): ord("A"), ord("C"): ord("T"), ord("T"): ord("C")}
    new = np.empty_like(upper)
    for b in (ord("A"), ord("C"), ord("G"), ord("T")):
        sel = upper == b
        others = [x for x in BASES if x != b and x != transition[b]]
        choice = rng.random(int(sel.sum()))
        new[sel] = np.where(choice < 0.5, transition[b], np.where(choice < 0.75, others[0], others[1]))
    seq = seq.copy()
    seq[hit] = new | (seq[hit] & LOWER)
    n_indel = rng.poisson(hit.size * indel_ratio)
    if n_indel:
        at = np.sort(rng.integers(1000, seq.size - 10, n_indel))
        pieces, prev = [], 0
        for pos in at:
            if pos < prev:
                continue
            size = int(rng.integers(1, 6))
            pieces.append(seq[prev:pos])
            if rng.random() < 0.5:
                pieces.append(random_bases(rng, size, 0.45))
                prev = pos
            else:
                prev = pos + size
        pieces.append(seq[prev:])
        seq = np.concatenate(pieces)
    return seq


def write_fasta(path: str, records: List[Tuple[str, np.ndarray]], width: int = 80) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path) as f:
        for name, seq in records:
            f.write(f">{name}\n")
            text = seq.tobytes().decode("ascii")
            f.writelines(text[i:i + width] + "\n" for i in range(0, len(text), width))


def make(out: str, n_chroms: int = 16, chrom_length: int = 65536, seed: int = 0, element_rate: float = 1 / 3200,
         indel_ratio: float = 0.1, bed_interval: int = 16384, quiet: bool = False) -> Dict[str, str]:
    from tqdm import tqdm

    if n_chroms < 14:
        raise ValueError(f"--n-chroms={n_chroms}: need at least 14 so the species splits (valid 1 3 12 13, "
                         f"test 5 7 9 10 11) leave training autosomes")
    if chrom_length < 4096:
        raise ValueError(f"--chrom-length={chrom_length}: need at least 4096 bases")
    rng = np.random.default_rng(seed)
    families = [random_bases(rng, int(rng.integers(200, 2000)), 0.5) for _ in range(6)]
    # short-range structure (k-mer biases, as real genomes have): an order-3 Markov chain
    transitions = rng.dirichlet([1.0] * 4, size=64)
    elements = {child: random_bases(rng, 300, 0.55) for _, child, _ in TREE}
    names = [str(i) for i in range(1, n_chroms + 1)] + ["X", "Y"]
    genomes: Dict[str, Dict[str, np.ndarray]] = {sp: {} for sp in SPECIES}
    started = time.time()
    for name in tqdm(names, desc="demo chromosomes", disable=quiet):
        length = chrom_length if name != "Y" else chrom_length // 2
        nodes = {"root": ancestral_chromosome(rng, length, families, transitions)}
        for parent, child, pct in TREE:
            nodes[child] = evolve(rng, nodes[parent], pct, elements[child], element_rate, indel_ratio)
        for sp in SPECIES:
            if name == "Y" and sp in FEMALE:
                continue
            genomes[sp][name] = nodes[sp]
    root = os.path.abspath(out)
    apes = os.path.join(root, "great_apes")
    rows = []
    for sp in SPECIES:
        for name, seq in genomes[sp].items():
            rel = os.path.join(sp, f"chr{name}.fa")
            write_fasta(os.path.join(apes, rel), [(f"chr{name}", seq)])
            rows.append(f"{sp}\tchr{name}\t{rel}\t{seq.size}\n")
    with atomic_open(os.path.join(apes, "manifest.tsv")) as f:
        f.write("species\tchrom\tpath\tlength\n")
        f.writelines(rows)
    human = genomes["human"]
    fasta = os.path.join(root, "hg38", "demo_hg38.fa")
    write_fasta(fasta, [(f"chr{n}", s) for n, s in human.items()])
    bed = os.path.join(root, "hg38", "demo_sequences_human.bed")
    lines = []
    for name, seq in human.items():
        split = "valid" if name in VAL_CHROMS else "test" if name in TEST_CHROMS else "train"
        for start in range(0, seq.size - bed_interval + 1, bed_interval):
            lines.append(f"chr{name}\t{start}\t{start + bed_interval}\t{split}\n")
    with atomic_open(bed) as f:
        f.writelines(lines)
    if not quiet:
        print(f"demo genomes in {root} ({time.time() - started:.1f} s): {len(SPECIES)} species x "
              f"{len(names)} chromosomes of ~{chrom_length} bases; BED {len(lines)} intervals of {bed_interval}")
    return {"fasta": fasta, "bed": bed, "species_dir": apes}


def ensure_demo_genomes(out: str, **kwargs) -> Dict[str, str]:
    """The demo genomes under ``out``, made first if ``out`` has none (same seed -> same files)."""
    root = os.path.abspath(os.path.expanduser(out))
    paths = {"fasta": os.path.join(root, "hg38", "demo_hg38.fa"),
             "bed": os.path.join(root, "hg38", "demo_sequences_human.bed"),
             "species_dir": os.path.join(root, "great_apes")}
    def complete() -> bool:
        return all(os.path.exists(p) for p in paths.values()) and \
            os.path.exists(os.path.join(root, "great_apes", "manifest.tsv"))

    if complete():
        return paths
    import fcntl

    os.makedirs(root, exist_ok=True)
    # one maker at a time: torchrun's ranks (or parallel runs) wait here, then find the files made
    with open(os.path.join(root, ".make.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return paths
        print(f"making the demo genomes in {root} (data_scripts/make_demo_genomes.py; no download)")
        return make(root, **kwargs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="make_demo_genomes.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/demo", help="output folder [data/demo]")
    parser.add_argument("--n-chroms", type=int, default=16, help="autosomes per species (>= 14) [16]")
    parser.add_argument("--chrom-length", type=int, default=65536, help="bases per ancestral autosome [65536]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--element-rate", type=float, default=1 / 3200,
                        help="lineage-specific element insertions per base per 1%% branch length [1/3200]")
    parser.add_argument("--indel-ratio", type=float, default=0.1, help="indels per substitution [0.1]")
    parser.add_argument("--bed-interval", type=int, default=16384, help="BED interval length [16384]")
    args = parser.parse_args(argv)
    make(args.out, args.n_chroms, args.chrom_length, args.seed, args.element_rate, args.indel_ratio, args.bed_interval)


if __name__ == "__main__":
    main()

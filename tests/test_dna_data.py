"""DNA data layer: tokenizer, reverse complement, FASTA windows, BED parsing, species windows, errors.

Every test makes its own tiny FASTA / BED files in a temporary directory and compares against a
direct Python read of the sequence it wrote."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from seqmamba.data.dna_tokenizer import BOS, N, DNATokenizer, reverse_complement, reverse_complement_ids
from seqmamba.data.fasta import FastaIntervalDataset, place_windows, read_bed
from seqmamba.data.species import SpeciesDataset
from seqmamba.data.streams import seeded_generator

COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N", "a": "t", "c": "g", "g": "c", "t": "a", "n": "n"}


def _write_fasta(path, records, width=60):
    with open(path, "w") as f:
        for name, seq in records.items():
            f.write(f">{name} some description\n")
            for i in range(0, len(seq), width):
                f.write(seq[i:i + width] + "\n")


def _random_dna(rng, n, lower_runs=True):
    seq = "".join(rng.choice("ACGT") for _ in range(n))
    if lower_runs:  # soft-masked stretches, as in hg38
        s = list(seq)
        for _ in range(n // 200):
            at = rng.randrange(0, n - 30)
            s[at:at + 30] = [c.lower() for c in s[at:at + 30]]
        seq = "".join(s)
    return seq


@pytest.fixture
def genome(tmp_path):
    rng = random.Random(7)
    records = {"chr1": _random_dna(rng, 5000), "chr2": _random_dna(rng, 3001), "chr3": _random_dna(rng, 2500),
               "chrM": _random_dna(rng, 300)}
    fasta = tmp_path / "g.fa"
    _write_fasta(fasta, records)
    bed = tmp_path / "g.bed"
    bed.write_text("chr1\t0\t1024\ttrain\nchr1\t1024\t2048\ttrain\nchr1\t4500\t5000\ttrain\n"
                   "chr2\t100\t1124\tvalid\nchr3\t10\t1034\ttest\nchr2\t2900\t3001\ttrain\n")
    return str(fasta), str(bed), records


def test_tokenizer_round_trips_and_soft_mask():
    tok = DNATokenizer()
    seq = "ACGTNacgtnAAC"
    ids, soft = tok.encode(seq, return_soft_mask=True)
    assert tok.decode(ids) == seq.upper()
    assert soft.tolist() == [c.islower() for c in seq]
    assert tok.decode(np.array([BOS, 3, 4, 2])) == "AC"
    assert tok.decode(np.array([BOS, 3]), keep_specials=True) == "[BOS]A"
    assert tok.encode("RYK").tolist() == [N, N, N] and tok.count_ambiguous("ARYK") == 3


def test_tokenizer_rejects_non_dna_naming_the_offset():
    with pytest.raises(ValueError, match=r"x.fa chr1:0-5: character 'Z' at offset 3"):
        DNATokenizer().encode("ACGZ", where="x.fa chr1:0-5")


def test_reverse_complement_of_reverse_complement_is_identity():
    rng = random.Random(0)
    for _ in range(20):
        s = "".join(rng.choice("ACGTNacgtnRY") for _ in range(rng.randrange(1, 50)))
        assert reverse_complement(reverse_complement(s)) == s
        ids = DNATokenizer().encode(s)
        assert np.array_equal(reverse_complement_ids(reverse_complement_ids(ids)), ids)
        t = torch.from_numpy(ids.astype(np.int64))
        assert torch.equal(reverse_complement_ids(t), torch.from_numpy(DNATokenizer().encode(reverse_complement(s))
                                                                       .astype(np.int64)))
    assert reverse_complement("AACg") == "cGTT"


@pytest.mark.parametrize("seq_len", [64, 700, 2000])
def test_windows_equal_a_direct_read_on_both_strands(genome, seq_len):
    fasta, bed, records = genome
    for split in ("train", "valid", "test"):
        data = FastaIntervalDataset(fasta, bed, seq_len=seq_len, split=split)
        rng = random.Random(seq_len)
        for i in rng.sample(range(len(data)), min(10, len(data))):
            chrom, start, end = data.coordinates(i)
            direct = records[chrom][start:end]
            assert end - start == seq_len and 0 <= start and end <= len(records[chrom])
            assert data.read(i) == direct
            assert data.read(i, rc=True) == "".join(COMPLEMENT[c] for c in reversed(direct))


def test_window_placement_follows_the_paper_and_never_truncates():
    from collections import Counter

    counts = Counter()
    # L <= interval: interval // L pieces from its start
    assert place_windows(1000, 1000 + 4 * 256 + 10, 10**6, 256, counts) == [1000, 1256, 1512, 1768]
    assert counts["uncovered_bases"] == 10
    # L > interval: one at the start, one ending at the end
    assert place_windows(5000, 6000, 10**6, 2048, counts) == [5000, 6000 - 2048]
    # near the chromosome's edges: shifted inside, full length, counted
    assert place_windows(10, 500, 3000, 2048, counts) == [10, 0]
    assert place_windows(2800, 3000, 3000, 2048, counts) == [3000 - 2048, 3000 - 2048]
    assert counts["shifted_at_edge"] == 2
    with pytest.raises(ValueError, match="longer than the chromosome"):
        place_windows(0, 100, 3000, 4096, counts)


def test_bed_splits_are_disjoint_and_tiled_splits_are_by_chromosome(genome):
    fasta, bed, records = genome
    spans = {}
    for split in ("train", "valid", "test"):
        data = FastaIntervalDataset(fasta, bed, seq_len=128, split=split)
        spans[split] = {(data.coordinates(i)[0], p) for i in range(len(data))
                        for p in range(data.coordinates(i)[1], data.coordinates(i)[2])}
    assert not spans["train"] & spans["valid"] and not spans["train"] & spans["test"] and not spans["valid"] & spans["test"]
    tiled = {s: FastaIntervalDataset(fasta, None, seq_len=256, split=s) for s in ("train", "valid")}
    train_chroms, val_chroms = set(tiled["train"].chroms), set(tiled["valid"].chroms)
    assert train_chroms and val_chroms and not train_chroms & val_chroms
    # chrM (300 bases) is shorter than nothing here; at L=512 it is skipped and counted
    data = FastaIntervalDataset(fasta, None, seq_len=512, split="train", val_chroms=["chr3"])
    assert "chr3" not in data.chroms
    # a tail shorter than L gets one window ending at the chromosome's end
    ends = {data.coordinates(i)[2] for i in range(len(data)) if data.coordinates(i)[0] == "chr2"}
    assert len(records["chr2"]) in ends and data.counts["tail_windows"] >= 1


def _species_dir(tmp_path, species=("human", "chimpanzee"), chroms=("1", "2", "3", "4", "5", "X"), length=3000,
                 with_y=("human",)):
    rng = random.Random(3)
    root = tmp_path / "apes"
    rows = ["species\tchrom\tpath\tlength"]
    seqs = {}
    for sp in species:
        (root / sp).mkdir(parents=True)
        for c in list(chroms) + (["Y"] if sp in with_y else []):
            seq = _random_dna(rng, length)
            _write_fasta(root / sp / f"chr{c}.fa", {f"chr{c}": seq})
            rows.append(f"{sp}\tchr{c}\t{sp}/chr{c}.fa\t{length}")
            seqs[(sp, f"chr{c}")] = seq
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    return str(root), seqs


def test_species_windows_equal_direct_reads_and_splits_are_disjoint(tmp_path):
    root, seqs = _species_dir(tmp_path)
    kwargs = dict(species=["human", "chimpanzee"], val_chroms=["1"], test_chroms=["5"])
    train = SpeciesDataset(root, seq_len=500, split="train", **kwargs)
    valid = SpeciesDataset(root, seq_len=500, split="valid", **kwargs)
    assert {c for cs in train.chroms.values() for c, _, _ in cs}.isdisjoint(
        {c for cs in valid.chroms.values() for c, _, _ in cs})
    assert any(c == "chrY" for c, _, _ in train.chroms["human"])  # chimp has no chrY: fine
    g = seeded_generator(1, 2)
    labels = set()
    for _ in range(20):
        ids, label, (sp, chrom, start) = train.draw(g)
        assert DNATokenizer().decode(ids) == seqs[(sp, chrom)][start:start + 500].upper()
        assert train.species[label] == sp
        labels.add(label)
    assert labels == {0, 1}
    a, b = valid.batch(6, seeded_generator(9)), valid.batch(6, seeded_generator(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_n_windows_are_skipped_and_masked_and_the_loss_stays_finite(tmp_path):
    import torch.nn.functional as F

    from tasks.hg38 import window_batch

    seq = "N" * 600 + "ACGT" * 100 + "NNNN" + "ACGT" * 100
    fasta = tmp_path / "n.fa"
    _write_fasta(fasta, {"c1": seq, "c2": "ACGT" * 300})
    data = FastaIntervalDataset(str(fasta), None, seq_len=200, split="train", val_chroms=["c2"])
    heavy = [i for i in range(len(data)) if data.too_many_n(data.tokens(i))]
    assert heavy  # the leading all-N windows are recognised
    inputs, targets = window_batch([data.tokens(i) for i in range(len(data))])
    assert inputs[0, 0] == BOS and (targets == -100).sum() == sum((data.tokens(i) == N).sum() for i in range(len(data)))
    logits = torch.randn(*targets.shape, 8)
    all_n = targets[0:1]
    assert (all_n == -100).all()
    # the task never builds an all-masked batch (heavy windows are redrawn); a partially masked one is finite
    loss = F.cross_entropy(logits.reshape(-1, 8), targets.reshape(-1), ignore_index=-100)
    assert torch.isfinite(loss)


# -- bad input: one line naming the file and line / value ---------------------------------------
def test_bad_inputs_fail_in_one_line_naming_the_problem(genome, tmp_path):
    fasta, bed, _ = genome
    cases = []
    with pytest.raises(FileNotFoundError, match="missing.fa"):
        FastaIntervalDataset(str(tmp_path / "missing.fa"), bed)
    with pytest.raises(FileNotFoundError, match="missing.bed"):
        FastaIntervalDataset(fasta, str(tmp_path / "missing.bed"))
    bad = tmp_path / "bad.bed"
    bad.write_text("chr1\t0\t100\ttrain\nchr1\tzero\t100\ttrain\n")
    cases.append((lambda: FastaIntervalDataset(fasta, str(bad)), r"bad.bed:2: start/end must be integers"))
    three = tmp_path / "three.bed"
    three.write_text("chr1\t0\t100\n")
    cases.append((lambda: read_bed(str(three)), r"three.bed:1: expected 4 columns"))
    absent = tmp_path / "absent.bed"
    absent.write_text("chr1\t0\t100\ttrain\nchr9\t0\t100\ttrain\n")
    cases.append((lambda: FastaIntervalDataset(fasta, str(absent)), r"absent.bed:2: chromosome 'chr9' is not in the FASTA"))
    cases.append((lambda: FastaIntervalDataset(fasta, bed, seq_len=4000, split="valid"),
                  r"g.bed:4: window of 4000 bases is longer than the chromosome \(3001 bases\)"))
    notfa = tmp_path / "notes.fa"
    notfa.write_text("hello world\nACGT\n")
    cases.append((lambda: FastaIntervalDataset(str(notfa), None), r"notes.fa:1: not a FASTA file"))
    empty = tmp_path / "empty_species"
    empty.mkdir()
    cases.append((lambda: SpeciesDataset(str(empty)), r"empty_species.* is empty"))
    for make, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            make()
        assert "\n" not in str(info.value)

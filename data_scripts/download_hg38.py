#!/usr/bin/env python
"""Download the HG38 pretraining data of the Mamba paper / hyena-dna / Enformer.

From the Basenji / Enformer bucket (Google Cloud Storage, ``basenji_barnyard2``):

* ``hg38.ml.fa.gz`` (about 0.9 GB; 3.1 GB unzipped): GRCh38 with UCSC names, soft-masked;
* ``sequences_human.bed``: the 2^17-bp intervals with their split (train / valid / test).

Both are resumable (HTTP Range) and verified against the size and MD5 the bucket reports; the FASTA
is unzipped and indexed by pyfaidx (``hg38.ml.fa.fai``), and every BED line is checked against it.

    python data_scripts/download_hg38.py --out data/hg38
    seqmamba run task=hg38 dataset.fasta=data/hg38/hg38.ml.fa dataset.bed=data/hg38/sequences_human.bed
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _download import download, gunzip  # noqa: E402

BUCKET = "https://storage.googleapis.com/basenji_barnyard2"
FILES = {"fasta": "hg38.ml.fa.gz", "bed": "sequences_human.bed"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="download_hg38.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/hg38", help="output folder [data/hg38]")
    parser.add_argument("--keep-gz", action="store_true", help="keep hg38.ml.fa.gz after unzipping")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    bed = download(f"{BUCKET}/{FILES['bed']}", os.path.join(args.out, FILES["bed"]))
    fasta = os.path.join(args.out, "hg38.ml.fa")
    if not os.path.exists(fasta):
        gz = download(f"{BUCKET}/{FILES['fasta']}", os.path.join(args.out, FILES["fasta"]))
        gunzip(gz, fasta)
        if not args.keep_gz:
            os.remove(gz)
    from seqmamba.data.fasta import open_fasta, read_bed

    print(f"indexing {fasta} (pyfaidx; once)")
    fa = open_fasta(fasta)
    lengths = {k: len(v) for k, v in fa.records.items()}
    intervals = read_bed(bed, lengths, fasta)
    splits = Counter(iv.split for iv in intervals)
    print(f"{fasta}: {len(lengths)} sequences, {sum(lengths.values()):,} bases; {bed}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())) + " intervals")
    print(f"train with: seqmamba run task=hg38 dataset.fasta={fasta} dataset.bed={bed}")


if __name__ == "__main__":
    main()

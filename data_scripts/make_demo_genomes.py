#!/usr/bin/env python
"""Offline stand-in genomes for the DNA tasks (no download); see seqmamba/data/demo_genomes.py.

    python data_scripts/make_demo_genomes.py --out data/demo [--chrom-length 262144] [--seed 0]

writes data/demo/hg38/{demo_hg38.fa, demo_sequences_human.bed} and data/demo/great_apes/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seqmamba.data.demo_genomes import main  # noqa: E402

if __name__ == "__main__":
    main()

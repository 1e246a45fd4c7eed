#!/usr/bin/env python
"""Download one reference assembly per great ape from NCBI and split it per chromosome.

Default assemblies (``--assemblies paper``): the ones behind the Mamba paper's / hyena-dna's species
task (UCSC hg38, panTro6, panPan3, gorGor6, ponAbe3), as NCBI RefSeq records, so results are
comparable with the paper's table:

    human       GCF_000001405.40  GRCh38.p14       Homo sapiens     (male: chrY)
    chimpanzee  GCF_002880755.1   Clint_PTRv2      Pan troglodytes  (male: chrY)
    bonobo      GCF_013052645.1   Mhudiblu_PPA_v0  Pan paniscus     (female: no chrY)
    gorilla     GCF_008122165.1   Kamilah_GGO_v0   Gorilla gorilla  (female: no chrY)
    orangutan   GCF_002880775.1   Susie_PABv2      Pongo abelii     (female: no chrY)

``--human t2t`` takes T2T-CHM13v2.0 (GCF_009914755.1, complete, with the HG002 chrY) instead of
GRCh38. ``--assemblies t2t`` takes the 2023 telomere-to-telomere ape assemblies (NHGRI_mPanTro3,
mPanPan1, mGorGor1, mPonAbe1): more complete, but not what the paper used.

Every accession is confirmed before the genome is downloaded: the assembly report's "Assembly
name" and "Organism name" must match this table, or the script stops naming both. Files come
resumable (HTTP Range) and are verified against NCBI's ``md5checksums.txt``. Only the
assembled chromosomes (Sequence-Role ``assembled-molecule``, type Chromosome; no mitochondrion, no
unplaced scaffolds) are written, as ``<out>/<species>/chr<name>.fa`` (chimpanzee, bonobo,
gorilla and orangutan have chr2A and chr2B), with ``<out>/manifest.tsv`` (species, chrom, path,
length). A female assembly simply has no chrY; the species dataset uses what is there.

    python data_scripts/download_great_apes.py --out data/great_apes [--species human,bonobo]
    seqmamba run task=great_apes dataset.species_dir=data/great_apes task.pretrained=...
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _download import download  # noqa: E402

NCBI = "https://ftp.ncbi.nlm.nih.gov/genomes/all"
# species -> (accession, assembly name, organism)
PAPER = {
    "human": ("GCF_000001405.40", "GRCh38.p14", "Homo sapiens"),
    "chimpanzee": ("GCF_002880755.1", "Clint_PTRv2", "Pan troglodytes"),
    "bonobo": ("GCF_013052645.1", "Mhudiblu_PPA_v0", "Pan paniscus"),
    "gorilla": ("GCF_008122165.1", "Kamilah_GGO_v0", "Gorilla gorilla"),
    "orangutan": ("GCF_002880775.1", "Susie_PABv2", "Pongo abelii"),
}
T2T = {
    "human": ("GCF_009914755.1", "T2T-CHM13v2.0", "Homo sapiens"),
    "chimpanzee": ("GCF_028858775.2", "NHGRI_mPanTro3-v2.0_pri", "Pan troglodytes"),
    "bonobo": ("GCF_029289425.2", "NHGRI_mPanPan1-v2.0_pri", "Pan paniscus"),
    "gorilla": ("GCF_029281585.2", "NHGRI_mGorGor1-v2.0_pri", "Gorilla gorilla"),
    "orangutan": ("GCF_028885655.2", "NHGRI_mPonAbe1-v2.0_pri", "Pongo abelii"),
}


def ftp_dir(accession: str, name: str) -> Tuple[str, str]:
    digits = accession.split("_")[1].split(".")[0]
    prefix = f"{accession}_{name.replace(' ', '_')}"
    return f"{NCBI}/{accession[:3]}/{digits[0:3]}/{digits[3:6]}/{digits[6:9]}/{prefix}", prefix


def read_md5s(path: str) -> Dict[str, str]:
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                out[os.path.basename(parts[1])] = parts[0]
    return out


def chromosomes_of(report: str, species: str, name: str, organism: str) -> Dict[str, str]:
    """RefSeq accession -> chromosome name of the assembled chromosomes; confirms the assembly."""
    header: Dict[str, str] = {}
    mapping: Dict[str, str] = {}
    with open(report) as f:
        for line in f:
            if line.startswith("# ") and ":" in line:
                key, _, value = line[2:].partition(":")
                header.setdefault(key.strip(), value.strip())
                continue
            if line.startswith("#") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                continue
            seq_name, role, molecule, mol_type, _, _, refseq = cols[:7]
            if role == "assembled-molecule" and mol_type == "Chromosome" and refseq not in ("na", ""):
                mapping[refseq] = molecule
    got_name, got_org = header.get("Assembly name", "?"), header.get("Organism name", "?")
    if got_name != name or not got_org.startswith(organism):
        raise SystemExit(f"{report}: assembly {got_name!r} of {got_org!r}, expected {name!r} of {organism!r} "
                         f"for {species}; the accession no longer points where this script expects")
    if not mapping:
        raise SystemExit(f"{report}: no assembled chromosomes listed")
    return mapping


def split_genome(fna_gz: str, mapping: Dict[str, str], folder: str, species: str) -> List[Tuple[str, str, int]]:
    """Stream the gzip FASTA once; write each wanted record to chr<name>.fa (through .part files)."""
    from tqdm import tqdm

    os.makedirs(folder, exist_ok=True)
    rows: List[Tuple[str, str, int]] = []
    out, current, length = None, None, 0

    def close():
        nonlocal out
        if out is not None:
            out.close()
            final = os.path.join(folder, f"chr{current}.fa")
            os.replace(final + ".part", final)
            rows.append((f"chr{current}", os.path.join(species, f"chr{current}.fa"), length))
            out = None

    with gzip.open(fna_gz, "rt") as f, tqdm(desc=f"split {species}", unit=" chrom", total=len(mapping)) as bar:
        for line in f:
            if line.startswith(">"):
                close()
                accession = line[1:].split()[0]
                if accession in mapping:
                    current, length = mapping[accession], 0
                    out = open(os.path.join(folder, f"chr{current}.fa.part"), "w")
                    out.write(f">chr{current} {accession}\n")
                    bar.update(1)
                continue
            if out is not None:
                out.write(line)
                length += len(line.strip())
        close()
    missing = sorted(set(mapping.values()) - {r[0][3:] for r in rows})
    if missing:
        raise SystemExit(f"{fna_gz}: chromosomes {missing} are in the assembly report but not in the FASTA")
    return rows


def write_manifest(out: str, rows: List[Tuple[str, str, str, int]]) -> None:
    path = os.path.join(out, "manifest.tsv")
    keep = []
    done = {r[0] for r in rows}
    if os.path.exists(path):  # other species from earlier runs stay
        with open(path) as f:
            next(f, None)
            keep = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        keep = [r for r in keep if r[0] not in done]
    part = path + ".part"
    with open(part, "w") as f:
        f.write("species\tchrom\tpath\tlength\n")
        for r in keep + [list(map(str, r)) for r in rows]:
            f.write("\t".join(str(x) for x in r) + "\n")
    os.replace(part, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="download_great_apes.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/great_apes")
    parser.add_argument("--species", default=",".join(PAPER), help="comma-separated subset [all five]")
    parser.add_argument("--assemblies", choices=("paper", "t2t"), default="paper")
    parser.add_argument("--human", choices=("grch38", "t2t"), default="grch38")
    parser.add_argument("--keep-gz", action="store_true", help="keep the downloaded .fna.gz files")
    args = parser.parse_args(argv)
    table = dict(PAPER if args.assemblies == "paper" else T2T)
    if args.human == "t2t":
        table["human"] = T2T["human"]
    wanted = [s.strip() for s in args.species.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise SystemExit(f"--species: {unknown} unknown; choose from {list(table)}")
    for species in wanted:
        accession, name, organism = table[species]
        base, prefix = ftp_dir(accession, name)
        raw = os.path.join(args.out, "_downloads")
        md5s = read_md5s(download(f"{base}/md5checksums.txt", os.path.join(raw, f"{prefix}_md5checksums.txt")))
        report_name = f"{prefix}_assembly_report.txt"
        report = download(f"{base}/{report_name}", os.path.join(raw, report_name), md5=md5s.get(report_name))
        mapping = chromosomes_of(report, species, name, organism)
        print(f"{species}: {accession} {name} ({organism}) confirmed; {len(mapping)} chromosomes: "
              f"{', '.join(sorted(set(mapping.values()), key=lambda c: (len(c), c)))}")
        fna_name = f"{prefix}_genomic.fna.gz"
        fna = download(f"{base}/{fna_name}", os.path.join(raw, fna_name), md5=md5s.get(fna_name))
        rows = split_genome(fna, mapping, os.path.join(args.out, species), species)
        write_manifest(args.out, [(species, c, p, n) for c, p, n in rows])
        if "chrY" not in {c for c, _, _ in rows}:
            print(f"{species}: no chrY in {name} (a female individual); training uses the chromosomes present")
        if not args.keep_gz:
            os.remove(fna)
    print(f"done: {args.out}/manifest.tsv; train with dataset.species_dir={args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Download Speech Commands v0.02 and extract SC09 (the digits zero..nine) in the layout seqmamba reads.

    python data_scripts/download_sc09.py --out data/sc09 [--keep-archive] [--url URL]

Steps: download the archive (resumable: an interrupted download continues from its .part file with an
HTTP Range request; progress bar), record its SHA-256 (and check it with --sha256), extract only the ten
digit folders plus validation_list.txt / testing_list.txt (entries of other words stay in the lists and
are ignored by the reader), then verify the result: 10 folders, the lists, and the clip count
(Speech Commands v0.02 has 38,908 digit clips: 31,158 train / 3,643 val / 4,107 test).
Each extracted file is written under a temporary name and renamed, so a killed run leaves no half
files; rerunning skips finished files.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.request

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
# No checksum is pinned here: none was verified against the published archive when this script was
# written. The archive's SHA-256 is computed and stored beside it (<archive>.sha256); pass --sha256 to
# check against a known value. Integrity is also checked by gzip's CRC during extraction and by the
# clip count below.
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LISTS = ("validation_list.txt", "testing_list.txt")
EXPECTED_CLIPS = 38908


def download(url: str, path: str) -> None:
    """Resumable download with a progress bar; the finished file appears only when complete."""
    from tqdm.auto import tqdm

    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        total = int(response.headers.get("Content-Length", 0)) + have
        with open(part, "ab" if have else "wb") as f, tqdm(total=total or None, initial=have, unit="B",
                                                            unit_scale=True, desc=os.path.basename(path)) as bar:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
    os.replace(part, path)


def sha256(path: str) -> str:
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, desc="sha256") as bar:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def extract(archive: str, out: str) -> int:
    """The digit folders and the two lists; returns the number of digit WAVs in ``out``."""
    from tqdm.auto import tqdm

    os.makedirs(out, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tqdm(tar, desc="extract", unit=" files"):
            name = member.name[2:] if member.name.startswith("./") else member.name
            top = name.split("/")[0]
            if not member.isfile() or not (top in DIGITS or name in LISTS):
                continue
            if ".." in name.split("/") or name.startswith("/"):
                raise RuntimeError(f"{archive}: unsafe member path {member.name!r}")
            target = os.path.join(out, name)
            if os.path.exists(target) and os.path.getsize(target) == member.size:
                continue  # finished in an earlier run
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = target + ".tmp"
            with tar.extractfile(member) as src, open(tmp, "wb") as dst:
                dst.write(src.read())
            os.replace(tmp, target)
    return sum(len([f for f in os.listdir(os.path.join(out, d)) if f.endswith(".wav")]) for d in DIGITS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="SC09 folder to create")
    parser.add_argument("--url", default=URL)
    parser.add_argument("--archive", default=None, help="where the .tar.gz goes [<out>/../speech_commands_v0.02.tar.gz]")
    parser.add_argument("--keep-archive", action="store_true")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (checked when given)")
    args = parser.parse_args(argv)
    archive = args.archive or os.path.join(os.path.dirname(os.path.abspath(args.out)), "speech_commands_v0.02.tar.gz")
    if not os.path.exists(archive):
        os.makedirs(os.path.dirname(archive), exist_ok=True)
        print(f"downloading {args.url} -> {archive}")
        download(args.url, archive)
    digest = sha256(archive)
    with open(archive + ".sha256", "w") as f:
        f.write(f"{digest}  {os.path.basename(archive)}\n")
    if args.sha256 and digest != args.sha256.lower():
        print(f"{archive}: SHA-256 {digest} does not match the expected {args.sha256}; delete it and rerun",
              file=sys.stderr)
        return 1
    n = extract(archive, args.out)
    missing = [name for name in LISTS if not os.path.isfile(os.path.join(args.out, name))]
    if missing:
        print(f"{args.out}: the archive had no {', '.join(missing)}", file=sys.stderr)
        return 1
    if n != EXPECTED_CLIPS:
        print(f"warning: {n} digit clips in {args.out}, expected {EXPECTED_CLIPS} for Speech Commands v0.02",
              file=sys.stderr)
    if not args.keep_archive:
        os.remove(archive)
    print(f"SC09 ready in {args.out}: {n} clips. Train: seqmamba run experiment=paper/sc09_mamba_6m dataset.root={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

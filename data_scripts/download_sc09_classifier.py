#!/usr/bin/env python
"""Fetch the SaShiMi release's SC09 ResNeXt digit classifier (98.08 % SC09 test accuracy) for FID / IS / mIS / AM.

    python data_scripts/download_sc09_classifier.py --out checkpoints/sc09_classifier [--with-code]

Downloads ``sc09_classifier/resnext.pth`` from the Hugging Face repository krandiash/sashimi-release
(resumable, progress bar). The file is a pickled PyTorch module (not a state dict): loading it needs the
``models`` package of github.com/tugstugi/pytorch-speech-commands on PYTHONPATH; ``--with-code`` fetches
that repository's ``models/`` folder next to the checkpoint (git must be installed), so that

    PYTHONPATH=checkpoints/sc09_classifier/pytorch-speech-commands seqmamba eval task=sc09 ckpt=... \
        task.classifier=checkpoints/sc09_classifier/resnext.pth

works. Only load pickles from sources you trust. Where the release cannot be reached, train the
project's own classifier instead: ``seqmamba run task=sc09_classifier dataset.root=<SC09 folder>``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from download_sc09 import download  # noqa: E402

URL = "https://huggingface.co/krandiash/sashimi-release/resolve/main/sc09_classifier/resnext.pth"
CODE = "https://github.com/tugstugi/pytorch-speech-commands.git"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="checkpoints/sc09_classifier")
    parser.add_argument("--url", default=URL)
    parser.add_argument("--with-code", action="store_true", help="also clone tugstugi/pytorch-speech-commands")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "resnext.pth")
    if not os.path.exists(path):
        download(args.url, path)
    print(f"classifier: {path} ({os.path.getsize(path) / 1e6:.1f} MB)")
    if args.with_code:
        code_dir = os.path.join(args.out, "pytorch-speech-commands")
        if not os.path.isdir(code_dir):
            subprocess.run(["git", "clone", "--depth", "1", CODE, code_dir], check=True)
        print(f"PYTHONPATH={os.path.abspath(code_dir)} makes the pickled module loadable")
    print(f"use: seqmamba eval task=sc09 ckpt=<run>/checkpoints/best.pt dataset.root=<SC09> task.classifier={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Offline stand-in for SC09: spoken-digit WAVs in the SC09 layout, made with no download.

    python data_scripts/make_demo_speech.py --out data/sc09_demo [--speakers 40] [--engine auto|espeak|formant]

espeak-ng voices when the program is installed (auto), otherwise synthetic formant speech; see
seqmamba/data/demo_speech.py for what is generated.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seqmamba.data.demo_speech import write_demo_speech  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (SC09 layout)")
    parser.add_argument("--speakers", type=int, default=40, help="speakers; each says every digit once [40]")
    parser.add_argument("--engine", choices=["auto", "espeak", "formant"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        counts = write_demo_speech(args.out, args.speakers, args.engine, args.seed, progress=not args.quiet)
    except (RuntimeError, ValueError) as err:
        print(f"make_demo_speech: {err}", file=sys.stderr)
        return 2
    print(f"wrote {counts['train'] + counts['val'] + counts['test']} clips ({counts['engine']}) to {args.out}: "
          f"{counts['train']} train, {counts['val']} val, {counts['test']} test")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``seqmamba`` argument handling: help built from the verb table, exit codes, one-line errors.

Errors print one line on stderr and exit with status 1 (2 for usage errors); ``--debug`` or
``SEQMAMBA_DEBUG=1`` shows the full traceback instead.
"""
from __future__ import annotations

import difflib
import os
import sys
from typing import Optional, Sequence

from .errors import one_line_error
from .hydra_app import PROG, CliError, run_hydra
from .verbs import VERBS, run_job

_HELP = f"""\
usage: {PROG} <verb> [hydra overrides] [hydra flags]

verbs:
{{VERB_LINES}}

examples:
  {PROG} run task=induction_heads
  {PROG} run task=selective_copying trainer.max_steps=500 trainer.device=cpu seed=1
  {PROG} run experiment=paper/induction_heads trainer.device=cuda
  {PROG} eval task=induction_heads ckpt=outputs/induction_heads/run/<time>/checkpoints/best.pt eval.max_log2_len=20
  {PROG} run -m task=induction_heads seed=0,1,2                  # a Hydra sweep, one dir per job
  {PROG} run task=induction_heads hydra.run.dir=runs/ih           # choose the run directory
  {PROG} run task=induction_heads --cfg job                       # print the composed config, do nothing
  torchrun --nproc_per_node=2 -m seqmamba.cli run task=induction_heads trainer.device=cpu

shared overrides: seed, trainer.max_steps, trainer.device (auto|cpu|cuda), trainer.batch_size,
  hydra.run.dir, ckpt; data paths dataset.fasta, dataset.bed, dataset.species_dir, dataset.root;
  for generate: n_samples, out_dir.
config groups: task/ model/ dataset/ optimizer/ scheduler/ trainer/ experiment/  ({PROG} list shows them)
tasks outside the package: SEQMAMBA_TASK_PATH=<dir>[:<dir>...] (modules *.py, configs in <dir>/configs).
flags: --debug (or SEQMAMBA_DEBUG=1) shows tracebacks; '{PROG} run --help' shows Hydra's help.
"""

HELP = _HELP.replace("{VERB_LINES}", "\n".join(f"  {v.name:<10s} {v.summary}" for v in VERBS.values()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEQMAMBA_DEBUG", "") not in ("", "0")
    if "--debug" in args:
        args.remove("--debug")
        debug = True
    if not args:
        sys.stderr.write(HELP)
        return 2
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(HELP)
        return 0
    if args[0] == "--version":
        from seqmamba import __version__

        print(f"{PROG} {__version__}")
        return 0
    verb = args.pop(0)
    try:
        if verb not in VERBS or not isinstance(verb, str):
            close = difflib.get_close_matches(verb, VERBS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CliError(f"unknown verb {verb!r}{hint} Verbs: {', '.join(VERBS)} (see '{PROG} --help')")
        if not VERBS[verb].hydra:
            return VERBS[verb].job(args)
        return run_hydra(verb, args, debug, run_job)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `seqmamba list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI's job is to turn any failure into one line
        if debug:
            raise
        sys.stderr.write(f"{PROG} {verb}: error: {one_line_error(err, getattr(err, 'user_overrides', ()))}\n")
        return 1
    finally:
        if verb in VERBS and VERBS[verb].hydra:
            from seqmamba.train.distributed import destroy_distributed

            destroy_distributed()


def entry_point() -> None:
    sys.exit(main())

"""The ``seqmamba`` command (entry point ``seqmamba.cli:main``; ``python -m seqmamba.cli`` under torchrun).

    seqmamba run task=<name> [overrides]        train, then evaluate
    seqmamba eval task=<name> ckpt=<path> [...]  evaluate a checkpoint
    seqmamba generate task=<name> ckpt=<path>    sample (generative tasks)
    seqmamba embed task=<name> ckpt=<path>       embeddings (tasks that define them)
    seqmamba list                                registered tasks, backbones, datasets

The verb is taken off the command line and handed to Hydra as the ``verb`` config field, so the rest
of the line is plain Hydra: overrides, ``-m`` sweeps, ``--cfg job``, ``hydra.run.dir=...``. The
implementation lives in :mod:`seqmamba.commands` (verb table, Hydra launch, error lines).
"""
from __future__ import annotations

from seqmamba.commands.errors import one_line_error
from seqmamba.commands.hydra_app import (
    CliError,
    compose_config,
    config_group_options,
    configs_dir,
    register_resolvers,
    split_hydra_flags,
)
from seqmamba.commands.main import HELP, PROG, entry_point, main
from seqmamba.commands.verbs import VERBS

__all__ = ["main", "entry_point", "HELP", "PROG", "VERBS", "CliError", "configs_dir", "config_group_options",
           "compose_config", "register_resolvers", "split_hydra_flags", "one_line_error"]

if __name__ == "__main__":
    entry_point()

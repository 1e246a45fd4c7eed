"""Task modules and configs from outside the package: ``$SEQMAMBA_TASK_PATH``.

``SEQMAMBA_TASK_PATH`` lists directories (``os.pathsep``-separated). ``seqmamba.tasks`` imports every
``*.py`` in them (not starting with ``_``) like its own task modules, and the CLI adds each one's
``configs/`` folder to Hydra's search path, so ``configs/task/<name>.yaml`` there composes with
``task=<name>``. See notes/task_contract.md.
"""
from __future__ import annotations

import os
from typing import List

TASK_PATH_ENV = "SEQMAMBA_TASK_PATH"


def external_task_dirs() -> List[str]:
    """Directories named by ``$SEQMAMBA_TASK_PATH``; a missing one fails in one line."""
    dirs = []
    for entry in os.environ.get(TASK_PATH_ENV, "").split(os.pathsep):
        if not entry:
            continue
        path = os.path.abspath(os.path.expanduser(entry))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{TASK_PATH_ENV} names {entry!r}, which is not a directory")
        dirs.append(path)
    return dirs

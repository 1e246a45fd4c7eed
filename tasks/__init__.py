"""Tasks, one module per task; importing this package registers them in ``seqmamba.registry.TASKS``.

Tasks whose modules need optional dependencies are imported guarded: a missing optional package
makes that one task unavailable (``seqmamba list`` names it and the reason), never the whole CLI.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import Dict

#: modules that every install can import
_CORE_TASK_MODULES = ("selective_copying", "induction_heads")
#: modules that may need optional dependencies or data tooling (added by later issues)
_OPTIONAL_TASK_MODULES = ("hg38", "great_apes", "sc09")

#: optional task module -> why it could not be imported
UNAVAILABLE: Dict[str, str] = {}


def _import_tasks() -> None:
    for module in _CORE_TASK_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    for module in _OPTIONAL_TASK_MODULES:
        if importlib.util.find_spec(f"{__name__}.{module}") is None:
            continue  # not written yet / not shipped
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError as err:
            UNAVAILABLE[module] = f"{type(err).__name__}: {err}"


_import_tasks()

"""Tasks, one module per task, found by discovery; importing this package registers them in TASKS.

Every module ``tasks/<name>.py`` whose name does not start with ``_`` is imported; a task module does
``@TASKS.register("<name>")``. Modules of shared code (base, next_token, classification,
synthetic_base) register nothing and are imported like the rest. Task modules outside the package
come from the directories in ``$SEQMAMBA_TASK_PATH`` (``os.pathsep``-separated; each ``*.py`` there
is imported, and a ``configs/`` folder beside them joins Hydra's search path; see
notes/task_contract.md).

A module that raises on import makes only that module's task unavailable: :data:`UNAVAILABLE` keeps
its one-line reason, :func:`get_task` raises it when that task is asked for, and ``seqmamba list``
shows it.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import traceback
from typing import Dict, Type

from seqmamba.plugins import TASK_PATH_ENV, external_task_dirs  # noqa: F401  (re-exported)
from seqmamba.registry import TASKS, RegistryError

#: module name (= task name by convention) -> why it could not be imported, one line
UNAVAILABLE: Dict[str, str] = {}


class TaskUnavailableError(RegistryError):
    """The task's module failed to import; ``str()`` is one line with the real error."""


def import_error_line(err: BaseException) -> str:
    """``Type: message (file:line)`` of the innermost frame, on one line."""
    message = " ".join(str(err).split()) or type(err).__name__
    where = ""
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        frame = frames[-1]
        where = f" ({frame.filename}:{frame.lineno})"
    return f"{type(err).__name__}: {message}{where}"


def _import_guarded(key: str, module_name: str, loader=None) -> None:
    try:
        if loader is None:
            importlib.import_module(module_name)
        else:
            loader()
    except Exception as err:  # noqa: BLE001 - any failure makes only this task unavailable
        UNAVAILABLE[key] = import_error_line(err)


def _load_file(module_name: str, path: str) -> None:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            _import_guarded(info.name, f"{__name__}.{info.name}")
    for index, directory in enumerate(external_task_dirs()):
        for file in sorted(os.listdir(directory)):
            stem, ext = os.path.splitext(file)
            if ext == ".py" and not stem.startswith("_"):
                module_name = f"seqmamba_external_tasks_{index}.{stem}"
                path = os.path.join(directory, file)
                _import_guarded(stem, module_name, lambda m=module_name, p=path: _load_file(m, p))
    for name in TASKS.names():  # a registered class knows its registry name
        cls = TASKS.get(name)
        if isinstance(cls, type) and not cls.__dict__.get("name"):
            cls.name = name
        UNAVAILABLE.pop(name, None)  # registered after all (e.g. a second module of that name)


def get_task(name: str) -> Type:
    """The task class registered as ``name``; an unavailable task raises its import error in one line."""
    if name in TASKS:
        return TASKS.get(name)
    if name in UNAVAILABLE:
        raise TaskUnavailableError(f"task {name!r} is unavailable: its module failed to import: {UNAVAILABLE[name]}")
    return TASKS.get(name)  # unknown: the registry names the closest match


if __name__ == "seqmamba.tasks":
    _discover()
else:
    # Imported from a checkout as the top-level package ``tasks`` (e.g. ``from tasks.hg38 import ...`` in
    # a test): be the installed package instead, so every task module exists once and registers once.
    _package = importlib.import_module("seqmamba.tasks")
    for _name, _module in list(sys.modules.items()):
        if _name.startswith("seqmamba.tasks."):
            sys.modules[__name__ + _name[len("seqmamba.tasks"):]] = _module
    sys.modules[__name__] = _package

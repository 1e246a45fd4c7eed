"""seqmamba: selective state space models (Mamba) for synthetic tasks, DNA and raw audio."""
__version__ = "0.1.0"


def _checkout_layout() -> None:
    """Run from a source checkout without installing (``PYTHONPATH=. python -m seqmamba.cli ...``, as on a
    machine where nothing can be installed): the checkout's top-level ``tasks/`` and ``configs/`` serve as
    ``seqmamba.tasks`` / ``seqmamba.configs``, as pyproject's package-dir maps them in an install."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, "tasks")) or not os.path.isfile(os.path.join(root, "tasks", "__init__.py")):
        return
    try:
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
            if 'name = "seqmamba"' not in f.read():
                return
    except OSError:
        return
    if root not in __path__:
        __path__.append(root)


_checkout_layout()

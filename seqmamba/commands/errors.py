"""Any failure of a ``seqmamba`` verb as one readable line.

Hydra reports config problems in several lines (search path, option lists, hints); they are folded
into one, with the closest option or key named where the user probably mistyped.
"""
from __future__ import annotations

import difflib
import re
from typing import List, Sequence

from .hydra_app import CliError, config_group_options


_DROP_LINE = re.compile(r"^(See https?://|object_type=|reference_type=|Set the environment variable HYDRA_FULL_ERROR)")


def one_line_error(err: BaseException, overrides: Sequence[str] = ()) -> str:
    """A readable single line for ``err``: Hydra's multi-line messages are folded, option lists kept."""
    from seqmamba.registry import RegistryError

    from seqmamba.config_checks import ConfigValueError

    if isinstance(err, (CliError, RegistryError, ConfigValueError)):
        return str(err)
    text = str(err)
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += "\n" + str(cause)
    lines = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if line and not _DROP_LINE.match(line):
            lines.append(line)
    message = _fold_option_lists(lines)
    unknown = re.search(r"Could not override '([\w.]+)'", message)
    if unknown:
        return _unknown_key_line(unknown.group(1), overrides)
    missing = re.search(r"Could not find '([\w/.-]+)/([\w/.-]+)'", message)
    if missing:
        group, name = missing.groups()
        close = difflib.get_close_matches(name, config_group_options(group.split("/")[0]), n=1, cutoff=0.5)
        if close:
            message += f" (did you mean {group}={close[0]}?)"
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, OverrideParseException):
        message = f"bad override {err.override!r}: {message}"

    if not isinstance(err, (HydraException, OmegaConfBaseException, ValueError, FileNotFoundError, NotImplementedError)):
        message = f"{type(err).__name__}: {message}"
    return message or type(err).__name__


def _fold_option_lists(lines: List[str]) -> str:
    """'Available options in 'task':' followed by one option per line -> one clause."""
    out: List[str] = []
    collecting = False
    for line in lines:
        if line.endswith(":") and ("options" in line.lower()):
            out.append(line + " ")
            collecting = True
            continue
        if collecting and re.fullmatch(r"[\w/.-]+", line):
            out[-1] += ("" if out[-1].endswith(": ") else ", ") + line
            continue
        collecting = False
        out.append(line)
    return "; ".join(part.strip() for part in out)


def _unknown_key_line(key: str, overrides: Sequence[str]) -> str:
    """``unknown config key trainer.max_stepz; did you mean trainer.max_steps?`` — the known keys are
    those of the config composed from the user's other overrides."""
    from seqmamba.config_checks import unknown_key_message

    known: List[str] = []
    try:
        from omegaconf import DictConfig

        from .hydra_app import compose_config

        cfg = compose_config([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key])

        def walk(node, prefix):
            for name in node.keys():
                path = f"{prefix}{name}"
                known.append(path)
                child = node._get_node(name)
                if isinstance(child, DictConfig):
                    walk(child, path + ".")

        walk(cfg, "")
    except Exception:  # noqa: BLE001 - the hint is a courtesy; the line below still names the key
        pass
    return unknown_key_message(key, known)

"""Reading run-config values, in one place: sections as plain dicts, dotted look-ups, checked numbers.

Every layer that reads the run config (tasks, the trainer, the CLI) uses these, so a bad value fails
the same way wherever it is read: one line naming the key, the value and what is accepted, raised as
:class:`ConfigValueError` before any training starts.
"""
from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

_MISSING = object()


class ConfigValueError(ValueError):
    """A config value out of range or of the wrong type. ``str()`` is one line: key, value, what is accepted."""


def as_plain_dict(section: Any) -> Dict[str, Any]:
    """A config section (OmegaConf node, mapping or None) as a plain, resolved dict."""
    if section is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)  # type: ignore[return-value]
    if isinstance(section, Mapping):
        return dict(section)
    raise ConfigValueError(f"expected a mapping (a config section), got {section!r}")


def config_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b`` for an OmegaConf node or nested mappings; ``default`` where any part is missing or null."""
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node[part]
        except (KeyError, AttributeError, TypeError, IndexError):  # omegaconf's ConfigKeyError is a KeyError
            return default
    return default if node is None else node


def section(cfg: Any, key: str) -> Dict[str, Any]:
    """``cfg.<key>`` as a plain dict ({} when absent or null)."""
    node = config_get(cfg, key, None)
    if node is None:
        return {}
    try:
        return as_plain_dict(node)
    except ConfigValueError:
        raise ConfigValueError(f"{key}={node!r}: expected a mapping (a config section)") from None


def check_int(key: str, value: Any, minimum: Optional[int] = None, maximum: Optional[int] = None,
              accepted: str = "") -> int:
    """``value`` as an int within [minimum, maximum], or a one-line :class:`ConfigValueError`."""
    what = accepted or _range_words(minimum, maximum, "an integer")
    if isinstance(value, bool) or value is None:
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}")
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}")
    return number


def check_float(key: str, value: Any, minimum: Optional[float] = None, maximum: Optional[float] = None,
                accepted: str = "") -> float:
    what = accepted or _range_words(minimum, maximum, "a number")
    if isinstance(value, bool) or value is None:
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}") from None
    if number != number or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected {what}")
    return number


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    text = str(value).lower() if value is not None else "null"
    if text not in choices:
        raise ConfigValueError(f"{key}={value!r} is not accepted; expected one of {', '.join(choices)}")
    return text


def check_known_keys(key: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Fail on the first key of ``given`` not in ``known``, naming the closest known one."""
    known = sorted(known)
    for name in given:
        if name not in known:
            raise ConfigValueError(unknown_key_message(f"{key}.{name}" if key else name,
                                                       [f"{key}.{k}" if key else k for k in known]))


def unknown_key_message(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown config key {key}{hint}"


def _range_words(minimum: Any, maximum: Any, kind: str) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"{kind} >= {minimum}"
    if maximum is not None:
        return f"{kind} <= {maximum}"
    return kind

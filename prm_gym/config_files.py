"""Configuration files: a TOML, YAML or JSON file read into a config dataclass, sections into nested dataclasses.

The loops take many settings (every stage's); a file keeps a run's settings together and under version
control, and the command line still overrides any of them (``prm-gym agentprm --config run.toml --iterations 2``).
A key the dataclass does not have is an error naming it and the keys that exist, never silently ignored; values
are checked by the dataclasses themselves (their ``__post_init__``).

Example:
    >>> from prm_gym.agents.registry import AgentConfig
    >>> settings = {"agent": "hf", "hf": {"mode": "loglik", "prompt": {"max_prompt_tokens": 512}}}
    >>> config = from_mapping(AgentConfig, settings)
    >>> config.agent, config.hf.mode, config.hf.prompt.max_prompt_tokens, config.hf.temperature
    ('hf', 'loglik', 512, 0.0)
    >>> from_mapping(AgentConfig, {"hf": {"modes": "loglik"}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown setting `hf.modes`; the settings there are: ..., mode, ...
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


__all__ = ["from_mapping", "load_config"]

T = TypeVar("T")
#: The file kinds read, by suffix.
SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def load_config(path: str | Path, cls: type[T]) -> T:
    """Return the dataclass ``cls`` with the settings of the file at ``path`` (the rest at their defaults).

    Raises:
        FileNotFoundError: when there is no file at ``path``.
        ValueError: an unknown suffix, a file that does not parse (the parser's message, with the file's name),
            a key ``cls`` does not have, or a value its checks refuse.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: a config file should end with one of {', '.join(SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"No config file at {path}.")
    data = _parse(path, path.read_text("utf-8"))
    try:
        return from_mapping(cls, data if data is not None else {})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def _parse(path: Path, text: str) -> Any:
    """Return the file's content as Python values, or raise one ValueError naming the file and the parser's words."""
    if path.suffix in (".yaml", ".yml"):
        import yaml  # PyYAML: only for YAML files

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} does not parse: {error}") from None
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} does not parse: {error}") from None


def from_mapping(cls: type[T], data: Any, where: str = "", base: T | None = None) -> T:
    """Return ``base`` (default: ``cls()``) with the settings of ``data``; nested tables update nested dataclasses.

    A table updates the field's current value (its own defaults, such as a loop's defaults for a stage, stay);
    lists become tuples where a field is a tuple. ``where`` is the dotted path of ``data``, for error messages.

    Raises:
        ValueError: ``data`` is not a mapping, or has a key that ``cls`` has not.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"`{where.rstrip('.') or 'the file'}` should be a table of settings. Received {data!r}.")
    base = cls() if base is None else base
    fields = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"Unknown setting `{where}{unknown[0]}`; the settings there are: {', '.join(sorted(fields))}.")
    hints = typing.get_type_hints(cls)
    values = {name: _value(hints[name], getattr(base, name), value, f"{where}{name}") for name, value in data.items()}
    return dataclasses.replace(base, **values)  # type: ignore[type-var]


def _value(hint: Any, current: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to what a field typed ``hint`` (now ``current``) holds: a dataclass, a tuple, or itself."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    for option in typing.get_args(hint) if union else (hint,):
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            nested = current if isinstance(current, option) else None  # type: ignore[arg-type]
            return from_mapping(option, value, f"{where}.", nested)  # type: ignore[arg-type]
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value

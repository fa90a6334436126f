"""Reading a Gymnasium vector env's batched ``infos`` back as each sub-env's own ``info``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["sub_env_info"]


def sub_env_info(infos: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Return sub-env ``index``'s ``info`` out of a vector env's ``infos`` (keys it did not set are left out).

    Nested dicts (``final_info`` under ``SAME_STEP`` autoreset) are unpacked the same way, and numpy scalars
    become Python ones, so the result is what the sub-env itself returned.

    Example:
        >>> infos = {"won": np.array([True, False]), "_won": np.array([True, True]),
        ...          "task": np.array(["a", None], dtype=object), "_task": np.array([True, False])}
        >>> sub_env_info(infos, 0), sub_env_info(infos, 1)
        ({'won': True, 'task': 'a'}, {'won': False})
    """
    info: dict[str, Any] = {}
    for key, values in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[index]:
            continue
        value = sub_env_info(values, index) if isinstance(values, Mapping) else values[index]
        info[key] = value.item() if isinstance(value, np.generic) else value
    return info

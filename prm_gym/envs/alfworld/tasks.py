"""ALFWorld's six task types: their ids, names, Table 1 labels, and parsing of user filters.

ALFWorld numbers its task types 1-6 (``alfworld.agents.environment.alfred_tw_env.TASK_TYPES``); papers
report them by short labels (Pick, Clean, Heat, Cool, Look, Pick2). Users may name them either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TaskType", "TASK_TYPES", "parse_task_types", "task_type_of_game_dir"]


@dataclass(frozen=True)
class TaskType:
    """One ALFWorld task type.

    Example:
        >>> TASK_TYPES[2].name, TASK_TYPES[2].label
        ('look_at_obj_in_light', 'Look')
    """

    #: ALFWorld's numeric id (1-6).
    id: int
    #: ALFWorld's name, also the prefix of every game folder of this type.
    name: str
    #: The column label of the paper's Table 1.
    label: str


TASK_TYPES: dict[int, TaskType] = {
    t.id: t
    for t in (
        TaskType(1, "pick_and_place_simple", "Pick"),
        TaskType(2, "look_at_obj_in_light", "Look"),
        TaskType(3, "pick_clean_then_place_in_recep", "Clean"),
        TaskType(4, "pick_heat_then_place_in_recep", "Heat"),
        TaskType(5, "pick_cool_then_place_in_recep", "Cool"),
        TaskType(6, "pick_two_obj_and_place", "Pick2"),
    )
}

_ALIASES: dict[str, TaskType] = {}
for _t in TASK_TYPES.values():
    for _alias in (_t.name, _t.label, str(_t.id)):
        _ALIASES[_alias.lower()] = _t
_ALIASES.update(
    {
        "pick_and_place": TASK_TYPES[1],
        "look": TASK_TYPES[2],
        "pick_clean": TASK_TYPES[3],
        "pick_heat": TASK_TYPES[4],
        "pick_cool": TASK_TYPES[5],
        "pick_two": TASK_TYPES[6],
        "pick2": TASK_TYPES[6],
    }
)


def parse_task_types(task_types: Iterable[str | int] | str | int | None) -> tuple[TaskType, ...]:
    """Turn a user's task-type filter into :class:`TaskType` values (``None`` means all six).

    Accepts ALFWorld's ids (1-6), its full names, the paper's labels (case-insensitive) and short names
    such as ``"pick_clean"`` or ``"pick_two"``.

    Example:
        >>> [t.label for t in parse_task_types(["pick_clean", 6, "Look"])]
        ['Clean', 'Pick2', 'Look']
    """
    if task_types is None:
        return tuple(TASK_TYPES.values())
    if isinstance(task_types, (str, int)):
        task_types = [task_types]
    parsed: list[TaskType] = []
    for value in task_types:
        task_type = _ALIASES.get(str(value).strip().lower())
        if task_type is None:
            known = ", ".join(f"{t.id}={t.name} ({t.label})" for t in TASK_TYPES.values())
            raise ValueError(f"Unknown ALFWorld task type {value!r}. Known task types: {known}.")
        if task_type not in parsed:
            parsed.append(task_type)
    if not parsed:
        raise ValueError("`task_types` is empty: pass None for all task types, or at least one task type.")
    return tuple(parsed)


def task_type_of_game_dir(game_dir_name: str) -> TaskType:
    """Read the task type from an ALFWorld game folder name (``<task_type>-<Object>-<MRecep>-<Parent>-<scene>``).

    Example:
        >>> task_type_of_game_dir("pick_two_obj_and_place-Book-None-Bed-302").label
        'Pick2'
    """
    name = game_dir_name.split("-", 1)[0]
    for task_type in TASK_TYPES.values():
        if task_type.name == name:
            return task_type
    raise ValueError(f"{game_dir_name!r} is not an ALFWorld game folder: it does not start with a task type name.")

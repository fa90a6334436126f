"""Make the bundled ``tiny`` split: real ALFWorld games shrunk to a small room.

:func:`shrink_game` keeps a game's PDDL domain, grammar (with its task sentence) and goal, and cuts its
problem down to what the game's walkthrough touches (the objects, the receptacles that hold them, the
sink basin / microwave / fridge / lamp it uses), plus a few distractor receptacles and objects, chosen
deterministically. The new walkthrough is replanned by TextWorld (fast-downward) and checked by playing it.
:func:`generate_tiny_split` shrinks the first workable game of each task type (of ``valid_train`` by
default); to regenerate the bundled games, run::

    python -m prm_gym.envs.alfworld.tiny --data-dir "$ALFWORLD_DATA" --out prm_gym/envs/alfworld/tiny_games
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler

from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.tasks import TASK_TYPES
from prm_gym.envs.engine import TextWorldEngine
from prm_gym.io import atomic_write_text

__all__ = ["shrink_game", "generate_tiny_split", "write_game", "main"]

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^\s()]+")
_DECLARATION = re.compile(r"^\s*(\S+_bar_\S+)\s+-\s+(object|receptacle)\s*$", re.MULTILINE)
_DEFAULT_OUT = Path(__file__).parent / "tiny_games"


def _kind(instance_id: str) -> str:
    """Return the class of an instance id (``Mug_bar_...`` -> ``mug``)."""
    return instance_id.split("_bar_", 1)[0].lower()


def _varied(instance_ids: Sequence[str], known_kinds: set[str]) -> list[str]:
    """Order ids for picking distractors: one of each class first (new classes before ``known_kinds``), by id."""
    seen: dict[str, int] = {}
    ranked = []
    for instance_id in sorted(instance_ids):
        kind = _kind(instance_id)
        seen[kind] = seen.get(kind, 0) + 1
        ranked.append((seen[kind], kind in known_kinds, instance_id))
    return [instance_id for *_, instance_id in sorted(ranked)]


def _demangled_names(game_file: Path) -> dict[str, str]:
    """Map each entity id (lower case, as TextWorld's PDDL parser reports it) to ALFWorld's name, e.g. "mug 1"."""
    env = textworld.start(str(game_file), textworld.EnvInfos(), wrappers=[AlfredDemangler(shuffle=False)])
    try:
        return {entity_id: info.name for entity_id, info in env._entity_infos.items()}
    finally:
        env.close()


def _touched_instances(walkthrough: Sequence[str], instances: Sequence[str], names: dict[str, str]) -> set[str]:
    """Return the instance ids (as spelled in the problem) that the walkthrough's commands name."""
    by_name = {names[i.lower()]: i for i in instances if i.lower() in names}
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, sorted(by_name, key=len, reverse=True))) + r")(?!\w)")
    touched: set[str] = set()
    for command in walkthrough:
        found = pattern.findall(command)
        if not found and command not in ("look", "inventory"):
            raise ValueError(f"Walkthrough command {command!r} names no entity of the game.")
        touched.update(by_name[name] for name in found)
    return touched


def shrink_game(
    source_game_file: str | os.PathLike[str],
    *,
    distractor_receptacles: int = 3,
    distractor_objects: int = 2,
    max_receptacles: int = 6,
) -> dict[str, Any]:
    """Shrink an ALFWorld game to the instances its walkthrough touches plus a few distractors.

    Args:
        source_game_file: A ``game.tw-pddl`` file with a ``walkthrough``.
        distractor_receptacles: Receptacles to add besides the needed ones (fewer if ``max_receptacles`` is hit);
            receptacles of classes not yet in the room come first, then by id.
        distractor_objects: Pickupable objects to keep in the kept receptacles, of classes the walkthrough does
            not touch (so they offer no other way to the goal), one class at a time, by id.
        max_receptacles: Most receptacles the room may have when adding distractors.

    Returns:
        The shrunk game as a dict with the source's keys, ``solvable: True`` and a verified ``walkthrough``.

    Raises:
        ValueError: The source has no walkthrough or an unexpected problem layout.
        RuntimeError: The shrunk game cannot be planned or its walkthrough does not win at its last step.
    """
    counts = {"distractor_receptacles": distractor_receptacles, "distractor_objects": distractor_objects}
    for name, value in {**counts, "max_receptacles": max_receptacles}.items():
        if value < 0:
            raise ValueError(f"`{name}` should be at least 0. Received {value!r}.")
    source_game_file = Path(source_game_file)
    with open(source_game_file, encoding="utf-8") as f:
        source = json.load(f)
    walkthrough = source.get("walkthrough")
    if not walkthrough:
        raise ValueError(f"Game {source_game_file} has no walkthrough to shrink around.")
    head, sep, goal = source["pddl_problem"].partition("(:goal")
    if not sep:
        raise ValueError(f"The PDDL problem of {source_game_file} has no (:goal section.")
    declared = {m.group(1): m.group(2) for m in _DECLARATION.finditer(head)}
    if not declared:
        raise ValueError(f"The PDDL problem of {source_game_file} declares no object or receptacle instances.")
    lines = head.splitlines(keepends=True)
    facts = [tuple(_TOKEN.findall(line)) for line in lines if line.lstrip().startswith("(")]
    holder = {f[1]: f[2] for f in facts if len(f) == 3 and f[0] == "inReceptacle"}
    pickupable = {f[1] for f in facts if len(f) == 2 and f[0] == "pickupable"}

    touched = _touched_instances(walkthrough, sorted(declared), _demangled_names(source_game_file))
    keep = touched | {holder[i] for i in touched if i in holder}
    receptacles = sorted(i for i, kind in declared.items() if kind == "receptacle")
    kept_kinds = {_kind(i) for i in keep if declared[i] == "receptacle"}
    spare = _varied([r for r in receptacles if r not in keep], kept_kinds)
    room = max(0, max_receptacles - sum(declared[i] == "receptacle" for i in keep))
    keep.update(spare[: min(distractor_receptacles, room)])
    touched_kinds = {_kind(i) for i in touched}
    candidates = _varied(
        [o for o in pickupable if o in declared and holder.get(o) in keep and _kind(o) not in touched_kinds], set()
    )
    keep.update(candidates[:distractor_objects])

    dropped = set(declared) - keep
    kept_lines = []
    for line in lines:
        tokens = _TOKEN.findall(line)
        if not dropped.intersection(tokens):
            kept_lines.append(line)
        elif line.count("(") > 1:
            raise ValueError(f"Line {line.strip()!r} of {source_game_file} holds more than one fact.")
    shrunk = {
        key: value for key, value in source.items() if key not in ("pddl_problem", "solvable", "walkthrough")
    }
    shrunk["pddl_problem"] = "".join(kept_lines) + sep + goal
    shrunk["solvable"] = True
    shrunk["walkthrough"] = _plan_and_verify(shrunk, source_game_file)
    logger.info(
        "Shrank %s to %d receptacles and %d objects; walkthrough of %d steps.",
        source_game_file, sum(declared[i] == "receptacle" for i in keep),
        sum(declared[i] == "object" for i in keep), len(shrunk["walkthrough"]),
    )
    return shrunk


def _plan_and_verify(game: dict[str, Any], source_game_file: Path) -> list[str]:
    """Replan the shrunk game's walkthrough with TextWorld, then check that playing it wins at its last step."""
    with tempfile.TemporaryDirectory(prefix="prm_gym_tiny_") as tmp:
        path = Path(tmp) / "game.tw-pddl"
        path.write_text(json.dumps({k: v for k, v in game.items() if k != "walkthrough"}), encoding="utf-8")
        infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
        env = textworld.start(str(path), infos, wrappers=[AlfredDemangler(shuffle=False)])
        try:
            walkthrough = list(env.reset().get("extra.walkthrough") or [])
        finally:
            env.close()
        if not walkthrough:
            raise RuntimeError(f"The planner found no walkthrough for the shrunk {source_game_file}.")
        path.write_text(json.dumps({**game, "walkthrough": walkthrough}), encoding="utf-8")
        engine = TextWorldEngine(wrappers=[AlfredDemangler(shuffle=False)])
        try:
            engine.load(path)
            turn = engine.reset()
            for step, command in enumerate(walkthrough, start=1):
                if turn.won or command not in turn.admissible_commands:
                    reason = "was won early" if turn.won else f"does not admit {command!r}"
                    raise RuntimeError(f"The shrunk {source_game_file} {reason} at step {step} of {walkthrough}.")
                turn = engine.step(command)
        finally:
            engine.close()
        if not turn.won:
            raise RuntimeError(f"The shrunk {source_game_file} is not won after its walkthrough {walkthrough}.")
    return walkthrough


def write_game(game: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a game as deterministic JSON, atomically (a temporary file beside ``path``, then a rename)."""
    return atomic_write_text(path, json.dumps(game) + "\n")


def generate_tiny_split(
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "valid_train",
    out_dir: str | os.PathLike[str] = _DEFAULT_OUT,
    **shrink_options: int,
) -> list[Path]:
    """Shrink the first game (by sorted path) of each task type whose shrunk version works, into ``out_dir``.

    Args:
        data_dir: The folder holding ALFWorld's ``json_2.1.1/`` (default: see :func:`~.data.find_data_dir`).
        split: The source split.
        out_dir: Where ``<game dir>/<trial dir>/game.tw-pddl`` files go.
        **shrink_options: Passed to :func:`shrink_game`.

    Returns:
        The written game files, one per task type, in ALFWorld's task-type order.

    Raises:
        RuntimeError: No game of some task type could be shrunk.
    """
    written = []
    for task_type in TASK_TYPES.values():
        for source in list_games(split, data_dir=data_dir, task_types=task_type.name):
            try:
                game = shrink_game(source, **shrink_options)
            except (RuntimeError, ValueError) as error:
                logger.warning("Skipping %s: %s", source, error)
                continue
            target = Path(out_dir) / source.parent.parent.name / source.parent.name / source.name
            written.append(write_game(game, target))
            logger.info("Wrote %s", target)
            break
        else:
            raise RuntimeError(f"No game of task type {task_type.name!r} in split {split!r} could be shrunk.")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate the ``tiny`` split from real ALFWorld games."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding json_2.1.1/ (default: $ALFWORLD_DATA, cache)")
    parser.add_argument("--split", default="valid_train", help="source split (default: valid_train)")
    parser.add_argument("--out", default=str(_DEFAULT_OUT), help="output folder (default: the bundled tiny_games)")
    parser.add_argument("--distractor-receptacles", type=int, default=3)
    parser.add_argument("--distractor-objects", type=int, default=2)
    parser.add_argument("--max-receptacles", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate_tiny_split(
        args.data_dir, args.split, args.out, distractor_receptacles=args.distractor_receptacles,
        distractor_objects=args.distractor_objects, max_receptacles=args.max_receptacles,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

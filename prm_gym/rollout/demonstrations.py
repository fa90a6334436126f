"""Demonstrations as data: expert episodes read from a user's file or an episodes folder, checked, saved, degraded.

Methods that learn from demonstrations (SFT's pi0, InversePRM's process rewards) read them here, through
:func:`load_demonstrations`, from either of two sources:

- **A demonstrations file**, JSON lines, one episode per line, for logs from outside prm-gym::

    {"task": "put a mug in the sink.", "observations": ["You are in a room.", "You see a mug."], "actions": ["go to table 1", "take mug 1 from table 1"]}
    {"task": "look at a book under the lamp.", "observations": ["You are in a room.", "On the desk..."], "actions": ["go to desk 1", "use desklamp 1"], "game_file": "/data/look_at_obj-1/trial_T1/game.tw-pddl"}
    {"task": "heat an egg.", "observations": ["Hi.", "Done."], "actions": ["heat egg 1 with microwave 1"], "reasons": [null], "admissible_commands": [["look", "heat egg 1 with microwave 1"]]}

  ``task``, ``observations`` and ``actions`` are required: ``observations[t]`` is what the expert saw before
  sending ``actions[t]``; one more observation at the end (what the last action led to) is allowed and ignored.
  Optional: ``game_file``, ``task_type``, ``reasons`` (one per action, ``null`` where none was given) and
  ``admissible_commands`` (one list per action). There is no outcome: **a demonstration is taken as a successful
  episode**, its last step marked won (reward 1), since an expert log records what succeeded.
- **An episodes folder** (``prm-gym collect`` or ``eval --output-dir``: any agent's recorded episodes, ALFWorld's
  gold walkthroughs with ``prm-gym collect --agent walkthrough --repeats 1``), whose won episodes are the
  demonstrations (all of them with ``won_only=False``).

:func:`save_demonstrations` writes demonstrations as an episodes folder (the rollout format of
:mod:`prm_gym.rollout.storage`), so that every command reading episodes reads them, with where they came from in
its ``config.json``; :func:`demonstrations_fingerprint` is what a training run records about the demonstrations
it read. :func:`degrade_demonstrations` spoils a seeded share of them, for studying how a method copes with
imperfect expert logs.
"""  # noqa: E501 - the example lines are whole JSON lines

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import prm_gym
from prm_gym.io import atomic_directory, atomic_write_text
from prm_gym.rollout.storage import (
    CONFIG_FILE,
    EPISODES_FILE,
    Episode,
    append_episodes,
    game_key,
    load_episodes,
    load_run_config,
)

__all__ = ["degrade_demonstrations", "demonstrations_fingerprint", "load_demonstrations", "save_demonstrations"]

logger = logging.getLogger(__name__)

#: The ``agent`` of episodes read from a demonstrations file.
DEMONSTRATOR = "demonstrator"
#: The ``run`` of a demonstrations folder's ``config.json``.
DEMONSTRATIONS_RUN = "demonstrations"
#: The fields of a demonstrations file's line: required, then optional.
_REQUIRED, _OPTIONAL = ("task", "observations", "actions"), ("game_file", "task_type", "reasons", "admissible_commands")
_WHERE_FROM = (
    "give a JSON-lines file (one episode per line: task, observations, actions) or an episodes folder "
    "(`prm-gym collect --agent walkthrough --split train --repeats 1 --output-dir runs/demos` writes ALFWorld's "
    "gold walkthroughs as one)"
)


def load_demonstrations(path: str | os.PathLike[str], *, won_only: bool = True) -> list[Episode]:
    """Read demonstrations from a demonstrations file or an episodes folder (see the module's docstring).

    Episodes of a file are numbered by line (``episode_id`` ``"<i>:0"``, ``game_index`` ``i``, agent
    ``"demonstrator"``), each ending won. From a folder, with ``won_only``, only its won episodes are kept (the
    number dropped is logged).

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "demos.jsonl"
        >>> _ = file.write_text('{"task": "t", "observations": ["intro", "here", "end"], "actions": ["go", "take"]}')
        >>> (episode,) = load_demonstrations(file)
        >>> episode.won, episode.actions, episode.steps[1].context.history
        (True, ['go', 'take'], (('intro', 'go'),))

    Raises:
        FileNotFoundError: when ``path`` does not exist, or is a folder without ``episodes.jsonl``.
        ValueError: when a line of the file is not such an episode (the file, line and problem are named), the
            file holds none, or no episode of the folder was won with ``won_only``.
    """
    path = Path(path)
    if path.is_dir():
        episodes = load_episodes(path)
        if not won_only:
            return episodes
        won = [episode for episode in episodes if episode.won]
        if not won:
            raise ValueError(f"None of the {len(episodes)} episodes in {path} was won: there is no demonstration "
                             "(keep lost ones too with won_only=False, `--all-episodes`).")  # fmt: skip
        if len(won) < len(episodes):
            logger.info("%s: %d won episodes kept as demonstrations, %d lost ones dropped.", path, len(won),
                        len(episodes) - len(won))  # fmt: skip
        return won
    if not path.is_file():
        raise FileNotFoundError(f"No episodes at {path}: {_WHERE_FROM}.")
    return _read_file(path)


def save_demonstrations(episodes: Sequence[Episode], folder: str | os.PathLike[str], source: Mapping[str, Any]) -> Path:
    """Write ``episodes`` as an episodes folder (``config.json`` and ``episodes.jsonl``), atomically; return it.

    ``config.json``'s ``run`` is ``"demonstrations"`` and its ``config`` is ``source`` (where they came from, how
    they were chosen): :func:`load_demonstrations`, ``load_episodes`` and ``prm-gym sft`` read the folder. A
    demonstrations folder already there is replaced (readers see the old one or the new one, whole).

    Example:
        >>> import tempfile
        >>> episodes = [Episode.from_actions("t", ["intro"], ["look"], won=True)]
        >>> folder = save_demonstrations(episodes, Path(tempfile.mkdtemp()) / "demos", {"source": "by hand"})
        >>> load_demonstrations(folder) == episodes, load_run_config(folder)["config"]
        (True, {'source': 'by hand'})

    Raises:
        ValueError: when there is no episode, two share an ``episode_id``, ``source`` is not JSON, or ``folder``
            holds something other than demonstrations (it is not replaced).
    """
    folder = Path(folder)
    if not episodes:
        raise ValueError(f"No demonstrations to write to {folder}.")
    twice = sorted(i for i, count in Counter(episode.episode_id for episode in episodes).items() if count > 1)
    if twice:
        raise ValueError(f"Episodes {twice} appear twice: give each demonstration its own episode_id.")
    if folder.exists() and any(folder.iterdir()):
        recorded = load_run_config(folder) if (folder / CONFIG_FILE).is_file() else {}
        if recorded.get("run") != DEMONSTRATIONS_RUN:
            raise ValueError(f"{folder} holds something other than demonstrations: choose another output_dir.")
    try:
        identity = json.dumps({"run": DEMONSTRATIONS_RUN, "config": dict(source),
                               "agent": "+".join(sorted({episode.agent for episode in episodes})),
                               "prm_gym_version": prm_gym.__version__}, indent=2)  # fmt: skip
    except TypeError as error:
        raise ValueError(f"The demonstrations' source must be JSON-like ({error}).") from None
    with atomic_directory(folder) as tmp:
        atomic_write_text(tmp / CONFIG_FILE, identity + "\n")
        append_episodes(tmp, episodes)
    return folder


def demonstrations_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return what a training run records about its demonstrations: their source and the sha256 of the file read.

    ``{"demonstrations": <the folder's config.json, or {"file": <name>} for a file>, "demonstrations_sha256":
    ...}``, the entries ``prm-gym sft`` has always recorded for a folder (so runs recorded before files were
    accepted still resume), to merge into a run's record: a rerun whose demonstrations differ is then refused.

    Raises:
        FileNotFoundError: when ``path`` is neither a file nor an episodes folder.
    """
    path = Path(path)
    if path.is_dir():
        source, file = load_run_config(path), path / EPISODES_FILE
    elif path.is_file():
        source, file = {"file": path.name}, path
    else:
        raise FileNotFoundError(f"No episodes at {path}: {_WHERE_FROM}.")
    return {"demonstrations": source, "demonstrations_sha256": hashlib.sha256(file.read_bytes()).hexdigest()}


def degrade_demonstrations(
    episodes: Sequence[Episode],
    *,
    replace_share: float = 0.0,
    replacements: Sequence[Episode] = (),
    truncate_share: float = 0.0,
    seed: int = 0,
) -> list[Episode]:
    """Spoil a seeded share of the demonstrations: some replaced by other episodes, others cut short.

    InversePRM learns what good steps look like from expert logs alone, so their quality is its main risk; this
    makes logs of known quality to measure it. ``replace_share`` of the demonstrations (rounded) are replaced by
    episodes drawn from ``replacements`` (random-policy episodes, say), of the same game where one is there (by
    ``game_file``), else of any; they keep the replaced demonstration's id and their own steps and outcome.
    Another ``truncate_share`` (disjoint from the first; episodes of two steps or more) are cut at a random step:
    their last step is then neither won nor rewarded, and marked ``truncated``. Others are returned as they are,
    in their order. Reading the result with ``won_only`` drops the lost ones, as ``prm-gym sft`` does.

    Example:
        >>> demos = [Episode.from_actions("t", ["a", "b"], ["go", "take"], won=True, episode_id=f"{i}:0")
        ...          for i in range(4)]
        >>> spoilt = degrade_demonstrations(demos, truncate_share=0.5, seed=0)
        >>> [len(episode.steps) for episode in spoilt], [episode.won for episode in spoilt]
        ([2, 1, 2, 1], [True, False, True, False])

    Raises:
        ValueError: when a share is outside [0, 1] or both add up to more than 1, there is nothing to replace
            with, or too few demonstrations have two steps to be cut.
    """
    for name, share in (("replace_share", replace_share), ("truncate_share", truncate_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"`{name}` should be in the interval [0, 1]. Received {share}.")
    if replace_share + truncate_share > 1.0:
        raise ValueError(f"`replace_share` + `truncate_share` should be at most 1 (each demonstration is spoilt "
                         f"once). Received {replace_share} + {truncate_share}.")  # fmt: skip
    rng = random.Random(seed)
    order = rng.sample(range(len(episodes)), len(episodes))
    replaced = order[: round(replace_share * len(episodes))]
    if replaced and not replacements:
        raise ValueError("`replace_share` is above 0 but no replacement episodes were given: give some (episodes "
                         "of another agent on the same games, such as random-policy rollouts).")  # fmt: skip
    cuttable = [i for i in order[len(replaced) :] if len(episodes[i].steps) > 1]
    cut = round(truncate_share * len(episodes))
    if cut > len(cuttable):
        raise ValueError(f"Only {len(cuttable)} of the other demonstrations have two steps or more: {cut} cannot be "
                         "cut short; lower `truncate_share`.")  # fmt: skip
    by_game: dict[tuple[str, ...], list[Episode]] = {}
    for episode in replacements:
        by_game.setdefault(game_key(episode.game_file), []).append(episode)
    spoilt = list(episodes)
    for i in replaced:
        same_game = by_game.get(game_key(spoilt[i].game_file)) if spoilt[i].game_file else None
        drawn = rng.choice(same_game or list(replacements))
        spoilt[i] = dataclasses.replace(drawn, episode_id=spoilt[i].episode_id, game_index=spoilt[i].game_index,
                                        repeat=spoilt[i].repeat)  # fmt: skip
    for i in cuttable[:cut]:
        steps = spoilt[i].steps[: rng.randint(1, len(spoilt[i].steps) - 1)]
        last = dataclasses.replace(steps[-1], reward=0.0, won=False, done=True, truncated=True)
        spoilt[i] = dataclasses.replace(spoilt[i], steps=(*steps[:-1], last))
    logger.info("Degraded %d demonstrations: %d replaced, %d cut short (seed %d).", len(episodes), len(replaced),
                cut, seed)  # fmt: skip
    return spoilt


def _read_file(path: Path) -> list[Episode]:
    """Read a demonstrations file (blank lines skipped), each line checked by :func:`_episode`."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start + 1}): save it as UTF-8 JSON lines.") from None
    episodes: list[Episode] = []
    for number, line in enumerate(text.split("\n"), start=1):  # "\n" only: U+2028 may sit inside JSON strings
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problem = f"is not JSON ({error.msg}, column {error.colno}): write one JSON object per line"
            raise ValueError(f"Line {number} of {path} {problem}.") from None
        try:
            episodes.append(_episode(row, len(episodes)))
        except ValueError as error:
            raise ValueError(f"Line {number} of {path}: {error}") from None
    if not episodes:
        raise ValueError(f"{path} holds no demonstration: write one JSON object per line ({_REQUIRED}).")
    return episodes


def _episode(row: Any, index: int) -> Episode:
    """Turn a line's object into a won episode ``"<index>:0"``; a ValueError says what is wrong and how to fix it."""
    if not isinstance(row, dict):
        raise ValueError(f"a {type(row).__name__}, not a JSON object with the fields {list(_REQUIRED)}.")
    missing = [name for name in _REQUIRED if name not in row]
    unknown = sorted(set(row) - {*_REQUIRED, *_OPTIONAL})
    if missing or unknown:
        wrong = f"lacks {missing}" if missing else f"has unknown fields {unknown}"
        raise ValueError(f"the episode {wrong}; its fields are {list(_REQUIRED)} and optionally {list(_OPTIONAL)}.")
    task, observations, actions = row["task"], row["observations"], row["actions"]
    if not isinstance(task, str) or not task.strip():
        raise ValueError("`task` should be the goal sentence, a non-empty string.")
    if not _strings(actions) or not actions or not all(action.strip() for action in actions):
        raise ValueError("`actions` should be a list of commands, non-empty strings (at least one).")
    if not _strings(observations) or len(observations) not in (len(actions), len(actions) + 1):
        count = len(observations) if isinstance(observations, list) else "no list of"
        raise ValueError(f"{count} observations for {len(actions)} actions: give `observations` as strings, the one "
                         "seen before each action (and optionally the last one after).")  # fmt: skip
    reasons = row.get("reasons") or [None] * len(actions)
    commands = row.get("admissible_commands") or [[]] * len(actions)
    if not isinstance(reasons, list) or len(reasons) != len(actions) or not _strings(reasons, none=True):
        raise ValueError("`reasons` should list one reason (a string, or null) per action.")
    if not isinstance(commands, list) or len(commands) != len(actions) or not all(map(_strings, commands)):
        raise ValueError(f"`admissible_commands` should hold one list of strings per action ({len(actions)}).")
    game_file, task_type = row.get("game_file"), row.get("task_type") or ""
    if not isinstance(game_file, str | None) or not isinstance(task_type, str):
        raise ValueError("`game_file` and `task_type` should be strings.")
    episode = Episode.from_actions(task, observations[: len(actions)], actions, won=True, episode_id=f"{index}:0")
    steps = [
        dataclasses.replace(step, context=dataclasses.replace(
            step.context, admissible_commands=tuple(listed), reason=reason, game_file=game_file
        ))
        for step, listed, reason in zip(episode.steps, commands, reasons, strict=True)
    ]  # fmt: skip
    return dataclasses.replace(episode, steps=tuple(steps), game_index=index, game_file=game_file,
                               task_type=task_type, agent=DEMONSTRATOR)  # fmt: skip


def _strings(value: Any, *, none: bool = False) -> bool:
    """Whether ``value`` is a list of strings (or ``None`` entries, with ``none``)."""
    return isinstance(value, list) and all(isinstance(v, str) or (none and v is None) for v in value)

"""Differential play: the fast engine against TextWorld's, turn by turn, on one game.

:func:`check_game` plays a game's walkthrough and seeded random walks through both engines and compares
the :class:`~prm_gym.envs.engine.GameTurn` after the reset and every step: observation text, sorted
admissible commands, score (hence reward), won and lost (hence done). Walk 0 starts from the reset; walk
k > 0 first plays a random prefix of the walkthrough (the whole of it included, so play after a win is
checked too), so that heat, cool, clean, slice and use commands get played where they do something. Random
commands mix admissible ones (drawn uniformly, or verb first so that "go to ..." does not crowd out the
rest) with inadmissible ones (garbage, other games' commands, an admissible one in upper case, with an "s"
appended, or padded with blanks). Each random walk also snapshots the fast engine half way, restores it at
the end and replays the second half, which must give the reference's turns again. The tests run it on a
sample of games, ``benchmarks/fast_engine_parity.py`` on whole splits.
"""

from __future__ import annotations

import difflib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from prm_gym.envs.engine import GameEngine, GameTurn

__all__ = ["GARBAGE", "ParityCounts", "check_game", "describe_mismatch", "game_id", "random_command"]

#: Commands no ALFWorld game accepts.
GARBAGE = ("go to nowhere", "", "   ", "take the moon from the sky", "look around", "inventory please", "go to")


@dataclass
class ParityCounts:
    """What differential play played and found (add them up with ``+=``).

    Example:
        >>> counts = ParityCounts(games=1, steps=30)
        >>> counts += ParityCounts(games=1, steps=12, mismatches=1, failures=["MISMATCH in ..."])
        >>> counts.games, counts.steps, counts.mismatches
        (2, 42, 1)
    """

    #: Games played.
    games: int = 0
    #: Turns compared, resets included.
    steps: int = 0
    #: Commands the reference answered with "Nothing happens.".
    inadmissible: int = 0
    #: Steps replayed after restoring a snapshot (compared with the reference's turns too).
    snapshot_replays: int = 0
    #: Turns that differ (at most one per walk: a walk stops at its first mismatch).
    mismatches: int = 0
    #: Admissible commands played, by verb.
    verbs: Counter[str] = field(default_factory=Counter)
    #: A description of each mismatch.
    failures: list[str] = field(default_factory=list)

    def __iadd__(self, other: ParityCounts) -> ParityCounts:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


def game_id(game_file: str | Path) -> str:
    """Name a game by its last three path parts (task folder, trial, file), which do not depend on the data folder.

    The random walks are seeded with it, so that a sweep draws the same commands on every machine (seeded with
    the whole path, they changed with the folder the data was unpacked in).

    Example:
        >>> game_id("/data/json_2.1.1/valid_seen/pick_and_place_simple-Pen-None-Dresser-311/trial_T1/game.tw-pddl")
        'pick_and_place_simple-Pen-None-Dresser-311/trial_T1/game.tw-pddl'
    """
    return "/".join(Path(game_file).parts[-3:])


def describe_mismatch(game: str | Path, where: str, command: str | None, ref: GameTurn, fast: GameTurn) -> str:
    """Return a readable account of how two turns differ."""
    lines = [f"MISMATCH in {game} ({where}), command {command!r}:"]
    for f in fields(GameTurn):
        a, b = getattr(ref, f.name), getattr(fast, f.name)
        if a == b:
            continue
        if f.name == "feedback":
            lines.append("  feedback differs:")
            lines.extend("    " + line for line in difflib.ndiff(a.splitlines(), b.splitlines()) if line[:1] in "-+?")
            lines.append(f"    reference: {a!r}")
            lines.append(f"    fast:      {b!r}")
        elif f.name == "admissible_commands":
            lines.append(f"  only in reference: {sorted(set(a) - set(b))}")
            lines.append(f"  only in fast:      {sorted(set(b) - set(a))}")
        else:
            lines.append(f"  {f.name}: reference {a!r}, fast {b!r}")
    return "\n".join(lines)


def random_command(rng: random.Random, turn: GameTurn, foreign: Sequence[str]) -> str:
    """Draw a command: admissible (uniformly, or verb first) three times in four, else an inadmissible one.

    Example:
        >>> turn = GameTurn("", ("go to desk 1", "look"), 0.0, False, False)
        >>> rng = random.Random(1)
        >>> [random_command(rng, turn, foreign=["take apple 1 from desk 1"]) for _ in range(4)]
        ['go to desk 1', 'look', 'take the moon from the sky', 'go to desk 1']
    """
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(turn.admissible_commands)
    if roll < 0.75 or not foreign:
        verbs = sorted({command.split()[0] for command in turn.admissible_commands})
        verb = rng.choice(verbs)
        return rng.choice([command for command in turn.admissible_commands if command.split()[0] == verb])
    if roll < 0.83:
        return rng.choice(GARBAGE)
    if roll < 0.95:
        return rng.choice(foreign)  # commands of other objects / other games, mostly inadmissible here
    command = rng.choice(turn.admissible_commands)
    return rng.choice([command.upper(), f"  {command}\t", command + "s"])


def check_game(
    game_file: str | Path,
    reference: GameEngine,
    fast: GameEngine,
    *,
    random_walks: int = 3,
    steps: int = 25,
    seed: int | str = 0,
    foreign: Sequence[str] = (),
) -> ParityCounts:
    """Play ``game_file``'s walkthrough and ``random_walks`` random walks through both engines, comparing turns.

    Args:
        game_file: the game.
        reference: the engine taken as right (TextWorld's, with ALFWorld's demangler).
        fast: the engine under test.
        random_walks: random walks after the walkthrough.
        steps: random commands per walk (after walk k > 0's walkthrough prefix).
        seed: seeds the walks, with the game (:func:`game_id`: the same wherever the data folder lies) and the
            walk's number.
        foreign: other commands to try (e.g. other games' walkthroughs); mostly inadmissible.

    Returns:
        The counts; ``failures`` describes each mismatch.
    """
    counts = ParityCounts(games=1)
    reference.load(game_file)
    fast.load(game_file)
    fast.reset()  # for the walkthrough, which each walk then compares with the reference's
    walkthrough = tuple(fast.walkthrough or ())
    _walk(game_file, reference, fast, walkthrough, None, 0, (), counts, "walkthrough")
    foreign = (*walkthrough, *foreign)
    for walk in range(random_walks):
        rng = random.Random(f"{seed}:{game_id(game_file)}:{walk}")
        prefix = walkthrough[: rng.randint(1, len(walkthrough))] if walk and walkthrough else ()
        _walk(game_file, reference, fast, prefix, rng, steps, foreign, counts, f"random walk {walk}")
    return counts


def _walk(
    game: str | Path,
    ref: GameEngine,
    fast: GameEngine,
    prefix: Sequence[str],
    rng: random.Random | None,
    steps: int,
    foreign: Sequence[str],
    counts: ParityCounts,
    where: str,
) -> None:
    """Play ``prefix`` then ``steps`` random commands through both engines, until the first mismatch."""

    def differ(expected: GameTurn, found: GameTurn, command: str | None, at: str) -> bool:
        if expected == found:
            return False
        counts.mismatches += 1
        counts.failures.append(describe_mismatch(game, f"{where}, {at}", command, expected, found))
        return True

    ref_turn = ref.reset()
    counts.steps += 1
    if differ(ref_turn, fast.reset(), None, "reset"):
        return
    if fast.walkthrough != ref.walkthrough:
        counts.mismatches += 1
        counts.failures.append(f"MISMATCH in {game} ({where}): walkthrough {ref.walkthrough!r} vs {fast.walkthrough!r}")
        return
    history: list[tuple[str, GameTurn]] = []
    total = len(prefix) + (steps if rng is not None else 0)
    middle = (len(prefix) + total) // 2
    snapshot = None
    for i in range(total):
        if rng is not None and i == middle:
            snapshot = fast.snapshot()
        command = prefix[i] if rng is None or i < len(prefix) else random_command(rng, ref_turn, foreign)
        ref_turn = ref.step(command)
        counts.steps += 1
        if ref_turn.feedback == "Nothing happens.":
            counts.inadmissible += 1
        else:
            counts.verbs[command.split()[0]] += 1
        history.append((command, ref_turn))
        if differ(ref_turn, fast.step(command), command, f"step {i + 1}"):
            return
    if snapshot is not None:
        fast.restore(snapshot)
        for i, (command, expected) in enumerate(history[middle:], middle):
            counts.snapshot_replays += 1
            if differ(expected, fast.step(command), command, f"replay after restore, step {i + 1}"):
                return

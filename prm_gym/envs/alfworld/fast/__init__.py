"""ALFWorld's text games played fast: TextWorld's turns, without TextWorld at play time, with state snapshots.

:class:`FastALFWorldEngine` reads the same ``game.tw-pddl`` files as TextWorld's PDDL engine and returns the
same turns, step for step. Its modules, in the order a game goes through them:

- :mod:`.syntax`, :mod:`.pddl`: the domain and problem text, parsed as fast_downward reads it;
- :mod:`.grounding`, :mod:`.sas`, :mod:`.goal`: the game's operators, as fast_downward's translator grounds
  and translates them, applied to two state views (fast_downward's and TextWorld's fact set), and its goal;
- :mod:`.grammar`, :mod:`.text`: the grammar, compiled once, and the text it derives in a state;
- :mod:`.game`: a game loaded for play (cached per process); :mod:`.engine`: the engine and its snapshots;
- checks, for the tests and the parity sweep: :mod:`.parity` (turns compared with TextWorld's engine, step
  by step) and :mod:`.grounding_check` (the grounding compared with fast_downward's translator).
"""

from prm_gym.envs.alfworld.fast.engine import FastALFWorldEngine, FastSnapshot
from prm_gym.envs.alfworld.fast.game import clear_game_cache

__all__ = ["FastALFWorldEngine", "FastSnapshot", "clear_game_cache"]

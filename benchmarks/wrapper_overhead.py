"""Cost of ``VectorProcessRewardWrapper`` per env-step against the bare vector env, at 1, 4 and 8 sub-envs.

    python benchmarks/wrapper_overhead.py --split valid_unseen --steps 1000
    PRM_GYM_CACHE=/tmp/prm_gym_cache python benchmarks/wrapper_overhead.py --prm --steps 3 --warmup 1 --repeats 1

For each ``--num-envs``, one ``gym.make_vec("prm_gym/ALFWorld-v0", vectorization_mode="sync")`` (the default,
fast engine) over the first ``--games`` games of the split plays one sequence of seeded random admissible
commands, recorded in an untimed first pass. That pass loads every game; ``--games`` defaults to the fast
engine's per-process game cache (8 games), so the timed runs' autoresets never parse a game again (a new game
costs ~75 ms, thousands of steps' worth, which would swamp the per-step figures).

The same commands are then replayed, from the same reset seed, by each variant: the bare vector env; the
wrapper with :class:`ConstantModel`, a reward model that does no work, so that the difference is the wrapper's
own cost (histories, contexts, autoreset handling); and with ``--prm`` the wrapper with a real
``ProcessRewardModel`` (the shared SmolLM2-135M GGUF, bf16 on the CPU by default), whose ``score`` calls are
timed to give the model's share. Each variant first plays the first ``--warmup`` commands untimed; then the
``--repeats`` timed runs of each, interleaved across variants, replay all the commands from the reset, and their
median is reported per env-step (one vector step of N sub-envs is N env-steps; NEXT_STEP autoreset steps count
as env-steps in every variant alike). Every replay must see the recorded observations, or the script stops.
Times are wall-clock (``time.perf_counter``), so the load average printed before and after matters.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import tyro
from common import SHARED_GGUF, machine
from gymnasium.vector import VectorEnv

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.alfworld.data import list_games
from prm_gym.envs.alfworld.fast.game import GAME_CACHE_SIZE
from prm_gym.prm import Context, RewardModel
from prm_gym.wrappers import ProcessRewardConfig, VectorProcessRewardWrapper


@dataclass
class OverheadConfig:
    """What to measure: sub-env counts, steps, repeats, the wrapper's mode and (optionally) the real PRM."""

    #: ALFWorld split the games come from.
    split: str = "valid_unseen"
    #: Games played (the split's first, by path); more than the fast engine's game cache reloads games in the runs.
    games: int = GAME_CACHE_SIZE
    #: Sub-env counts to measure.
    num_envs: tuple[int, ...] = (1, 4, 8)
    #: Timed vector steps per run.
    steps: int = 1000
    #: Untimed vector steps each variant plays (the first of the recorded commands) before its timed runs.
    warmup: int = 50
    #: Timed runs per variant; the median is reported.
    repeats: int = 3
    #: Episode step cap (longer episodes mean longer histories in the wrapper's contexts).
    max_episode_steps: int = 30
    #: Seeds the reset and the random commands.
    seed: int = 0
    #: The wrapper's reward mode (``shaped`` scores every admissible command of each new state).
    mode: Literal["replace", "add", "shaped"] = "replace"
    #: Also measure the wrapper with the real process reward model.
    prm: bool = False
    #: The real PRM: a .gguf file, a model directory or a hub id.
    model: str = str(SHARED_GGUF)
    #: Device and weight precision of the real PRM.
    device: str = "cpu"
    dtype: str = "bfloat16"


class ConstantModel:
    """A reward model that does no work: every context scores 0.5."""

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Return 0.5 per context."""
        return [0.5] * len(contexts)


class TimedModel:
    """Wraps a reward model and adds up the wall-clock time and the contexts of its ``score`` calls."""

    def __init__(self, model: RewardModel) -> None:
        self.model = model
        self.seconds = 0.0
        self.contexts = 0

    def score(self, contexts: Sequence[Context]) -> list[float]:
        """Score through the wrapped model, timing the call."""
        start = time.perf_counter()
        scores = self.model.score(contexts)
        self.seconds += time.perf_counter() - start
        self.contexts += len(contexts)
        return scores


@dataclass(frozen=True)
class Variant:
    """One way to play the commands: the env to step and, when wrapped, the timed reward model inside it."""

    name: str
    envs: VectorEnv
    model: TimedModel | None = None


@dataclass
class Timing:
    """A variant's timed runs: wall-clock and CPU seconds, seconds inside ``score`` and contexts scored, per run."""

    total: list[float]
    cpu: list[float]
    scoring: list[float]
    contexts: list[int]


def record_commands(envs: VectorEnv, steps: int, seed: int) -> tuple[list[list[str]], list[tuple[str, ...]]]:
    """Play ``steps`` vector steps of random admissible commands; return them and the observations they got."""
    rng = np.random.default_rng(seed)
    _, infos = envs.reset(seed=seed)
    commands, observations = [], []
    for _ in range(steps):
        actions = [str(rng.choice(list(choices))) for choices in infos["admissible_commands"]]
        step_observations, _, _, _, infos = envs.step(actions)
        commands.append(actions)
        observations.append(tuple(step_observations))
    return commands, observations


def play(
    envs: VectorEnv, commands: Sequence[Sequence[str]], seed: int
) -> tuple[float, float, list[tuple[str, ...]]]:
    """Reset (untimed), step through ``commands``; return the steps' wall-clock and CPU seconds, and observations.

    CPU time (``time.process_time``, all the process's threads) is what other jobs on a shared machine do not
    inflate; wall-clock time is the headline figure.
    """
    envs.reset(seed=seed)
    seen = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for actions in commands:
        seen.append(envs.step(actions)[0])
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return seconds, cpu, [tuple(observations) for observations in seen]


def time_variants(
    variants: Sequence[Variant], commands: list[list[str]], expected: list[tuple[str, ...]], config: OverheadConfig
) -> dict[str, Timing]:
    """Warm each variant up, then time ``config.repeats`` interleaved runs of each on the recorded commands.

    Raises:
        RuntimeError: when a run's observations differ from the recorded ones (the replay diverged).
    """
    for variant in variants:
        play(variant.envs, commands[: config.warmup], config.seed)
    timings = {variant.name: Timing([], [], [], []) for variant in variants}
    for _ in range(config.repeats):
        for variant in variants:
            if variant.model is not None:
                variant.model.seconds, variant.model.contexts = 0.0, 0
            seconds, cpu, observations = play(variant.envs, commands, config.seed)
            if observations != expected:
                raise RuntimeError(f"The {variant.name} run saw other observations than the recorded run.")
            timing = timings[variant.name]
            timing.total.append(seconds)
            timing.cpu.append(cpu)
            timing.scoring.append(variant.model.seconds if variant.model else 0.0)
            timing.contexts.append(variant.model.contexts if variant.model else 0)
    return timings


def measure(num_envs: int, models: dict[str, Callable[[], RewardModel]], config: OverheadConfig) -> dict[str, Timing]:
    """Time the bare vector env of ``num_envs`` sub-envs and the wrapper around it with each of ``models``."""
    envs = gym.make_vec(
        "prm_gym/ALFWorld-v0",
        num_envs=num_envs,
        vectorization_mode="sync",
        split=config.split,
        game_files=list_games(config.split)[: config.games],
        max_episode_steps=config.max_episode_steps,
    )
    commands, expected = record_commands(envs, config.steps, config.seed)
    variants = [Variant("bare", envs)]
    for name, make_model in models.items():
        model = TimedModel(make_model())
        wrapped = VectorProcessRewardWrapper(envs, model, ProcessRewardConfig(mode=config.mode))
        variants.append(Variant(name, wrapped, model))
    timings = time_variants(variants, commands, expected, config)
    envs.close()
    return timings


def per_step(runs: Sequence[float], env_steps: int, scale: float = 1e6) -> float:
    """Return the median of ``runs`` per env-step, in microseconds (``scale`` 1 for counts)."""
    return statistics.median(runs) / env_steps * scale


def table(results: dict[int, dict[str, Timing]], steps: int) -> str:
    """Return the Markdown table of per env-step costs: wall-clock, CPU, overhead against bare, model's share."""
    lines = [
        "| envs | variant | µs / env-step | overhead (µs) | overhead (%) | CPU µs / env-step | CPU overhead (µs) "
        "| CPU overhead (%) | scoring (µs / env-step) | overhead less scoring (µs) | contexts / env-step |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for num_envs, timings in results.items():
        env_steps = steps * num_envs
        bare, bare_cpu = per_step(timings["bare"].total, env_steps), per_step(timings["bare"].cpu, env_steps)
        for name, timing in timings.items():
            total, cpu = per_step(timing.total, env_steps), per_step(timing.cpu, env_steps)
            cells: list[Any] = [num_envs, name, f"{total:,.1f}", "—", "—", f"{cpu:,.1f}", "—", "—", "—", "—", "—"]
            if name != "bare":
                scoring = per_step(timing.scoring, env_steps)
                cells[3:5] = [f"{total - bare:,.1f}", f"{100 * (total - bare) / bare:,.0f}"]
                cells[6:] = [f"{cpu - bare_cpu:,.1f}", f"{100 * (cpu - bare_cpu) / bare_cpu:,.0f}", f"{scoring:,.1f}",
                             f"{total - bare - scoring:,.1f}", f"{per_step(timing.contexts, env_steps, 1):.2f}"]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines)


def main(config: OverheadConfig) -> None:
    """Measure every sub-env count and print the machine, the settings and the table."""
    models: dict[str, Callable[[], RewardModel]] = {"wrapper + constant model": ConstantModel}
    if config.prm:
        from prm_gym.prm import ProcessRewardModel

        prm = ProcessRewardModel.from_pretrained(config.model, device=config.device, dtype=config.dtype)
        models[f"wrapper + PRM ({Path(config.model).name}, {prm.device}, {prm.model.dtype})"] = lambda: prm
    print(f"machine: {machine()}; gymnasium {gym.__version__}")
    results = {num_envs: measure(num_envs, models, config) for num_envs in config.num_envs}
    print(
        f"prm_gym/ALFWorld-v0 sync vector env, {config.games} {config.split} games, "
        f"cap {config.max_episode_steps} steps, "
        f"{config.steps} timed vector steps ({config.warmup} warm-up ones first), median of {config.repeats} runs, "
        f"wrapper mode {config.mode}"
    )
    print(f"after the runs: load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(table(results, config.steps))


if __name__ == "__main__":
    main(tyro.cli(OverheadConfig))

"""Stable-Baselines3 on ALFWorld's tiny games: sparse vs Monte-Carlo-shaped reward, MaskablePPO vs plain PPO and DQN.

    python benchmarks/sb3_learning.py --task-types look heat --steps 6000 8000 --seeds 0 1 2 --mc-rollouts 2
    python benchmarks/sb3_learning.py --task-types look --steps 6000 --seeds 0 1 2 --conditions sparse mc \
        --algorithms maskable-ppo ppo dqn --max-actions 128 --plot benchmarks/sb3_algorithms.png

Each ``--task-types`` entry is one of the bundled tiny split's games (one game per task type); ``--steps`` gives
each its env-step budget, the same for every condition and seed. Conditions: ``sparse`` (the game's own reward,
1 on a win) and ``mc`` (that reward plus potential-based shaping from
:class:`~prm_gym.rollout.MonteCarloRewardModel` with ``--mc-rollouts`` random rollouts per scored action, the
fast engine, through :func:`~prm_gym.wrappers.adapt_for_sb3`: ``gamma * V(s') - V(s)`` with ``V`` the max of
``Q(s, .)`` over the admissible commands, at the learners' gamma, 0.99). Observations are hashed task + observation
(:class:`~prm_gym.wrappers.HashingFeaturizer`, 2 x 256 floats); actions the sorted admissible commands
(``Discrete(--max-actions)``, 128 by default, with masks). ``--algorithms``: ``maskable-ppo`` (sb3-contrib, reads
the masks), ``ppo`` and ``dqn`` (stable-baselines3, no masks: an index past the admissible list plays an
inadmissible command, "Nothing happens.", and the step counts). Both PPOs are the defaults except ``n_steps=256,
batch_size=64``; DQN the defaults except ``buffer_size`` = the step budget (every transition kept) and
``target_update_interval=500`` (the default 10,000 is past these budgets: the target network would never be
updated). One env, one torch thread.

Success rate is that of the training episodes (the learning policy as it explores: PPO samples, DQN is
epsilon-greedy), in bins of ``--bin`` env steps; the random baselines are a uniformly random admissible command per
step and, beside the unmasked algorithms, a uniformly random index of them all (``--random-episodes`` episodes each,
same game). The inadmissible share is the fraction of env steps that played an inadmissible command, per bin. Wall
time is split into env (the text env's own reset and step), reward model (its ``score`` calls) and learner (the
rest: policy, updates, adapters). Each (task type, algorithm, condition, seed) run is written to ``--output-dir``
atomically when it ends; a rerun skips the runs already there with the same settings. The plot (``--plot``) shows
each (algorithm, condition)'s success rate and inadmissible share, mean over seeds with the min-max band.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib
import numpy as np
import torch
from common import machine
from sb3_contrib import MaskablePPO
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

import prm_gym
from prm_gym.io import atomic_write_bytes, atomic_write_text
from prm_gym.rollout import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.wrappers import DEFAULT_MAX_ACTIONS, DiscreteCommands, adapt_for_sb3

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

CONDITIONS = ("sparse", "mc")
ALGORITHMS = ("maskable-ppo", "ppo", "dqn")
#: DQN's target network update, in env steps (one env): CleanRL's CartPole value; SB3's 10,000 is past the budget.
DQN_TARGET_UPDATE = 500


class TimedEnv(gym.Wrapper):
    """The text env, timing its own resets and steps."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def reset(self, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def step(self, action: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.seconds += time.perf_counter() - start


class TimedModel:
    """A reward model, timing its ``score`` calls (its own env steps included)."""

    def __init__(self, model: MonteCarloRewardModel) -> None:
        self.model = model
        self.seconds = 0.0

    def score(self, contexts: Sequence[Any]) -> list[float]:
        start = time.perf_counter()
        try:
            return self.model.score(contexts)
        finally:
            self.seconds += time.perf_counter() - start


class Outcomes(BaseCallback):
    """Records (env step, won) of every training episode as it ends, and the env steps that were inadmissible."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes: list[tuple[int, bool]] = []
        self.inadmissible_steps: list[int] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if info["invalid_action"]:
                self.inadmissible_steps.append(self.num_timesteps)
            if done:
                self.episodes.append((self.num_timesteps, bool(info["won"])))
        return True


def random_success(task_type: str, max_actions: int, episodes: int, seed: int, masked: bool) -> float:
    """Success rate of uniformly random indices: of the admissible ones (``masked``), or of all of them."""
    env = DiscreteCommands(gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types=task_type), max_actions)
    rng = random.Random(seed)
    wins = 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        while True:
            index = rng.randrange(len(env.commands) if masked else env.action_space.n)
            _, _, terminated, truncated, info = env.step(index)
            if terminated or truncated:
                wins += bool(info["won"])
                break
    return wins / episodes


def make_learner(algorithm: str, env: VecEnv, seed: int, steps: int) -> BaseAlgorithm:
    """The ``--algorithms`` entry's learner on ``env``, with the settings of the module docstring."""
    if algorithm == "dqn":
        return DQN("MlpPolicy", env, buffer_size=steps, target_update_interval=DQN_TARGET_UPDATE, seed=seed,
                   device="cpu")
    ppo = MaskablePPO if algorithm == "maskable-ppo" else PPO
    return ppo("MlpPolicy", env, n_steps=256, batch_size=64, seed=seed, device="cpu")


def train(task_type: str, algorithm: str, condition: str, seed: int, steps: int, mc_rollouts: int | None,
          max_actions: int) -> dict[str, Any]:
    """Train one run (the ``mc`` condition shapes with ``mc_rollouts`` rollouts); return its episodes and times."""
    text_env = TimedEnv(gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types=task_type))
    model = None
    if condition == "mc":
        model = TimedModel(MonteCarloRewardModel(MonteCarloConfig(num_rollouts=mc_rollouts, seed=seed)))
    env = DummyVecEnv([lambda: adapt_for_sb3(text_env, reward_model=model, max_actions=max_actions)])
    env.seed(seed)
    learner = make_learner(algorithm, env, seed, steps)
    outcomes = Outcomes()
    start = time.perf_counter()
    learner.learn(steps, callback=outcomes)
    wall = time.perf_counter() - start
    reward_model_s = model.seconds if model is not None else 0.0
    return {
        "episodes": outcomes.episodes,
        "inadmissible_steps": outcomes.inadmissible_steps,
        "wall_s": wall,
        "env_s": text_env.seconds,
        "reward_model_s": reward_model_s,
        "learner_s": wall - text_env.seconds - reward_model_s,
        "load_average": os.getloadavg(),
    }


def success_curve(episodes: Sequence[Sequence[Any]], steps: int, bin_steps: int) -> np.ndarray:
    """Fraction of the episodes ending in each bin of env steps that were won (NaN for a bin with none)."""
    ends = np.array([end for end, _ in episodes])
    won = np.array([w for _, w in episodes], dtype=float)
    curve = []
    for low in range(0, steps, bin_steps):
        inside = (ends > low) & (ends <= low + bin_steps)
        curve.append(won[inside].mean() if inside.any() else np.nan)
    return np.array(curve)


def inadmissible_curve(inadmissible_steps: Sequence[int], steps: int, bin_steps: int) -> np.ndarray:
    """Fraction of the env steps in each bin that played an inadmissible command."""
    counts = np.histogram(inadmissible_steps, bins=np.arange(0, steps + bin_steps, bin_steps) + 0.5)[0]
    return counts / bin_steps


def plot_band(axis: Any, x: np.ndarray, curves: np.ndarray, label: str, color: str | None = None) -> str:
    """Plot the mean over seeds with the min-max band; return the line's colour."""
    line = axis.plot(x, np.nanmean(curves, axis=0), marker="o", label=label, color=color)[0]
    axis.fill_between(x, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), alpha=0.2, color=line.get_color())
    return matplotlib.colors.to_hex(line.get_color())


def load_or_train(args: argparse.Namespace, task_type: str, steps: int, algorithm: str, condition: str,
                  seed: int) -> dict[str, Any]:
    """The run's record from ``--output-dir`` when there with the same settings; else train, and write it there."""
    settings = {"task_type": task_type, "algorithm": algorithm, "condition": condition, "seed": seed, "steps": steps,
                "mc_rollouts": args.mc_rollouts if condition == "mc" else None, "max_actions": args.max_actions}
    path = args.output_dir / f"{task_type}-{algorithm}-{args.max_actions}-{condition}-{seed}.json"
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("settings") != settings:
        saved = {"settings": settings, **train(**settings)}
        atomic_write_text(path, json.dumps(saved))
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-types", nargs="+", default=["look", "heat"])
    parser.add_argument("--steps", nargs="+", type=int, default=[6000, 8000], help="env steps, per task type")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=["maskable-ppo"])
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--mc-rollouts", type=int, default=2)
    parser.add_argument("--max-actions", type=int, default=DEFAULT_MAX_ACTIONS, help="size of the Discrete actions")
    parser.add_argument("--bin", type=int, default=1000)
    parser.add_argument("--random-episodes", type=int, default=300)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/sb3_learning"))
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/sb3_learning.png"))
    args = parser.parse_args()
    if len(args.steps) != len(args.task_types):
        parser.error("give one --steps budget per --task-types entry")
    torch.set_num_threads(1)
    print(machine())
    print(f"prm_gym {prm_gym.__version__}, torch {torch.__version__}")
    unmasked = any(algorithm != "maskable-ppo" for algorithm in args.algorithms)
    figure, axes = plt.subplots(2, len(args.task_types), figsize=(5 * len(args.task_types), 6.4), squeeze=False,
                                sharex="col")
    for (success_axis, inadmissible_axis), task_type, steps in zip(axes.T, args.task_types, args.steps, strict=True):
        baselines = {"random admissible command": random_success(task_type, args.max_actions, args.random_episodes, 0,
                                                                 masked=True)}
        if unmasked:
            baselines[f"random index of {args.max_actions}"] = random_success(
                task_type, args.max_actions, args.random_episodes, 0, masked=False)
        print(f"\n{task_type}: {steps} env steps per run; random policy success "
              + ", ".join(f"{name} {value:.3f}" for name, value in baselines.items())
              + f" ({args.random_episodes} episodes each)")
        print("algorithm | condition | seed | success, last bin | inadmissible share, all / last bin | episodes | "
              "wall s | env s | reward model s | learner s | load")
        for algorithm in args.algorithms:
            for condition in args.conditions:
                successes, inadmissible = [], []
                for seed in args.seeds:
                    saved = load_or_train(args, task_type, steps, algorithm, condition, seed)
                    successes.append(success_curve(saved["episodes"], steps, args.bin))
                    inadmissible.append(inadmissible_curve(saved["inadmissible_steps"], steps, args.bin))
                    print(f"{algorithm} | {condition} | {seed} | {successes[-1][-1]:.2f} | "
                          f"{inadmissible[-1].mean():.3f} / {inadmissible[-1][-1]:.3f} | {len(saved['episodes'])} | "
                          f"{saved['wall_s']:.0f} | {saved['env_s']:.0f} | {saved['reward_model_s']:.0f} | "
                          f"{saved['learner_s']:.0f} | {saved['load_average'][0]:.2f}")
                label = f"{algorithm}, {condition} (mean of {len(args.seeds)} seeds)"
                x = np.arange(1, len(successes[0]) + 1) * args.bin
                for name, curves in (("success", successes), ("inadmissible share", inadmissible)):
                    print(f"{algorithm} {condition} {name}, mean over seeds per {args.bin} steps: "
                          + " ".join(f"{v:.2f}" for v in np.nanmean(curves, axis=0)))
                color = plot_band(success_axis, x, np.array(successes), label)
                plot_band(inadmissible_axis, x, np.array(inadmissible), label, color)
        for (name, value), style in zip(baselines.items(), ("--", ":"), strict=False):
            success_axis.axhline(value, color="gray", linestyle=style, label=name)
        success_axis.set(title=f"tiny split, {task_type}, Discrete({args.max_actions})", ylabel="training success rate",
                         ylim=(-0.02, 1.02))
        success_axis.legend(loc="upper left", fontsize=7)
        inadmissible_axis.set(xlabel="env steps", ylabel="share of steps inadmissible", ylim=(-0.02, 1.02))
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    atomic_write_bytes(args.plot, png.getvalue())
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()

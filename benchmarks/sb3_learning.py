"""MaskablePPO (sb3-contrib) on ALFWorld's tiny games: sparse reward vs Monte-Carlo-shaped reward.

    python benchmarks/sb3_learning.py --task-types look heat --steps 6000 8000 --seeds 0 1 2 --mc-rollouts 2

Each ``--task-types`` entry is one of the bundled tiny split's games (one game per task type); ``--steps`` gives
each its env-step budget, the same for every condition and seed. Conditions: ``sparse`` (the game's own reward,
1 on a win) and ``mc`` (that reward plus potential-based shaping from
:class:`~prm_gym.rollout.MonteCarloRewardModel` with ``--mc-rollouts`` random rollouts per scored action, the
fast engine, through :func:`~prm_gym.wrappers.adapt_for_sb3`: ``gamma * V(s') - V(s)`` with ``V`` the max of
``Q(s, .)`` over the admissible commands, at PPO's gamma). Observations are hashed task + observation
(:class:`~prm_gym.wrappers.HashingFeaturizer`, 2 x 256 floats); actions the sorted admissible commands
(``Discrete(128)`` with masks). Default MaskablePPO except ``n_steps=256, batch_size=64``, one env, one torch
thread.

Success rate is that of the training episodes (the learning policy, sampling), in bins of ``--bin`` env steps;
the random baseline is a uniformly random admissible command per step on the same game (``--random-episodes``
episodes). Wall time is split into env (the text env's own reset and step), reward model (its ``score`` calls)
and learner (the rest: policy, PPO updates, adapters). Each (task type, condition, seed) run is written to
``--output-dir`` atomically when it ends; a rerun skips the runs already there with the same settings. The plot
(``--plot``) shows each condition's mean over seeds with the min-max band.
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
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

import prm_gym
from prm_gym.io import atomic_write_bytes, atomic_write_text
from prm_gym.rollout import MonteCarloConfig, MonteCarloRewardModel
from prm_gym.wrappers import adapt_for_sb3

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

CONDITIONS = ("sparse", "mc")


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
    """Records (env step, won) of every training episode as it ends."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes: list[tuple[int, bool]] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self.episodes.append((self.num_timesteps, bool(info["won"])))
        return True


def random_success(task_type: str, episodes: int, seed: int) -> float:
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types=task_type)
    rng = random.Random(seed)
    wins = 0
    for episode in range(episodes):
        _, info = env.reset(seed=seed + episode)
        while True:
            _, _, terminated, truncated, info = env.step(rng.choice(info["admissible_commands"]))
            if terminated or truncated:
                wins += bool(info["won"])
                break
    return wins / episodes


def train(task_type: str, condition: str, seed: int, steps: int, mc_rollouts: int) -> dict[str, Any]:
    text_env = TimedEnv(gym.make("prm_gym/ALFWorld-v0", split="tiny", task_types=task_type))
    model = None
    if condition == "mc":
        model = TimedModel(MonteCarloRewardModel(MonteCarloConfig(num_rollouts=mc_rollouts, seed=seed)))
    env = DummyVecEnv([lambda: adapt_for_sb3(text_env, reward_model=model)])
    env.seed(seed)
    learner = MaskablePPO("MlpPolicy", env, n_steps=256, batch_size=64, seed=seed, device="cpu")
    outcomes = Outcomes()
    start = time.perf_counter()
    learner.learn(steps, callback=outcomes)
    wall = time.perf_counter() - start
    reward_model_s = model.seconds if model is not None else 0.0
    return {
        "episodes": outcomes.episodes,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-types", nargs="+", default=["look", "heat"])
    parser.add_argument("--steps", nargs="+", type=int, default=[6000, 8000], help="env steps, per task type")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--mc-rollouts", type=int, default=2)
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
    figure, axes = plt.subplots(1, len(args.task_types), figsize=(5 * len(args.task_types), 3.6), squeeze=False)
    for axis, task_type, steps in zip(axes[0], args.task_types, args.steps, strict=True):
        baseline = random_success(task_type, args.random_episodes, seed=0)
        print(f"\n{task_type}: {steps} env steps per run; random policy success {baseline:.3f} "
              f"({args.random_episodes} episodes)")
        print("condition | seed | success, last bin | episodes | wall s | env s | reward model s | learner s | load")
        for condition in args.conditions:
            curves = []
            for seed in args.seeds:
                settings = {"task_type": task_type, "condition": condition, "seed": seed, "steps": steps,
                            "mc_rollouts": args.mc_rollouts if condition == "mc" else None}
                path = args.output_dir / f"{task_type}-{condition}-{seed}.json"
                saved = json.loads(path.read_text()) if path.exists() else {}
                if saved.get("settings") != settings:
                    saved = {"settings": settings, **train(task_type, condition, seed, steps, args.mc_rollouts)}
                    atomic_write_text(path, json.dumps(saved))
                curve = success_curve(saved["episodes"], steps, args.bin)
                curves.append(curve)
                print(f"{condition} | {seed} | {curve[-1]:.2f} | {len(saved['episodes'])} | {saved['wall_s']:.0f} | "
                      f"{saved['env_s']:.0f} | {saved['reward_model_s']:.0f} | {saved['learner_s']:.0f} | "
                      f"{saved['load_average'][0]:.2f}")
            stacked = np.array(curves)
            x = np.arange(1, stacked.shape[1] + 1) * args.bin
            mean = np.nanmean(stacked, axis=0)
            print(f"{condition} mean over seeds per {args.bin} steps: " + " ".join(f"{v:.2f}" for v in mean))
            line = axis.plot(x, mean, marker="o", label=f"{condition} (mean of {len(args.seeds)} seeds)")[0]
            axis.fill_between(x, np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0), alpha=0.2,
                              color=line.get_color())
        axis.axhline(baseline, color="gray", linestyle="--", label="random policy")
        axis.set(title=f"tiny split, {task_type}", xlabel="env steps", ylabel="training success rate",
                 ylim=(-0.02, 1.02))
        axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=110)
    atomic_write_bytes(args.plot, png.getvalue())
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()

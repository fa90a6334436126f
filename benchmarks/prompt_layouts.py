"""Prompt layouts: tokens per turn and per episode, and whether each turn's render extends the previous one.

    python benchmarks/prompt_layouts.py    # walkthroughs of 50 train games per task type; random play, valid_unseen

Decides where the admissible commands go (issue 11). Three layouts of the one renderer, SmolLM2's tokenizer:

- ``current``: the commands listed in the current turn only (``show_admissible_commands=True``): not append-only,
  turn t+1's render drops turn t's list, so a cache of turn t is good up to turn t's observation only;
- ``every``: each turn keeps the list it showed (append-only); its token counts are ``never``'s plus the lists'
  (rendered as the ``current`` layout renders them), an estimate: the renderer does not implement it;
- ``never``: no list (``show_admissible_commands=False``): append-only.

For each layout: the mean render length at turns 0, 10 and 29, the tokens one forward per turn reads over an
episode (per-turn training examples, or scoring without a cross-turn cache) against one forward over the
whole episode (whole-episode training), the new tokens per turn with a cross-turn cache (the render less its
longest common token prefix with the previous turn's render with its action), and the share of turns whose
tokens extend the previous turn's exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import SHARED_GGUF, machine
from transformers import AutoTokenizer

import prm_gym  # noqa: F401
from prm_gym.agents.registry import make_agent
from prm_gym.envs.alfworld.tasks import TASK_TYPES
from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.prm import Context, PromptConfig
from prm_gym.prm.prompt import encode_text, render_text
from prm_gym.rollout import Episode


def play(agent: str, split: str, games_per_type: int | None, folder: Path) -> list[Episode]:
    """Return the episodes of ``agent`` on ``split`` (the first ``games_per_type`` games of each task type)."""
    episodes: list[Episode] = []
    for task in TASK_TYPES.values():
        config = EvalConfig(agent=agent, split=split, task_types=(task.label,))  # type: ignore[arg-type]
        config.output_dir, config.num_games = str(folder / agent / task.label), games_per_type
        config.game_selection = "first"  # the games RESULTS.md reports
        episodes += evaluate(make_agent(config, seed=config.seed), config, progress=False)
    return episodes


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Return the length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def measure(episodes: Sequence[Episode], tokenizer: object, show: bool, every: bool) -> dict[str, float]:
    """Return the layout's figures over ``episodes`` (see the module docstring)."""
    config = PromptConfig(max_prompt_tokens=None, show_admissible_commands=show)
    listed = PromptConfig(max_prompt_tokens=None, show_admissible_commands=True)
    at_turn: dict[int, list[int]] = {0: [], 10: [], 29: []}
    per_turn, whole, new, extends, turns = 0, 0, 0, 0, 0

    def tokens(context: Context) -> list[int]:
        return encode_text(tokenizer, render_text(context, tokenizer, config), add_special_tokens=False)

    def list_tokens(context: Context) -> int:  # what the list adds to a render (the "every" estimate)
        with_list = encode_text(tokenizer, render_text(context, tokenizer, listed), add_special_tokens=False)
        return len(with_list) - len(tokens(context))

    for episode in episodes:
        previous: list[int] | None = None
        lists = 0
        for context in episode.contexts:
            prompt, answered = tokens(dataclasses.replace(context, action=None, reason=None)), tokens(context)
            extra = list_tokens(context) if every else 0
            lists += extra
            length = len(answered) + lists
            if len(context.history) in at_turn:
                at_turn[len(context.history)].append(len(prompt) + lists)
            per_turn += length
            if previous is None:
                new += len(prompt) + extra
            else:
                shared = common_prefix(previous, prompt)
                extends += shared == len(previous)
                new += len(prompt) - shared + extra
            previous = answered
            turns += 1
        whole += length
    figures = {f"tokens at turn {t}": statistics.mean(v) for t, v in at_turn.items() if v}
    figures |= {
        "per-turn forwards, tokens per episode": per_turn / len(episodes),
        "whole-episode forward, tokens per episode": whole / len(episodes),
        "new tokens per turn with a cross-turn cache": new / turns,
        "turns extending the previous render": extends / max(turns - len(episodes), 1),
    }
    return figures


def _cell(figure: str, results: dict[str, float]) -> str:
    """Format one figure; a whole-episode forward exists only for a layout whose renders extend each other."""
    if figure.startswith("whole") and results["turns extending the previous render"] < 1:
        return "-"
    return f"{results[figure]:.2f}" if figure.startswith("turns") else f"{results[figure]:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-games-per-type", type=int, default=50)
    parser.add_argument("--tokenizer", default=str(SHARED_GGUF.parent / "tokenizer"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        sets = {
            f"walkthrough, {args.train_games_per_type} train games per task type": play(
                "walkthrough", "train", args.train_games_per_type, Path(folder)
            ),
            "random, 134 valid_unseen games (30 steps)": play("random", "valid_unseen", None, Path(folder)),
        }
    for name, episodes in sets.items():
        steps = sum(len(e.steps) for e in episodes)
        print(f"\n### {name}: {len(episodes)} episodes, {steps} turns\n")
        layouts = {"current": (True, False), "every (estimate)": (False, True), "never": (False, False)}
        results = {layout: measure(episodes, tokenizer, *flags) for layout, flags in layouts.items()}
        print("| | " + " | ".join(results) + " |\n|---|" + "---:|" * len(results))
        for figure in next(iter(results.values())):
            cells = [_cell(figure, r) for r in results.values()]
            print(f"| {figure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Best-of-N at the expert's states: does the reward model pick the walkthrough's next command?

Episode success mixes everything (a wrong turn early, loops later). This asks one question per state instead:
along each gold walkthrough of held-out games, the policy samples N commands and Best-of-N keeps the one the
reward model scores highest (:class:`~prm_gym.agents.BestOfNAgent`, the evaluations' own selection rule). Per N:

* ``covered``: the expert's command is among the N samples (what Best-of-N could pick at best);
* ``picked``: Best-of-N picks it; ``picked | covered``: how often the reward model takes it when it can;

beside the policy's greedy choice, and the reward model's argmax over every admissible command (Best-of-N as N
grows without bound, when the policy gives every command some chance). If ``picked`` falls with N while
``covered`` rises, the reward model prefers other commands to the expert's: the selection, not the policy,
loses. The N's share samples: one draw of max(N) per state, the first N of it for each N (i.i.d. samples).

    prm-gym collect --agent walkthrough --split valid_unseen --repeats 1 --output-dir runs/walkthroughs-valid-unseen
    cd benchmarks && python best_of_n_expert_agreement.py --walkthroughs ../runs/walkthroughs-valid-unseen \\
        --policy agentprm-cpu/pi0/model --reward-model agentprm-cpu/q0/model --games 34
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import torch
from common import machine

from prm_gym.agents import Agent, BestOfNAgent, HFAgent, HFAgentConfig
from prm_gym.agents.base import Decision
from prm_gym.prm import Context
from prm_gym.prm.model import ProcessRewardModel
from prm_gym.rollout import load_episodes


class Replay(Agent):
    """Hands Best-of-N the samples drawn before: ``samples[state_key][:n]``."""

    name = "replay"

    def __init__(self, samples: dict[str, list[Decision]]) -> None:
        super().__init__()
        self.samples = samples

    def decide(self, contexts: Sequence[Context]) -> list[Decision]:
        raise NotImplementedError("Replay only samples.")

    def sample(self, contexts: Sequence[Context], n: int) -> list[list[Decision]]:
        return [self.samples[context.state_key][:n] for context in contexts]


class Memo:
    """A reward model's scores, each (state, action) scored once however many N's ask for it."""

    def __init__(self, reward_model: ProcessRewardModel) -> None:
        self.reward_model = reward_model
        self.scores: dict[str, float] = {}

    def score(self, contexts: Sequence[Context]) -> list[float]:
        missing = list({c.key: c for c in contexts if c.key not in self.scores}.values())
        if missing:
            self.scores.update(zip((c.key for c in missing), self.reward_model.score(missing), strict=True))
        return [self.scores[c.key] for c in contexts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkthroughs", required=True, help="`prm-gym collect --agent walkthrough` folder")
    parser.add_argument("--policy", required=True, help="an HFAgent model (pi0)")
    parser.add_argument("--reward-model", required=True, help="a `prm-gym train-prm` model (Q0)")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--games", type=int, default=None, help="every k-th walkthrough, this many (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    episodes = load_episodes(args.walkthroughs)
    if args.games:
        episodes = episodes[:: max(1, len(episodes) // args.games)][: args.games]
    policy = HFAgent.from_pretrained(args.policy, HFAgentConfig(mode="loglik", sample_temperature=0.7))
    reward_model = Memo(ProcessRewardModel.from_pretrained(args.reward_model))
    policy.reset(seed=args.seed)
    counts = {key: 0 for key in ["states", "greedy", "argmax"]}
    counts |= {f"{what}{n}": 0 for n in args.n for what in ("covered", "picked")}
    start = time.perf_counter()
    for index, episode in enumerate(episodes):
        states = [dataclasses.replace(c, action=None, reason=None) for c in episode.contexts]
        experts = episode.actions
        greedy = policy.decide(states)
        draws = policy.sample(states, max(args.n))
        samples = {state.state_key: draw for state, draw in zip(states, draws, strict=True)}
        # Every admissible command of every state of the episode in one call (the reward models' batch contract).
        scores = iter(reward_model.score([state.propose(c) for state in states for c in state.admissible_commands]))
        for state, expert, choice in zip(states, experts, greedy, strict=True):
            scored = {command: next(scores) for command in state.admissible_commands}
            counts["states"] += 1
            counts["greedy"] += choice.action == expert
            counts["argmax"] += max(scored, key=scored.__getitem__) == expert
            for n in args.n:
                counts[f"covered{n}"] += expert in {d.action for d in samples[state.state_key][:n]}
        for n in args.n:
            picks = BestOfNAgent(Replay(samples), reward_model, n=n).decide(states)
            counts[f"picked{n}"] += sum(p.action == e for p, e in zip(picks, experts, strict=True))
        print(f"{index + 1}/{len(episodes)} episodes, {counts['states']} states, "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip

    total = counts["states"]
    print(f"\nmachine: {machine()}")
    seconds = time.perf_counter() - start
    print(f"{len(episodes)} walkthroughs of {args.walkthroughs}, {total} states; policy {args.policy} (samples "
          f"at 0.7, seed {args.seed}), reward model {args.reward_model}; {seconds:.0f} s\n")  # fmt: skip
    print("| choice | expert's command chosen % | among the candidates % | chosen when among them % |")
    print("|:--|--:|--:|--:|")
    print(f"| policy, greedy | {100 * counts['greedy'] / total:.1f} | | |")
    for n in args.n:
        covered, picked = counts[f"covered{n}"], counts[f"picked{n}"]
        print(f"| Best-of-{n} | {100 * picked / total:.1f} | {100 * covered / total:.1f} | "
              f"{100 * picked / covered if covered else float('nan'):.1f} |")  # fmt: skip
    print(f"| reward model's argmax over every admissible command | {100 * counts['argmax'] / total:.1f} | 100.0 | |")


if __name__ == "__main__":
    main()

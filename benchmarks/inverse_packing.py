"""InversePRM training tokens per epoch: one row per context vs transitions packed into token tries.

The transitions of the InversePRM CPU reproduction (configs/inverse_prm_cpu.toml: the walkthroughs of the games
pi0's rollouts played, against pi0's transitions, each class capped at 1,500 by a seeded sample), rendered with
the SmolLM2 tokenizer at a 1,024-token budget (the InversePRM default), then counted: the tokens of one row per
context ((s, a), and (s', a') unless final) against the nodes of their packs
(:func:`prm_gym.prm.inverse_training.pack_transitions`). The next action a' of an expert transition stands in
for the policy's (the loop resamples it with pi0: a command of the same kind and length). No model runs.

    cd benchmarks && python inverse_packing.py --demonstrations ../runs/demos \\
        --rollouts ../runs/agentprm-cpu/rollouts-pi0 --pack-tokens 2048
"""

from __future__ import annotations

import argparse

import torch
from common import SHARED_GGUF
from transformers import AutoTokenizer

from prm_gym.checkpoints import resolve_source
from prm_gym.prm.inverse import TransitionsConfig, select_transitions
from prm_gym.prm.inverse_training import _balanced, pack_transitions
from prm_gym.prm.prompt import PromptConfig, encode_contexts
from prm_gym.rollout import load_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demonstrations", required=True)
    parser.add_argument("--rollouts", required=True)
    parser.add_argument("--max-transitions", type=int, default=1500, help="cap of each class")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024)
    parser.add_argument("--pack-tokens", type=int, nargs="+", default=[2048])
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(SHARED_GGUF, dtype=torch.bfloat16))
    prompt = PromptConfig(max_prompt_tokens=args.max_prompt_tokens)
    config = TransitionsConfig(max_expert_transitions=args.max_transitions, max_policy_transitions=args.max_transitions)
    transitions = select_transitions(load_episodes(args.demonstrations), {"pi0": load_episodes(args.rollouts)}, config)

    def token_ids(contexts):
        return encode_contexts(contexts, tokenizer, prompt)

    contexts = [t.context for t in transitions] + [t.next_context for t in transitions if not t.final]
    per_row = sum(map(len, token_ids(contexts)))
    experts = sum(t.expert for t in transitions)
    print(f"{experts} expert + {len(transitions) - experts} policy transitions, {len(contexts)} contexts: "
          f"{per_row:,} tokens one row per context")  # fmt: skip
    for pack_tokens in args.pack_tokens:
        packs = pack_transitions(_balanced(transitions), token_ids, pack_tokens)
        packed = sum(len(pack.trie) for pack in packs)
        print(f"pack_tokens {pack_tokens}: {len(packs)} packs, {packed:,} tokens ({per_row / packed:.1f}x fewer), "
              f"largest pack {max(len(p.trie) for p in packs)} tokens")  # fmt: skip


if __name__ == "__main__":
    main()

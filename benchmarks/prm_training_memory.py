"""Peak memory of one PRM training step on long whole-episode renders: what holds the memory, and what frees it.

One optimiser-free training step as :class:`~prm_gym.prm.training.PRMTrainer` runs it on a CPU: the shared
SmolLM2-135M as a one-logit classifier (float32 weights, bf16 autocast), LoRA r 16 on every linear layer, the head
read at every 100th position of ``--batch`` synthetic episodes of ``--tokens`` tokens (:func:`position_logits`),
a soft-BCE loss and its backward. Each variant runs in its own process, so each peak (``ru_maxrss``) is its own.

    cd benchmarks && python prm_training_memory.py --tokens 2851 --batch 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from common import SHARED_GGUF, machine

VARIANTS = {
    "as trained (LoRA dropout 0.05)": {},
    "LoRA dropout 0": {"dropout": 0.0},
    "activation checkpointing": {"checkpointing": True},
}


def step(tokens: int, batch: int, dropout: float, checkpointing: bool) -> dict[str, float]:
    """Run one forward and backward; return the resident peaks (GiB) after loading and after the step."""
    import torch

    from prm_gym.prm.model import LoraSettings, ProcessRewardModel, position_logits

    prm = ProcessRewardModel.from_pretrained(SHARED_GGUF, device="cpu", dtype="float32",
                                             lora=LoraSettings(dropout=dropout))  # fmt: skip
    prm.model.train()
    if checkpointing:  # as the Trainer does with `activation_checkpointing` (non-reentrant: LoRA's frozen inputs)
        prm.model.activation_checkpointing_enable()
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(100, 40000, (batch, tokens), generator=generator)
    positions = torch.arange(99, tokens, 100).repeat(batch)
    rows = torch.arange(batch).repeat_interleave(len(positions) // batch)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch_inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        logits = position_logits(prm.model, batch_inputs, rows, positions)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.3))
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"loaded_gib": loaded, "peak_gib": peak, "step_gib": peak - loaded, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2851, help="tokens per episode (pi0's longest rollout: 2,851)")
    parser.add_argument("--batch", type=int, default=1, help="episodes per step")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    options = parser.parse_args()
    if options.variant:
        import torch

        if options.threads:
            torch.set_num_threads(options.threads)
        settings = {"dropout": 0.05, "checkpointing": False} | VARIANTS[options.variant]
        print(json.dumps(step(options.tokens, options.batch, **settings)))
        return
    print(machine())
    print(f"one step of {options.batch} x {options.tokens} tokens:")
    for variant in VARIANTS:
        threads = ["--threads", str(options.threads)] if options.threads else []
        command = [sys.executable, __file__, "--variant", variant, "--tokens", str(options.tokens),
                   "--batch", str(options.batch), *threads]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            print(f"| {variant} | failed: {result.stderr.strip().splitlines()[-1:]} |")
            continue
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"| {variant} | {figures['loaded_gib']:.2f} GiB loaded | peak {figures['peak_gib']:.2f} GiB "
              f"(+{figures['step_gib']:.2f}) | {figures['seconds']:.1f} s |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Integration: OpenAICompatibleAgent playing ALFWorld against a real llama.cpp server on loopback.

    python benchmarks/openai_agent_llamacpp.py --split tiny --games 6 --max-steps 30
    python benchmarks/openai_agent_llamacpp.py --server-python /tmp/llamavenv/bin/python --split valid_unseen

Starts ``python -m llama_cpp.server`` (llama-cpp-python, ``pip install 'llama-cpp-python[server]'``: it compiles
llama.cpp, so it is not a project dependency and CI uses tests/openai_server.py instead) serving the shared
SmolLM2-135M-Instruct GGUF on 127.0.0.1 and a free port, waits until ``GET /v1/models`` answers, plays the first
``--games`` games with the agent (greedy), prints Table 1's layout, seconds per step, the match paths and the
token counts, and shuts the server down. ``--server-python`` is the interpreter that has llama-cpp-python
(it may live in its own virtual environment). On a CPU shared with other jobs, ``--threads 1`` avoids
OpenMP threads spinning against each other.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import SHARED_GGUF, machine

import prm_gym  # noqa: F401
from prm_gym.agents import OpenAIAgentConfig, OpenAICompatibleAgent
from prm_gym.evaluation import EvalConfig, evaluate, format_table, summarize


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(python: str, model: Path, port: int, n_ctx: int, threads: int, log: Path) -> subprocess.Popen:
    command = [
        python,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--model_alias",
        model.stem,
    ]
    print("$", " ".join(command))
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_ready(process: subprocess.Popen, url: str, log: Path, timeout_s: float) -> float:
    """Return the seconds until ``GET /v1/models`` answers; raise if the server dies or never answers."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"llama_cpp.server did not answer at {url} within {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="tiny")
    parser.add_argument("--games", type=int, default=6)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--model", type=Path, default=SHARED_GGUF)
    parser.add_argument("--server-python", default=sys.executable)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the server

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = Path(tempfile.mkdtemp(prefix="llamacpp-")) / "server.log"
    process = start_server(args.server_python, args.model, port, args.n_ctx, args.threads, log)
    try:
        ready_s = wait_ready(process, url, log, args.startup_timeout)
        print(f"server ready at {url} after {ready_s:.1f} s (log: {log})")
        config = OpenAIAgentConfig(
            base_url=url,
            model=None,
            temperature=0.0,
            max_tokens=args.max_tokens,
            seed=0,
            timeout_s=120.0,
            max_concurrency=1,
            max_retries=1,
        )
        with OpenAICompatibleAgent(config) as agent:
            eval_config = EvalConfig(split=args.split, num_games=args.games, game_selection="first",
                                     max_episode_steps=args.max_steps)
            start = time.perf_counter()
            results = evaluate(agent, eval_config)
            elapsed = time.perf_counter() - start
        steps = sum(len(r.steps) for r in results)
        title = (
            f"{agent.name} (llama.cpp, {args.model.name}) on {args.split}, {len(results)} games, "
            f"cap {args.max_steps} steps"
        )
        print(format_table(summarize(results), title))
        for r in results:
            print(
                f"  {Path(r.game_file).parent.parent.name:<60} won={r.won!s:<5} steps={len(r.steps):>2} "
                f"first actions={r.actions[:3]}"
            )
        counts, total = agent.match_counts, max(sum(agent.match_counts.values()), 1)
        print(f"seconds per step: {elapsed / max(steps, 1):.2f} ({steps} steps in {elapsed:.1f} s)")
        paths = ("exact", "normalised", "nearest")
        print("match paths: " + ", ".join(f"{path} {counts[path]} ({counts[path] / total:.0%})" for path in paths))
        print(f"usage: {dict(agent.usage)}")
        print(
            f"machine: {machine()}; llama.cpp --threads {args.threads}"
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"server stopped ({process.returncode})")


if __name__ == "__main__":
    main()

"""Importing the package is light: no game engine, no torch, until an env, the expert or a model is used; no Ray
unless a run asks for its executor."""

import subprocess
import sys

import pytest

HEAVY = ("textworld", "alfworld", "jericho", "torch", "transformers", "ray")


def modules_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter and return which of the heavy packages it imported."""
    report = f"import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import prm_gym, prm_gym.prm",
        "from prm_gym.prm import Context, TargetsConfig, compute_targets",
        "import prm_gym.agents, prm_gym.rollout, prm_gym.wrappers, prm_gym.envs.alfworld.data",
        "from prm_gym.rollout import MonteCarloRewardModel, load_episodes, episodes_dataset",
        "from prm_gym.agents.registry import AgentConfig, make_agent",
    ],
)
def test_the_light_modules_import_no_engine_and_no_torch(code):
    assert modules_after(code) == set()


def test_the_envs_still_register_and_load_on_first_use():
    code = (
        "import gymnasium as gym, prm_gym\n"
        "env = gym.make('prm_gym/ALFWorld-v0', split='tiny')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert 'Your task is to' in obs and info['admissible_commands'], obs\n"
        "assert type(env.unwrapped) is prm_gym.ALFWorldEnv and issubclass(prm_gym.TextWorldEnv, prm_gym.TextGameEnv)"
    )
    assert modules_after(code) == {"textworld", "alfworld", "jericho"}


def test_a_local_run_does_not_import_ray():
    code = (
        "from prm_gym.agents import RandomAgent\n"
        "from prm_gym.evaluation import EvalConfig, evaluate\n"
        "config = EvalConfig(agent='random', split='tiny', num_games=2, num_envs=2, max_episode_steps=2)\n"
        "assert len(evaluate(RandomAgent(), config, progress=False)) == 2"
    )
    assert "ray" not in modules_after(code)


def test_the_lazy_names_are_the_classes_and_unknown_names_fail():
    import prm_gym
    import prm_gym.agents
    import prm_gym.envs
    import prm_gym.envs.alfworld
    import prm_gym.rollout
    from prm_gym.agents.expert_agent import ExpertAgent
    from prm_gym.envs.alfworld.env import BACKENDS, ALFWorldEnv
    from prm_gym.rollout.collect import collect_rollouts
    from prm_gym.rollout.runner import run_episodes

    assert prm_gym.ALFWorldEnv is prm_gym.envs.ALFWorldEnv is prm_gym.envs.alfworld.ALFWorldEnv is ALFWorldEnv
    assert prm_gym.envs.alfworld.BACKENDS == BACKENDS
    assert prm_gym.agents.ExpertAgent is ExpertAgent
    assert prm_gym.rollout.collect_rollouts is collect_rollouts and prm_gym.rollout.run_episodes is run_episodes
    for module in (prm_gym, prm_gym.agents, prm_gym.envs, prm_gym.envs.alfworld, prm_gym.rollout):
        with pytest.raises(AttributeError, match="no attribute 'Nope'"):
            module.Nope  # noqa: B018 - the attribute access is the test

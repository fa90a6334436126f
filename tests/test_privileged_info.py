"""Privileged info (the game's walkthrough) is handed out only when an env is asked for it."""

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import ExpertAgent, RandomAgent, WalkthroughAgent
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.envs.alfworld import ALFWorldEnv, list_games
from prm_gym.envs.text_game_env import PRIVILEGED_INFO, privileged_names
from prm_gym.envs.vector import sub_env_info
from prm_gym.prm.context import Context
from prm_gym.prm.prompt import render_messages

ASK = ("walkthrough",)


def reset_step_restore(env):
    """Return the ``info`` of a reset, of a step and of a restore to the reset's state."""
    _, reset_info = env.reset(seed=0)
    snapshot = env.unwrapped.snapshot()
    step_info = env.step("look")[-1]
    _, restore_info = env.unwrapped.restore(snapshot)
    return reset_info, step_info, restore_info


@pytest.mark.parametrize("backend", ["fast", "textworld"])
def test_alfworld_info_has_no_walkthrough_unless_asked(backend):
    default = reset_step_restore(gym.make("prm_gym/ALFWorld-v0", split="tiny", backend=backend))
    assert all("walkthrough" not in info for info in default)
    reset_info, step_info, restore_info = reset_step_restore(
        gym.make("prm_gym/ALFWorld-v0", split="tiny", backend=backend, privileged=ASK)
    )
    assert reset_info["walkthrough"] == list(walkthrough_of(reset_info["game_file"])) != []
    assert restore_info["walkthrough"] == reset_info["walkthrough"] and "walkthrough" not in step_info
    # Apart from the walkthrough, the infos are the same.
    assert [{k: v for k, v in info.items() if k != "walkthrough"} for info in (reset_info, restore_info)] == [
        default[0], default[2]
    ]


def test_textworld_info_has_no_walkthrough_unless_asked(generated_game):
    default = reset_step_restore(gym.make("prm_gym/TextWorld-v0", game_files=generated_game))
    assert all("walkthrough" not in info for info in default)
    reset_info, _, restore_info = reset_step_restore(
        gym.make("prm_gym/TextWorld-v0", game_files=generated_game, privileged="walkthrough")
    )
    assert reset_info["walkthrough"] and restore_info["walkthrough"] == reset_info["walkthrough"]


@pytest.mark.parametrize("privileged", [(), ASK])
def test_vector_envs_pass_the_request_on(privileged):
    envs = gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, vectorization_mode="sync", split="tiny",
                        privileged=privileged)
    try:
        _, infos = envs.reset(seed=0)
        _, _, _, _, step_infos = envs.step(("look", "look"))
        for index in range(2):
            info = sub_env_info(infos, index)
            assert ("walkthrough" in info) == bool(privileged)
            assert "walkthrough" not in sub_env_info(step_infos, index)
            if privileged:
                assert info["walkthrough"] == list(walkthrough_of(info["game_file"]))
    finally:
        envs.close()


def test_unknown_or_malformed_requests_are_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown privileged info 'walkthru'.*Did you mean 'walkthrough'"):
        gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthru",))
    with pytest.raises(ValueError, match="Unknown privileged info 'policy_commands'"):
        ALFWorldEnv("tiny", privileged=["walkthrough", "policy_commands"])
    with pytest.raises(TypeError, match="`privileged`"):
        ALFWorldEnv("tiny", privileged=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`privileged`"):
        privileged_names([1])  # type: ignore[list-item]
    assert privileged_names(["walkthrough", "walkthrough"]) == ASK == PRIVILEGED_INFO


@pytest.mark.parametrize("agent", [WalkthroughAgent(), ExpertAgent()], ids=["walkthrough", "expert"])
def test_oracle_agents_refuse_an_env_that_was_not_asked(agent):
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny")
    obs, info = env.reset(seed=0)
    agent.reset()
    with pytest.raises(ValueError, match=r"needs info\['walkthrough'\].*privileged=\('walkthrough',\)"):
        agent.act(obs, info)
    assert agent.privileged == ASK and RandomAgent.privileged == ()


def test_the_walkthrough_agent_plays_the_walkthrough_the_env_hands_out():
    game = list_games("tiny")[0]
    env = gym.make("prm_gym/ALFWorld-v0", game_files=[game], privileged=ASK)
    obs, info = env.reset(seed=0)
    info = {**info, "walkthrough": ["inventory", *info["walkthrough"]]}  # what the env said, not the file
    agent = WalkthroughAgent()
    agent.reset()
    assert agent.act(obs, info) == "inventory"


def test_contexts_and_prompts_never_carry_privileged_info():
    _, plain = gym.make("prm_gym/ALFWorld-v0", split="tiny").reset(seed=0)
    obs, asked = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=ASK).reset(seed=0)
    context = Context.from_reset(obs, asked)
    assert context == Context.from_reset(obs, plain) and "walkthrough" not in context.to_dict()
    assert render_messages(context) == render_messages(Context.from_reset(obs, plain))


@pytest.mark.parametrize("agent", [WalkthroughAgent(), RandomAgent(seed=0)], ids=["walkthrough", "random"])
def test_evaluation_and_collection_ask_their_envs_for_what_the_agent_declares(agent, monkeypatch, tmp_path):
    from prm_gym import evaluation
    from prm_gym.rollout import collect, runner

    asked = []

    def recording(make):
        def make_and_record(*args, **kwargs):
            asked.append((make.__name__, kwargs["privileged"]))
            return make(*args, **kwargs)

        return make_and_record

    monkeypatch.setattr(runner.gym, "make_vec", recording(gym.make_vec))
    results = evaluation.evaluate(agent, evaluation.EvalConfig(split="tiny", num_games=2), progress=False)
    config = collect.CollectConfig(split="tiny", num_games=1, repeats=1, num_envs=1, vectorization="sync",
                                   output_dir=str(tmp_path))
    collect.collect_rollouts(agent, config, progress=False)
    assert asked == [("make_vec", agent.privileged)] * 2 and len(results) == 2


def test_best_of_n_asks_for_what_its_policy_needs():
    from prm_gym.agents import BestOfNAgent, RandomAgent, WalkthroughAgent

    class Constant:
        def score(self, contexts):
            return [0.5] * len(contexts)

    assert BestOfNAgent(WalkthroughAgent(), Constant(), n=2).privileged == ("walkthrough",)
    assert BestOfNAgent(RandomAgent(), Constant(), n=2).privileged == ()

"""Reference agents on real games: the interface, the walkthrough agent and the expert's replanning."""

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import Agent, Decision, ExpertAgent, RandomAgent, WalkthroughAgent
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.envs.alfworld.data import list_games
from prm_gym.prm import Context

TINY = [str(g) for g in list_games("tiny")]


class Reasoning(Agent):
    name = "reasoning"

    def decide(self, contexts):
        return [Decision(c.admissible_commands[-1], reason=f"turn {len(c.history)}") for c in contexts]


@pytest.fixture(scope="module")
def env():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=30)
    yield env
    env.close()


def play(env, agent, game, opening=()):
    """Play ``opening`` commands, then ``agent`` to the end; return (won, actions the agent chose)."""
    obs, info = env.reset(options={"game": game})
    context = Context.from_reset(obs, info)
    for command in opening:
        obs, _, _, _, info = env.step(command)
        context = context.propose(command).advance(obs, info)
    chosen = []
    while True:
        (decision,) = agent.decide([context])
        chosen.append(decision.action)
        obs, _, terminated, truncated, info = env.step(decision.action)
        context = context.propose(decision.action, decision.reason).advance(obs, info)
        if terminated or truncated:
            return info["won"], chosen


def test_act_keeps_the_episode_context_with_reasons(env):
    agent = Reasoning()
    obs, info = env.reset(seed=0)
    agent.reset()
    for _ in range(3):
        action = agent.act(obs, info)
        obs, _, _, _, info = env.step(action)
    assert len(agent.context.history) == 2 and agent.context.reason == "turn 2"
    assert agent.context.game_file == info["game_file"]
    agent.reset()
    obs, info = env.reset(seed=1)
    agent.act(obs, info)
    assert agent.context.history == () and agent.context.observation == obs


@pytest.mark.parametrize("game", TINY, ids=lambda p: p.split("/")[-3])
def test_walkthrough_and_expert_win_every_tiny_game(env, game):
    assert play(env, WalkthroughAgent(), game)[0]
    assert play(env, ExpertAgent(), game)[0]


@pytest.mark.parametrize("game", TINY, ids=lambda p: p.split("/")[-3])
def test_expert_replans_after_random_openings(env, game):
    obs, info = env.reset(options={"game": game})
    random_agent = RandomAgent(seed=len(game))
    context = Context.from_reset(obs, info)
    opening = []
    for _ in range(4):
        (decision,) = random_agent.decide([context])
        opening.append(decision.action)
        obs, _, terminated, _, info = env.step(decision.action)
        if terminated:
            pytest.skip("the random opening won the game")
        context = context.propose(decision.action).advance(obs, info)
    won, chosen = play(env, ExpertAgent(), game, opening)
    assert won and len(opening) + len(chosen) <= 30
    # The walkthrough agent, left off its walkthrough, only looks.
    assert set(play(env, WalkthroughAgent(), game, opening)[1]) == {"look"}


def test_decide_is_batched_over_independent_contexts(env):
    contexts = []
    for game in TINY[:3]:
        obs, info = env.reset(options={"game": game})
        contexts.append(Context.from_reset(obs, info))
    decisions = WalkthroughAgent().decide(contexts)
    assert [d.action for d in decisions] == [walkthrough_of(game)[0] for game in TINY[:3]]


def test_contexts_without_a_game_file_are_refused():
    with pytest.raises(ValueError, match="game_file"):
        WalkthroughAgent().decide([Context(task="t", observation="o", admissible_commands=("look",))])

"""Reference agents on real games: the interface, the walkthrough agent and the expert's replanning."""

import gymnasium as gym
import pytest

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.agents import Agent, BestOfNAgent, Decision, ExpertAgent, RandomAgent, WalkthroughAgent
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
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", max_episode_steps=30, privileged=("walkthrough",))
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


class Recorder:
    """Scores actions from a table (0.5 for the rest) and records each call's batch."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def score(self, contexts):
        self.calls.append([c.action for c in contexts])
        return [self.table.get(c.action, 0.5) for c in contexts]


class Scripted(Agent):
    """Proposes a fixed list of decisions, in turn."""

    def __init__(self, decisions):
        super().__init__()
        self.decisions, self.i = decisions, 0

    def decide(self, contexts):
        out = []
        for _ in contexts:
            out.append(self.decisions[self.i % len(self.decisions)])
            self.i += 1
        return out


def test_best_of_n_picks_the_highest_scoring_candidate_in_one_batched_call(env):
    obs, info = env.reset(options={"game": 0})
    first = Context.from_reset(obs, info)
    contexts = [first, first.propose("look").advance(obs, info)]
    table = {c: i / 100 for i, c in enumerate(info["admissible_commands"])}
    model = Recorder(table)
    agent = BestOfNAgent(RandomAgent(seed=1), model, n=6)
    decisions = agent.decide(contexts)
    (scored,) = model.calls  # one call for both contexts
    assert 2 <= len(scored) <= 12
    samples = RandomAgent(seed=1).sample(contexts, 6)  # the same policy stream: the candidates of each context
    for decision, candidates in zip(decisions, samples, strict=True):
        actions = {d.action for d in candidates}
        assert decision.action == max(actions, key=table.get)
    assert sorted(scored) == sorted(a for candidates in samples for a in {d.action for d in candidates})
    assert len(agent.score_spreads) == 2 and all(s >= 0 for s in agent.score_spreads)


def test_best_of_n_breaks_ties_by_policy_likelihood_and_keeps_reasons():
    context = Context(task="t", observation="o", admissible_commands=("a", "b", "c"))
    policy = Scripted([Decision("a", "first", -2.0), Decision("b", "likelier", -0.5), Decision("a", "again", -0.1),
                       Decision("c", None, None)])
    agent = BestOfNAgent(policy, Recorder({"a": 0.9, "b": 0.9, "c": 0.1}), n=4)
    (decision,) = agent.decide([context])
    assert decision == Decision("b", "likelier", -0.5)  # "a"'s first sample (logprob -2.0) is the one kept
    assert agent.score_spreads == [pytest.approx(0.8)]


def test_best_of_n_scores_only_turns_with_a_choice():
    contexts = [Context(task="t", observation=o, admissible_commands=("a", "b")) for o in ("o1", "o2", "o3")]
    model = Recorder({"a": 0.2, "b": 0.7})
    policy = Scripted([Decision("a", None, -0.1)] * 2 + [Decision("a", None, -0.1), Decision("b", None, -2.0)]
                      + [Decision("b", None, -0.3)] * 2)  # fmt: skip
    decisions = BestOfNAgent(policy, model, n=2).decide(contexts)
    assert [d.action for d in decisions] == ["a", "b", "b"]
    assert model.calls == [["a", "b"]]  # one batch, the second context's two candidates only
    single = BestOfNAgent(Scripted([Decision("a", None, None)]), Recorder({}), n=1)
    assert [d.action for d in single.decide(contexts)] == ["a"] * 3 and single.reward_model.calls == []
    assert single.score_spreads == [0.0] * 3


def test_best_of_n_plays_a_game_with_an_expert_as_its_judge(env):
    class ExpertJudge:
        def score(self, contexts):
            return [1.0 if ExpertAgent().decide([c.propose(None)])[0].action == c.action else 0.0 for c in contexts]

    obs, info = env.reset(options={"game": 1})
    agent = BestOfNAgent(RandomAgent(seed=0), ExpertJudge(), n=64)
    agent.reset(seed=0)
    for _ in range(30):
        obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
        if terminated or truncated:
            break
    assert info["won"]


def test_best_of_n_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`n`"):
        BestOfNAgent(RandomAgent(), Recorder({}), n=0)
    with pytest.raises(TypeError, match="score"):
        BestOfNAgent(RandomAgent(), object(), n=2)

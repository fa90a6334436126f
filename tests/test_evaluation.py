import pytest

from prm_gym.agents import Agent, RandomAgent, WalkthroughAgent
from prm_gym.evaluation import EpisodeResult, EvalConfig, evaluate, format_table, make_agent, summarize


def test_reference_agents_implement_the_interface():
    assert isinstance(RandomAgent(0), Agent) and isinstance(WalkthroughAgent(), Agent)


def test_random_agent_is_reproducible_and_uniform():
    info = {"admissible_commands": ["a", "b", "c", "d"]}
    one, two = RandomAgent(3), RandomAgent(3)
    assert [one.act("", info) for _ in range(20)] == [two.act("", info) for _ in range(20)]
    agent = RandomAgent(0)
    counts = {c: 0 for c in info["admissible_commands"]}
    for _ in range(4000):
        counts[agent.act("", info)] += 1
    assert all(900 < n < 1100 for n in counts.values())


def test_random_agent_without_commands_says_so():
    with pytest.raises(ValueError, match="admissible_commands"):
        RandomAgent(0).act("", {})


def test_unknown_agent_is_named():
    with pytest.raises(ValueError, match="Unknown agent 'gpt'"):
        make_agent("gpt")


def test_summary_groups_by_task_type_in_table_1_order():
    results = [
        EpisodeResult("a", "pick_and_place_simple", True, 4),
        EpisodeResult("b", "pick_and_place_simple", False, 30),
        EpisodeResult("c", "pick_two_obj_and_place", True, 10),
    ]
    summary = summarize(results)
    assert list(summary) == ["All", "Pick", "Pick2"]
    assert summary["All"] == {"success": pytest.approx(200 / 3), "actions": pytest.approx(44 / 3), "games": 3.0}
    assert summary["Pick"] == {"success": 50.0, "actions": 17.0, "games": 2.0}
    table = format_table(summary, "title").splitlines()
    assert table[0] == "title" and table[1].split() == ["All", "Pick", "Pick2"]
    assert table[2].split() == ["success", "%", "66.7", "50.0", "100.0"]


def test_evaluate_is_deterministic_under_a_seed(alfworld_data_dir):
    config = EvalConfig(split="valid_seen", num_games=3, max_episode_steps=8, seed=5)
    first = evaluate(make_agent("random", seed=5), config, progress=False)
    again = evaluate(make_agent("random", seed=5), config, progress=False)
    assert first == again and [r.steps for r in first] == [8, 8, 8]
    assert len({r.game_file for r in first}) == 3

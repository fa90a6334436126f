import dataclasses
import json

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


class Interrupt(RandomAgent):
    """A random agent that stops the evaluation (like Ctrl-C) when it starts its ``stop_at``-th episode."""

    def __init__(self, stop_at):
        super().__init__()
        self.stop_at, self.episodes = stop_at, 0

    def reset(self, seed=None):
        self.episodes += 1
        if self.episodes == self.stop_at:
            raise KeyboardInterrupt
        super().reset(seed)


def test_outputs_are_complete_and_a_resumed_run_gives_the_same_table(tmp_path):
    config = EvalConfig(agent="random", split="tiny", max_episode_steps=6, seed=3, output_dir=str(tmp_path / "a"))
    whole = evaluate(RandomAgent(), config, progress=False)
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["config"]["split"] == "tiny" and results["agent"] == "random"
    assert results["summary"]["All"]["games"] == 6.0 and "success %" in results["table"]
    episodes = [json.loads(line) for line in (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()]
    assert [e["index"] for e in episodes] == list(range(6)) and all(len(e["actions"]) == e["steps"] for e in episodes)
    assert (tmp_path / "a" / "success.png").read_bytes().startswith(b"\x89PNG")

    resumed = dataclasses.replace(config, output_dir=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupt(stop_at=4), resumed, progress=False)
    with open(tmp_path / "b" / "episodes.jsonl", "a") as f:
        f.write('{"game_file": "cut sh')  # a write cut short by the interruption
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 4
    assert evaluate(RandomAgent(), resumed, progress=False) == whole
    assert json.loads((tmp_path / "b" / "results.json").read_text())["table"] == results["table"]
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 6


def test_an_output_folder_of_another_evaluation_is_refused(tmp_path):
    config = EvalConfig(agent="walkthrough", split="tiny", num_games=1, output_dir=str(tmp_path))
    evaluate(WalkthroughAgent(), config, progress=False)
    with pytest.raises(ValueError, match="another config"):
        evaluate(WalkthroughAgent(), dataclasses.replace(config, num_games=2), progress=False)

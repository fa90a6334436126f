import dataclasses
import json

import gymnasium as gym
import pytest

from prm_gym.agents import RandomAgent, WalkthroughAgent
from prm_gym.agents.registry import AgentConfig, make_agent
from prm_gym.cli import main
from prm_gym.evaluation import EvalConfig, evaluate, format_table, summarize
from prm_gym.prm import Context
from prm_gym.rollout import Episode


def test_make_agent_builds_the_named_reference_agents():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", privileged=("walkthrough",))
    obs, info = env.reset(seed=0)
    env.close()
    states = [Context.from_reset(obs, info)] * 20
    random, walkthrough = make_agent(AgentConfig("random"), seed=3), make_agent(AgentConfig("walkthrough"))
    expert = make_agent(AgentConfig("expert"))
    assert (random.name, walkthrough.name, expert.name) == ("random", "walkthrough", "expert")
    actions = [d.action for d in random.decide(states)]
    assert actions == [d.action for d in RandomAgent(3).decide(states)]  # seeded as asked
    assert set(actions) <= set(info["admissible_commands"]) and len(set(actions)) > 1
    assert walkthrough.act(obs, info) == info["walkthrough"][0]


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
    with pytest.raises(ValueError, match="Unknown agent 'gpt': choose one of expert, walkthrough, random, hf, openai"):
        AgentConfig(agent="gpt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown Best-of-N policy 'expert'"):
        AgentConfig(agent="best-of-n", policy="expert")  # type: ignore[arg-type]


def test_summary_groups_by_task_type_in_table_1_order():
    def played(task_type, won, steps):
        episode = Episode.from_actions("task", [""] * steps, ["look"] * steps, won)
        return dataclasses.replace(episode, task_type=task_type)

    results = [
        played("pick_and_place_simple", True, 4),
        played("pick_and_place_simple", False, 30),
        played("pick_two_obj_and_place", True, 10),
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
    first = evaluate(RandomAgent(), config, progress=False)
    again = evaluate(RandomAgent(), config, progress=False)
    assert first == again and [len(r.steps) for r in first] == [8, 8, 8]
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
    rows = [json.loads(line) for line in (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()]
    assert [(row["game_index"], row["t"]) for row in rows] == [(g, t) for g in range(6) for t in range(6)]
    assert [row["action"] for row in rows] == [action for episode in whole for action in episode.actions]
    assert (tmp_path / "a" / "success.png").read_bytes().startswith(b"\x89PNG")

    resumed = dataclasses.replace(config, output_dir=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupt(stop_at=4), resumed, progress=False)
    with open(tmp_path / "b" / "episodes.jsonl", "a") as f:
        f.write('{"game_file": "cut sh')  # a write cut short by the interruption
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 3 * 6 + 1
    assert evaluate(RandomAgent(), resumed, progress=False) == whole
    assert json.loads((tmp_path / "b" / "results.json").read_text())["table"] == results["table"]
    assert len((tmp_path / "b" / "episodes.jsonl").read_text().splitlines()) == 6 * 6


def test_an_output_folder_of_another_evaluation_is_refused(tmp_path):
    config = EvalConfig(agent="walkthrough", split="tiny", num_games=1, output_dir=str(tmp_path))
    evaluate(WalkthroughAgent(), config, progress=False)
    with pytest.raises(ValueError, match="holds another run"):
        evaluate(WalkthroughAgent(), dataclasses.replace(config, num_games=2), progress=False)


def test_a_folder_written_before_a_field_existed_resumes_with_its_default(tmp_path):
    config = EvalConfig(agent="random", split="tiny", max_episode_steps=4, output_dir=str(tmp_path))
    whole = evaluate(RandomAgent(), config, progress=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["config"]["num_envs"]  # as if written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert evaluate(RandomAgent(), config, progress=False) == whole
    with pytest.raises(ValueError, match="num_envs: 1 there, 2 here"):
        evaluate(RandomAgent(), dataclasses.replace(config, num_envs=2), progress=False)


@pytest.mark.parametrize("name", ["walkthrough", "expert"])
def test_lockstep_groups_of_3_win_every_tiny_game_with_the_reference_agents(name):
    results = evaluate(make_agent(AgentConfig(name)), EvalConfig(split="tiny", num_envs=3), progress=False)
    assert [r.game_index for r in results] == list(range(6)) and all(r.won for r in results)


def play_one_at_a_time(agent, config):
    """Return (game file, won, actions) per game as before lockstep groups: ``agent.act``, one game at a time,
    game ``i``'s env and the agent reset with seed ``config.seed + i``."""
    env = gym.make("prm_gym/ALFWorld-v0", split=config.split, max_episode_steps=config.max_episode_steps,
                   privileged=agent.privileged)
    played = []
    for index in range(len(env.unwrapped.game_files)):
        obs, info = env.reset(seed=config.seed + index, options={"game": index})
        agent.reset(seed=config.seed + index)
        actions, done = [], False
        while not done:
            actions.append(agent.act(obs, info))
            obs, _, terminated, truncated, info = env.step(actions[-1])
            done = terminated or truncated
        played.append((info["game_file"], info["won"], actions))
    env.close()
    return played


def test_num_envs_1_gives_the_results_of_one_game_at_a_time():
    config = EvalConfig(split="tiny", num_envs=1, seed=0)
    results = evaluate(RandomAgent(), config, progress=False)
    assert [(r.game_file, r.won, r.actions) for r in results] == play_one_at_a_time(RandomAgent(), config)
    other_seed = evaluate(RandomAgent(), dataclasses.replace(config, seed=1), progress=False)
    assert [r.actions for r in other_seed] != [r.actions for r in results]


class Counting(WalkthroughAgent):
    """A walkthrough agent (its games end at different turns) that records each ``decide`` call's batch size."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def decide(self, contexts):
        self.calls.append(len(contexts))
        return super().decide(contexts)


def test_each_turn_is_one_decide_call_over_the_unfinished_games_of_the_group():
    agent = Counting()
    results = evaluate(agent, EvalConfig(split="tiny", num_envs=4), progress=False)
    expected = []
    for group in (results[:4], results[4:]):
        expected += [sum(len(r.steps) > turn for r in group) for turn in range(max(len(r.steps) for r in group))]
    assert agent.calls == expected and all(r.won for r in results) and len(set(agent.calls)) > 2


class StopAt(RandomAgent):
    """A random agent that stops the evaluation (like Ctrl-C) at its ``stop_at``-th ``decide`` call."""

    def __init__(self, stop_at):
        super().__init__()
        self.stop_at, self.calls = stop_at, 0

    def decide(self, contexts):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().decide(contexts)


def test_lockstep_random_play_is_deterministic_and_an_interrupted_run_resumes_to_the_same_table(tmp_path):
    config = EvalConfig(agent="random", split="tiny", max_episode_steps=6, seed=3, num_envs=2)
    whole = evaluate(RandomAgent(), config, progress=False)
    assert evaluate(RandomAgent(), config, progress=False) == whole
    one_by_one = evaluate(RandomAgent(), dataclasses.replace(config, num_envs=1), progress=False)
    assert [e.actions for e in whole] != [e.actions for e in one_by_one]

    resumed = dataclasses.replace(config, output_dir=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        evaluate(StopAt(6 + 3), resumed, progress=False)  # group 0 took 6 turns; stop in group 1's 3rd turn
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    assert {json.loads(line)["game_index"] for line in lines} == {0, 1}  # only the whole group
    assert evaluate(RandomAgent(), resumed, progress=False) == whole
    played = (tmp_path / "episodes.jsonl").read_text().splitlines()
    with open(tmp_path / "episodes.jsonl", "w") as f:  # interrupted in group 1's write: game 2 in, 3 cut short
        f.write("\n".join(played[: 3 * 6 + 2]) + '\n{"game_file": "cut sh')
    assert evaluate(RandomAgent(), resumed, progress=False) == whole
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert table == format_table(summarize(whole), table.splitlines()[0])


def test_num_envs_below_1_is_refused_with_a_clear_error(capsys):
    with pytest.raises(ValueError, match="`num_envs` should be at least 1"):
        EvalConfig(split="tiny", num_envs=0)
    with pytest.raises(SystemExit) as exit_status:  # tyro checks the flags: one box, exit status 2
        main(["eval", "--agent", "random", "--split", "tiny", "--num-envs", "0"])
    assert exit_status.value.code == 2
    assert "`num_envs` should be at least 1. Received 0." in " ".join(capsys.readouterr().err.split())
    assert main(["eval", "--agent", "walkthrough", "--split", "tiny", "--num-envs", "4"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[:3] == ["success", "%", "100.0"]

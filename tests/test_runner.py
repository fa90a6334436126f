"""The one episode runner behind eval and collect: lockstep groups, reset info to agents, the dataset formats, and
every agent selectable with the same flags from both commands."""

import json

import pytest

from prm_gym.agents import RandomAgent, WalkthroughAgent
from prm_gym.agents import walkthrough_agent as walkthrough_module
from prm_gym.agents.registry import AGENT_NAMES
from prm_gym.cli import main
from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.rollout import CollectConfig, collect_rollouts, episodes_dataset, export_parquet, load_episodes
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, run_episodes


class Starts(WalkthroughAgent):
    """A walkthrough agent that records the reset ``info`` of every episode it is told of."""

    def __init__(self):
        super().__init__()
        self.started = []

    def start_episode(self, info):
        super().start_episode(info)
        self.started.append(info)


def test_agents_get_each_episodes_reset_info_and_oracles_read_the_walkthrough_there(monkeypatch):
    def no_file_reads(game_file):
        raise AssertionError(f"read the walkthrough of {game_file} from the game file")

    monkeypatch.setattr(walkthrough_module, "walkthrough_of", no_file_reads)
    agent = Starts()
    episodes = evaluate(agent, EvalConfig(split="tiny", num_envs=4), progress=False)
    assert all(episode.won for episode in episodes)
    assert [info["game_file"] for info in agent.started] == [episode.game_file for episode in episodes]
    pairs = zip(episodes, agent.started, strict=True)
    assert all(episode.actions == list(info["walkthrough"]) for episode, info in pairs)


def test_sync_and_async_sub_envs_play_the_same_episodes():
    base = RunConfig(split="tiny", max_episode_steps=5, num_envs=3, seed=7)
    specs = [EpisodeSpec(game, repeat, env_seed=game, agent_seed=100 + 10 * game + repeat)
             for game in range(3) for repeat in range(2)]
    played = {
        mode: run_episodes(RandomAgent(), RunConfig(**{**vars(base), "vectorization": mode}), specs, run="collect",
                           progress=False)
        for mode in ("sync", "async")
    }
    assert played["sync"] == played["async"]
    assert [e.episode_id for e in played["sync"]] == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"]
    # One agent seed per group of 3: the group's first episode's.
    assert [e.seed for e in played["sync"]] == [100, 100, 100, 111, 111, 111]
    assert [e.env_seed for e in played["sync"]] == [0, 0, 1, 1, 2, 2]


def test_specs_must_name_games_of_the_run():
    with pytest.raises(ValueError, match=r"Episodes ask for games \[6\], but the run has 6 games"):
        run_episodes(RandomAgent(), RunConfig(split="tiny"), [EpisodeSpec(6)], run="eval", progress=False)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    folder = tmp_path_factory.mktemp("episodes")
    config = CollectConfig(split="tiny", num_games=2, repeats=2, num_envs=2, vectorization="sync",
                           max_episode_steps=5, output_dir=str(folder))
    return collect_rollouts(RandomAgent(), config, progress=False)


def test_episodes_are_a_datasets_dataset_and_parquet(collected):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in (collected / "episodes.jsonl").read_text().splitlines()]
    dataset = episodes_dataset(collected)
    assert dataset.num_rows == len(rows) == 4 * 5 and dataset.to_list() == rows
    assert dataset.filter(lambda row: row["t"] == 0)["episode_id"] == ["0:0", "0:1", "1:0", "1:1"]
    parquet = export_parquet(collected)
    loaded = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    assert loaded.to_list() == rows
    assert sum(loaded["done"]) == len(load_episodes(collected)) == 4


def test_a_partial_write_is_not_exported(collected, tmp_path):
    (tmp_path / "episodes.jsonl").write_text("".join((collected / "episodes.jsonl").read_text().splitlines(True)[:3]))
    with pytest.raises(ValueError, match="cut short"):
        export_parquet(tmp_path)


def test_cli_export_writes_parquet_for_episodes_and_targets_and_names_a_wrong_folder(collected, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    assert main(["export", "--folder", str(collected)]) == 0
    assert (collected / "episodes.parquet").is_file()
    targets = tmp_path / "targets"
    assert main(["targets", "--rollouts", str(collected), "--output-dir", str(targets)]) == 0
    assert main(["export", "--folder", str(targets)]) == 0
    assert (targets / "targets.parquet").is_file()
    capsys.readouterr()
    assert main(["export", "--folder", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith(f"prm-gym: error: {tmp_path / 'nothing'} holds neither episodes.jsonl")


@pytest.mark.parametrize("command", ["eval", "collect"])
def test_eval_and_collect_take_the_same_agent_flags(command, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_status.value.code == 0
    for flag in ("--agent", "--policy", "--model", "--hf.mode", "--openai.base-url", "--openai.model",
                 "--reward-model", "--n", "--mc-rollouts", "--device", "--num-envs", "--vectorization"):
        assert flag in out, flag
    assert all(name in out for name in AGENT_NAMES)


@pytest.mark.parametrize("command", ["eval", "collect"])
def test_the_openai_agent_plays_from_both_commands(command, tmp_path, capsys):
    pytest.importorskip("openai")
    from openai_server import OpenAITestServer

    with OpenAITestServer() as server:
        status = main([command, "--agent", "openai", "--openai.base-url", server.url, "--openai.api-key-env", "NO_KEY",
                       "--split", "tiny", "--num-games", "2", "--max-episode-steps", "2", "--num-envs", "2",
                       "--vectorization", "sync", "--output-dir", str(tmp_path)]
                      + (["--repeats", "1"] if command == "collect" else []))
        requests = [r for r in server.requests if r["path"].endswith("/chat/completions")]
    assert status == 0, capsys.readouterr().err
    episodes = load_episodes(tmp_path)
    assert len(episodes) == 2 and all(len(e.steps) == 2 for e in episodes) and len(requests) == 4
    assert all(e.agent == "openai" and e.reasons == ["It is listed first."] * 2 for e in episodes)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["openai"]["base_url"] == server.url


def test_num_games_spreads_over_the_split_so_every_task_type_comes(alfworld_data_dir):
    """The train split is sorted by task type: its first 100 games are all Look tasks. num_games takes an evenly
    spread subset by default (every task type, in proportion), the first N only when asked."""
    spread = RunConfig(split="train", num_games=100).games()
    first = RunConfig(split="train", num_games=100, game_selection="first").games()
    every = RunConfig(split="train").games()
    task_types = {path.parts[-3].split("-")[0] for path in every}
    assert len(task_types) == 6 and len(spread) == len(set(spread)) == 100
    assert {path.parts[-3].split("-")[0] for path in spread} == task_types
    assert {path.parts[-3].split("-")[0] for path in first} == {"look_at_obj_in_light"} and first == every[:100]
    assert spread[0] == every[0] and set(spread) <= set(every)
    with pytest.raises(ValueError, match="`game_selection` should be 'spread' or 'first'"):
        RunConfig(game_selection="random")  # type: ignore[arg-type]

"""The Ray executor writes exactly the local executor's episodes, survives a killed actor, and resumes either's folder.

One local Ray instance (2 CPUs, so two actors) serves the whole module: it starts once.
"""

import dataclasses
import logging
import os
import shutil
import sys

import pytest

from prm_gym.agents import RandomAgent
from prm_gym.evaluation import EvalConfig, evaluate
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, run_episodes

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray instance with 2 CPUs; this module's agents travel by value (the workers cannot import it)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # its own, beside others
    yield
    ray.shutdown()


class CrashOnce(RandomAgent):
    """A random agent whose process dies at its ``crash_at``-th ``decide``, the first time any copy gets there."""

    def __init__(self, marker, crash_at):
        super().__init__()
        self.marker, self.crash_at, self.calls = str(marker), crash_at, 0

    def decide(self, contexts):
        self.calls += 1
        if self.calls == self.crash_at:
            try:
                with open(self.marker, "x"):
                    pass
            except FileExistsError:
                pass
            else:
                os._exit(1)  # as a killed worker: no exception, no cleanup
        return super().decide(contexts)


def collect_config(output_dir, executor="local"):
    return CollectConfig(split="tiny", num_games=3, repeats=2, num_envs=2, vectorization="sync", max_episode_steps=4,
                         output_dir=str(output_dir), executor=executor)


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory):
    """Three groups of two episodes collected by the local executor."""
    return collect_rollouts(RandomAgent(), collect_config(tmp_path_factory.mktemp("local")), progress=False)


def test_ray_collects_exactly_the_local_episodes(local_folder, tmp_path):
    folder = collect_rollouts(RandomAgent(), collect_config(tmp_path, "ray"), progress=False)
    expected = load_episodes(local_folder)
    assert [e.episode_id for e in expected] == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"]
    assert load_episodes(folder) == expected  # same ids, seeds, game files, contexts and actions
    assert len({e.seed for e in expected}) == 3 and len({tuple(e.actions) for e in expected}) > 1


def test_ray_replays_expert_prefixes_as_the_local_executor(tmp_path):
    folders = {
        executor: collect_rollouts(RandomAgent(), dataclasses.replace(
            collect_config(tmp_path / executor, executor), expert_prefix_share=1.0), progress=False)
        for executor in ("local", "ray")
    }  # fmt: skip
    episodes = load_episodes(folders["ray"])
    assert episodes == load_episodes(folders["local"]) and all(e.prefix_length > 0 for e in episodes)


def test_ray_evaluates_exactly_as_the_local_executor():
    config = EvalConfig(agent="random", split="tiny", num_envs=4, vectorization="sync", max_episode_steps=4)
    local = evaluate(RandomAgent(), config, progress=False)
    on_ray = evaluate(RandomAgent(), dataclasses.replace(config, executor="ray"), progress=False)
    assert on_ray == local  # in game order, the short last group (2 of 4 sub-envs) included
    assert [e.game_index for e in on_ray] == list(range(6))


def test_a_killed_actor_loses_and_duplicates_nothing_and_runs_resume(local_folder, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="prm_gym.rollout")
    marker = tmp_path / "crashed"
    folder = collect_rollouts(CrashOnce(marker, crash_at=3), collect_config(tmp_path / "ray", "ray"), progress=False)
    assert marker.exists()
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("A Ray actor died playing episodes")]) == 1
    assert messages[-1].endswith(", 1 groups retried)") and ": 6 episodes in " in messages[-1]
    lines = (folder / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == (local_folder / "episodes.jsonl").read_text().count("\n")
    assert load_episodes(folder) == load_episodes(local_folder)  # load_episodes also refuses an episode twice

    # A folder started by the local executor (its first group) ends under Ray as the local run ended.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(local_folder / "config.json", resumed)
    first_group = [line for line in (local_folder / "episodes.jsonl").read_text().splitlines(True)
                   if '"episode_id": "0:' in line]
    (resumed / "episodes.jsonl").write_text("".join(first_group))
    collect_rollouts(RandomAgent(), collect_config(resumed, "ray"), progress=False)
    assert load_episodes(resumed) == load_episodes(local_folder)
    assert (resumed / "episodes.jsonl").read_text().startswith("".join(first_group))


class Silent(RandomAgent):
    """An agent that returns no decisions: the runner's ValueError, raised in an actor."""

    def decide(self, contexts):
        return []


def test_an_agents_error_reaches_the_caller_as_itself_and_plain_run_configs_ship_the_agent(caplog):
    config = RunConfig(split="tiny", num_games=2, max_episode_steps=2, executor="ray")  # no agent settings
    with pytest.raises(ValueError, match="random returned 0 decisions for 1 contexts"):
        run_episodes(Silent(), config, [EpisodeSpec(0), EpisodeSpec(1)], run="eval", progress=False)
    assert "Ray actor died" not in caplog.text  # not retried


@pytest.mark.parametrize(("changes", "room"), [({"ray_actors": 3}, 2), ({"ray_gpus_per_actor": 0.5}, 0)])
def test_more_actors_than_the_cluster_holds_is_one_clear_error(changes, room):
    config = RunConfig(split="tiny", num_games=2, executor="ray", **changes)
    with pytest.raises(ValueError, match=f"The Ray cluster has room for {room} actors .* lower ray_actors"):
        run_episodes(RandomAgent(), config, [EpisodeSpec(0), EpisodeSpec(1)], run="eval", progress=False)

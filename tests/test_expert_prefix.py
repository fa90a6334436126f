"""The paper's reset distribution on the real tiny games: episodes that replay a gold prefix, then the agent plays.

Which episodes replay, and how far, is drawn from the seeds; the prefix is in the agent's contexts and marked in
the rows; prefixes of different lengths share a lockstep group; a resumed run is identical; the targets count the
prefix's last step by default, and the summary splits won rollouts and positive targets by kind.
"""

import collections
import json

import pytest

from prm_gym.agents import RandomAgent, WalkthroughAgent
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.cli import main
from prm_gym.prm.target_summary import target_shares
from prm_gym.prm.targets import TargetsConfig, compute_targets, target_steps
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes
from prm_gym.rollout.collect import episode_seed, expert_prefix_position
from prm_gym.rollout.runner import EpisodeSpec, RunConfig, prefix_length, privileged_info, run_episodes


class Watching(RandomAgent):
    """A random agent that keeps every ``decide`` call's contexts, per group (its reset seed), and reset infos."""

    def __init__(self):
        super().__init__()
        self.calls, self.infos = collections.defaultdict(list), []

    def reset(self, seed=None):
        super().reset(seed)
        self.seed = seed

    def start_episode(self, info):
        super().start_episode(info)
        self.infos.append(info)

    def decide(self, contexts):
        self.calls[self.seed].append(list(contexts))
        return super().decide(contexts)


def config(folder, **overrides):
    settings = dict(split="tiny", repeats=4, num_envs=4, vectorization="sync", max_episode_steps=12,
                    expert_prefix_share=1.0)
    return CollectConfig(output_dir=str(folder), **{**settings, **overrides})


def declared_length(config, episode):
    position = expert_prefix_position(config.seed, episode.game_index, episode.repeat, config.expert_prefix_share)
    return 0 if position is None else prefix_length(position, len(walkthrough_of(episode.game_file)))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    agent, settings = Watching(), config(tmp_path_factory.mktemp("replayed"))
    return load_episodes(collect_rollouts(agent, settings, progress=False)), agent, settings


def test_every_episode_starts_with_the_gold_prefix_of_its_declared_length(replayed):
    episodes, _, settings = replayed
    assert len(episodes) == 24
    for episode in episodes:
        k, gold = declared_length(settings, episode), list(walkthrough_of(episode.game_file))
        assert 1 <= k == episode.prefix_length <= len(gold) - 1
        assert [step.expert_prefix for step in episode.steps] == [True] * k + [False] * (len(episode.steps) - k)
        assert episode.actions[:k] == gold[:k] and episode.reasons[:k] == [None] * k
        assert [action for _, action in episode.contexts[k].history] == gold[:k]  # the agent's first state
    with open(f"{settings.output_dir}/episodes.jsonl") as file:
        rows = [json.loads(line) for line in file]
    assert sum(row["expert_prefix"] for row in rows) == sum(e.prefix_length for e in episodes)


def test_the_agent_decides_only_after_the_prefix_in_lockstep_and_never_sees_the_walkthrough(replayed):
    episodes, agent, _ = replayed
    assert all("walkthrough" not in info for info in agent.infos) and len(agent.infos) == 24
    by_group = collections.defaultdict(list)
    for episode in episodes:
        by_group[episode.seed].append(episode)
    assert len(by_group) == 6
    assert any(len({e.prefix_length for e in group}) > 1 for group in by_group.values())  # what the test is about
    for seed, group in by_group.items():
        # Turn t asks the agent about each episode past its prefix and not ended yet, in sub-env order.
        turns = [[e.contexts[t].state_key for e in group if e.prefix_length <= t < len(e.steps)]
                 for t in range(max(len(e.steps) for e in group))]
        assert [[c.state_key for c in call] for call in agent.calls[seed]] == [turn for turn in turns if turn]


def test_a_share_of_0_plays_the_episodes_of_a_run_without_the_setting(tmp_path):
    settings = config(tmp_path / "zero", expert_prefix_share=0.0, max_episode_steps=6)
    played = load_episodes(collect_rollouts(RandomAgent(), settings, progress=False))
    specs = [EpisodeSpec(g, r, env_seed=episode_seed(0, g, r), agent_seed=episode_seed(0, g, r))
             for g in range(6) for r in range(4)]
    before = run_episodes(RandomAgent(), RunConfig(split="tiny", num_envs=4, max_episode_steps=6), specs,
                          run="collect", progress=False)
    assert played == before and all(e.prefix_length == 0 for e in played)
    assert privileged_info(RandomAgent(), specs) == ()  # the envs hand out no walkthrough


def test_the_episodes_picked_at_one_share_are_among_those_at_a_larger_one_and_the_others_play_as_before(tmp_path):
    runs = {share: load_episodes(collect_rollouts(RandomAgent(), config(tmp_path / str(share), num_envs=1,
                                                                        expert_prefix_share=share), progress=False))
            for share in (0.0, 0.5, 1.0)}
    half = {e.episode_id for e in runs[0.5] if e.prefix_length}
    assert 6 <= len(half) <= 18  # 24 episodes, about half
    assert all(e.prefix_length == full.prefix_length for e, full in zip(runs[0.5], runs[1.0], strict=True)
               if e.episode_id in half)
    # One episode per group: an episode without a prefix is the one a share of 0 plays.
    assert [e for e in runs[0.5] if e.episode_id not in half] == [e for e in runs[0.0] if e.episode_id not in half]


def test_an_interrupted_collection_resumes_to_the_same_episodes(replayed, tmp_path):
    started = []

    class Interrupting(RandomAgent):
        def reset(self, seed=None):
            started.append(seed)
            if len(started) > 3:
                raise KeyboardInterrupt
            super().reset(seed)

    with pytest.raises(KeyboardInterrupt):
        collect_rollouts(Interrupting(), config(tmp_path), progress=False)
    assert 0 < len(load_episodes(tmp_path)) < 24
    collect_rollouts(RandomAgent(), config(tmp_path, vectorization="async"), progress=False)
    assert load_episodes(tmp_path) == replayed[0]


def test_replayed_prefixes_are_in_the_context_an_oracle_plays_on_from(tmp_path):
    episodes = load_episodes(collect_rollouts(WalkthroughAgent(), config(tmp_path), progress=False))
    for episode in episodes:  # it would start the walkthrough over if the prefix were not in its contexts' history
        assert episode.won and episode.actions == list(walkthrough_of(episode.game_file))
        assert 0 < episode.prefix_length < len(episode.steps)


def test_a_folder_is_refused_for_another_share_and_resumes_from_before_the_setting(replayed, tmp_path):
    folder = replayed[2].output_dir
    with pytest.raises(ValueError, match=r"expert_prefix_share: 1.0 there, 0.5 here"):
        collect_rollouts(RandomAgent(), config(folder, expert_prefix_share=0.5), progress=False)
    old = config(tmp_path, expert_prefix_share=0.0, num_games=1, max_episode_steps=3)
    collect_rollouts(RandomAgent(), old, progress=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["config"]["expert_prefix_share"]  # a folder written before the setting played from the start
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert collect_rollouts(RandomAgent(), old, progress=False) == tmp_path
    with pytest.raises(ValueError, match=r"expert_prefix_share: 0.0 there, 0.5 here"):
        collect_rollouts(RandomAgent(), config(tmp_path, expert_prefix_share=0.5, num_games=1, max_episode_steps=3),
                         progress=False)


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_0_1_is_refused(share):
    message = rf"`expert_prefix_share` should be in the interval \[0, 1\]. Received {share}\."
    with pytest.raises(ValueError, match=message):
        CollectConfig(expert_prefix_share=share)


@pytest.mark.parametrize("steps", ["all", "last", "none"])
def test_targets_count_the_last_expert_step_by_default(replayed, steps):
    episodes = replayed[0]
    rows = {row.key for row in compute_targets(episodes, TargetsConfig(expert_steps=steps))}
    for episode in episodes:
        first = {"all": 0, "last": episode.prefix_length - 1, "none": episode.prefix_length}[steps]
        assert [t for t, _ in target_steps(episode, TargetsConfig(expert_steps=steps))] == list(
            range(first, len(episode.steps))
        )
        assert {step.context.key for step in episode.steps[first:]} <= rows
    agent_keys = {s.context.key for e in episodes for s in e.steps if not s.expert_prefix}
    last_expert = {e.steps[e.prefix_length - 1].context.key for e in episodes}
    expected = {"all": {s.context.key for e in episodes for s in e.steps}, "last": agent_keys | last_expert,
                "none": agent_keys}
    assert rows == expected[steps]


def test_episodes_along_the_walkthrough_win_more_and_give_more_positive_targets(tmp_path, capsys):
    folder, targets = tmp_path / "rollouts", tmp_path / "targets"
    assert main(["collect", "--split", "tiny", "--repeats", "32", "--num-envs", "4", "--vectorization", "sync",
                 "--max-episode-steps", "20", "--expert-prefix-share", "0.5", "--output-dir", str(folder)]) == 0
    assert main(["targets", "--rollouts", str(folder), "--output-dir", str(targets)]) == 0
    episodes = load_episodes(folder)
    shares = {s.kind: s for s in target_shares(episodes, compute_targets(episodes), TargetsConfig())}
    start, prefix = shares["from start"], shares["expert prefix"]
    assert start.episodes + prefix.episodes == 192 and 64 <= prefix.episodes <= 128
    assert prefix.won == sum(e.won for e in episodes if e.prefix_length) >= 8
    assert prefix.won / prefix.episodes > 2 * start.won / start.episodes  # 13.0% and 3.0%
    assert prefix.positive / prefix.targets > 1.5 * start.positive / start.targets  # 6.4% and 2.8%
    out = capsys.readouterr().out
    assert str(start) in out and str(prefix) in out

"""Rollout collection on the real tiny ALFWorld games: vector envs, storage, exact contexts, resume; and the CLI."""

import fcntl
import json

import pytest

from prm_gym.agents import Agent, RandomAgent, WalkthroughAgent
from prm_gym.agents.walkthrough_agent import walkthrough_of
from prm_gym.cli import main
from prm_gym.prm import Context, load_targets
from prm_gym.rollout import CollectConfig, collect_rollouts, load_episodes, load_run_config
from prm_gym.rollout.storage import ROW_COLUMNS


class Recording(Agent):
    """Wraps an agent and keeps, per group (by its reset seed), each ``decide`` call's contexts (action proposed)."""

    def __init__(self, inner, log):
        super().__init__()
        self.inner, self.log, self.name, self.seed = inner, log, inner.name, None

    def reset(self, seed=None):
        super().reset(seed)
        self.inner.reset(seed)
        self.seed = seed
        self.log[seed] = []

    def decide(self, contexts):
        decisions = self.inner.decide(contexts)
        self.log[self.seed].append([c.propose(d.action, d.reason) for c, d in zip(contexts, decisions, strict=True)])
        return decisions


def random_config(folder, **overrides):
    settings = dict(split="tiny", num_games=2, repeats=3, num_envs=2, vectorization="sync", max_episode_steps=4)
    return CollectConfig(output_dir=str(folder), **{**settings, **overrides})


@pytest.fixture(scope="module")
def walkthrough_run(tmp_path_factory):
    log = {}
    config = CollectConfig(
        split="tiny",
        num_games=3,
        repeats=2,
        num_envs=2,
        vectorization="sync",
        output_dir=str(tmp_path_factory.mktemp("walkthrough")),
    )
    folder = collect_rollouts(Recording(WalkthroughAgent(), log), config, progress=False)
    return folder, log


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("random")
    return collect_rollouts(RandomAgent(), random_config(folder), progress=False)


def test_walkthrough_rollouts_are_all_won(walkthrough_run):
    episodes = load_episodes(walkthrough_run[0])
    assert [e.episode_id for e in episodes] == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"]
    for episode in episodes:
        assert episode.won and not episode.steps[-1].truncated and episode.steps[-1].reward == 1.0
        assert [c.action for c in episode.contexts] == list(walkthrough_of(episode.game_file))
        assert episode.agent == "walkthrough" and episode.task_type in episode.game_file
        assert [s.done for s in episode.steps] == [False] * (len(episode.steps) - 1) + [True]


def test_contexts_rebuilt_from_disk_equal_the_ones_from_play(walkthrough_run):
    folder, log = walkthrough_run
    episodes = load_episodes(folder)
    assert len({e.seed for e in episodes}) == 3 and set(log) == {e.seed for e in episodes}  # 3 groups of 2
    for episode in episodes:
        # Both repeats of a group's game have the walkthrough's length: every call decided both, in group order.
        assert episode.contexts == [batch[episode.repeat] for batch in log[episode.seed]]
        last = episode.contexts[-1]
        assert len(last.history) == len(episode.steps) - 1 and last.game_file == episode.game_file


def test_rows_and_config_on_disk(walkthrough_run):
    folder = walkthrough_run[0]
    rows = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    assert all(set(row) == set(ROW_COLUMNS) for row in rows)  # no history: contexts are rebuilt on load
    for episode in load_episodes(folder):
        steps = [row["t"] for row in rows if row["episode_id"] == episode.episode_id]
        assert steps == list(range(len(walkthrough_of(episode.game_file))))
    recorded = load_run_config(folder)
    assert recorded["agent"] == "walkthrough" and recorded["prm_gym_version"] and recorded["run"] == "collect"
    assert recorded["config"]["repeats"] == 2 and recorded["config"]["split"] == "tiny"


def test_random_rollouts_respect_the_cap_and_differ_between_repeats(random_run):
    episodes = load_episodes(random_run)
    assert [e.episode_id for e in episodes] == ["0:0", "0:1", "0:2", "1:0", "1:1", "1:2"]
    assert all(len(e.steps) == 4 and e.steps[-1].truncated and not e.won for e in episodes)
    first_game = [tuple(c.action for c in e.contexts) for e in episodes[:3]]
    assert len(set(first_game)) == 3
    start = {e.contexts[0].state_key for e in episodes[:3]}
    assert len(start) == 1  # the repeats of a game start from one state: its targets average them


def test_interrupted_collection_resumes_to_the_same_episodes(random_run, tmp_path):
    started = []

    class Interrupting(RandomAgent):
        def reset(self, seed=None):
            started.append(seed)
            if len(started) > 2:
                raise KeyboardInterrupt
            super().reset(seed)

    with pytest.raises(KeyboardInterrupt):
        collect_rollouts(Interrupting(), random_config(tmp_path), progress=False)
    file = tmp_path / "episodes.jsonl"
    kept = [json.loads(line) for line in file.read_text().splitlines()]
    kept_ids = {row["episode_id"] for row in kept}
    assert 0 < len(kept_ids) < 6 and all(row["done"] for row in kept if row["t"] == 3)
    # A kill in the middle of the next episode's write: one whole row and half of the next.
    reference = (random_run / "episodes.jsonl").read_text().splitlines(keepends=True)
    unfinished = [line for line in reference if json.loads(line)["episode_id"] not in kept_ids]
    with open(file, "a") as f:
        f.write(unfinished[0] + unfinished[1][: len(unfinished[1]) // 2])
    with pytest.raises(ValueError, match="incomplete line"):
        load_episodes(tmp_path)
    # The rest is played async (how episodes are played is not part of the config).
    collect_rollouts(RandomAgent(), random_config(tmp_path, vectorization="async"), progress=False)
    assert sorted(file.read_text().splitlines()) == sorted(line.rstrip("\n") for line in reference)
    assert load_episodes(tmp_path) == load_episodes(random_run)


def test_a_finished_folder_is_not_played_again(random_run):
    before = (random_run / "episodes.jsonl").read_bytes()
    agent = RandomAgent()
    agent.decide = None  # any call would fail
    collect_rollouts(agent, random_config(random_run), progress=False)
    assert (random_run / "episodes.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    ("overrides", "agent", "message"),
    [
        ({"repeats": 4}, "random", "repeats: 3 there, 4 here"),
        ({"max_episode_steps": 5}, "random", "max_episode_steps: 4 there, 5 here"),
        ({}, "walkthrough", "agent name: 'random' there, 'walkthrough' here"),
        ({"num_envs": 3}, "random", "num_envs: 2 there, 3 here"),
    ],
)
def test_another_config_in_the_same_folder_is_refused(random_run, overrides, agent, message):
    chosen = RandomAgent() if agent == "random" else WalkthroughAgent()
    with pytest.raises(ValueError, match=f"holds another run .*{message}"):
        collect_rollouts(chosen, random_config(random_run, **overrides), progress=False)


def test_a_folder_being_written_is_refused(tmp_path):
    with open(tmp_path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="being written by another run"):
            collect_rollouts(RandomAgent(), random_config(tmp_path), progress=False)
    assert not (tmp_path / "config.json").exists()


def test_rows_without_a_config_are_refused(tmp_path):
    (tmp_path / "episodes.jsonl").write_text("")
    with pytest.raises(ValueError, match="without config.json"):
        collect_rollouts(RandomAgent(), random_config(tmp_path), progress=False)


def test_loading_bad_folders_says_what_is_wrong(random_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="No episodes at"):
        load_episodes(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="No episodes at"):
        load_run_config(tmp_path)
    file = tmp_path / "episodes.jsonl"
    file.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        load_episodes(tmp_path)
    file.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="Line 1 .* not a JSON object"):
        load_episodes(tmp_path)
    rows = [json.loads(line) for line in (random_run / "episodes.jsonl").read_text().splitlines()]
    file.write_text(json.dumps({k: v for k, v in rows[0].items() if k != "reward"}) + "\n")
    with pytest.raises(ValueError, match=r"Line 1 .* lacks the columns \['reward'\]"):
        load_episodes(tmp_path)
    file.write_text("".join(json.dumps(row) + "\n" for row in [rows[0], rows[2]]))
    with pytest.raises(ValueError, match="Line 2 .* is step 2 .*expected step 1"):
        load_episodes(tmp_path)
    file.write_text("".join(json.dumps(row) + "\n" for row in rows[:4] + rows[:4]))
    with pytest.raises(ValueError, match="Line 5 .* starts episode '0:0' again"):
        load_episodes(tmp_path)
    file.write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))
    with pytest.raises(ValueError, match="cut short"):
        load_episodes(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="lacks `run` or `config`"):
        load_run_config(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"repeats": 0}, "`repeats` should be at least 1"),
        ({"num_games": 0}, "`num_games` should be at least 1"),
        ({"vectorization": "ray"}, "`vectorization` should be 'sync' or 'async'"),
        ({"backend": "z-machine"}, "`backend` should be one of"),
    ],
)
def test_bad_config_is_named(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        random_config(tmp_path, **overrides)


def test_episode_from_actions_checks_lengths():
    from prm_gym.rollout import Episode

    with pytest.raises(ValueError, match="2 observations for 1 actions"):
        Episode.from_actions("task", ["a", "b"], ["go"], won=False)
    assert Episode.from_actions("task", ["a"], ["go"], won=True).contexts == [
        Context("task", observation="a", action="go")
    ]


@pytest.mark.parametrize(
    ("command", "flags"),
    [("collect", ["--repeats", "--agent", "--vectorization"]), ("targets", ["--rollouts", "--gamma", "--discount"])],
)
def test_cli_help(command, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and all(flag in out for flag in flags)


def test_cli_collect_then_targets(tmp_path, capsys):
    rollouts, targets = str(tmp_path / "rollouts"), str(tmp_path / "targets")

    def collect(repeats):
        return main(
            [
                "collect",
                "--agent",
                "random",
                "--split",
                "tiny",
                "--num-games",
                "1",
                "--repeats",
                str(repeats),
                "--num-envs",
                "1",
                "--vectorization",
                "sync",
                "--max-episode-steps",
                "3",
                "--output-dir",
                rollouts,
            ]
        )

    assert collect(3) == 0
    assert main(["targets", "--rollouts", rollouts, "--output-dir", targets, "--gamma", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "3 episodes (0 won)" in out and "targets at" in out
    rows = load_targets(targets)
    assert sum(row.visits for row in rows if not row.context.history) == 3
    assert all(row.q == pytest.approx((1 - 0.9 ** (2 - len(row.context.history))) / 2) for row in rows)
    meta = json.loads((tmp_path / "targets" / "config.json").read_text())
    assert meta["targets"]["gamma"] == 0.9 and meta["source"]["config"]["repeats"] == 3
    assert "rollouts" not in meta["targets"]
    # Rerunning with another config in the same folder is one clear line, exit 2.
    assert collect(4) == 2
    assert capsys.readouterr().err.startswith("prm-gym: error: ")
    assert main(["targets", "--rollouts", str(tmp_path / "missing")]) == 2
    assert "prm-gym: error: No episodes at" in capsys.readouterr().err

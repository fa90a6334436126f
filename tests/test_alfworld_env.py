import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.alfworld import ALFWorldEnv, list_games


@pytest.fixture(scope="module")
def env(alfworld_data_dir):
    env = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen", privileged=("walkthrough",))
    yield env
    env.close()


def test_reset_gives_the_intro_and_the_contract_info(env):
    obs, info = env.reset(seed=0)
    assert obs.startswith("-= Welcome to TextWorld, ALFRED! =-") and "Your task is to: " in obs
    assert obs.rstrip().endswith(info["task"])
    assert info["admissible_commands"] == sorted(set(info["admissible_commands"]))
    assert "look" in info["admissible_commands"] and "inventory" in info["admissible_commands"]
    assert info["task_type"] in {t.name for t in prm_gym.envs.alfworld.TASK_TYPES.values()}
    assert info["game_file"].endswith("game.tw-pddl") and "valid_unseen" in info["game_file"]
    assert info["won"] is False and info["invalid_action"] is False and info["walkthrough"]
    assert env.observation_space.contains(obs)


def test_object_names_are_demangled(env):
    obs, info = env.reset(seed=3)
    assert "_bar_" not in obs and all("_bar_" not in c for c in info["admissible_commands"])
    assert any(c.split()[-1].isdigit() for c in info["admissible_commands"] if c.startswith("go to"))


@pytest.mark.parametrize("command", ["", "   ", "fly to the moon", "go to desk 99", "LOOK"])
def test_inadmissible_commands_do_nothing(env, command):
    env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(command)
    assert obs == "Nothing happens."
    assert (reward, terminated, truncated, info["invalid_action"], info["won"]) == (0.0, False, False, True, False)


def test_admissible_command_is_not_invalid(env):
    _, info = env.reset(seed=1)
    _, _, _, _, info = env.step("look")
    assert info["invalid_action"] is False


def test_winning_rewards_one_and_terminates(env):
    _, info = env.reset(seed=2)
    rewards = []
    for command in info["walkthrough"]:
        _, reward, terminated, truncated, info = env.step(command)
        rewards.append(reward)
    assert rewards == [0.0] * (len(rewards) - 1) + [1.0]
    assert terminated and not truncated and info["won"]


def test_step_cap_truncates_at_30_by_default(env):
    env.reset(seed=0)
    for t in range(30):
        _, _, terminated, truncated, _ = env.step("look")
        assert not terminated and truncated == (t == 29)


def test_step_cap_is_settable(alfworld_data_dir):
    env = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen", max_episode_steps=3)
    env.reset(seed=0)
    assert [env.step("look")[3] for _ in range(3)] == [False, False, True]


def test_seeding_reproduces_games_and_episodes(alfworld_data_dir):
    def play(seed):
        env = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen")
        rng = np.random.default_rng(seed)
        transcript = []
        for episode in range(2):
            obs, info = env.reset(seed=seed if episode == 0 else None)
            transcript.append((info["game_file"], obs))
            for _ in range(5):
                obs, reward, *_ , info = env.step(rng.choice(info["admissible_commands"]))
                transcript.append((obs, reward))
        return transcript

    first, again, other = play(7), play(7), play(8)
    assert first == again
    assert first[0][0] != other[0][0]


def test_shuffle_false_plays_games_in_order(alfworld_data_dir):
    env = ALFWorldEnv("valid_unseen", shuffle=False)
    games = [env.reset(seed=0)[1]["game_file"]] + [env.reset()[1]["game_file"] for _ in range(2)]
    assert games == [str(g) for g in list_games("valid_unseen")[:3]]


def test_shuffled_order_visits_every_game_once_per_pass(alfworld_data_dir):
    env = ALFWorldEnv(game_files=list_games("valid_unseen")[:5])
    seen = [env.reset(seed=0)[1]["game_file"]] + [env.reset()[1]["game_file"] for _ in range(9)]
    assert sorted(seen[:5]) == sorted(seen[5:]) == sorted(str(g) for g in env.game_files)
    assert seen[:5] != seen[5:]


def test_options_pick_a_game_by_index_or_path(env):
    games = list_games("valid_unseen")
    assert env.reset(options={"game": 5})[1]["game_file"] == str(games[5])
    assert env.reset(options={"game": str(games[9])})[1]["game_file"] == str(games[9])
    with pytest.raises(ValueError, match="index 134 is out of range"):
        env.reset(options={"game": 134})
    with pytest.raises(ValueError, match="an index into `game_files` or a game file path"):
        env.reset(options={"game": "no/such/game.tw-pddl"})


def test_task_types_filter(alfworld_data_dir):
    env = ALFWorldEnv("valid_unseen", task_types=["pick_clean", 4])
    assert len(env.game_files) == 31 + 23
    assert {env.reset(options={"game": i})[1]["task_type"] for i in (0, 53)} <= {
        "pick_clean_then_place_in_recep",
        "pick_heat_then_place_in_recep",
    }


def test_explicit_game_files(alfworld_data_dir):
    games = list_games("valid_seen")[:2]
    env = gym.make("prm_gym/ALFWorld-v0", game_files=games)
    assert env.unwrapped.game_files == games


def test_step_before_reset_raises():
    with pytest.raises(gym.error.ResetNeeded):
        ALFWorldEnv("tiny").step("look")


@pytest.mark.parametrize("backend", ["fast", "textworld"])
def test_non_string_actions_are_inadmissible_commands(backend):
    env = ALFWorldEnv("tiny", task_types="look", backend=backend, privileged=("walkthrough",))
    _, start = env.reset(seed=0)
    for action in [None, 3, b"look", ["look"], 2.5]:
        with pytest.warns(UserWarning, match="Actions are command strings"):
            obs, reward, terminated, truncated, info = env.step(action)  # type: ignore[arg-type]
        assert (obs, reward, terminated, info["invalid_action"]) == ("Nothing happens.", 0.0, False, True)
        assert info["admissible_commands"] == start["admissible_commands"]
    for command in start["walkthrough"]:
        *_, info = env.step(command)
    assert info["won"]


@pytest.mark.parametrize("single", [str, Path])
def test_one_game_file_is_a_list_of_one(single):
    game = list_games("tiny")[2]
    env = ALFWorldEnv(game_files=single(game))
    assert env.game_files == [game] and env.reset()[1]["game_file"] == str(game)


def test_bad_game_files_are_named():
    with pytest.raises(TypeError, match="a game file path or a list of them. Received 42"):
        ALFWorldEnv(game_files=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="should hold game file paths. Received None"):
        ALFWorldEnv(game_files=[list_games("tiny")[0], None])  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="nope.tw-pddl"):
        ALFWorldEnv(game_files="nope.tw-pddl")
    with pytest.raises(ValueError, match="empty"):
        ALFWorldEnv(game_files=[])


def test_a_reset_with_a_bad_game_option_leaves_the_episode_as_it_was():
    env = ALFWorldEnv("tiny", task_types="look", shuffle=False, privileged=("walkthrough",))
    _, info = env.reset(seed=0)
    for bad in [99, "no/such/game.tw-pddl", 1.5]:
        with pytest.raises(ValueError, match="options"):
            env.reset(options={"game": bad})
    for command in info["walkthrough"]:
        *_, last = env.step(command)
    assert last["won"] and last["task"] == info["task"] != ""


@pytest.mark.parametrize("backend", ["fast", "textworld"])
def test_a_reset_on_a_broken_game_file_names_it_and_needs_a_reset(tmp_path, backend):
    good = list_games("tiny", task_types="look")[0]
    broken = tmp_path / "game.tw-pddl"
    broken.write_text(good.read_text()[:5000])
    env = ALFWorldEnv(game_files=[good, broken], shuffle=False, backend=backend, privileged=("walkthrough",))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="game.tw-pddl"):
        env.reset(options={"game": 1})
    with pytest.raises(gym.error.ResetNeeded):
        env.step("look")
    with pytest.raises(gym.error.ResetNeeded):
        env.snapshot()
    _, info = env.reset(options={"game": 0})
    for command in info["walkthrough"]:
        *_, info = env.step(command)
    assert info["won"]


def test_render_ansi_returns_the_last_text(alfworld_data_dir):
    env = gym.make("prm_gym/ALFWorld-v0", split="valid_unseen", render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert env.render() == obs


def test_passes_the_env_checker(alfworld_data_dir):
    check_env(gym.make("prm_gym/ALFWorld-v0", split="valid_unseen").unwrapped, skip_render_check=True)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_env_steps_four_games_at_once(alfworld_data_dir, mode):
    envs = gym.make_vec("prm_gym/ALFWorld-v0", num_envs=4, vectorization_mode=mode, split="train")
    try:
        obs, infos = envs.reset(seed=0)
        assert len(obs) == 4 and all(o.startswith("-= Welcome") for o in obs)
        assert len(set(infos["game_file"])) == 4
        actions = tuple(commands[0] for commands in infos["admissible_commands"])
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert rewards.shape == (4,) and not terminated.any() and not truncated.any()
        assert not infos["invalid_action"].any()
    finally:
        envs.close()


def test_async_and_sync_vector_envs_agree(alfworld_data_dir):
    def run(mode):
        envs = gym.make_vec("prm_gym/ALFWorld-v0", num_envs=2, vectorization_mode=mode, split="valid_seen")
        obs, infos = envs.reset(seed=11)
        out = [tuple(obs)]
        for _ in range(3):
            obs, *_, infos = envs.step(tuple(sorted(c)[-1] for c in infos["admissible_commands"]))
            out.append(tuple(obs))
        envs.close()
        return out

    assert run("sync") == run("async")


def test_a_game_outside_alfworlds_folder_layout_plays_with_an_empty_task_type(tmp_path):
    game = tmp_path / "my_game.tw-pddl"
    shutil.copy(list_games("tiny", task_types="look")[0], game)
    _, info = ALFWorldEnv(game_files=game, privileged=("walkthrough",)).reset(seed=0)
    assert info["task_type"] == "" and info["task"] and info["walkthrough"]


def test_files_that_are_not_alfworld_games_are_refused_at_construction(tmp_path):
    story = tmp_path / "quest.z8"
    story.write_bytes(b"\x08" * 64)
    with pytest.raises(ValueError, match="quest.z8.*TextWorld-v0"):
        ALFWorldEnv(game_files=[list_games("tiny")[0], story])

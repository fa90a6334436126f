"""Env snapshots: branch, play, restore, replay; pickling; a process boundary; both ALFWorld backends."""

import pickle
import random

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import prm_gym  # noqa: F401  (registers the environments)
from prm_gym.envs.alfworld import ALFWorldEnv, list_games
from prm_gym.envs.text_game_env import EnvSnapshot


def play(env, rng, n, info):
    """Play n seeded commands (one in ten garbage); return the (command, step result) pairs."""
    history = []
    for _ in range(n):
        command = rng.choice(info["admissible_commands"]) if rng.random() < 0.9 else "fly to the moon"
        result = env.step(command)
        info = result[-1]
        history.append((command, result))
        if result[2]:
            break
    return history


def replay(env, history):
    return [(command, env.step(command)) for command, _ in history]


@pytest.mark.parametrize("backend", ["fast", "textworld"])
def test_branch_play_restore_replay_gives_the_same_steps(backend):
    env = ALFWorldEnv("tiny", backend=backend, shuffle=False)
    obs, info = env.reset(options={"game": 3})
    rng = random.Random(0)
    played = play(env, rng, 4, info)
    snapshot = env.snapshot()
    obs, info = played[-1][1][0], played[-1][1][-1]
    branch = play(env, rng, 8, info)
    restored_obs, restored_info = env.restore(snapshot)
    assert restored_obs == obs
    assert restored_info == info and "walkthrough" not in info  # privileged: not asked for
    assert replay(env, branch) == branch
    assert env.restore(snapshot)[0] == obs and replay(env, branch) == branch


def test_restore_takes_the_env_back_to_another_game_and_its_task():
    env = ALFWorldEnv("tiny", backend="fast", shuffle=False, privileged=("walkthrough",))
    _, info = env.reset(options={"game": 0})
    env.step(info["walkthrough"][0])
    snapshot = env.snapshot()
    expected = env.step("look")
    env.reset(options={"game": 1})
    _, info = env.restore(snapshot)
    assert info["game_file"] == str(env.game_files[0]) and info["task"] == snapshot.episode[0]
    assert env.step("look") == expected


def test_snapshots_are_immutable_and_survive_pickling():
    env = ALFWorldEnv("tiny", backend="fast", shuffle=False)
    _, info = env.reset(options={"game": 2})
    play(env, random.Random(1), 3, info)
    snapshot = env.snapshot()
    assert isinstance(snapshot, EnvSnapshot) and snapshot.steps == 3
    with pytest.raises(AttributeError):
        snapshot.steps = 0  # type: ignore[misc]
    expected = env.step("inventory")
    other = ALFWorldEnv("tiny", backend="fast")
    other.restore(pickle.loads(pickle.dumps(snapshot)))
    assert other.step("inventory") == expected


def test_async_vector_env_branches_every_sub_env_from_one_snapshot(alfworld_data_dir):
    game = list_games("tiny", task_types="pick_heat")[0]
    single = ALFWorldEnv(game_files=[game], backend="fast", privileged=("walkthrough",))
    _, info = single.reset()
    single.step(info["walkthrough"][0])
    envs = gym.make_vec("prm_gym/ALFWorld-v0", num_envs=3, vectorization_mode="async", split="tiny", backend="fast")
    envs.reset(seed=0)
    snapshot = single.snapshot()
    restored = envs.call("restore", snapshot)  # pickled to each sub-env's process
    assert [obs for obs, _ in restored] == [single.restore(snapshot)[0]] * 3
    commands = [info["admissible_commands"][i] for i, info in enumerate(info for _, info in restored)]
    obs, *_ = envs.step(commands)
    assert list(obs) == [single.restore(snapshot) and single.step(command)[0] for command in commands]
    # Snapshots come back from the sub-envs too, and restore here.
    snapshots = envs.call("snapshot")
    assert [single.restore(s)[0] for s in snapshots] == list(obs)
    envs.close()


def test_restore_reaches_the_env_through_gym_make_and_leaves_time_limit_alone():
    env = gym.make("prm_gym/ALFWorld-v0", split="tiny", backend="fast", max_episode_steps=3)
    env.reset(seed=0)
    snapshot = env.unwrapped.snapshot()
    env.step("look")
    env.step("look")
    assert env.get_wrapper_attr("restore")(snapshot)[0]
    assert env.step("look")[3], "TimeLimit still counts the two steps before the restore"


def test_snapshot_errors():
    env = ALFWorldEnv("tiny", backend="fast")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.snapshot()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="EnvSnapshot"):
        env.restore(env.engine.snapshot())  # type: ignore[arg-type]
    reference = ALFWorldEnv("tiny", backend="textworld")
    reference.reset(seed=0)
    with pytest.raises(TypeError, match="TextWorldEngine restores ReplaySnapshots"):
        reference.restore(env.snapshot())


def test_backend_must_be_known():
    with pytest.raises(ValueError, match="`backend` should be one of .* Received 'fats'. Did you mean 'fast'"):
        ALFWorldEnv("tiny", backend="fats")


def test_backends_play_the_same_episode():
    def episode(backend):
        env = gym.make("prm_gym/ALFWorld-v0", split="tiny", backend=backend, privileged=("walkthrough",))
        out = [env.reset(seed=4)]
        for command in out[0][1]["walkthrough"] + ["look"]:
            out.append(env.step(command))
        return out

    fast = episode("fast")
    assert fast == episode("textworld")
    assert fast[-2][1:4] == (1.0, True, False) and fast[-1][0] != "Nothing happens."


@pytest.mark.parametrize("backend", ["fast", "textworld"])
def test_gymnasium_checker_passes_on_both_backends(backend):
    check_env(gym.make("prm_gym/ALFWorld-v0", split="tiny", backend=backend).unwrapped, skip_render_check=False)
